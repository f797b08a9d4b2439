//! Masked autoregressive flow layer (MAF; Papamakarios, Pavlakou & Murray 2017) with the
//! elementwise affine bijection of [`super::affine`] and a MADE conditioner ([`crate::nn::Made`]).
//!
//! Forward (data -> latent, the density direction, one network pass):
//! `(r, t) = MADE(x, c)`, soft-clamped log-scale `s = a tanh(r / a)`,
//! `z_d = x_d exp(s_d) + t_d`, `log|det dz/dx| = sum_d s_d`
//! (the Jacobian is triangular in the autoregressive order, since `s_d`, `t_d` depend only on the
//! features preceding `d`).
//!
//! Inverse (sampling direction, in the cost of about one network pass): for `k = 0..D`, with
//! `d = order[k]`, evaluate `(r_d, t_d)` of the MADE on the partially filled `x` (unfilled features
//! are zero and masked out; only the hidden units that become final with `x_{order[k-1]}` are
//! computed, [`crate::nn::Made::incremental_step`]) and set `x_d = (z_d - t_d) exp(-s_d)`;
//! `log|det dx/dz| = -sum_d s_d`.
//!
//! Backward (through the forward pass): `dL/dx_d = dL/dz_d exp(s_d) + [MADE input gradient]_d`
//! with `dL/dr_d = (dL/dz_d x_d exp(s_d) + dL/d ladj)(1 - tanh^2(r_d / a))`, `dL/dt_d = dL/dz_d`.

use super::affine::Affine;
use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::nn::made::MadeError;
use crate::nn::{Made, MadeConfig};
use serde::{Deserialize, Serialize};

/// Shape of a MAF layer (affine autoregressive transform with a MADE conditioner).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MafConfig {
    /// Number of features.
    pub dim: usize,
    /// Hidden widths of the MADE network.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Autoregressive order: feature `order[k]` is the k-th to be generated.
    pub order: Vec<usize>,
    /// Soft-clamp bound of the log-scale.
    #[serde(default = "default_clamp")]
    pub scale_clamp: f64,
}

fn default_clamp() -> f64 {
    3.0
}

/// Errors in a [`MafConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MafError {
    /// The MADE conditioner's shape is invalid (e.g. `order` is not a permutation).
    #[error("invalid MAF conditioner: {0}")]
    Made(#[from] MadeError),
    /// The soft-clamp bound is not a positive finite number.
    #[error("scale_clamp must be positive and finite, got {0}")]
    BadClamp(f64),
}

/// Affine MAF layer.
#[derive(Clone, Debug)]
pub struct Maf<T> {
    config: MafConfig,
    net: Made<T>,
}

impl<T: Real> Maf<T> {
    /// A new layer with an identity-starting conditioner, or an error for an invalid config.
    pub fn try_new(config: MafConfig, rng: &mut Rng) -> Result<Self, MafError> {
        if !(config.scale_clamp.is_finite() && config.scale_clamp > 0.0) {
            return Err(MafError::BadClamp(config.scale_clamp));
        }
        let net = Made::new(
            MadeConfig {
                dim: config.dim,
                hidden: config.hidden.clone(),
                context_dim: config.context_dim,
                out_per_feature: 2,
                order: config.order.clone(),
            },
            rng,
        )?;
        Ok(Self { config, net })
    }

    /// A new layer with an identity-starting conditioner. An invalid `order` is replaced by the
    /// natural order `0..dim` and an invalid `scale_clamp` by 3 (the stored config, returned by
    /// [`Transform::spec`], records the replacement); use [`Maf::try_new`] to reject them instead.
    pub fn new(config: MafConfig, rng: &mut Rng) -> Self {
        let mut config = config;
        let made_ok = MadeConfig {
            dim: config.dim,
            hidden: Vec::new(),
            context_dim: 0,
            out_per_feature: 2,
            order: config.order.clone(),
        }
        .validate()
        .is_ok();
        if !made_ok {
            config.order = (0..config.dim).collect();
        }
        if !(config.scale_clamp.is_finite() && config.scale_clamp > 0.0) {
            config.scale_clamp = default_clamp();
        }
        let net = Made::new(
            MadeConfig {
                dim: config.dim,
                hidden: config.hidden.clone(),
                context_dim: config.context_dim,
                out_per_feature: 2,
                order: config.order.clone(),
            },
            rng,
        );
        match net {
            Ok(net) => Self { config, net },
            // Unreachable: the order was repaired above and out_per_feature is 2.
            Err(_) => unreachable!("repaired MADE config is valid"),
        }
    }

    /// The conditioner network.
    pub fn made(&self) -> &Made<T> {
        &self.net
    }

    /// The elementwise bijection (shared with the affine coupling).
    fn affine(&self) -> Affine {
        Affine {
            clamp: self.config.scale_clamp,
        }
    }

    /// `(s, t)` of feature `d` from the raw conditioner output row `h`.
    #[inline]
    fn scale_shift(&self, h: &[T], d: usize) -> (T, T) {
        (self.affine().log_scale(h[d]), h[self.config.dim + d])
    }

    /// `y = x exp(s) + t` row by row from the conditioner output `h`; adds `sum s` to `ladj`.
    fn apply_forward(&self, x: &Matrix<T>, h: &Matrix<T>, y: &mut Matrix<T>, ladj: &mut [T]) {
        let d = self.config.dim;
        y.resize(x.rows(), d);
        for i in 0..x.rows() {
            let hr = h.row(i);
            let xr = x.row(i);
            let yr = y.row_mut(i);
            let mut acc = T::zero();
            for f in 0..d {
                let (s, t) = self.scale_shift(hr, f);
                yr[f] = Affine::forward(xr[f], s, t);
                acc += s;
            }
            if let Some(l) = ladj.get_mut(i) {
                *l += acc;
            }
        }
    }
}

impl<T: Real> Transform<T> for Maf<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Maf(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.dim
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
        self.forward_reusing(x, ctx, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.inverse_reusing(y, ctx, x, ladj, &mut Tape::default());
    }

    /// Scratch slots 0 and 1 hold the MADE input and output, child 0 the MADE's buffers.
    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let mut inp = std::mem::take(scratch.mat(0, 0, 0));
        let mut h = std::mem::take(scratch.mat(1, 0, 0));
        self.net.fill_input(x, ctx, &mut inp);
        self.net.forward_reusing(&inp, &mut h, scratch.child(0));
        self.apply_forward(&inp, &h, y, ladj);
        *scratch.mat(0, 0, 0) = inp;
        *scratch.mat(1, 0, 0) = h;
    }

    /// Slots 0 and 1 hold the MADE input and the raw `(r, t)` of every feature, slot 2 one
    /// step's `(r_d, t_d)`, child 0 the MADE's incremental buffers.
    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let n = y.rows();
        // `inp` holds [x, c]; the x part starts at zero and is filled in autoregressive order.
        let mut inp = std::mem::take(scratch.mat(0, 0, 0));
        let mut h = std::mem::take(scratch.mat(1, 0, 0));
        self.net.fill_input(y, ctx, &mut inp);
        for i in 0..n {
            inp.row_mut(i)[..d].fill(T::zero());
        }
        let mut step_out = std::mem::take(scratch.mat(2, 0, 0));
        h.resize(n, 2 * d);
        self.net.incremental_begin(n, scratch.child(0));
        for (k, &f) in self.config.order.iter().enumerate() {
            // x_f depends only on features before f in the order, all final by now.
            self.net
                .incremental_step(k, &inp, &mut step_out, scratch.child(0));
            for i in 0..n {
                let (hr, so) = (h.row_mut(i), step_out.row(i));
                (hr[f], hr[d + f]) = (so[0], so[1]);
                let (s, t) = self.scale_shift(hr, f);
                let z = y.row(i).get(f).copied().unwrap_or(T::zero());
                inp.row_mut(i)[f] = Affine::inverse(z, s, t);
            }
        }
        // `h` now holds the whole output of the MADE on the final x (each feature's (r, t) from
        // its final inputs), which gives the log-determinant.
        *scratch.mat(2, 0, 0) = step_out;
        x.resize(n, d);
        for i in 0..n {
            let ir = inp.row(i);
            x.row_mut(i).copy_from_slice(&ir[..d]);
            if d > 0 {
                let hr = h.row(i);
                let acc: T = (0..d).map(|f| self.scale_shift(hr, f).0).sum();
                if let Some(l) = ladj.get_mut(i) {
                    *l -= acc;
                }
            }
        }
        *scratch.mat(0, 0, 0) = inp;
        *scratch.mat(1, 0, 0) = h;
    }

    fn forward_train(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    ) {
        let mut inp = std::mem::take(tape.mat(0, 0, 0));
        let mut h = std::mem::take(tape.mat(1, 0, 0));
        self.net.fill_input(x, ctx, &mut inp);
        self.net.forward_train(&inp, &mut h, tape.child(0));
        self.apply_forward(&inp, &h, y, ladj);
        *tape.mat(0, 0, 0) = inp;
        *tape.mat(1, 0, 0) = h;
    }

    fn backward(
        &self,
        _x: &Matrix<T>,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        grads: &mut [T],
    ) {
        let d = self.config.dim;
        let affine = self.affine();
        let mut dh = std::mem::take(tape.mat(2, 0, 0));
        let mut dinp = std::mem::take(tape.mat(3, 0, 0));
        let _ = tape.child(1);
        let inp = &tape.mats[0];
        let h = &tape.mats[1];
        let n = inp.rows();
        dx.resize(n, d);
        dh.resize(n, 2 * d);
        for i in 0..n {
            let hr = h.row(i);
            let xr = inp.row(i);
            let dyr = dy.row(i);
            let dl = dladj.get(i).copied().unwrap_or(T::zero());
            let dxr = dx.row_mut(i);
            let dhr = dh.row_mut(i);
            for f in 0..d {
                let s = affine.log_scale(hr[f]);
                let es = s.exp();
                dxr[f] = dyr[f] * es;
                dhr[f] = (dyr[f] * xr[f] * es + dl) * affine.dlog_scale(s);
                dhr[d + f] = dyr[f];
            }
        }
        {
            let (c0, c1) = tape.children.split_at_mut(1);
            self.net
                .backward(inp, &c0[0], &dh, Some(&mut dinp), grads, &mut c1[0]);
        }
        for i in 0..n {
            let di = dinp.row(i);
            for (g, v) in dx.row_mut(i).iter_mut().zip(&di[..d]) {
                *g += *v;
            }
        }
        *tape.mat(2, 0, 0) = dh;
        *tape.mat(3, 0, 0) = dinp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::testing::{CheckOptions, check_transform, check_transform_f32};

    fn config(ctx: usize, seed: u64) -> MafConfig {
        let mut rng = Rng::new(seed);
        MafConfig {
            dim: 5,
            hidden: vec![16, 16],
            context_dim: ctx,
            order: rng.permutation(5),
            scale_clamp: 3.0,
        }
    }

    fn layer<T: Real>(ctx: usize) -> Maf<T> {
        let cfg = config(ctx, 21 + ctx as u64);
        assert_ne!(
            cfg.order,
            vec![0, 1, 2, 3, 4],
            "test wants a non-trivial order"
        );
        Maf::try_new(cfg, &mut Rng::new(4)).expect("valid config")
    }

    #[test]
    fn unconditional_passes_all_checks() {
        check_transform(Box::new(layer::<f64>(0)), &CheckOptions::default());
    }

    #[test]
    fn conditional_passes_all_checks() {
        check_transform(Box::new(layer::<f64>(3)), &CheckOptions::default());
    }

    #[test]
    fn f32_round_trip() {
        check_transform_f32(Box::new(layer::<f32>(0)), &CheckOptions::default());
        check_transform_f32(Box::new(layer::<f32>(3)), &CheckOptions::default());
    }

    #[test]
    fn starts_as_identity() {
        let t = layer::<f64>(3);
        let x = Matrix::from_fn(4, 5, |i, j| (i * 5 + j) as f64 - 7.0);
        let c = Matrix::from_fn(4, 3, |i, j| (i + j) as f64);
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; 4];
        t.forward(&x, Some(&c), &mut y, &mut l);
        assert_eq!(y, x);
        assert!(l.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn invalid_config_is_rejected_or_repaired() {
        let mut cfg = config(0, 1);
        cfg.order = vec![0, 1, 1, 2, 3];
        assert!(matches!(
            Maf::<f64>::try_new(cfg.clone(), &mut Rng::new(0)),
            Err(MafError::Made(_))
        ));
        let t = Maf::<f64>::new(cfg, &mut Rng::new(0));
        assert_eq!(
            t.spec(),
            LayerSpec::Maf(MafConfig {
                order: vec![0, 1, 2, 3, 4],
                ..config(0, 1)
            })
        );
        let mut cfg = config(0, 1);
        cfg.scale_clamp = f64::NAN;
        assert!(matches!(
            Maf::<f64>::try_new(cfg, &mut Rng::new(0)),
            Err(MafError::BadClamp(_))
        ));
    }
}
