//! Adam (Kingma & Ba, 2015) with decoupled weight decay (AdamW) over one flat parameter vector.
//!
//! `m <- b1 m + (1-b1) g`, `v <- b2 v + (1-b2) g^2`,
//! `theta <- theta - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) - lr * wd * theta`.

use super::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`Adam`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdamConfig {
    /// First-moment decay `b1`.
    pub beta1: f64,
    /// Second-moment decay `b2`.
    pub beta2: f64,
    /// Denominator guard `eps`.
    pub eps: f64,
    /// Decoupled weight decay `wd` (0 = plain Adam).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam optimizer state for a flat parameter vector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Adam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Number of steps taken.
    pub t: u64,
    /// First moments.
    pub m: Vec<f64>,
    /// Second moments.
    pub v: Vec<f64>,
}

impl Adam {
    /// Fresh state for `n` parameters.
    pub fn new(n: usize, config: AdamConfig) -> Self {
        Self {
            config,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One update of `params` with gradient `grads` at learning rate `lr`.
    pub fn step<T: Real>(&mut self, params: &mut [T], grads: &[T], lr: f64) {
        self.step_scaled(params, grads, 1.0, lr);
    }

    /// One update with the gradient `grad_scale * grads` (gradient clipping), computed in
    /// parallel over fixed blocks of parameters (every element's update is independent, so the
    /// result does not depend on the thread count).
    pub fn step_scaled<T: Real>(
        &mut self,
        params: &mut [T],
        grads: &[T],
        grad_scale: f64,
        lr: f64,
    ) {
        assert_eq!(params.len(), self.m.len());
        assert_eq!(grads.len(), self.m.len());
        self.t += 1;
        let c = &self.config;
        let (b1, b2, eps, wd) = (c.beta1, c.beta2, c.eps, c.weight_decay);
        let bc1 = 1.0 - b1.powi(self.t.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - b2.powi(self.t.min(i32::MAX as u64) as i32);
        const BLOCK: usize = 8192;
        params
            .par_chunks_mut(BLOCK)
            .zip(grads.par_chunks(BLOCK))
            .zip(self.m.par_chunks_mut(BLOCK))
            .zip(self.v.par_chunks_mut(BLOCK))
            .for_each(|(((p, g), m), v)| {
                for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = g.to_f64().unwrap_or(0.0) * grad_scale;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let x = p.to_f64().unwrap_or(0.0);
                    let upd = lr * (*m / bc1) / ((*v / bc2).sqrt() + eps) + lr * wd * x;
                    *p = T::c(x - upd);
                }
            });
    }
}
