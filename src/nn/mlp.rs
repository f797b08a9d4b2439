//! Multi-layer perceptron conditioner with a hand-written backward pass.
//!
//! `h_0 = input`, `h_l = act(h_{l-1} W_l^T + b_l)` for hidden layers, `out = h_L W_out^T + b_out`,
//! with `act` ReLU (the default) or a smooth [`Activation`].
//! With `residual = true`, hidden layers of equal width add a skip connection:
//! `h_l = h_{l-1} + act(h_{l-1} W_l^T + b_l)`.
//!
//! The backward pass needs `act'` at every hidden unit. For ReLU it is read off the saved outputs
//! (`[h > 0]`); for a smooth activation the training pass saves it next to the outputs (the
//! "slopes" `act'(a_l)`, times the inverted-dropout factor `m / (1 - p)` when dropout is on),
//! which the exact-trace code of [`crate::transforms::continuous`] reads too
//! ([`Mlp::slopes`]).
//! The output layer starts at zero, so every coupling layer starts as the identity (Glow's
//! initialisation), which keeps the first training steps stable.

use super::Activation;
use super::dropout::DropMask;
use crate::engine::dense;
use crate::engine::gemm::gemm_tn;
use crate::engine::matrix::transpose;
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::transforms::Param;
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shape of an [`Mlp`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MlpConfig {
    /// Input width (features read by the conditioner plus the context width).
    pub in_dim: usize,
    /// Widths of the hidden layers, e.g. `[128, 128]`.
    pub hidden: Vec<usize>,
    /// Output width.
    pub out_dim: usize,
    /// Skip connections between hidden layers of equal width.
    #[serde(default)]
    pub residual: bool,
    /// Dropout probability `p` of hidden units in training (inverted dropout: kept units are
    /// scaled by `1/(1-p)`, so evaluation uses the network as is).
    #[serde(default)]
    pub dropout: f64,
    /// Activation of the hidden layers (default ReLU, the only one before this option existed).
    #[serde(default)]
    pub activation: Activation,
}

/// A dense network; parameters are `layers.{l}.weight` (`out x in`) and `layers.{l}.bias`.
#[derive(Debug)]
pub struct Mlp<T> {
    config: MlpConfig,
    params: Vec<Param<T>>, // weight, bias, weight, bias, ...
    /// `W_l^T` (`in x out`) of every layer, so that the forward product `H W^T` reads a matrix
    /// with contiguous rows. Rebuilt in place (no allocation once sized) on the first forward
    /// pass after [`Mlp::params_mut`], which marks it stale.
    transposed: RwLock<Vec<Vec<T>>>,
    transposed_valid: AtomicBool,
}

impl<T: Clone> Clone for Mlp<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            params: self.params.clone(),
            transposed: RwLock::new(Vec::new()),
            transposed_valid: AtomicBool::new(false),
        }
    }
}

/// How an evaluation pass lays out its activations.
#[derive(Clone, Copy)]
enum Layout {
    /// One row per event (`n x width`).
    EventMajor,
    /// One row per feature (`width x n`): the kernel's vectors run over the events.
    FeatureMajor,
}

impl<T: Real> Mlp<T> {
    /// A network with PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) initialisation,
    /// except the output layer, which starts at zero.
    pub fn new(config: MlpConfig, rng: &mut Rng) -> Self {
        let mut params = Vec::new();
        let widths = Self::widths_of(&config);
        let n_layers = widths.len() - 1;
        for l in 0..n_layers {
            let (fan_in, fan_out) = (widths[l], widths[l + 1]);
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let last = l + 1 == n_layers;
            let w = (0..fan_in * fan_out)
                .map(|_| {
                    if last {
                        T::zero()
                    } else {
                        T::c(rng.uniform_range(-bound, bound))
                    }
                })
                .collect();
            let b = (0..fan_out)
                .map(|_| {
                    if last {
                        T::zero()
                    } else {
                        T::c(rng.uniform_range(-bound, bound))
                    }
                })
                .collect();
            params.push(Param::new(
                format!("layers.{l}.weight"),
                vec![fan_out, fan_in],
                w,
            ));
            params.push(Param::new(format!("layers.{l}.bias"), vec![fan_out], b));
        }
        Self {
            config,
            params,
            transposed: RwLock::new(Vec::new()),
            transposed_valid: AtomicBool::new(false),
        }
    }

    fn widths_of(c: &MlpConfig) -> Vec<usize> {
        let mut w = vec![c.in_dim];
        w.extend_from_slice(&c.hidden);
        w.push(c.out_dim);
        w
    }

    /// The network's shape.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Parameters in gradient order.
    pub fn params(&self) -> Vec<&Param<T>> {
        self.params.iter().collect()
    }

    /// Mutable parameters in gradient order (the caller may change them, so the transposed
    /// weights are marked stale).
    pub fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        *self.transposed_valid.get_mut() = false;
        self.params.iter_mut().collect()
    }

    /// Runs `f` on `W_l^T`, first rebuilding the transposed weights if the parameters changed.
    fn with_transposed<R>(&self, l: usize, f: impl FnOnce(&[T]) -> R) -> R {
        if !self.transposed_valid.load(Ordering::Acquire) {
            let mut all = self.transposed.write().unwrap_or_else(|e| e.into_inner());
            if !self.transposed_valid.load(Ordering::Acquire) {
                all.resize(self.n_layers(), Vec::new());
                for (layer, t) in all.iter_mut().enumerate() {
                    let w = &self.params[2 * layer];
                    let (fan_out, fan_in) = (w.shape[0], w.shape[1]);
                    t.resize(fan_in * fan_out, T::zero());
                    transpose(&w.data, fan_out, fan_in, t);
                }
                self.transposed_valid.store(true, Ordering::Release);
            }
        }
        let all = self.transposed.read().unwrap_or_else(|e| e.into_inner());
        f(&all[l])
    }

    /// Total number of scalars in the parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.data.len()).sum()
    }

    fn n_layers(&self) -> usize {
        self.params.len() / 2
    }

    fn skip(&self, l: usize) -> bool {
        // Residual connections only between hidden layers of equal width (not input/output).
        self.config.residual
            && l > 0
            && l < self.n_layers() - 1
            && self.params[2 * l].shape[0] == self.params[2 * l].shape[1]
    }

    /// One dense layer `out = act(inp W^T + b) (+ inp if skip)`; for a hidden layer with a smooth
    /// activation, `slope` (when given) receives `act'(inp W^T + b)`.
    fn layer(&self, l: usize, inp: &Matrix<T>, out: &mut Matrix<T>, slope: Option<&mut Matrix<T>>) {
        self.layer_in(Layout::EventMajor, l, inp, out, slope);
    }

    /// [`Mlp::layer`] with the activations in `layout`. The product differs between the layouts
    /// (the transposed weight on the right, or the weight as stored on the left); the
    /// activation and the skip connection are elementwise, the same code for both.
    fn layer_in(
        &self,
        layout: Layout,
        l: usize,
        inp: &Matrix<T>,
        out: &mut Matrix<T>,
        slope: Option<&mut Matrix<T>>,
    ) {
        let w = &self.params[2 * l];
        let b = &self.params[2 * l + 1].data;
        let (fan_out, fan_in) = (w.shape[0], w.shape[1]);
        let last = l + 1 == self.n_layers();
        let act = self.config.activation;
        // The skip connection is fused into the product's epilogue when the activation is
        // fused there too (ReLU); a smooth activation is applied after the product, so its
        // skip is added after it.
        let fused_skip = self.skip(l) && act.is_relu();
        let relu = !last && act.is_relu();
        let skip = fused_skip.then(|| inp.as_slice());
        match layout {
            Layout::EventMajor => {
                let n = inp.rows();
                out.resize(n, fan_out);
                self.with_transposed(l, |wt| {
                    let o = out.as_mut_slice();
                    dense::forward(n, fan_in, fan_out, inp.as_slice(), wt, b, relu, skip, o)
                });
            }
            Layout::FeatureMajor => {
                let n = inp.cols();
                out.resize(fan_out, n);
                let o = out.as_mut_slice();
                dense::forward_feature_major(
                    n,
                    fan_in,
                    fan_out,
                    inp.as_slice(),
                    &w.data,
                    b,
                    relu,
                    skip,
                    o,
                );
            }
        }
        if !last && !act.is_relu() {
            let slope = slope.map(|s| {
                s.resize(out.rows(), out.cols());
                s.as_mut_slice()
            });
            act.apply(out.as_mut_slice(), slope);
        }
        if self.skip(l) && !fused_skip {
            for (v, x) in out.as_mut_slice().iter_mut().zip(inp.as_slice()) {
                *v += *x;
            }
        }
    }

    /// Evaluation: `out = mlp(input)`.
    pub fn forward(&self, input: &Matrix<T>, out: &mut Matrix<T>) {
        self.forward_reusing(input, out, &mut Tape::default());
    }

    /// Evaluation like [`Mlp::forward`], keeping the hidden activations in `scratch` (slots 0
    /// and 1) so that repeated calls do not allocate.
    pub fn forward_reusing(&self, input: &Matrix<T>, out: &mut Matrix<T>, scratch: &mut Tape<T>) {
        self.forward_in(Layout::EventMajor, input, out, scratch);
    }

    /// Evaluation like [`Mlp::forward_reusing`] on feature-major activations: `input_t` is
    /// `in_dim x n` (one row per input feature, one column per event) and `out_t` becomes
    /// `out_dim x n`. Each layer is [`dense::forward_feature_major`], so in `f32` the output is
    /// the transpose of [`Mlp::forward_reusing`]'s, bit for bit; a narrow output layer (an
    /// affine coupling's 2 x 9 parameters) then fills whole vectors of the kernel.
    pub fn forward_feature_major(
        &self,
        input_t: &Matrix<T>,
        out_t: &mut Matrix<T>,
        scratch: &mut Tape<T>,
    ) {
        self.forward_in(Layout::FeatureMajor, input_t, out_t, scratch);
    }

    /// The evaluation pass with the activations in `layout`, hidden ones in `scratch` slots 0
    /// and 1.
    fn forward_in(
        &self,
        layout: Layout,
        input: &Matrix<T>,
        out: &mut Matrix<T>,
        scratch: &mut Tape<T>,
    ) {
        let nl = self.n_layers();
        if nl == 1 {
            self.layer_in(layout, 0, input, out, None);
            return;
        }
        let mut a = std::mem::take(scratch.mat(0, 0, 0));
        let mut b = std::mem::take(scratch.mat(1, 0, 0));
        self.layer_in(layout, 0, input, &mut a, None);
        for l in 1..nl - 1 {
            self.layer_in(layout, l, &a, &mut b, None);
            std::mem::swap(&mut a, &mut b);
        }
        self.layer_in(layout, nl - 1, &a, out, None);
        *scratch.mat(0, 0, 0) = a;
        *scratch.mat(1, 0, 0) = b;
    }

    /// Training forward pass: like [`Mlp::forward`], saving the hidden activations in
    /// `tape.mats[..L]` (`L` hidden layers) and, for a smooth activation, their slopes in
    /// `tape.mats[L..2L]` (see [`Mlp::slopes`]).
    pub fn forward_train(&self, input: &Matrix<T>, out: &mut Matrix<T>, tape: &mut Tape<T>) {
        let nl = self.n_layers();
        let smooth = !self.config.activation.is_relu();
        let kept = if smooth { 2 * (nl - 1) } else { nl - 1 };
        while tape.mats.len() < kept {
            tape.mats.push(Matrix::zeros(0, 0));
        }
        let p = self.config.dropout;
        let (acts, slopes) = tape.mats.split_at_mut(nl - 1);
        for l in 0..nl - 1 {
            let (done, rest) = acts.split_at_mut(l);
            let inp = if l == 0 { input } else { &done[l - 1] };
            let mut slope = if smooth { slopes.get_mut(l) } else { None };
            self.layer(l, inp, &mut rest[0], slope.as_deref_mut());
            if p > 0.0 {
                // Inverted dropout on the ReLU branch: r <- r m / (1 - p), m ~ Bernoulli(1 - p),
                // masks from the step seed and the layer (the MADE's masks, `DropMask`).
                let mut mask = DropMask::new(tape.seed, l, p);
                let scale = T::c(1.0 / (1.0 - p));
                let out = rest[0].as_mut_slice();
                let mut slope = slope.map(|s| s.as_mut_slice());
                let skip = self.skip(l);
                for (idx, o) in out.iter_mut().enumerate() {
                    let drop = mask.dropped();
                    if skip {
                        let x = inp.as_slice()[idx];
                        *o = x + if drop { T::zero() } else { (*o - x) * scale };
                    } else {
                        *o = if drop { T::zero() } else { *o * scale };
                    }
                    if let Some(s) = slope.as_deref_mut() {
                        s[idx] = if drop { T::zero() } else { s[idx] * scale };
                    }
                }
            }
        }
        let inp = if nl == 1 { input } else { &tape.mats[nl - 2] };
        self.layer(nl - 1, inp, out, None);
    }

    /// The slopes `act'(a_l)` of the hidden layers saved by [`Mlp::forward_train`] in `tape`
    /// (times the dropout factor), one matrix per hidden layer; `None` for ReLU, whose slope is
    /// `[a_l > 0]` (read it off the saved outputs).
    pub fn slopes<'a>(&self, tape: &'a Tape<T>) -> Option<&'a [Matrix<T>]> {
        let nl = self.n_layers();
        (!self.config.activation.is_relu()).then(|| &tape.mats[nl - 1..2 * (nl - 1)])
    }

    /// Backward pass: given `dout = dL/d out`, adds `dL/d theta` into `grads` (length
    /// [`Mlp::num_params`]) and, when asked, writes `dL/d input` into `dinput`.
    /// `scratch` is a tape of reusable buffers (two slots).
    pub fn backward(
        &self,
        input: &Matrix<T>,
        tape: &Tape<T>,
        dout: &Matrix<T>,
        dinput: Option<&mut Matrix<T>>,
        grads: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let nl = self.n_layers();
        let n = input.rows();
        // Offset of layer l's weight inside `grads`.
        let offset =
            |l: usize| -> usize { self.params[..2 * l].iter().map(|p| p.data.len()).sum() };
        let mut cur = std::mem::take(scratch.mat(0, 0, 0));
        let mut nxt = std::mem::take(scratch.mat(1, 0, 0));
        cur.copy_from(dout);
        let mut dinput = dinput;
        for l in (0..nl).rev() {
            let w = &self.params[2 * l];
            let (fan_out, fan_in) = (w.shape[0], w.shape[1]);
            let inp = if l == 0 { input } else { &tape.mats[l - 1] };
            // cur = dL/d(pre-activation) of layer l (already masked by relu' for hidden layers).
            let (gw, rest) = grads[offset(l)..].split_at_mut(fan_out * fan_in);
            gemm_tn(
                fan_out,
                n,
                fan_in,
                T::one(),
                cur.as_slice(),
                inp.as_slice(),
                T::one(),
                gw,
            );
            dense::add_col_sums(n, cur.as_slice(), fan_out, &mut rest[..fan_out]);
            if l == 0 && dinput.is_none() {
                break;
            }
            let target: &mut Matrix<T> = if l == 0 {
                dinput.as_deref_mut().expect("checked")
            } else {
                &mut nxt
            };
            target.resize(n, fan_in);
            // Without skip connections the ReLU derivative of layer l-1 (and its dropout
            // factor) is applied inside the product; see below for the general case.
            let keep = T::c(1.0 / (1.0 - self.config.dropout));
            let slopes = self.slopes(tape);
            let fused_gate = slopes.is_none() && l > 0 && !self.skip(l) && !self.skip(l - 1);
            dense::input_grad(
                n,
                fan_out,
                fan_in,
                cur.as_slice(),
                &w.data,
                fused_gate.then(|| tape.mats[l - 1].as_slice()),
                keep,
                target.as_mut_slice(),
            );
            if l == 0 {
                break;
            }
            if fused_gate {
                std::mem::swap(&mut cur, &mut nxt);
                continue;
            }
            // Residual: d h_{l-1} also receives dcur directly (the skip), where layer l skips.
            let skip_grad = self.skip(l);
            if skip_grad {
                // The gradient reaching layer l's output is dout_l; with skip,
                // d inp += dout_l. Here `cur` was already masked by relu', so we need the
                // unmasked dout_l, kept in slot 2 of the scratch tape.
                let du = &scratch.mats[2];
                for (t, u) in nxt.as_mut_slice().iter_mut().zip(du.as_slice()) {
                    *t += *u;
                }
            }
            // Mask by relu' of layer l-1 (its output h_{l-1} > 0 <=> pre-activation > 0; for a
            // residual layer the relu part is h - h_in, handled via the saved activations).
            // With dropout, dropped units read as inactive too, and kept ones carry the factor
            // 1/(1-p) of the forward pass.
            if let Some(slopes) = slopes {
                // Smooth activation: the saved slope act'(a) (dropout factor included).
                if self.skip(l - 1) {
                    scratch.mat(2, n, fan_in).copy_from(&nxt);
                }
                for (g, s) in nxt.as_mut_slice().iter_mut().zip(slopes[l - 1].as_slice()) {
                    *g *= *s;
                }
                std::mem::swap(&mut cur, &mut nxt);
                continue;
            }
            let h = &tape.mats[l - 1];
            if self.skip(l - 1) {
                let hin = &tape.mats[l - 2];
                let du = scratch.mat(2, n, fan_in);
                du.copy_from(&nxt);
                for ((g, hv), hi) in nxt
                    .as_mut_slice()
                    .iter_mut()
                    .zip(h.as_slice())
                    .zip(hin.as_slice())
                {
                    *g = if *hv - *hi <= T::zero() {
                        T::zero()
                    } else {
                        *g * keep
                    };
                }
            } else {
                for (g, hv) in nxt.as_mut_slice().iter_mut().zip(h.as_slice()) {
                    *g = if *hv <= T::zero() {
                        T::zero()
                    } else {
                        *g * keep
                    };
                }
            }
            std::mem::swap(&mut cur, &mut nxt);
        }
        *scratch.mat(0, 0, 0) = cur;
        *scratch.mat(1, 0, 0) = nxt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameter and input gradients of `sum(out * r)` against central differences of the same
    /// training pass (same dropout masks), for every activation, with residual layers and
    /// dropout.
    #[test]
    fn backward_matches_finite_differences_for_every_activation() {
        for act in Activation::ALL {
            for (residual, dropout) in [(false, 0.0), (true, 0.0), (true, 0.3), (false, 0.3)] {
                let mut rng = Rng::new(11);
                let cfg = MlpConfig {
                    in_dim: 3,
                    hidden: vec![8, 8, 8],
                    out_dim: 2,
                    residual,
                    dropout,
                    activation: act,
                };
                let mut net = Mlp::<f64>::new(cfg, &mut rng);
                for p in net.params_mut() {
                    p.data.iter_mut().for_each(|v| *v = 0.6 * rng.normal());
                }
                let x = Matrix::from_fn(7, 3, |_, _| rng.normal());
                let r = Matrix::from_fn(7, 2, |_, _| rng.normal());
                let loss = |net: &Mlp<f64>, x: &Matrix<f64>| {
                    let mut tape = Tape {
                        seed: 5,
                        ..Tape::default()
                    };
                    let mut out = Matrix::zeros(0, 0);
                    net.forward_train(x, &mut out, &mut tape);
                    let l: f64 = out
                        .as_slice()
                        .iter()
                        .zip(r.as_slice())
                        .map(|(a, b)| a * b)
                        .sum();
                    (l, tape)
                };
                let (_, tape) = loss(&net, &x);
                let mut grads = vec![0.0; net.num_params()];
                let mut dx = Matrix::zeros(0, 0);
                net.backward(
                    &x,
                    &tape,
                    &r,
                    Some(&mut dx),
                    &mut grads,
                    &mut Tape::default(),
                );
                let eps = 1e-6;
                let mut flat: Vec<f64> = net.params().iter().flat_map(|p| p.data.clone()).collect();
                let set = |net: &mut Mlp<f64>, v: &[f64]| {
                    let mut off = 0;
                    for p in net.params_mut() {
                        let n = p.data.len();
                        p.data.copy_from_slice(&v[off..off + n]);
                        off += n;
                    }
                };
                for k in 0..flat.len() {
                    let orig = flat[k];
                    flat[k] = orig + eps;
                    set(&mut net, &flat);
                    let up = loss(&net, &x).0;
                    flat[k] = orig - eps;
                    set(&mut net, &flat);
                    let dn = loss(&net, &x).0;
                    flat[k] = orig;
                    set(&mut net, &flat);
                    let fd = (up - dn) / (2.0 * eps);
                    assert!(
                        (fd - grads[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "{act} residual {residual} dropout {dropout} param {k}: {fd} vs {}",
                        grads[k]
                    );
                }
                for k in 0..x.as_slice().len() {
                    let (mut up, mut dn) = (x.clone(), x.clone());
                    up.as_mut_slice()[k] += eps;
                    dn.as_mut_slice()[k] -= eps;
                    let fd = (loss(&net, &up).0 - loss(&net, &dn).0) / (2.0 * eps);
                    assert!(
                        (fd - dx.as_slice()[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "{act} input {k}: {fd} vs {}",
                        dx.as_slice()[k]
                    );
                }
                assert!(grads.iter().any(|g| g.abs() > 1e-3));
            }
        }
    }

    /// The dropout masks drop a fraction `p` of hidden units (within sampling error), are the same
    /// for the same tape seed and differ for another.
    #[test]
    fn dropout_masks_have_rate_p_and_follow_the_seed() {
        let mut rng = Rng::new(3);
        for &p in &[0.1, 0.25, 0.5] {
            let cfg = MlpConfig {
                in_dim: 4,
                hidden: vec![64],
                out_dim: 2,
                residual: false,
                dropout: p,
                activation: Activation::Relu,
            };
            let net = Mlp::<f64>::new(cfg, &mut rng);
            let x = Matrix::from_fn(500, 4, |_, _| rng.normal());
            let hidden = |seed: u64| {
                let mut tape = Tape {
                    seed,
                    ..Tape::default()
                };
                let mut out = Matrix::zeros(0, 0);
                net.forward_train(&x, &mut out, &mut tape);
                tape.mats[0].clone()
            };
            let mut full = Matrix::zeros(0, 0);
            net.layer(0, &x, &mut full, None);
            let (h, again, other) = (hidden(7), hidden(7), hidden(8));
            assert_eq!(h.as_slice(), again.as_slice());
            assert_ne!(h.as_slice(), other.as_slice());
            // Among the units active without dropout, the dropped ones read 0.
            let (mut active, mut dropped) = (0usize, 0usize);
            for (&f, &d) in full.as_slice().iter().zip(h.as_slice()) {
                if f > 0.0 {
                    active += 1;
                    if d == 0.0 {
                        dropped += 1;
                    } else {
                        assert!((d - f / (1.0 - p)).abs() < 1e-12);
                    }
                }
            }
            let rate = dropped as f64 / active as f64;
            let sigma = (p * (1.0 - p) / active as f64).sqrt();
            assert!(
                (rate - p).abs() < 5.0 * sigma,
                "p {p}: rate {rate}, {active} active"
            );
        }
    }
}
