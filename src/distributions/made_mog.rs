//! MADE-MoG: an autoregressive mixture of Gaussians whose parameters come from one MADE network
//! (Papamakarios, Pavlakou & Murray 2017, "MADE MoG"; nflows' `MADEMoG`).
//!
//! For every feature `d` and component `k = 1..K` the network ([`crate::nn::Made`]) outputs a
//! logit `a_dk`, a mean `mu_dk` and a raw log-std `r_dk` that depend only on the features
//! preceding `d` in the autoregressive `order` (and on the context `c`). With the soft-clamped
//! log-std `s = A tanh(r / A)` (as the MAF's log-scale, [`crate::transforms::Affine`]; `A` =
//! `log_scale_clamp`, so every `sigma = e^s` lies in `[e^-A, e^A]`):
//!
//! `log p(x | c) = sum_d log sum_k pi_dk N(x_d; mu_dk, sigma_dk)`, `pi_dk = softmax_k(a_dk)`,
//!
//! evaluated as a log-sum-exp per feature: with `u_k = (x_d - mu_k) e^{-s_k}`,
//! `l_k = a_k - logsumexp(a) - u_k^2 / 2 - s_k - log(2 pi) / 2` and `L_d = logsumexp_k l_k`.
//! One network pass gives the density; the product over `d` is normalised because every factor
//! is a normalised density of `x_d` given the preceding features.
//!
//! Gradients (posterior `gamma_k = e^{l_k - L_d}`, prior `pi_k = e^{a_k - logsumexp(a)}`):
//! `dL_d/da_k = gamma_k - pi_k`, `dL_d/dmu_k = gamma_k u_k e^{-s_k}`,
//! `dL_d/dr_k = gamma_k (u_k^2 - 1) (1 - (s_k / A)^2)`, and directly
//! `dL_d/dx_d = -sum_k gamma_k u_k e^{-s_k}`; the MADE's backward pass carries the output
//! gradients to its parameters and to the preceding features (and the context).
//!
//! Sampling (ancestral, in the cost of about one network pass): for `d = order[0], order[1], ...`,
//! evaluate the network on the features drawn so far (only the hidden units that become final
//! with them and the `3K` outputs of `d`, [`crate::nn::Made::incremental_step`]), pick component `k` with probability `pi_dk` by the
//! uniform `v_d` and set `x_d = mu_dk + sigma_dk e_d` with the normal `e_d`. Event `index` of the
//! sample with seed `seed` takes `(v_d, e_d)` for the `k`-th feature of the order from
//! `Rng::stream(seed, index)` in the order `v, e, v, e, ...`.
//!
//! Initialisation: the MADE's output layer starts at zero except the means' biases, spread evenly
//! over `[-2, 2]` (`mu_k = -2 + 4 (k + 1/2) / K`), so the components start apart (identical
//! components would receive identical gradients forever) with equal weights and unit widths.
//!
//! Regularisation: `dropout` drops the MADE's hidden units in the training pass only
//! ([`crate::nn::Made::set_dropout`]; masks from the training step's seed); the density, its
//! evaluation and sampling use the whole network.

use super::{BaseSpec, Distribution};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::nn::{Made, MadeConfig};
use crate::transforms::{Affine, Param};
use serde::{Deserialize, Serialize};

/// The most mixture components per feature.
pub const MAX_COMPONENTS: usize = 64;

/// `log(2 pi) / 2`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Shape of a MADE-MoG distribution.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MadeMogConfig {
    /// Number of features `D`.
    pub dim: usize,
    /// Hidden widths of the MADE network.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Mixture components `K` per feature.
    pub components: usize,
    /// Autoregressive order: feature `order[k]` is the k-th to be generated.
    pub order: Vec<usize>,
    /// Soft-clamp bound `A` of the log-std.
    #[serde(default = "default_clamp")]
    pub log_scale_clamp: f64,
    /// Dropout probability of the MADE's hidden units in training (0 = none; not written to
    /// model files when 0, so files without it read as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Default soft-clamp bound of the log-std: widths between `e^-5` and `e^5` of the standardised
/// features.
pub const DEFAULT_LOG_SCALE_CLAMP: f64 = 5.0;

fn default_clamp() -> f64 {
    DEFAULT_LOG_SCALE_CLAMP
}

impl MadeMogConfig {
    /// Checks the shape against `dim` features: components in `1..=64`, `order` a permutation,
    /// a positive finite clamp.
    pub fn validate(&self, dim: usize) -> Result<(), String> {
        if self.dim != dim {
            return Err(format!("dim is {}, expected {dim}", self.dim));
        }
        if !(1..=MAX_COMPONENTS).contains(&self.components) {
            return Err(format!(
                "components = {} (must be between 1 and {MAX_COMPONENTS})",
                self.components
            ));
        }
        if !(self.log_scale_clamp.is_finite() && self.log_scale_clamp > 0.0) {
            return Err(format!(
                "log_scale_clamp = {} (must be finite and > 0)",
                self.log_scale_clamp
            ));
        }
        if !(0.0..0.9).contains(&self.dropout) {
            return Err(format!("dropout = {} (must be in [0, 0.9))", self.dropout));
        }
        self.made_config().validate().map_err(|e| e.to_string())
    }

    fn made_config(&self) -> MadeConfig {
        MadeConfig {
            dim: self.dim,
            hidden: self.hidden.clone(),
            context_dim: self.context_dim,
            out_per_feature: 3 * self.components,
            order: self.order.clone(),
        }
    }
}

/// Per-component quantities of one feature of one row (see the module documentation).
struct Terms<T> {
    /// `l_k`.
    l: [T; MAX_COMPONENTS],
    /// `u_k = (x - mu_k) e^{-s_k}`.
    u: [T; MAX_COMPONENTS],
    /// `e^{-s_k}`.
    inv_sigma: [T; MAX_COMPONENTS],
    /// Clamped log-stds `s_k`.
    s: [T; MAX_COMPONENTS],
    /// `logsumexp_k a_k`.
    lse_a: T,
    /// `L_d = logsumexp_k l_k`.
    total: T,
}

impl<T: Real> Terms<T> {
    fn new() -> Self {
        let z = [T::zero(); MAX_COMPONENTS];
        Self {
            l: z,
            u: z,
            inv_sigma: z,
            s: z,
            lse_a: T::zero(),
            total: T::zero(),
        }
    }
}

/// `log sum_k e^{v_k}`, stable (the largest term factored out).
fn log_sum_exp<T: Real>(v: impl Iterator<Item = T> + Clone) -> T {
    let m = v.clone().fold(T::neg_infinity(), |a, b| a.max(b));
    if !m.is_finite() {
        return m;
    }
    let s: T = v.map(|x| (x - m).exp()).sum();
    m + s.ln()
}

/// The MADE-MoG distribution (see the module documentation); parameters `layers.{l}.weight`
/// and `layers.{l}.bias` of its MADE (`base.layers.…` in the model file).
#[derive(Clone, Debug)]
pub struct MadeMog<T> {
    config: MadeMogConfig,
    net: Made<T>,
}

impl<T: Real> MadeMog<T> {
    /// A new distribution, or an error for an invalid config.
    pub fn try_new(config: MadeMogConfig, rng: &mut Rng) -> Result<Self, String> {
        config.validate(config.dim)?;
        let mut net = Made::new(config.made_config(), rng).map_err(|e| e.to_string())?;
        net.set_dropout(config.dropout);
        let (k, d) = (config.components, config.dim);
        if let Some(bias) = net.params_mut().pop() {
            for j in 0..k {
                let mu = -2.0 + 4.0 * (j as f64 + 0.5) / k as f64;
                bias.data[(k + j) * d..(k + j + 1) * d].fill(T::c(mu));
            }
        }
        Ok(Self { config, net })
    }

    /// A new distribution; an invalid config is repaired (natural order, components clamped to
    /// `1..=64`, the default clamp) so that building never fails. Model files are validated
    /// before they are built ([`BaseSpec::validate`]).
    pub fn new(config: MadeMogConfig, rng: &mut Rng) -> Self {
        let mut config = config;
        if config.validate(config.dim).is_err() {
            config.order = (0..config.dim).collect();
            config.components = config.components.clamp(1, MAX_COMPONENTS);
            if !(config.log_scale_clamp.is_finite() && config.log_scale_clamp > 0.0) {
                config.log_scale_clamp = DEFAULT_LOG_SCALE_CLAMP;
            }
            if !(0.0..0.9).contains(&config.dropout) {
                config.dropout = 0.0;
            }
        }
        match Self::try_new(config, rng) {
            Ok(m) => m,
            Err(e) => unreachable!("repaired MADE-MoG config is valid: {e}"),
        }
    }

    /// The shape.
    pub fn config(&self) -> &MadeMogConfig {
        &self.config
    }

    /// The network.
    pub fn made(&self) -> &Made<T> {
        &self.net
    }

    fn clamp(&self) -> Affine {
        Affine {
            clamp: self.config.log_scale_clamp,
        }
    }

    /// Fills `t` for feature `f` of value `x` from the network output row `h`; returns `L_f`.
    fn terms(&self, h: &[T], f: usize, x: T, t: &mut Terms<T>) -> T {
        let (k, d) = (self.config.components, self.config.dim);
        let clamp = self.clamp();
        t.lse_a = log_sum_exp((0..k).map(|j| h[j * d + f]));
        let half_ln_2pi = T::c(HALF_LN_2PI);
        for j in 0..k {
            let s = clamp.log_scale(h[(2 * k + j) * d + f]);
            let inv_sigma = (-s).exp();
            let u = (x - h[(k + j) * d + f]) * inv_sigma;
            t.s[j] = s;
            t.inv_sigma[j] = inv_sigma;
            t.u[j] = u;
            t.l[j] = h[j * d + f] - t.lse_a - T::c(0.5) * u * u - s - half_ln_2pi;
        }
        t.total = log_sum_exp(t.l[..k].iter().copied());
        t.total
    }

    /// Runs the network on `[z, c]`, leaving its input in slot 0 and output in slot 1 of `tape`
    /// (its own buffers in child 0). `train`: the training pass (dropout, masks from
    /// `tape.seed`), else the evaluation pass.
    fn run_net(&self, z: &Matrix<T>, ctx: Option<&Matrix<T>>, tape: &mut Tape<T>, train: bool) {
        let mut inp = std::mem::take(tape.mat(0, 0, 0));
        let mut h = std::mem::take(tape.mat(1, 0, 0));
        self.net.fill_input(z, ctx, &mut inp);
        let seed = tape.seed;
        let net_tape = tape.child(0);
        if train {
            net_tape.seed = seed;
            self.net.forward_train(&inp, &mut h, net_tape);
        } else {
            self.net.forward_reusing(&inp, &mut h, net_tape);
        }
        *tape.mat(0, 0, 0) = inp;
        *tape.mat(1, 0, 0) = h;
    }

    /// `log p(z_i | c_i)` of every row into `lp`, by the training (`train`) or evaluation pass
    /// of the network; `tape` as in [`MadeMog::run_net`].
    fn log_prob_pass(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        tape: &mut Tape<T>,
        train: bool,
    ) {
        self.run_net(z, ctx, tape, train);
        let h = &tape.mats[1];
        let mut t = Terms::new();
        lp.clear();
        for i in 0..z.rows() {
            let (hr, zr) = (h.row(i), z.row(i));
            let mut acc = T::zero();
            for (f, &x) in zr.iter().enumerate().take(self.config.dim) {
                acc += self.terms(hr, f, x, &mut t);
            }
            lp.push(acc);
        }
    }

    /// `log p(x_d | x_<d, c)` of every feature: row `i`, column `d` (their sum over `d` is
    /// `log p(x_i | c_i)`).
    pub fn feature_log_probs(&self, z: &Matrix<T>, ctx: Option<&Matrix<T>>) -> Matrix<T> {
        let mut tape = Tape::default();
        self.run_net(z, ctx, &mut tape, false);
        let d = self.config.dim;
        let mut t = Terms::new();
        Matrix::from_fn(z.rows(), d, |i, f| {
            self.terms(tape.mats[1].row(i), f, z.get(i, f), &mut t)
        })
    }

    /// Writes `dL/dh` of feature `f` (given `g = dL/dL_f`) into `dh` and returns the direct
    /// `dL/dx_f`.
    fn feature_backward(&self, t: &Terms<T>, h: &[T], f: usize, g: T, dh: &mut [T]) -> T {
        let (k, d) = (self.config.components, self.config.dim);
        let clamp = self.clamp();
        let mut dx = T::zero();
        for j in 0..k {
            let gamma = (t.l[j] - t.total).exp();
            let pi = (h[j * d + f] - t.lse_a).exp();
            let (u, is) = (t.u[j], t.inv_sigma[j]);
            dh[j * d + f] = g * (gamma - pi);
            dh[(k + j) * d + f] = g * gamma * u * is;
            dh[(2 * k + j) * d + f] = g * gamma * (u * u - T::one()) * clamp.dlog_scale(t.s[j]);
            dx -= g * gamma * u * is;
        }
        dx
    }

    /// The component of feature `f` that the uniform `v` picks from the network outputs `h`,
    /// laid out with `d` columns per block (the full output: `d` = D).
    fn pick(&self, h: &[T], f: usize, d: usize, v: T) -> usize {
        let k = self.config.components;
        let m = (0..k)
            .map(|j| h[j * d + f])
            .fold(T::neg_infinity(), |a, b| a.max(b));
        // Each weight's exponential once (the same values, and sums, as computing them twice).
        let mut w = [T::zero(); MAX_COMPONENTS];
        for (j, wj) in w[..k].iter_mut().enumerate() {
            *wj = (h[j * d + f] - m).exp();
        }
        let total: T = w[..k].iter().copied().sum();
        let target = v * total;
        let mut acc = T::zero();
        for (j, wj) in w[..k].iter().enumerate() {
            acc += *wj;
            if target < acc {
                return j;
            }
        }
        k - 1
    }
}

impl<T: Real> Distribution<T> for MadeMog<T> {
    fn spec(&self) -> BaseSpec {
        BaseSpec::MadeMog(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        self.net.params()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        self.net.params_mut()
    }

    /// Scratch slots 0 and 1 hold the network input and output, child 0 the network's buffers.
    fn log_prob_reusing(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        scratch: &mut Tape<T>,
    ) {
        self.log_prob_pass(z, ctx, lp, scratch, false);
    }

    /// As [`Distribution::log_prob_reusing`] with the MADE's training pass (its dropout).
    fn log_prob_train(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        tape: &mut Tape<T>,
    ) {
        self.log_prob_pass(z, ctx, lp, tape, true);
    }

    /// Slots 2 and 3 hold `dL/dh` and the network's input gradient, child 1 its scratch.
    fn backward(
        &self,
        z: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dlp: &[T],
        dz: Option<&mut Matrix<T>>,
        grads: &mut [T],
    ) {
        let (n, d) = (z.rows(), self.config.dim);
        let mut dh = std::mem::take(tape.mat(2, n, 3 * self.config.components * d));
        let mut dinp = std::mem::take(tape.mat(3, 0, 0));
        let _ = tape.child(1);
        let (inp, h) = (&tape.mats[0], &tape.mats[1]);
        let mut direct = dz;
        if let Some(dz) = direct.as_deref_mut() {
            dz.resize(n, d);
        }
        let mut t = Terms::new();
        for i in 0..n {
            let g = dlp.get(i).copied().unwrap_or(T::zero());
            let (hr, dhr) = (h.row(i), dh.row_mut(i));
            for f in 0..d {
                self.terms(hr, f, z.get(i, f), &mut t);
                let dx = self.feature_backward(&t, hr, f, g, dhr);
                if let Some(dz) = direct.as_deref_mut() {
                    dz.row_mut(i)[f] = dx;
                }
            }
        }
        let (c0, c1) = tape.children.split_at_mut(1);
        match direct {
            Some(dz) => {
                self.net
                    .backward(inp, &c0[0], &dh, Some(&mut dinp), grads, &mut c1[0]);
                for i in 0..n {
                    for (g, v) in dz.row_mut(i).iter_mut().zip(&dinp.row(i)[..d]) {
                        *g += *v;
                    }
                }
            }
            None => self.net.backward(inp, &c0[0], &dh, None, grads, &mut c1[0]),
        }
        *tape.mat(2, 0, 0) = dh;
        *tape.mat(3, 0, 0) = dinp;
    }

    /// Slot 2 holds the draws `(v, e)` per row, slots 0 and 1 the network input and output.
    fn sample_reusing(
        &self,
        seed: u64,
        indices: &[u64],
        ctx: Option<&Matrix<T>>,
        out: &mut Matrix<T>,
        scratch: &mut Tape<T>,
    ) {
        let (n, d) = (indices.len(), self.config.dim);
        let noise = scratch.mat(2, n, 2 * d);
        for (r, &idx) in indices.iter().enumerate() {
            let mut rng = Rng::stream(seed, idx);
            for v in noise.row_mut(r).chunks_exact_mut(2) {
                v[0] = T::c(rng.uniform());
                v[1] = T::c(rng.normal());
            }
        }
        let noise = std::mem::take(&mut scratch.mats[2]);
        let mut inp = std::mem::take(scratch.mat(0, 0, 0));
        let mut h = std::mem::take(scratch.mat(1, 0, 0));
        out.resize(n, d);
        out.as_mut_slice().fill(T::zero());
        self.net.fill_input(out, ctx, &mut inp);
        let (k, clamp) = (self.config.components, self.clamp());
        self.net.incremental_begin(n, scratch.child(0));
        for (step, &f) in self.config.order.iter().enumerate() {
            // x_f depends only on the features before f in the order, all drawn by now; `h`
            // gets its `3K` network outputs: logits, means, raw log-stds.
            self.net
                .incremental_step(step, &inp, &mut h, scratch.child(0));
            for r in 0..n {
                let (hr, nr) = (h.row(r), noise.row(r));
                let j = self.pick(hr, 0, 1, nr[2 * step]);
                let sigma = clamp.log_scale(hr[2 * k + j]).exp();
                inp.row_mut(r)[f] = hr[k + j] + sigma * nr[2 * step + 1];
            }
        }
        for r in 0..n {
            out.row_mut(r).copy_from_slice(&inp.row(r)[..d]);
        }
        *scratch.mat(0, 0, 0) = inp;
        *scratch.mat(1, 0, 0) = h;
        scratch.mats[2] = noise;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dim: usize, ctx: usize, k: usize, order: Vec<usize>) -> MadeMogConfig {
        MadeMogConfig {
            dim,
            hidden: vec![16, 16],
            context_dim: ctx,
            components: k,
            order,
            log_scale_clamp: 3.0,
            dropout: 0.0,
        }
    }

    /// A distribution with every parameter random (weights ~ N(0, scale^2)), so the weights,
    /// means and widths depend on the preceding features and differ between components.
    fn random(cfg: MadeMogConfig, scale: f64, seed: u64) -> MadeMog<f64> {
        let mut rng = Rng::new(seed);
        let mut m = MadeMog::try_new(cfg, &mut rng).expect("valid config");
        for p in m.params_mut() {
            for v in p.data.iter_mut() {
                *v += rng.normal() * scale;
            }
        }
        m
    }

    fn log_prob(m: &MadeMog<f64>, z: &Matrix<f64>, ctx: Option<&Matrix<f64>>) -> Vec<f64> {
        let mut lp = Vec::new();
        m.log_prob_reusing(z, ctx, &mut lp, &mut Tape::default());
        lp
    }

    /// Gradients of the training pass against finite differences; with dropout, under the fixed
    /// mask of one step seed (the evaluation pass, without dropout, then differs).
    #[test]
    fn gradients_match_finite_differences_in_the_bulk_and_the_tails() {
        for (ctx, order, dropout) in [
            (0, vec![2, 0, 3, 1], 0.0),
            (2, vec![1, 3, 0, 2], 0.0),
            (0, vec![2, 0, 3, 1], 0.25),
            (2, vec![1, 3, 0, 2], 0.25),
        ] {
            let cfg = MadeMogConfig {
                dropout,
                ..config(4, ctx, 3, order)
            };
            let mut m = random(cfg, 0.4, 7);
            let mut rng = Rng::new(3);
            // Bulk events and far tails (|x| up to ~12, where one component dominates).
            let z = Matrix::from_fn(23, 4, |i, _| {
                rng.normal() * if i % 4 == 0 { 6.0 } else { 1.2 }
            });
            let c = (ctx > 0).then(|| Matrix::from_fn(23, ctx, |_, _| rng.normal()));
            let w: Vec<f64> = (0..23).map(|i| 0.3 + 0.1 * i as f64).collect();
            // L = sum_i w_i log p(z_i), by the training pass of step seed 11.
            let train_lp = |m: &MadeMog<f64>, z: &Matrix<f64>, tape: &mut Tape<f64>| {
                tape.seed = 11;
                let mut lp = Vec::new();
                m.log_prob_train(z, c.as_ref(), &mut lp, tape);
                lp
            };
            let loss = |m: &MadeMog<f64>, z: &Matrix<f64>| -> f64 {
                let lp = train_lp(m, z, &mut Tape::default());
                lp.iter().zip(&w).map(|(a, b)| a * b).sum()
            };
            let mut tape = Tape::default();
            let lp = train_lp(&m, &z, &mut tape);
            assert_eq!(lp == log_prob(&m, &z, c.as_ref()), dropout == 0.0);
            let mut grads = vec![0.0; m.num_params()];
            let mut dz = Matrix::zeros(0, 0);
            m.backward(&z, c.as_ref(), &mut tape, &w, Some(&mut dz), &mut grads);
            let eps = 1e-6;
            let fd = |up: f64, down: f64| (up - down) / (2.0 * eps);
            for i in 0..z.rows() {
                for j in 0..4 {
                    let (mut a, mut b) = (z.clone(), z.clone());
                    a.row_mut(i)[j] += eps;
                    b.row_mut(i)[j] -= eps;
                    let want = fd(loss(&m, &a), loss(&m, &b));
                    let got = dz.get(i, j);
                    assert!(
                        (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "dz[{i}, {j}]: {got} vs {want}"
                    );
                }
            }
            let mut p: Vec<f64> = m.params().iter().flat_map(|p| p.data.clone()).collect();
            let set = |m: &mut MadeMog<f64>, p: &[f64]| {
                let mut off = 0;
                for q in m.params_mut() {
                    let n = q.data.len();
                    q.data.copy_from_slice(&p[off..off + n]);
                    off += n;
                }
            };
            let mut checked = 0;
            for k in (0..p.len()).step_by(5) {
                let orig = p[k];
                p[k] = orig + eps;
                set(&mut m, &p);
                let up = loss(&m, &z);
                p[k] = orig - eps;
                set(&mut m, &p);
                let down = loss(&m, &z);
                p[k] = orig;
                set(&mut m, &p);
                let want = fd(up, down);
                assert!(
                    (grads[k] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "param {k}: {} vs {want}",
                    grads[k]
                );
                checked += usize::from(want.abs() > 1e-8);
            }
            assert!(checked > 100, "only {checked} non-zero gradients checked");
        }
    }

    /// Trapezoid rule of `exp(log p)` over `[-w, w]^D` with `n` intervals per axis (D = 1, 2).
    fn integrate(m: &MadeMog<f64>, w: f64, n: usize) -> f64 {
        let d = m.config().dim;
        let h = 2.0 * w / n as f64;
        let pts = (n + 1).pow(d as u32);
        let coord = |i: usize, j: usize| -> usize { (i / (n + 1).pow(j as u32)) % (n + 1) };
        let z = Matrix::from_fn(pts, d, |i, j| -w + coord(i, j) as f64 * h);
        let lp = log_prob(m, &z, None);
        let weight = |i: usize| -> f64 {
            (0..d)
                .map(|j| {
                    if coord(i, j) == 0 || coord(i, j) == n {
                        0.5
                    } else {
                        1.0
                    }
                })
                .product()
        };
        lp.iter()
            .enumerate()
            .map(|(i, v)| weight(i) * v.exp())
            .sum::<f64>()
            * h.powi(d as i32)
    }

    #[test]
    fn density_integrates_to_one_in_1d_and_2d() {
        let m1 = random(config(1, 0, 4, vec![0]), 0.6, 2);
        let t1 = integrate(&m1, 30.0, 60000);
        assert!((t1 - 1.0).abs() < 1e-5, "1-D: {t1}");
        let m2 = random(config(2, 0, 3, vec![1, 0]), 0.3, 5);
        let t2 = integrate(&m2, 25.0, 1000);
        assert!((t2 - 1.0).abs() < 1e-4, "2-D: {t2}");
    }

    #[test]
    fn one_component_is_a_gaussian_autoregressive_model() {
        // K = 1: log p = sum_d log N(x_d; mu_d(x_<d), sigma_d(x_<d)) with the network's outputs.
        let m = random(config(3, 2, 1, vec![2, 0, 1]), 0.5, 9);
        let mut rng = Rng::new(1);
        let z = Matrix::from_fn(10, 3, |_, _| rng.normal() * 2.0);
        let c = Matrix::from_fn(10, 2, |_, _| rng.normal());
        let mut inp = Matrix::zeros(0, 0);
        let mut h = Matrix::zeros(0, 0);
        m.made().fill_input(&z, Some(&c), &mut inp);
        m.made().forward(&inp, &mut h);
        let lp = log_prob(&m, &z, Some(&c));
        for i in 0..10 {
            let want: f64 = (0..3)
                .map(|d| {
                    let (mu, r) = (h.get(i, 3 + d), h.get(i, 6 + d));
                    let sigma = (3.0 * (r / 3.0).tanh()).exp();
                    let u = (z.get(i, d) - mu) / sigma;
                    -0.5 * u * u - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
                })
                .sum();
            assert!((lp[i] - want).abs() < 1e-12, "{} vs {want}", lp[i]);
        }
    }

    #[test]
    fn each_feature_depends_only_on_the_features_before_it_and_the_context() {
        let order = vec![3, 1, 4, 0, 2];
        let m = random(config(5, 2, 4, order.clone()), 0.5, 4);
        let mut rng = Rng::new(6);
        let z = Matrix::from_fn(8, 5, |_, _| rng.normal());
        let c = Matrix::from_fn(8, 2, |_, _| rng.normal());
        let base = m.feature_log_probs(&z, Some(&c));
        for (k, &f) in order.iter().enumerate() {
            let mut moved = z.clone();
            for i in 0..8 {
                moved.row_mut(i)[f] += 1.5;
            }
            let after = m.feature_log_probs(&moved, Some(&c));
            for (j, &g) in order.iter().enumerate() {
                let same = (0..8).all(|i| after.get(i, g) == base.get(i, g));
                // Features before f in the order are untouched; f itself and (generically) the
                // later ones change.
                assert_eq!(same, j < k, "moving feature {f} vs term of feature {g}");
            }
        }
        // The context reaches every feature, the first one included.
        let c2 = Matrix::from_fn(8, 2, |i, j| c.get(i, j) + 1.0);
        let moved = m.feature_log_probs(&z, Some(&c2));
        for f in 0..5 {
            assert!(
                (0..8).all(|i| moved.get(i, f) != base.get(i, f)),
                "feature {f}"
            );
        }
        // The per-feature terms sum to the log-density.
        let lp = log_prob(&m, &z, Some(&c));
        for (i, v) in lp.iter().enumerate() {
            let s: f64 = base.row(i).iter().sum();
            assert!((v - s).abs() < 1e-12);
        }
    }

    /// Standard normal CDF (Abramowitz & Stegun 7.1.26 through erf, |error| < 1.5e-7).
    fn phi(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / 2f64.sqrt());
        let poly = t
            * (0.254_829_592
                + t * (-0.284_496_736
                    + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
        if x >= 0.0 {
            0.5 * (1.0 + erf)
        } else {
            0.5 * (1.0 - erf)
        }
    }

    #[test]
    fn samples_follow_the_density() {
        // 1-D with a context: for a fixed context the mixture is fixed (the network sees no
        // feature before the first), so its CDF is known.
        let m = random(config(1, 2, 3, vec![0]), 0.8, 12);
        let n = 20000;
        let idx: Vec<u64> = (0..n as u64).collect();
        let ctx = Matrix::from_fn(n, 2, |_, j| [0.7, -1.3][j]);
        let mut x = Matrix::zeros(0, 0);
        m.sample_reusing(5, &idx, Some(&ctx), &mut x, &mut Tape::default());
        let mut h = Matrix::zeros(0, 0);
        let first = Matrix::from_fn(1, 3, |_, j| [0.0, 0.7, -1.3][j]);
        m.made().forward(&first, &mut h);
        let other = Matrix::from_fn(1, 3, |_, j| [0.0, -0.7, 1.3][j]);
        let mut h2 = Matrix::zeros(0, 0);
        m.made().forward(&other, &mut h2);
        assert_ne!(h.row(0), h2.row(0), "the context must matter");
        let hr = h.row(0);
        let lse = log_sum_exp(hr[..3].iter().copied());
        let cdf = |v: f64| -> f64 {
            (0..3)
                .map(|k| {
                    let sigma = (3.0 * (hr[6 + k] / 3.0).tanh()).exp();
                    (hr[k] - lse).exp() * phi((v - hr[3 + k]) / sigma)
                })
                .sum()
        };
        let mut v: Vec<f64> = x.as_slice().to_vec();
        v.sort_by(f64::total_cmp);
        let ks = v
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let f = cdf(s);
                (f - i as f64 / n as f64)
                    .abs()
                    .max((f - (i + 1) as f64 / n as f64).abs())
            })
            .fold(0.0, f64::max);
        // 1.63 / sqrt(n) is the 1% critical value of the KS statistic.
        assert!(ks < 1.63 / (n as f64).sqrt(), "KS {ks}");
        // 2-D: sample frequencies in coarse cells match the integrated density.
        let m = random(config(2, 0, 3, vec![1, 0]), 0.3, 5);
        let n = 40000;
        let idx: Vec<u64> = (0..n as u64).collect();
        m.sample_reusing(8, &idx, None, &mut x, &mut Tape::default());
        let edges = [-1e9, -1.5, -0.5, 0.5, 1.5, 1e9];
        let cell = |v: f64| {
            edges
                .windows(2)
                .position(|e| v >= e[0] && v < e[1])
                .unwrap()
        };
        let mut counts = [[0usize; 5]; 5];
        for i in 0..n {
            counts[cell(x.get(i, 0))][cell(x.get(i, 1))] += 1;
        }
        let (w, g) = (20.0, 800);
        let hh = 2.0 * w / g as f64;
        let grid = Matrix::from_fn(g * g, 2, |i, j| {
            let k = if j == 0 { i / g } else { i % g };
            -w + (k as f64 + 0.5) * hh
        });
        let lp = log_prob(&m, &grid, None);
        let mut mass = [[0.0f64; 5]; 5];
        for (i, v) in lp.iter().enumerate() {
            mass[cell(grid.get(i, 0))][cell(grid.get(i, 1))] += v.exp() * hh * hh;
        }
        let mut chi2 = 0.0;
        for a in 0..5 {
            for b in 0..5 {
                let e = mass[a][b] * n as f64;
                if e > 5.0 {
                    chi2 += (counts[a][b] as f64 - e).powi(2) / e;
                }
            }
        }
        // 25 cells: the 0.1% critical value of chi2 with 24 degrees of freedom is 51.2.
        assert!(chi2 < 51.2, "chi2 {chi2}: {counts:?} vs {mass:?}");
    }

    #[test]
    fn each_event_is_drawn_from_its_own_stream_whatever_the_batch() {
        let m = random(config(3, 2, 4, vec![2, 1, 0]), 0.5, 1);
        let mut rng = Rng::new(2);
        let c = Matrix::from_fn(10, 2, |_, _| rng.normal());
        let idx: Vec<u64> = (100..110).collect();
        let mut all = Matrix::zeros(0, 0);
        m.sample_reusing(3, &idx, Some(&c), &mut all, &mut Tape::default());
        let mut part = Matrix::zeros(0, 0);
        let sub = Matrix::from_fn(3, 2, |i, j| c.get(7 - i, j));
        m.sample_reusing(
            3,
            &[107, 106, 105],
            Some(&sub),
            &mut part,
            &mut Tape::default(),
        );
        for r in 0..3 {
            assert_eq!(part.row(r), all.row(7 - r));
        }
        assert!(all.all_finite());
    }

    #[test]
    fn invalid_configs_are_rejected_or_repaired() {
        let mut rng = Rng::new(0);
        for bad in [
            config(3, 0, 0, vec![0, 1, 2]),
            config(3, 0, 65, vec![0, 1, 2]),
            config(3, 0, 2, vec![0, 1, 1]),
            MadeMogConfig {
                log_scale_clamp: f64::NAN,
                ..config(3, 0, 2, vec![0, 1, 2])
            },
            MadeMogConfig {
                dropout: 0.95,
                ..config(3, 0, 2, vec![0, 1, 2])
            },
        ] {
            assert!(
                MadeMog::<f64>::try_new(bad.clone(), &mut rng).is_err(),
                "{bad:?}"
            );
            let m = MadeMog::<f64>::new(bad, &mut rng);
            assert!(m.config().validate(3).is_ok());
        }
    }
}
