//! Adam (Kingma & Ba, 2015) with decoupled weight decay (AdamW) over a flat parameter vector or
//! a model's tensors in gradient order.
//!
//! `m <- b1 m + (1-b1) g`, `v <- b2 v + (1-b2) g^2`,
//! `theta <- theta - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) - lr * wd * theta`,
//! computed as `theta - alpha_t m / (sqrt(v) + eps_hat) - lr wd theta` with
//! `alpha_t = lr sqrt(1-b2^t) / (1-b1^t)` and `eps_hat = eps sqrt(1-b2^t)` (the same value up to
//! rounding), in `f64` whatever the parameters' type.

use super::Real;
use super::simd::{self, SimdPath};
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

    /// One update with the gradient `grad_scale * grads` (gradient clipping).
    pub fn step_scaled<T: Real>(
        &mut self,
        params: &mut [T],
        grads: &[T],
        grad_scale: f64,
        lr: f64,
    ) {
        self.step_parts(vec![params], grads, grad_scale, lr);
    }

    /// [`Adam::step_scaled`] on parameters held in several slices (a flow's tensors, in
    /// gradient order) that together are laid out like `grads`, so that the trainer updates the
    /// model in place instead of copying it into one vector and back. The update runs in
    /// parallel over fixed blocks of parameters on the active SIMD path; every element's update
    /// is independent and made of exactly rounded `f64` operations, so the result depends on
    /// neither the thread count nor the path.
    pub fn step_parts<T: Real>(
        &mut self,
        parts: Vec<&mut [T]>,
        grads: &[T],
        grad_scale: f64,
        lr: f64,
    ) {
        self.step_parts_on(simd::active(), parts, grads, grad_scale, lr);
    }

    /// [`Adam::step_parts`] on a given SIMD path (which must be supported; panics otherwise).
    pub fn step_parts_on<T: Real>(
        &mut self,
        path: SimdPath,
        parts: Vec<&mut [T]>,
        grads: &[T],
        grad_scale: f64,
        lr: f64,
    ) {
        assert!(
            path.supported(),
            "the {path} SIMD path is not supported here"
        );
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert_eq!(
            total,
            self.m.len(),
            "parameter count differs from the state's"
        );
        assert_eq!(
            grads.len(),
            self.m.len(),
            "gradient length differs from the state's"
        );
        assert_eq!(
            self.v.len(),
            self.m.len(),
            "Adam state: moments of different lengths"
        );
        self.t += 1;
        let c = &self.config;
        let t = self.t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let sqrt_bc2 = (1.0 - c.beta2.powi(t)).sqrt();
        let coeffs = Coeffs {
            b1: c.beta1,
            b2: c.beta2,
            step: lr * sqrt_bc2 / bc1,
            eps_hat: c.eps * sqrt_bc2,
            lr_wd: lr * c.weight_decay,
            grad_scale,
        };
        let blocks = blocks(parts, grads, &mut self.m, &mut self.v);
        blocks
            .into_par_iter()
            .for_each(|b| update_on(path, &coeffs, b));
    }
}

/// Elements per parallel block of [`Adam::step_parts`].
const BLOCK: usize = 8192;

/// The per-step constants of the update.
struct Coeffs {
    b1: f64,
    b2: f64,
    /// `alpha_t = lr sqrt(1 - b2^t) / (1 - b1^t)`.
    step: f64,
    /// `eps_hat = eps sqrt(1 - b2^t)`.
    eps_hat: f64,
    /// `lr * wd`.
    lr_wd: f64,
    grad_scale: f64,
}

/// One block of parameters with its gradient and moments (all the same length).
struct Block<'a, T> {
    p: &'a mut [T],
    g: &'a [T],
    m: &'a mut [f64],
    v: &'a mut [f64],
}

/// Cuts the parameter slices into blocks of at most [`BLOCK`] elements and hands each the
/// matching stretch of the gradient and moments.
fn blocks<'a, T>(
    parts: Vec<&'a mut [T]>,
    mut g: &'a [T],
    mut m: &'a mut [f64],
    mut v: &'a mut [f64],
) -> Vec<Block<'a, T>> {
    let mut out = Vec::new();
    for part in parts {
        for p in part.chunks_mut(BLOCK) {
            let n = p.len();
            let (gb, gr) = g.split_at(n);
            let (mb, mr) = std::mem::take(&mut m).split_at_mut(n);
            let (vb, vr) = std::mem::take(&mut v).split_at_mut(n);
            out.push(Block {
                p,
                g: gb,
                m: mb,
                v: vb,
            });
            (g, m, v) = (gr, mr, vr);
        }
    }
    out
}

/// The update of one block, in `f64`: `m <- b1 m + (1-b1) g`, `v <- b2 v + (1-b2) g^2`,
/// `theta <- theta - alpha_t m / (sqrt(v) + eps_hat) - lr wd theta`. This is the module's
/// update rewritten as Kingma & Ba (section 2) suggest, with the bias corrections folded into
/// the per-step constants: one division and one square root per element instead of three
/// divisions and a square root (the divider bounded the update: 3.2 ms a step for 944k
/// parameters, at 8-wide AVX-512).
#[inline(always)]
fn update<T: Real>(c: &Coeffs, b: Block<T>) {
    let n = b.p.len();
    let (g, m, v) = (&b.g[..n], &mut b.m[..n], &mut b.v[..n]);
    for i in 0..n {
        let gi = g[i].to_f64().unwrap_or(0.0) * c.grad_scale;
        let mi = c.b1 * m[i] + (1.0 - c.b1) * gi;
        let vi = c.b2 * v[i] + (1.0 - c.b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        let x = b.p[i].to_f64().unwrap_or(0.0);
        let upd = c.step * mi / (vi.sqrt() + c.eps_hat) + c.lr_wd * x;
        b.p[i] = T::c(x - upd);
    }
}

/// [`update`] compiled for `path` (the same IEEE operations on every path, so the same bits:
/// the wider paths only process more elements per instruction).
fn update_on<T: Real>(path: SimdPath, c: &Coeffs, b: Block<T>) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `step_parts_on` asserted that the CPU supports the path.
        SimdPath::Avx512 => unsafe { wide::avx512(c, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdPath::Avx2 => unsafe { wide::avx2(c, b) },
        _ => update(c, b),
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{Block, Coeffs, Real, update};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<T: Real>(c: &Coeffs, b: Block<T>) {
        update(c, b);
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2<T: Real>(c: &Coeffs, b: Block<T>) {
        update(c, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::engine::simd::supported_paths;

    /// Random parameters and gradients with tails (a few large and tiny values, exact zeros).
    fn draws(n: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
        let mut rng = Rng::new(seed);
        let value = |rng: &mut Rng| {
            let u = rng.uniform();
            let x = rng.normal() as f32;
            if u < 0.02 {
                0.0
            } else if u < 0.05 {
                x * 1e4
            } else if u < 0.08 {
                x * 1e-6
            } else {
                x
            }
        };
        let p = (0..n).map(|_| value(&mut rng)).collect();
        let g = (0..4)
            .map(|_| (0..n).map(|_| value(&mut rng)).collect())
            .collect();
        (p, g)
    }

    fn config() -> AdamConfig {
        AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::default()
        }
    }

    #[test]
    fn follows_the_textbook_update() {
        let n = 20_000;
        let (p0, gs) = draws(n, 1);
        let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
        let mut adam = Adam::new(n, config());
        let (mut m, mut v) = (vec![0f64; n], vec![0f64; n]);
        let mut reference = p.clone();
        let (lr, scale) = (1e-3, 0.5);
        for (t, g) in gs.iter().enumerate() {
            let g: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            adam.step_scaled(&mut p, &g, scale, lr);
            let t = (t + 1) as i32;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            for i in 0..n {
                let gi = g[i] * scale;
                m[i] = 0.9 * m[i] + (1.0 - 0.9) * gi;
                v[i] = 0.999 * v[i] + (1.0 - 0.999) * gi * gi;
                let x = reference[i];
                reference[i] = x - lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + 1e-8) - lr * 0.01 * x;
            }
        }
        for i in 0..n {
            let (a, b) = (p[i], reference[i]);
            assert!(
                (a - b).abs() <= 1e-14 * b.abs().max(1e-3),
                "{i}: {a} vs {b}"
            );
            assert_eq!((adam.m[i], adam.v[i]), (m[i], v[i]), "{i}");
        }
    }

    #[test]
    fn tensors_in_place_and_every_path_give_the_same_bits() {
        // Tensor sizes that straddle the parallel blocks.
        let sizes = [1, 8191, 8193, 3, 20_000, 16_384];
        let n: usize = sizes.iter().sum();
        let (p0, gs) = draws(n, 2);
        let mut flat = p0.clone();
        let mut reference = Adam::new(n, config());
        for g in &gs {
            reference.step_parts_on(SimdPath::Portable, vec![flat.as_mut_slice()], g, 0.7, 2e-3);
        }
        for path in supported_paths() {
            let mut p = p0.clone();
            let mut adam = Adam::new(n, config());
            for g in &gs {
                let mut parts = Vec::new();
                let mut rest = p.as_mut_slice();
                for &s in &sizes {
                    let (a, b) = rest.split_at_mut(s);
                    parts.push(a);
                    rest = b;
                }
                adam.step_parts_on(path, parts, g, 0.7, 2e-3);
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&flat), "{path}");
            assert_eq!(adam.m, reference.m, "{path}");
            assert_eq!(adam.v, reference.v, "{path}");
        }
    }
}
