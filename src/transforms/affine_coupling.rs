//! Affine coupling layer (RealNVP; Dinh, Sohl-Dickstein & Bengio 2016).
//!
//! With identity features `x_A` and transformed features `x_B` (chosen by a mask),
//! `(r, t) = NN([x_A, c])`, the log-scale is soft-clamped `s = a tanh(r / a)`, and
//!
//! `z_A = x_A`, `z_B = x_B * exp(s) + t`, `log|det dz/dx| = sum_j s_j`;
//! inverse `x_B = (z_B - t) * exp(-s)`.
//!
//! The soft clamp (`a` = 3 by default) bounds every scale to `[e^-a, e^a]` and keeps gradients
//! smooth, so a single bad batch cannot blow up the flow.

use super::{LayerSpec, Param, Transform, gather_input, split_mask};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::nn::{Mlp, MlpConfig};
use serde::{Deserialize, Serialize};

/// Shape of an [`AffineCoupling`] layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AffineCouplingConfig {
    /// `mask[d]` is true for transformed features, false for features the conditioner reads.
    pub mask: Vec<bool>,
    /// Hidden widths of the conditioner MLP.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Soft-clamp bound `a` of the log-scale.
    #[serde(default = "default_clamp")]
    pub scale_clamp: f64,
    /// Residual connections in the conditioner.
    #[serde(default)]
    pub residual: bool,
    /// Dropout probability of the conditioner's hidden units in training.
    #[serde(default)]
    pub dropout: f64,
}

fn default_clamp() -> f64 {
    3.0
}

/// RealNVP affine coupling layer.
#[derive(Clone, Debug)]
pub struct AffineCoupling<T> {
    config: AffineCouplingConfig,
    id: Vec<usize>,
    tr: Vec<usize>,
    net: Mlp<T>,
}

impl<T: Real> AffineCoupling<T> {
    /// A new layer with a freshly initialised (identity-starting) conditioner.
    pub fn new(config: AffineCouplingConfig, rng: &mut Rng) -> Self {
        let (id, tr) = split_mask(&config.mask);
        let net = Mlp::new(
            MlpConfig {
                in_dim: id.len() + config.context_dim,
                hidden: config.hidden.clone(),
                out_dim: 2 * tr.len(),
                residual: config.residual,
                dropout: config.dropout,
            },
            rng,
        );
        Self {
            config,
            id,
            tr,
            net,
        }
    }

    /// From the conditioner output `h` (`n x 2|B|`: raw log-scales, then shifts) fills `s` with
    /// the clamped log-scales `a tanh(r / a)` and `es` with `exp(sign * s)`, both `n x |B|`.
    fn scales(&self, h: &Matrix<T>, sign: T, s: &mut Matrix<T>, es: &mut Matrix<T>) {
        let (n, ntr) = (h.rows(), self.tr.len());
        s.resize(n, ntr);
        for i in 0..n {
            s.row_mut(i).copy_from_slice(&h.row(i)[..ntr]);
        }
        T::soft_clamp_in_place(s.as_mut_slice(), T::c(self.config.scale_clamp));
        es.resize(n, ntr);
        for (e, v) in es.as_mut_slice().iter_mut().zip(s.as_slice()) {
            *e = sign * *v;
        }
        T::exp_in_place(es.as_mut_slice());
    }

    /// `out = in` except `out_B = (in_B + pre) * es + post` (with `pre`/`post` the shift `t` or 0)
    /// and `ladj += sign * sum_j s_j`.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        inp: &Matrix<T>,
        h: &Matrix<T>,
        s: &Matrix<T>,
        es: &Matrix<T>,
        inverse: bool,
        out: &mut Matrix<T>,
        ladj: &mut [T],
    ) {
        let ntr = self.tr.len();
        out.copy_from(inp);
        for (i, l) in ladj.iter_mut().enumerate().take(inp.rows()) {
            let t = &h.row(i)[ntr..];
            let (sr, er) = (s.row(i), es.row(i));
            let o = out.row_mut(i);
            let mut acc = T::zero();
            for (j, &d) in self.tr.iter().enumerate() {
                o[d] = if inverse {
                    (o[d] - t[j]) * er[j]
                } else {
                    o[d] * er[j] + t[j]
                };
                acc += sr[j];
            }
            if inverse {
                *l -= acc;
            } else {
                *l += acc;
            }
        }
    }

    /// Evaluation pass in either direction; `scratch` slots 0-3 hold the conditioner input and
    /// output, `s` and `exp(+-s)`, child 0 the conditioner's hidden layers.
    fn run(
        &self,
        inp: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        inverse: bool,
        out: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let mut net_in = std::mem::take(scratch.mat(0, 0, 0));
        let mut h = std::mem::take(scratch.mat(1, 0, 0));
        let mut s = std::mem::take(scratch.mat(2, 0, 0));
        let mut es = std::mem::take(scratch.mat(3, 0, 0));
        gather_input(inp, &self.id, ctx, &mut net_in);
        self.net.forward_reusing(&net_in, &mut h, scratch.child(0));
        let sign = if inverse { -T::one() } else { T::one() };
        self.scales(&h, sign, &mut s, &mut es);
        self.apply(inp, &h, &s, &es, inverse, out, ladj);
        *scratch.mat(0, 0, 0) = net_in;
        *scratch.mat(1, 0, 0) = h;
        *scratch.mat(2, 0, 0) = s;
        *scratch.mat(3, 0, 0) = es;
    }
}

impl<T: Real> Transform<T> for AffineCoupling<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::AffineCoupling(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.mask.len()
    }

    fn context_dim(&self) -> usize {
        self.config.context_dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        self.net.params()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        self.net.params_mut()
    }

    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]) {
        self.run(x, ctx, false, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.run(y, ctx, true, x, ladj, &mut Tape::default());
    }

    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(x, ctx, false, y, ladj, scratch);
    }

    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(y, ctx, true, x, ladj, scratch);
    }

    /// Tape slots: 0 conditioner input, 1 conditioner output `h`, 2/3 backward scratch,
    /// 4 clamped log-scales `s`, 5 `exp(s)`; child 0 is the conditioner's tape.
    fn forward_train(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    ) {
        let n = x.rows();
        gather_input(x, &self.id, ctx, tape.mat(0, n, 0));
        let mut h = std::mem::take(tape.mat(1, 0, 0));
        let mut s = std::mem::take(tape.mat(4, 0, 0));
        let mut es = std::mem::take(tape.mat(5, 0, 0));
        {
            let tape_seed = tape.seed;
            let (mats, children) = (&tape.mats, &mut tape.children);
            while children.is_empty() {
                children.push(Tape::default());
            }
            children[0].seed = tape_seed;
            self.net.forward_train(&mats[0], &mut h, &mut children[0]);
        }
        self.scales(&h, T::one(), &mut s, &mut es);
        self.apply(x, &h, &s, &es, false, y, ladj);
        *tape.mat(1, 0, 0) = h;
        *tape.mat(4, 0, 0) = s;
        *tape.mat(5, 0, 0) = es;
    }

    fn backward(
        &self,
        x: &Matrix<T>,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        grads: &mut [T],
    ) {
        let n = x.rows();
        let ntr = self.tr.len();
        let inv_a2 = T::one() / T::c(self.config.scale_clamp * self.config.scale_clamp);
        dx.copy_from(dy);
        // d(conditioner output) into slot 2. With s = a tanh(r / a): ds/dr = 1 - (s / a)^2.
        let mut dh = std::mem::take(tape.mat(2, n, 2 * ntr));
        {
            let (s, es) = (&tape.mats[4], &tape.mats[5]);
            for i in 0..n {
                let (sr, er) = (s.row(i), es.row(i));
                let xr = x.row(i);
                let dyr = dy.row(i);
                let dxr = dx.row_mut(i);
                let dhr = dh.row_mut(i);
                for (j, &d) in self.tr.iter().enumerate() {
                    dxr[d] = dyr[d] * er[j];
                    let ds = dyr[d] * xr[d] * er[j] + dladj[i];
                    dhr[j] = ds * (T::one() - sr[j] * sr[j] * inv_a2);
                    dhr[ntr + j] = dyr[d];
                }
            }
        }
        let mut dinp = std::mem::take(tape.mat(3, 0, 0));
        {
            while tape.children.len() < 2 {
                tape.children.push(Tape::default());
            }
            let (c0, c1) = tape.children.split_at_mut(1);
            self.net.backward(
                &tape.mats[0],
                &c0[0],
                &dh,
                Some(&mut dinp),
                grads,
                &mut c1[0],
            );
        }
        for i in 0..n {
            let di = dinp.row(i);
            let dxr = dx.row_mut(i);
            for (k, &d) in self.id.iter().enumerate() {
                dxr[d] += di[k];
            }
        }
        *tape.mat(2, 0, 0) = dh;
        *tape.mat(3, 0, 0) = dinp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::testing::{CheckOptions, check_transform};
    use crate::transforms::{alternating_mask, half_mask};

    fn layer(mask: Vec<bool>, ctx: usize, residual: bool) -> AffineCoupling<f64> {
        layer_with_dropout(mask, ctx, residual, 0.0)
    }

    fn layer_with_dropout(
        mask: Vec<bool>,
        ctx: usize,
        residual: bool,
        dropout: f64,
    ) -> AffineCoupling<f64> {
        let mut rng = Rng::new(3);
        AffineCoupling::new(
            AffineCouplingConfig {
                dropout,
                mask,
                hidden: vec![16, 16],
                context_dim: ctx,
                scale_clamp: 3.0,
                residual,
            },
            &mut rng,
        )
    }

    #[test]
    fn alternating_mask_passes_all_checks() {
        check_transform(
            Box::new(layer(alternating_mask(5, false), 0, false)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn dropout_conditioner_has_exact_gradients_for_its_mask() {
        // Training mode drops hidden units (fixed mask for a fixed tape seed); the gradient check
        // runs in training mode, the round trip in evaluation mode.
        for residual in [false, true] {
            check_transform(
                Box::new(layer_with_dropout(
                    alternating_mask(5, false),
                    2,
                    residual,
                    0.3,
                )),
                &CheckOptions::default(),
            );
        }
        // The mask really drops units: training output differs from evaluation output.
        let mut l = layer_with_dropout(alternating_mask(4, false), 0, true, 0.5);
        let mut rng = Rng::new(1);
        crate::transforms::testing::randomize_params(&mut l, 0.5, &mut rng);
        let x = Matrix::from_fn(16, 4, |_, _| rng.normal());
        let (mut y1, mut y2) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
        let (mut a, mut b) = (vec![0.0; 16], vec![0.0; 16]);
        l.forward(&x, None, &mut y1, &mut a);
        l.forward_train(&x, None, &mut y2, &mut b, &mut Tape::default());
        assert!(y1.max_abs_diff(&y2) > 1e-3);
    }

    #[test]
    fn half_mask_passes_all_checks() {
        check_transform(
            Box::new(layer(half_mask(6, true), 0, false)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn residual_conditioner_with_context_passes_all_checks() {
        check_transform(
            Box::new(layer(alternating_mask(4, true), 3, true)),
            &CheckOptions::default(),
        );
    }
}
