//! Adam (Kingma & Ba, 2015) with decoupled weight decay (AdamW) over one flat parameter vector.
//!
//! `m <- b1 m + (1-b1) g`, `v <- b2 v + (1-b2) g^2`,
//! `theta <- theta - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) - lr * wd * theta`.

use super::Real;
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
        assert_eq!(params.len(), self.m.len());
        assert_eq!(grads.len(), self.m.len());
        self.t += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t.min(i32::MAX as u64) as i32);
        for i in 0..params.len() {
            let g = grads[i].to_f64().unwrap_or(0.0);
            let m = c.beta1 * self.m[i] + (1.0 - c.beta1) * g;
            let v = c.beta2 * self.v[i] + (1.0 - c.beta2) * g * g;
            self.m[i] = m;
            self.v[i] = v;
            let p = params[i].to_f64().unwrap_or(0.0);
            let upd = lr * (m / bc1) / ((v / bc2).sqrt() + c.eps) + lr * c.weight_decay * p;
            params[i] = T::c(p - upd);
        }
    }
}
