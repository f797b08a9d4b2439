//! Activation normalisation (Glow; Kingma & Dhariwal 2018) for tabular features.
//!
//! `z_j = (x_j - loc_j) * exp(log_scale_j)`, `log|det dz/dx| = sum_j log_scale_j`;
//! inverse `x_j = z_j * exp(-log_scale_j) + loc_j`.
//!
//! Data-dependent initialisation ([`Transform::data_init`]) on the first training batch sets
//! `loc = mean(x)` and `log_scale = -log(std(x) + 1e-6)` (population std), so that the first batch
//! leaves the layer with zero mean and unit variance. It runs only once: the buffer `initialized`
//! (one value, 0 or 1) is saved with the model, so a loaded model is never re-initialised.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Tape};
use serde::{Deserialize, Serialize};

/// Shape of an ActNorm layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActNormConfig {
    /// Number of features.
    pub dim: usize,
}

/// ActNorm layer `z = (x - loc) * exp(log_scale)` with parameters `loc` and `log_scale`.
#[derive(Clone, Debug)]
pub struct ActNorm<T> {
    config: ActNormConfig,
    loc: Param<T>,
    log_scale: Param<T>,
    initialized: Param<T>,
}

impl<T: Real> ActNorm<T> {
    /// A new, not yet data-initialised layer (identity: `loc = 0`, `log_scale = 0`).
    pub fn new(config: ActNormConfig) -> Self {
        let d = config.dim;
        Self {
            loc: Param::new("loc", vec![d], vec![T::zero(); d]),
            log_scale: Param::new("log_scale", vec![d], vec![T::zero(); d]),
            initialized: Param::new("initialized", vec![1], vec![T::zero()]),
            config,
        }
    }

    /// `exp(log_scale)`, computed into the tape's slot 0 (reused from step to step).
    fn scales<'a>(&self, tape: &'a mut Tape<T>) -> &'a [T] {
        let sc = tape.mat(0, 1, self.config.dim);
        for (s, ls) in sc.as_mut_slice().iter_mut().zip(&self.log_scale.data) {
            *s = ls.exp();
        }
        sc.as_slice()
    }

    /// True once [`Transform::data_init`] has run (or a trained model was loaded).
    pub fn is_initialized(&self) -> bool {
        self.initialized.data[0] != T::zero()
    }
}

impl<T: Real> Transform<T> for ActNorm<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::ActNorm(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        vec![&self.loc, &self.log_scale]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.loc, &mut self.log_scale]
    }

    fn buffers(&self) -> Vec<&Param<T>> {
        vec![&self.initialized]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.initialized]
    }

    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]) {
        self.forward_train(x, ctx, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.inverse_reusing(y, ctx, x, ladj, &mut Tape::default());
    }

    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.forward_train(x, ctx, y, ladj, scratch);
    }

    /// Scratch slot 0 holds `exp(-log_scale)`.
    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        x.resize(y.rows(), d);
        let inv = scratch.mat(0, 1, d).as_mut_slice();
        for (v, s) in inv.iter_mut().zip(&self.log_scale.data) {
            *v = (-*s).exp();
        }
        let inv = &*inv;
        let total: T = self.log_scale.data.iter().copied().sum();
        for (i, l) in ladj.iter_mut().enumerate().take(y.rows()) {
            let yr = y.row(i);
            let xr = x.row_mut(i);
            for j in 0..d {
                xr[j] = yr[j] * inv[j] + self.loc.data[j];
            }
            *l -= total;
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
        y.resize(x.rows(), d);
        let sc = self.scales(tape);
        let total: T = self.log_scale.data.iter().copied().sum();
        for (i, l) in ladj.iter_mut().enumerate().take(x.rows()) {
            let xr = x.row(i);
            let yr = y.row_mut(i);
            for j in 0..d {
                yr[j] = (xr[j] - self.loc.data[j]) * sc[j];
            }
            *l += total;
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
        // dx = dy e^s; dloc = -sum_i dy e^s; dlog_scale = sum_i dy (x - loc) e^s + sum_i dladj_i.
        let d = self.config.dim;
        let n = x.rows();
        dx.resize(n, d);
        let sc = self.scales(tape);
        let sum_dladj: T = dladj.iter().copied().sum();
        let (gloc, gls) = grads.split_at_mut(d);
        for i in 0..n {
            let xr = x.row(i);
            let dyr = dy.row(i);
            let dxr = dx.row_mut(i);
            for j in 0..d {
                let g = dyr[j] * sc[j];
                dxr[j] = g;
                gloc[j] -= g;
                gls[j] += g * (xr[j] - self.loc.data[j]);
            }
        }
        for g in gls.iter_mut().take(d) {
            *g += sum_dladj;
        }
    }

    /// Sets `loc = mean`, `log_scale = -log(std + 1e-6)` per feature from `x` (finite values
    /// only), once. Batches with fewer than two rows are ignored (no spread to measure).
    fn data_init(&mut self, x: &Matrix<T>, _ctx: Option<&Matrix<T>>) {
        if self.is_initialized() || x.rows() < 2 || x.cols() != self.config.dim {
            return;
        }
        for j in 0..self.config.dim {
            let vals: Vec<f64> = (0..x.rows())
                .filter_map(|i| x.get(i, j).to_f64())
                .filter(|v| v.is_finite())
                .collect();
            if vals.len() < 2 {
                continue;
            }
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            self.loc.data[j] = T::c(mean);
            self.log_scale.data[j] = T::c(-(var.sqrt() + 1e-6).ln());
        }
        self.initialized.data[0] = T::one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::transforms::testing::{CheckOptions, check_transform, check_transform_f32};

    #[test]
    fn passes_all_checks() {
        check_transform(
            Box::new(ActNorm::<f64>::new(ActNormConfig { dim: 5 })),
            &CheckOptions::default(),
        );
        check_transform_f32(
            Box::new(ActNorm::<f32>::new(ActNormConfig { dim: 5 })),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn data_init_standardises_the_first_batch_only() {
        let mut rng = Rng::new(9);
        let x = Matrix::from_fn(500, 3, |_, j| 3.0 + (j as f64 + 1.0) * 2.0 * rng.normal());
        let mut a = ActNorm::<f64>::new(ActNormConfig { dim: 3 });
        assert!(!a.is_initialized());
        a.data_init(&x, None);
        assert!(a.is_initialized());
        assert_eq!(a.buffers()[0].data, vec![1.0]);
        let mut z = Matrix::zeros(0, 0);
        let mut l = vec![0.0; 500];
        a.forward(&x, None, &mut z, &mut l);
        for j in 0..3 {
            let m: f64 = (0..500).map(|i| z.get(i, j)).sum::<f64>() / 500.0;
            let v: f64 = (0..500).map(|i| (z.get(i, j) - m).powi(2)).sum::<f64>() / 500.0;
            assert!(m.abs() < 1e-12, "mean {m}");
            assert!((v - 1.0).abs() < 1e-5, "var {v}");
        }
        // A second batch does not re-initialise.
        let before = (a.loc.data.clone(), a.log_scale.data.clone());
        let x2 = Matrix::from_fn(50, 3, |_, _| 100.0 + rng.normal());
        a.data_init(&x2, None);
        assert_eq!((a.loc.data.clone(), a.log_scale.data.clone()), before);
        // A "loaded" model whose buffer says initialised is not touched either.
        let mut b = ActNorm::<f64>::new(ActNormConfig { dim: 3 });
        b.buffers_mut()[0].data[0] = 1.0;
        b.data_init(&x, None);
        assert_eq!(b.loc.data, vec![0.0; 3]);
        assert_eq!(b.log_scale.data, vec![0.0; 3]);
    }
}
