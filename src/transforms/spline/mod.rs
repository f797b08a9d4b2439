//! Shared math of the elementwise monotone splines used by [`crate::transforms::SplineCoupling`].
//!
//! Every spline is a monotone map of one scalar on `[-B, B]`, shaped by a vector of unnormalised
//! parameters `theta` produced by a conditioner network, and the identity outside `[-B, B]`.
//! Bin widths and heights come from a softmax mixed with a floor
//! (`w_k = w_min + (1 - w_min K) softmax(u)_k`), as in nflows.
//!
//! Implementations keep all per-bin scratch in fixed stack arrays of [`MAX_KNOTS`] entries, so
//! they never allocate per element when `bins` is at most [`MAX_BINS`] (the most a layer takes).
//!
//! The [`Spline1d`] functions evaluate one event and feature at a time (the `f64` gradient checks
//! and the reference); the couplings evaluate `f32` chunks with the lane kernels of `lanes`
//! (32 events at a time, whole SIMD instructions per step, the same bits on every SIMD path), which
//! each family implements next to its scalar code and which are tested against it.

pub(crate) mod lanes;
pub mod linear;
pub mod quadratic;
pub mod rational_quadratic;

pub use linear::Linear;
pub use quadratic::Quadratic;
pub use rational_quadratic::RationalQuadratic;

use crate::engine::Real;
use std::ops::{Deref, DerefMut};

/// Smallest bin width, as a fraction of the interval (nflows' default).
pub const MIN_BIN_WIDTH: f64 = 1e-3;
/// Smallest bin height, as a fraction of the interval (nflows' default).
pub const MIN_BIN_HEIGHT: f64 = 1e-3;
/// Smallest knot derivative of the rational-quadratic spline (nflows' default).
pub const MIN_DERIVATIVE: f64 = 1e-3;
/// Largest supported number of bins (per-element scratch lives in fixed stack arrays).
pub const MAX_BINS: usize = 64;
/// Size of the fixed stack arrays: `MAX_BINS + 1` knots.
pub const MAX_KNOTS: usize = MAX_BINS + 1;

/// A monotone elementwise map on [-B, B] with identity tails (RQ: linear tails with slope 1, continuous at ±B), shaped by unnormalised parameters `theta` produced by a conditioner.
pub trait Spline1d {
    /// Number of unnormalised parameters per feature for `bins` bins.
    fn n_params(bins: usize) -> usize;
    /// y = f(x) and log f'(x).
    fn forward<T: Real>(x: T, theta: &[T], bins: usize, bound: T) -> (T, T);
    /// x = f^{-1}(y) and log (f^{-1})'(y) (= -log f'(x)).
    fn inverse<T: Real>(y: T, theta: &[T], bins: usize, bound: T) -> (T, T);
    /// Backward of `forward` at x: given gy = dL/dy and gl = dL/d log f'(x), returns dL/dx and ADDS dL/dtheta into `gtheta` (same length as theta).
    fn backward<T: Real>(
        x: T,
        theta: &[T],
        bins: usize,
        bound: T,
        gy: T,
        gl: T,
        gtheta: &mut [T],
    ) -> T;
}

/// Numerically stable softmax: `out_k = exp(u_k - max u) / sum_j exp(u_j - max u)`.
/// `out` must be at least as long as `logits`; only the first `logits.len()` entries are written.
#[inline]
pub fn softmax<T: Real>(logits: &[T], out: &mut [T]) {
    let m = logits
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a });
    // All -inf (or empty) would give NaN below; fall back to a zero shift.
    let m = if m.is_finite() { m } else { T::zero() };
    let mut sum = T::zero();
    for (o, &u) in out.iter_mut().zip(logits) {
        *o = (u - m).exp();
        sum += *o;
    }
    let inv = T::one() / sum;
    for o in out.iter_mut().take(logits.len()) {
        *o *= inv;
    }
}

/// Backward of [`softmax`]: given the probabilities `p` and `gp = dL/dp`, ADDS
/// `scale * dL/du_k = scale * p_k (gp_k - sum_j p_j gp_j)` into `glogits`.
#[inline]
pub fn softmax_backward<T: Real>(p: &[T], gp: &[T], scale: T, glogits: &mut [T]) {
    let dot: T = p.iter().zip(gp).map(|(&a, &b)| a * b).sum();
    for ((g, &pk), &gk) in glogits.iter_mut().zip(p).zip(gp) {
        *g += scale * pk * (gk - dot);
    }
}

/// Numerically stable `softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^{-|x|})`.
#[inline]
pub fn softplus<T: Real>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// Derivative of [`softplus`]: the logistic sigmoid `1 / (1 + e^{-x})`, evaluated without overflow.
#[inline]
pub fn softplus_grad<T: Real>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// Bin of `v` among the `K + 1` sorted knots `knots[0..=K]`: the `k` with
/// `knots[k] <= v < knots[k + 1]`, clamped to `0..K-1` (values below the first knot give 0,
/// values at or above the last give `K - 1`; NaN gives 0).
#[inline]
pub fn search_bin<T: Real>(knots: &[T], v: T) -> usize {
    let k = knots.len().saturating_sub(1);
    if k <= 1 {
        return 0;
    }
    // Number of interior knots <= v, which is in 0..=K-1.
    knots[1..k].partition_point(|&t| t <= v)
}

/// Knot arrays of the lane kernels ([`lanes`]) hold `STACK` lanes: they take up to `STACK - 1`
/// bins (the presets use 8), and zero-fill whole arrays, so a larger bound costs time.
pub(crate) const STACK: usize = 17;

/// A zero-initialised scratch slice of the scalar code: on the stack up to [`MAX_KNOTS`] entries
/// (every bin count a layer accepts, so evaluation passes never allocate), on the heap beyond
/// (standalone spline calls with more bins).
pub(crate) struct Buf<T> {
    arr: [T; MAX_KNOTS],
    heap: Vec<T>,
    len: usize,
}

impl<T: Real> Buf<T> {
    pub(crate) fn zeros(len: usize) -> Self {
        Self {
            arr: [T::zero(); MAX_KNOTS],
            heap: if len > MAX_KNOTS {
                vec![T::zero(); len]
            } else {
                Vec::new()
            },
            len,
        }
    }
}

impl<T> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        if self.len <= MAX_KNOTS {
            &self.arr[..self.len]
        } else {
            &self.heap
        }
    }
}

impl<T> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.len <= MAX_KNOTS {
            &mut self.arr[..self.len]
        } else {
            &mut self.heap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_normalised_and_stable() {
        let u = [1000.0f64, 999.0, -1000.0];
        let mut p = [0.0; 3];
        softmax(&u, &mut p);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((p[0] / p[1] - 1f64.exp()).abs() < 1e-12);
        assert_eq!(p[2], 0.0);
    }

    #[test]
    fn softmax_backward_matches_finite_differences() {
        let u = [0.3f64, -1.2, 2.0, 0.1];
        let gp = [0.7, -0.4, 1.1, 0.25];
        let mut p = [0.0; 4];
        softmax(&u, &mut p);
        let mut g = [0.0; 4];
        softmax_backward(&p, &gp, 2.0, &mut g);
        let loss = |u: &[f64]| {
            let mut q = [0.0; 4];
            softmax(u, &mut q);
            2.0 * q.iter().zip(&gp).map(|(a, b)| a * b).sum::<f64>()
        };
        for k in 0..4 {
            let (mut a, mut b) = (u, u);
            a[k] += 1e-6;
            b[k] -= 1e-6;
            let fd = (loss(&a) - loss(&b)) / 2e-6;
            assert!((fd - g[k]).abs() < 1e-8, "k={k}: {fd} vs {}", g[k]);
        }
    }

    #[test]
    fn softplus_and_grad() {
        for &x in &[-800.0f64, -3.0, 0.0, 2.5, 800.0] {
            let s = softplus(x);
            assert!(s.is_finite() && s >= 0.0);
            assert!((s - (1.0 + x.exp()).ln()).abs() < 1e-12 || x.abs() > 30.0);
            let fd = (softplus(x + 1e-6) - softplus(x - 1e-6)) / 2e-6;
            assert!((fd - softplus_grad(x)).abs() < 1e-8);
        }
        assert_eq!(softplus(800.0f64), 800.0);
        assert!((softplus(0.0f64) - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn search_bin_clamps_and_finds_bins() {
        let knots = [-1.0f64, -0.5, 0.0, 0.5, 1.0];
        assert_eq!(search_bin(&knots, -5.0), 0);
        assert_eq!(search_bin(&knots, -1.0), 0);
        assert_eq!(search_bin(&knots, -0.5), 1);
        assert_eq!(search_bin(&knots, -0.49), 1);
        assert_eq!(search_bin(&knots, 0.0), 2);
        assert_eq!(search_bin(&knots, 0.99), 3);
        assert_eq!(search_bin(&knots, 1.0), 3);
        assert_eq!(search_bin(&knots, 7.0), 3);
        assert_eq!(search_bin(&knots, f64::NAN), 0);
        assert_eq!(search_bin(&[-1.0f64, 1.0], 0.3), 0);
    }
}
