//! Batch normalisation as a flow layer (Dinh et al. 2016, RealNVP; the seminar's formula).
//!
//! Forward (data -> latent), per feature `j`:
//!
//! `z_j = exp(log_gamma_j) * (x_j - mu_j) / sqrt(var_j + eps) + beta_j`,
//! `log|det dz/dx| = sum_j (log_gamma_j - 0.5 log(var_j + eps))`;
//!
//! inverse `x_j = mu_j + (z_j - beta_j) * exp(-log_gamma_j) * sqrt(var_j + eps)`.
//!
//! * Training ([`Transform::forward_train`]): `mu`, `var` are the statistics of the (sub-)batch
//!   (biased variance, `1/n`). The backward pass is the exact gradient *through* the batch
//!   statistics, including the log-determinant's dependence on `var`: with
//!   `xhat = (x - mu) / sigma`, `sigma = sqrt(var + eps)`, `g = exp(log_gamma)`,
//!   `dxhat_i = g dz_i` and `S = sum_i dladj_i`,
//!   `dx_i = (dxhat_i - mean(dxhat) - xhat_i mean(dxhat * xhat)) / sigma - S xhat_i / (n sigma)`.
//! * Evaluation ([`Transform::forward`], [`Transform::inverse`]): the running statistics
//!   (buffers `running_mean`, `running_var`, saved with the model).
//! * After each optimizer step, [`Transform::end_step`] pools the batch statistics of all
//!   sub-batches of the step (count-weighted mean; variance including the spread between
//!   sub-batch means, made unbiased with `N - 1`), and updates
//!   `running = rho * running + (1 - rho) * batch` with `rho = config.momentum`.
//!   PyTorch's `momentum = m` corresponds to `rho = 1 - m`; the default `rho = 0.9` is PyTorch's
//!   0.1. With a single sub-batch this is exactly the seminar's update with the unbiased batch
//!   variance.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Tape};
use serde::{Deserialize, Serialize};

/// Shape of a batch-norm flow layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchNormConfig {
    /// Number of features.
    pub dim: usize,
    /// Momentum `rho` of the running averages: `running = rho * running + (1 - rho) * batch`.
    pub momentum: f64,
    /// Variance guard `epsilon`.
    pub eps: f64,
}

impl BatchNormConfig {
    /// Defaults: `rho = 0.9` (PyTorch momentum 0.1), `eps = 1e-5`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            momentum: 0.9,
            eps: 1e-5,
        }
    }
}

/// Tape slots: `xhat` (n x d), batch mean (1 x d), biased batch variance (1 x d), and the
/// per-feature factors of the normalisation, `1 / sigma` and `exp(log_gamma)` (1 x d each).
const XHAT: usize = 0;
const MEAN: usize = 1;
const VAR: usize = 2;
const INV_SIGMA: usize = 3;
const GAIN: usize = 4;

/// Batch-norm flow layer with parameters `log_gamma`, `beta` and buffers `running_mean`,
/// `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm<T> {
    config: BatchNormConfig,
    log_gamma: Param<T>,
    beta: Param<T>,
    running_mean: Param<T>,
    running_var: Param<T>,
}

impl<T: Real> BatchNorm<T> {
    /// A new layer: `log_gamma = 0`, `beta = 0`, running mean 0 and running variance 1.
    pub fn new(config: BatchNormConfig) -> Self {
        let d = config.dim;
        Self {
            log_gamma: Param::new("log_gamma", vec![d], vec![T::zero(); d]),
            beta: Param::new("beta", vec![d], vec![T::zero(); d]),
            running_mean: Param::new("running_mean", vec![d], vec![T::zero(); d]),
            running_var: Param::new("running_var", vec![d], vec![T::one(); d]),
            config,
        }
    }

    /// The variance guard, never negative.
    fn eps(&self) -> T {
        T::c(self.config.eps.max(0.0))
    }

    /// Per-feature `(scale, shift)` of the eval-mode map `z = scale * x + shift`, and its ladj.
    /// Written into `out` (`2 x d`: scales, then shifts); returns the ladj.
    fn eval_affine(&self, out: &mut Matrix<T>) -> T {
        let d = self.config.dim;
        let eps = self.eps();
        out.resize(2, d);
        let mut ld = T::zero();
        for j in 0..d {
            let var = self.running_var.data[j].max(T::zero()) + eps;
            let lg = self.log_gamma.data[j];
            let a = (lg - T::c(0.5) * var.ln()).exp();
            out.set(0, j, a);
            out.set(1, j, self.beta.data[j] - a * self.running_mean.data[j]);
            ld += lg - T::c(0.5) * var.ln();
        }
        ld
    }
}

impl<T: Real> Transform<T> for BatchNorm<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::BatchNorm(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        vec![&self.log_gamma, &self.beta]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.log_gamma, &mut self.beta]
    }

    fn buffers(&self) -> Vec<&Param<T>> {
        vec![&self.running_mean, &self.running_var]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.running_mean, &mut self.running_var]
    }

    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]) {
        self.forward_reusing(x, ctx, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.inverse_reusing(y, ctx, x, ladj, &mut Tape::default());
    }

    /// Scratch slot 0 holds the per-feature scales and shifts.
    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let aff = scratch.mat(0, 2, d);
        let ld = self.eval_affine(aff);
        let (scale, shift) = aff.as_slice().split_at(d);
        y.resize(x.rows(), d);
        for (i, l) in ladj.iter_mut().enumerate().take(x.rows()) {
            let xr = x.row(i);
            let yr = y.row_mut(i);
            for j in 0..d {
                yr[j] = scale[j] * xr[j] + shift[j];
            }
            *l += ld;
        }
    }

    /// Scratch slot 0 holds the per-feature inverse scales.
    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let eps = self.eps();
        // x = mu + (z - beta) * exp(-log_gamma) * sqrt(var + eps).
        let inv = scratch.mat(0, 1, d).as_mut_slice();
        let mut ld = T::zero();
        for j in 0..d {
            let var = self.running_var.data[j].max(T::zero()) + eps;
            let lg = self.log_gamma.data[j];
            inv[j] = (T::c(0.5) * var.ln() - lg).exp();
            ld += lg - T::c(0.5) * var.ln();
        }
        let inv = &*inv;
        x.resize(y.rows(), d);
        for (i, l) in ladj.iter_mut().enumerate().take(y.rows()) {
            let yr = y.row(i);
            let xr = x.row_mut(i);
            for j in 0..d {
                xr[j] = self.running_mean.data[j] + (yr[j] - self.beta.data[j]) * inv[j];
            }
            *l -= ld;
        }
    }

    fn forward_train(
        &self,
        x: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let n = x.rows();
        let eps = self.eps();
        y.resize(n, d);
        // Size every slot, then borrow them side by side.
        tape.mat(XHAT, n, d);
        for slot in [MEAN, VAR, INV_SIGMA, GAIN] {
            tape.mat(slot, 1, d);
        }
        let [xhat, mean, var, inv_sigma, g] = &mut tape.mats[XHAT..=GAIN] else {
            unreachable!("every slot exists");
        };
        let (mu, var, inv_sigma, g) = (
            mean.as_mut_slice(),
            var.as_mut_slice(),
            inv_sigma.as_mut_slice(),
            g.as_mut_slice(),
        );
        mu.fill(T::zero());
        var.fill(T::zero());
        if n == 0 {
            return;
        }
        let nf = T::c(n as f64);
        for i in 0..n {
            for (mj, &xj) in mu.iter_mut().zip(x.row(i)) {
                *mj += xj;
            }
        }
        for mj in mu.iter_mut() {
            *mj /= nf;
        }
        for i in 0..n {
            for (j, &xj) in x.row(i).iter().enumerate() {
                let c = xj - mu[j];
                var[j] += c * c;
            }
        }
        for vj in var.iter_mut() {
            *vj /= nf;
        }
        for (s, v) in inv_sigma.iter_mut().zip(var.iter()) {
            *s = (*v + eps).sqrt().recip();
        }
        let mut ld = T::zero();
        for (lg, v) in self.log_gamma.data.iter().zip(var.iter()) {
            ld += *lg - T::c(0.5) * (*v + eps).ln();
        }
        for (gj, lg) in g.iter_mut().zip(&self.log_gamma.data) {
            *gj = lg.exp();
        }
        for (i, l) in ladj.iter_mut().enumerate().take(n) {
            let xr = x.row(i);
            let hr = xhat.row_mut(i);
            let yr = y.row_mut(i);
            for j in 0..d {
                let h = (xr[j] - mu[j]) * inv_sigma[j];
                hr[j] = h;
                yr[j] = g[j] * h + self.beta.data[j];
            }
            *l += ld;
        }
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
        let d = self.config.dim;
        let n = x.rows();
        dx.resize(n, d);
        if n == 0 {
            return;
        }
        let eps = self.eps();
        let nf = T::c(n as f64);
        let xhat = &tape.mats[XHAT];
        let var = tape.mats[VAR].as_slice();
        let s_total: T = dladj.iter().copied().sum();
        let (glg, gbeta) = grads.split_at_mut(d);
        for j in 0..d {
            let g = self.log_gamma.data[j].exp();
            let inv_sigma = (var[j] + eps).sqrt().recip();
            // Column sums: sum dy, sum dy * xhat.
            let mut sum_dy = T::zero();
            let mut sum_dy_h = T::zero();
            for i in 0..n {
                let dyv = dy.get(i, j);
                sum_dy += dyv;
                sum_dy_h += dyv * xhat.get(i, j);
            }
            glg[j] += g * sum_dy_h + s_total;
            gbeta[j] += sum_dy;
            // mean(dxhat) and mean(dxhat * xhat) with dxhat = g dy.
            let m1 = g * sum_dy / nf;
            let m2 = g * sum_dy_h / nf;
            let c3 = s_total / nf;
            for i in 0..n {
                let h = xhat.get(i, j);
                let dxh = g * dy.get(i, j);
                dx.set(i, j, (dxh - m1 - h * m2 - c3 * h) * inv_sigma);
            }
        }
    }

    fn end_step(&mut self, tapes: &[&Tape<T>]) {
        let d = self.config.dim;
        let rho = self.config.momentum.clamp(0.0, 1.0);
        // Pool (count, mean, biased var) of every sub-batch, in f64.
        let parts = || {
            tapes
                .iter()
                .filter(|t| t.mats.len() > VAR && t.mats[XHAT].rows() > 0)
                .map(|t| {
                    (
                        t.mats[XHAT].rows() as f64,
                        t.mats[MEAN].as_slice(),
                        t.mats[VAR].as_slice(),
                    )
                })
                .filter(|(_, m, v)| m.len() == d && v.len() == d)
        };
        let f = |v: T| v.to_f64().unwrap_or(f64::NAN);
        let total: f64 = parts().fold(0.0, |acc, (n, _, _)| acc + n);
        if total < 1.0 {
            return;
        }
        // Pooled mean of feature j.
        let mean = |j: usize| parts().fold(0.0, |acc, (n, m, _)| acc + n * f(m[j])) / total;
        for (j, r) in self.running_mean.data.iter_mut().enumerate() {
            let old = r.to_f64().unwrap_or(0.0);
            *r = T::c(rho * old + (1.0 - rho) * mean(j));
        }
        if total < 2.0 {
            return;
        }
        for j in 0..d {
            let mean_j = mean(j);
            let m2: f64 = parts()
                .map(|(n, m, v)| n * (f(v[j]) + (f(m[j]) - mean_j).powi(2)))
                .sum();
            let unbiased = m2 / (total - 1.0);
            let r = self.running_var.data[j].to_f64().unwrap_or(1.0);
            self.running_var.data[j] = T::c(rho * r + (1.0 - rho) * unbiased);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::transforms::testing::{
        CheckOptions, check_logdet, check_transform, check_transform_f32, random_inputs,
    };

    fn layer<T: Real>(d: usize) -> BatchNorm<T> {
        let mut b = BatchNorm::new(BatchNormConfig::new(d));
        for j in 0..d {
            b.running_mean.data[j] = T::c(0.3 * j as f64 - 0.5);
            b.running_var.data[j] = T::c(0.5 + 0.7 * j as f64);
        }
        b
    }

    fn train(b: &BatchNorm<f64>, x: &Matrix<f64>) -> (Matrix<f64>, Vec<f64>, Tape<f64>) {
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; x.rows()];
        let mut tape = Tape::default();
        b.forward_train(x, None, &mut y, &mut l, &mut tape);
        (y, l, tape)
    }

    fn eval(b: &BatchNorm<f64>, x: &Matrix<f64>) -> (Matrix<f64>, Vec<f64>) {
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; x.rows()];
        b.forward(x, None, &mut y, &mut l);
        (y, l)
    }

    #[test]
    fn passes_all_checks() {
        // Round trip / log-dets in eval mode with non-trivial running stats; gradients in
        // training mode through the batch statistics (the harness uses the whole batch).
        check_transform(Box::new(layer::<f64>(5)), &CheckOptions::default());
        check_transform_f32(Box::new(layer::<f32>(5)), &CheckOptions::default());
    }

    #[test]
    fn eval_uses_running_stats_and_differs_from_train() {
        let mut b = layer::<f64>(3);
        b.log_gamma.data = vec![0.2, -0.1, 0.4];
        b.beta.data = vec![1.0, -2.0, 0.5];
        let mut rng = Rng::new(2);
        let x = random_inputs(20, 3, 2.0, &mut rng);
        let (y, l) = eval(&b, &x);
        for (i, li) in l.iter().enumerate() {
            let mut ld = 0.0;
            for j in 0..3 {
                let v = b.running_var.data[j] + b.config.eps;
                let want = b.log_gamma.data[j].exp() * (x.get(i, j) - b.running_mean.data[j])
                    / v.sqrt()
                    + b.beta.data[j];
                assert!((y.get(i, j) - want).abs() < 1e-12);
                ld += b.log_gamma.data[j] - 0.5 * v.ln();
            }
            assert!((li - ld).abs() < 1e-12);
        }
        let (yt, lt, _) = train(&b, &x);
        assert!(
            yt.max_abs_diff(&y) > 1e-3,
            "train and eval outputs coincide"
        );
        assert!((lt[0] - l[0]).abs() > 1e-3);
        // Training output is standardised per feature before the affine part.
        for j in 0..3 {
            let m: f64 = (0..20).map(|i| yt.get(i, j)).sum::<f64>() / 20.0;
            assert!((m - b.beta.data[j]).abs() < 1e-12);
        }
    }

    #[test]
    fn end_step_moves_running_stats_by_the_momentum_formula() {
        let mut b = layer::<f64>(2);
        let old_m = b.running_mean.data.clone();
        let old_v = b.running_var.data.clone();
        let mut rng = Rng::new(3);
        let x = Matrix::from_fn(10, 2, |_, j| {
            4.0 * j as f64 + rng.normal() * (j as f64 + 1.0)
        });
        let (_, _, tape) = train(&b, &x);
        b.end_step(&[&tape]);
        for j in 0..2 {
            let col: Vec<f64> = (0..10).map(|i| x.get(i, j)).collect();
            let m = col.iter().sum::<f64>() / 10.0;
            let v = col.iter().map(|c| (c - m).powi(2)).sum::<f64>() / 9.0;
            assert!((b.running_mean.data[j] - (0.9 * old_m[j] + 0.1 * m)).abs() < 1e-12);
            assert!((b.running_var.data[j] - (0.9 * old_v[j] + 0.1 * v)).abs() < 1e-12);
        }
        // Two sub-batches pool to the statistics of the concatenated batch.
        let mut b1 = layer::<f64>(2);
        let mut b2 = layer::<f64>(2);
        let (_, _, t_all) = train(&b1, &x);
        let (_, _, t_a) = train(&b2, &x.slice_rows(0, 4));
        let (_, _, t_b) = train(&b2, &x.slice_rows(4, 10));
        b1.end_step(&[&t_all]);
        b2.end_step(&[&t_a, &t_b]);
        for j in 0..2 {
            assert!((b1.running_mean.data[j] - b2.running_mean.data[j]).abs() < 1e-12);
            assert!((b1.running_var.data[j] - b2.running_var.data[j]).abs() < 1e-12);
        }
        // Buffers are exposed under their documented names.
        let names: Vec<&str> = b.buffers().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["running_mean", "running_var"]);
    }

    #[test]
    fn train_ladj_is_the_logdet_of_the_frozen_per_row_map() {
        let mut b = layer::<f64>(4);
        b.log_gamma.data = vec![0.3, -0.2, 0.1, 0.0];
        b.beta.data = vec![0.1, 0.2, -0.3, 0.4];
        let mut rng = Rng::new(4);
        let x = random_inputs(12, 4, 1.5, &mut rng);
        let (yt, lt, tape) = train(&b, &x);
        // Freeze the batch statistics (biased variance) as the running statistics.
        b.running_mean.data = tape.mats[MEAN].as_slice().to_vec();
        b.running_var.data = tape.mats[VAR].as_slice().to_vec();
        let (ye, le) = eval(&b, &x);
        assert!(yt.max_abs_diff(&ye) < 1e-12);
        for i in 0..12 {
            assert!((lt[i] - le[i]).abs() < 1e-12);
        }
        // ... and that ladj is the finite-difference log-det of the per-row map.
        check_logdet(&b, &x, None, false, &CheckOptions::default());
    }
}
