//! Piecewise-quadratic monotone spline (Müller et al. 2019, "Neural Importance Sampling").
//!
//! On `[-B, B]` the input is mapped to the unit interval, `u = (x + B) / (2B)`, and pushed
//! through the CDF of a piecewise-linear density with `K` bins of widths `W` and `K + 1` vertex
//! heights `V`:
//!
//! ```text
//! W = m + (1 - m K) softmax(theta_w)                        (m = MIN_BIN_WIDTH, sum W = 1)
//! V_k = (softplus(theta_v,k) + 1e-3) / A,   A = sum_k (Vhat_k + Vhat_{k+1}) / 2 W_k
//! X_b = sum_{k<b} W_k,  alpha = (u - X_b) / W_b            (bin b holds u)
//! q(u) = lerp(V_b, V_{b+1}, alpha)                          (density, integrates to 1)
//! C(u) = sum_{k<b} (V_k + V_{k+1}) / 2 W_k + alpha V_b W_b + alpha^2 / 2 (V_{b+1} - V_b) W_b
//! y = 2B C(u) - B,   log f'(x) = log q(u)
//! ```
//!
//! The inverse solves `(V_{b+1} - V_b) alpha^2 + 2 V_b alpha - 2 (C - S_b) / W_b = 0` with the
//! cancellation-free root `alpha = 2c / (b + sqrt(b^2 - 4ac))`. Outside `[-B, B]` the map is the
//! identity with log-derivative 0 and no parameter gradient.

use super::lanes::{self, LANES, Lane, LaneSpline, select};
use super::{Buf, MIN_BIN_WIDTH, Spline1d};
use crate::engine::Real;
use crate::engine::vmath::ln;

/// Offset added to the softplus of the vertex parameters (keeps the density positive).
const MIN_VERTEX: f64 = 1e-3;

/// Minimum bin width actually used: `MIN_BIN_WIDTH`, lowered to `0.5/K` for absurdly many bins
/// so that `1 - m K` stays positive.
fn min_width(bins: usize) -> f64 {
    MIN_BIN_WIDTH.min(0.5 / bins as f64)
}

/// Whether the spline is active (valid shape and bound); otherwise the map is the identity.
fn active<T: Real>(theta: &[T], bins: usize, bound: T) -> bool {
    debug_assert_eq!(
        theta.len(),
        Quadratic::n_params(bins),
        "quadratic spline: theta length"
    );
    bins >= 1 && theta.len() > 2 * bins && bound > T::zero() && bound.is_finite()
}

/// `log(1 + e^t)` without overflow.
fn softplus<T: Real>(t: T) -> T {
    t.max(T::zero()) + (-t.abs()).exp().ln_1p()
}

/// `1 / (1 + e^{-t})` without overflow.
fn sigmoid<T: Real>(t: T) -> T {
    if t >= T::zero() {
        T::one() / (T::one() + (-t).exp())
    } else {
        let e = t.exp();
        e / (T::one() + e)
    }
}

/// Normalised spline of one feature.
struct Knots<T> {
    /// `softmax(theta_w)`.
    p: Buf<T>,
    /// Bin widths `W` (sum 1).
    w: Buf<T>,
    /// Normalised vertices `V = vh / A`.
    v: Buf<T>,
    /// Knot positions in `u` (`x[0] = 0`, `x[K] = 1` exactly).
    x: Buf<T>,
    /// CDF at the knots (`s[0] = 0`, `s[K] = 1` exactly).
    s: Buf<T>,
    /// Area normaliser `A`.
    area: T,
    /// `1 - m K`, the softmax scale.
    scale: T,
}

impl<T: Real> Knots<T> {
    fn new(theta: &[T], bins: usize) -> Self {
        let m = min_width(bins);
        let scale = T::c(1.0 - m * bins as f64);
        let half = T::c(0.5);
        let (tw, tv) = theta.split_at(bins);
        let mut p = Buf::zeros(bins);
        let mut w = Buf::zeros(bins);
        let mut vh = Buf::zeros(bins + 1);
        let mut v = Buf::zeros(bins + 1);
        let mut x = Buf::zeros(bins + 1);
        let mut s = Buf::zeros(bins + 1);
        let mx = tw.iter().fold(T::neg_infinity(), |a, &t| a.max(t));
        let mut z = T::zero();
        for k in 0..bins {
            p[k] = (tw[k] - mx).exp();
            z += p[k];
        }
        for k in 0..=bins {
            vh[k] = softplus(tv[k]) + T::c(MIN_VERTEX);
        }
        let mut area = T::zero();
        let mut acc = T::zero();
        for k in 0..bins {
            p[k] /= z;
            w[k] = T::c(m) + scale * p[k];
            x[k] = acc;
            acc += w[k];
            area += half * (vh[k] + vh[k + 1]) * w[k];
        }
        x[bins] = T::one();
        for k in 0..=bins {
            v[k] = vh[k] / area;
        }
        let mut acc = T::zero();
        for k in 0..bins {
            s[k] = acc;
            acc += half * (v[k] + v[k + 1]) * w[k];
        }
        s[bins] = T::one();
        Self {
            p,
            w,
            v,
            x,
            s,
            area,
            scale,
        }
    }

    /// Bin `b` of `u` in `[0, 1]` and the relative position `alpha` in it.
    fn locate(&self, u: T) -> (usize, T) {
        let bins = self.w.len();
        let b = self.x[1..bins].partition_point(|&k| k <= u);
        let alpha = ((u - self.x[b]) / (self.x[b + 1] - self.x[b]))
            .max(T::zero())
            .min(T::one());
        (b, alpha)
    }

    /// Density `q = lerp(V_b, V_{b+1}, alpha)` (both vertices positive, so no cancellation).
    fn density(&self, b: usize, alpha: T) -> T {
        self.v[b] * (T::one() - alpha) + self.v[b + 1] * alpha
    }
}

/// Piecewise-quadratic CDF spline; `theta` = `K` unnormalised bin widths, then `K + 1`
/// unnormalised vertex heights of the piecewise-linear density.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quadratic;

impl Spline1d for Quadratic {
    /// `2K + 1` parameters: `K` widths and `K + 1` vertex heights.
    fn n_params(bins: usize) -> usize {
        2 * bins + 1
    }

    /// `y = 2B C(u) - B` and `log f'(x) = log q(u)`.
    ///
    /// Evaluated as `C = lerp(S_b, S_{b+1}, g)` with the in-bin mass fraction
    /// `g = alpha (V_b (2 - alpha) + alpha V_{b+1}) / (V_b + V_{b+1})`, which equals the formula
    /// above and lands exactly on the knots, so `f(+-B) = +-B` exactly.
    fn forward<T: Real>(x: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !active(theta, bins, bound) || !(-bound..=bound).contains(&x) {
            return (x, T::zero());
        }
        let kn = Knots::new(theta, bins);
        let two_b = bound + bound;
        let u = ((x + bound) / two_b).max(T::zero()).min(T::one());
        let (b, alpha) = kn.locate(u);
        let (v0, v1) = (kn.v[b], kn.v[b + 1]);
        let g = (alpha * (v0 * (T::c(2.0) - alpha) + alpha * v1) / (v0 + v1)).min(T::one());
        let c = kn.s[b] * (T::one() - g) + kn.s[b + 1] * g;
        let y = (two_b * c - bound).max(-bound).min(bound);
        (y, kn.density(b, alpha).ln())
    }

    /// Finds the bin of `c = (y + B)/(2B)` among the knot CDF values, then with the in-bin mass
    /// fraction `f = (c - S_b) / (S_{b+1} - S_b)` solves
    /// `(V_{b+1} - V_b) alpha^2 + 2 V_b alpha - f (V_b + V_{b+1}) = 0` as
    /// `alpha = f (V_b + V_{b+1}) / (V_b + sqrt((1 - f) V_b^2 + f V_{b+1}^2))`,
    /// stable for any `V_{b+1} - V_b`. Log-derivative `-log q(u)`.
    fn inverse<T: Real>(y: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !active(theta, bins, bound) || !(-bound..=bound).contains(&y) {
            return (y, T::zero());
        }
        let kn = Knots::new(theta, bins);
        let two_b = bound + bound;
        let c = ((y + bound) / two_b).max(T::zero()).min(T::one());
        let b = kn.s[1..bins].partition_point(|&s| s <= c);
        let f = ((c - kn.s[b]) / (kn.s[b + 1] - kn.s[b]))
            .max(T::zero())
            .min(T::one());
        let (v0, v1) = (kn.v[b], kn.v[b + 1]);
        let disc = (T::one() - f) * v0 * v0 + f * v1 * v1;
        let alpha = (f * (v0 + v1) / (v0 + disc.sqrt()))
            .max(T::zero())
            .min(T::one());
        let u = kn.x[b] * (T::one() - alpha) + kn.x[b + 1] * alpha;
        let x = (two_b * u - bound).max(-bound).min(bound);
        (x, -kn.density(b, alpha).ln())
    }

    /// Exact gradients. With `t = alpha W_b`, `D = V_{b+1} - V_b`, `gC = 2B gy`, `gq = gl / q`:
    ///
    /// ```text
    /// dL/dx     = gy q + gq D / (2B W_b)
    /// dL/dW_j   = gC ((V_j + V_{j+1})/2 - q) - gq D / W_b            (j < b)
    /// dL/dW_b   = -gC alpha^2 D / 2 - gq alpha D / W_b
    /// dL/dV_j  += gC W_j / 2 into V_j and V_{j+1}                      (j < b)
    /// dL/dV_b  += gC W_b (alpha - alpha^2/2) + gq (1 - alpha)
    /// dL/dV_b+1 += gC W_b alpha^2 / 2 + gq alpha
    /// ```
    ///
    /// then through `V = Vhat / A` (with `P = sum_k dL/dV_k V_k`:
    /// `dL/dVhat_j = (dL/dV_j - P dA/dVhat_j) / A`, `dL/dW_j -= P (V_j + V_{j+1}) / 2`), the
    /// softplus (`sigmoid`) and the width softmax (`s p_i (g_i - sum_j p_j g_j)`).
    fn backward<T: Real>(
        x: T,
        theta: &[T],
        bins: usize,
        bound: T,
        gy: T,
        gl: T,
        gtheta: &mut [T],
    ) -> T {
        if !active(theta, bins, bound) || !(-bound..=bound).contains(&x) {
            return gy;
        }
        let kn = Knots::new(theta, bins);
        let half = T::c(0.5);
        let two_b = bound + bound;
        let u = ((x + bound) / two_b).max(T::zero()).min(T::one());
        let (b, alpha) = kn.locate(u);
        let (v0, v1) = (kn.v[b], kn.v[b + 1]);
        let wb = kn.w[b];
        let d = v1 - v0;
        let q = kn.density(b, alpha);
        let gc = two_b * gy;
        let gq = gl / q;
        let dx = gy * q + gq * d / (wb * two_b);

        let mut gw: Buf<T> = Buf::zeros(bins);
        let mut gv: Buf<T> = Buf::zeros(bins + 1);
        let shift = -gq * d / wb;
        for j in 0..b {
            let wj = kn.w[j];
            gw[j] = gc * (half * (kn.v[j] + kn.v[j + 1]) - q) + shift;
            gv[j] += gc * half * wj;
            gv[j + 1] += gc * half * wj;
        }
        let a2 = alpha * alpha;
        gw[b] = -gc * a2 * half * d + shift * alpha;
        gv[b] += gc * wb * (alpha - half * a2) + gq * (T::one() - alpha);
        gv[b + 1] += gc * wb * half * a2 + gq * alpha;

        // Area normalisation V = Vhat / A.
        let pdot: T = gv.iter().zip(kn.v.iter()).map(|(&g, &v)| g * v).sum();
        let (gtw, gtv) = gtheta.split_at_mut(bins);
        let tv = &theta[bins..];
        for j in 0..=bins {
            let mut da = T::zero();
            if j >= 1 {
                da += half * kn.w[j - 1];
            }
            if j < bins {
                da += half * kn.w[j];
                gw[j] -= pdot * half * (kn.v[j] + kn.v[j + 1]);
            }
            let gvh = (gv[j] - pdot * da) / kn.area;
            gtv[j] += gvh * sigmoid(tv[j]);
        }
        // Width softmax.
        let dot: T = gw.iter().zip(kn.p.iter()).map(|(&g, &p)| g * p).sum();
        for i in 0..bins {
            gtw[i] += kn.scale * kn.p[i] * (gw[i] - dot);
        }
        dx
    }
}

/// The knots of 16 splines (see `Knots`), built as `Knots::new` does per event, and
/// the scratch of their vertex heights and of the backward pass's knot gradients.
#[derive(Default)]
pub struct LaneKnots {
    p: lanes::Knots,
    w: lanes::Knots,
    v: lanes::Knots,
    x: lanes::Knots,
    s: lanes::Knots,
    vh: lanes::Knots,
    gw: lanes::Knots,
    gv: lanes::Knots,
    area: Lane,
}

/// Per-lane bin quantities: knot `x` and CDF `s` at both ends, vertices, width.
#[derive(Default)]
struct LaneBin {
    x0: Lane,
    x1: Lane,
    s0: Lane,
    s1: Lane,
    v0: Lane,
    v1: Lane,
    w: Lane,
}

impl LaneKnots {
    #[inline(always)]
    fn build(&mut self, th: &[Lane], bins: usize) {
        let m = min_width(bins);
        let scale = (1.0 - m * bins as f64) as f32;
        let m = m as f32;
        let kn = self;
        kn.area = [0.0; LANES];
        lanes::softmax_lanes(&th[..bins], &mut kn.p[..bins]);
        let vh = &mut kn.vh;
        lanes::softplus_lanes(
            &th[bins..=2 * bins],
            0.0,
            MIN_VERTEX as f32,
            &mut vh[..=bins],
        );
        let mut acc = [0f32; LANES];
        for k in 0..bins {
            for l in 0..LANES {
                let w = m + scale * kn.p[k][l];
                kn.w[k][l] = w;
                kn.x[k][l] = acc[l];
                acc[l] += w;
                kn.area[l] += 0.5 * (vh[k][l] + vh[k + 1][l]) * w;
            }
        }
        kn.x[bins] = [1.0; LANES];
        for k in 0..=bins {
            for l in 0..LANES {
                kn.v[k][l] = vh[k][l] / kn.area[l];
            }
        }
        let mut acc = [0f32; LANES];
        for k in 0..bins {
            kn.s[k] = acc;
            for l in 0..LANES {
                acc[l] += 0.5 * (kn.v[k][l] + kn.v[k + 1][l]) * kn.w[k][l];
            }
        }
        kn.s[bins] = [1.0; LANES];
    }

    /// The bin of `t` among the knots `by` (`x` or `s`), per lane: the last `k` in `1..K` with
    /// `by[k] <= t` (else 0), as a running select (the knots are sorted).
    #[inline(always)]
    fn bin(&self, bins: usize, by_cdf: bool, t: &Lane) -> LaneBin {
        let by = if by_cdf { &self.s } else { &self.x };
        let mut b = LaneBin {
            x0: self.x[0],
            x1: self.x[1],
            s0: self.s[0],
            s1: self.s[1],
            v0: self.v[0],
            v1: self.v[1],
            w: self.w[0],
        };
        for k in 1..bins {
            for l in 0..LANES {
                let c = by[k][l] <= t[l];
                b.x0[l] = select(c, self.x[k][l], b.x0[l]);
                b.x1[l] = select(c, self.x[k + 1][l], b.x1[l]);
                b.s0[l] = select(c, self.s[k][l], b.s0[l]);
                b.s1[l] = select(c, self.s[k + 1][l], b.s1[l]);
                b.v0[l] = select(c, self.v[k][l], b.v0[l]);
                b.v1[l] = select(c, self.v[k + 1][l], b.v1[l]);
                b.w[l] = select(c, self.w[k][l], b.w[l]);
            }
        }
        b
    }
}

/// `u = (x + B) / 2B` clamped to `[0, 1]`, and whether `x` is in `[-B, B]` (false for NaN).
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn to_unit(x: f32, bound: f32) -> (f32, bool) {
    let two_b = bound + bound;
    (
        ((x + bound) / two_b).max(0.0).min(1.0),
        x >= -bound && x <= bound,
    )
}

// `max(lo).min(hi)` rather than `clamp`: a NaN becomes `lo` (as with the scalar code's
// `Float::max`) instead of staying NaN, and `clamp` would check `lo <= hi` on every call.
#[allow(clippy::manual_clamp)]
impl LaneSpline for Quadratic {
    type Knots = LaneKnots;

    /// [`Spline1d::forward`] per lane.
    #[inline(always)]
    fn forward_lanes(
        kn: &mut LaneKnots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        x: &Lane,
        y: &mut Lane,
        ld: &mut Lane,
    ) {
        kn.build(th, bins);
        let mut u = [0f32; LANES];
        for l in 0..LANES {
            u[l] = to_unit(x[l], bound).0;
        }
        let b = kn.bin(bins, false, &u);
        let two_b = bound + bound;
        for l in 0..LANES {
            let (_, inside) = to_unit(x[l], bound);
            let alpha = ((u[l] - b.x0[l]) / (b.x1[l] - b.x0[l])).max(0.0).min(1.0);
            let (v0, v1) = (b.v0[l], b.v1[l]);
            let g = (alpha * (v0 * (2.0 - alpha) + alpha * v1) / (v0 + v1)).min(1.0);
            let c = b.s0[l] * (1.0 - g) + b.s1[l] * g;
            let yv = (two_b * c - bound).max(-bound).min(bound);
            let q = v0 * (1.0 - alpha) + v1 * alpha;
            y[l] = select(inside, yv, x[l]);
            ld[l] = select(inside, ln(q), 0.0);
        }
    }

    /// [`Spline1d::inverse`] per lane.
    #[inline(always)]
    fn inverse_lanes(
        kn: &mut LaneKnots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        y: &Lane,
        x: &mut Lane,
        ld: Option<&mut Lane>,
    ) {
        kn.build(th, bins);
        let mut c = [0f32; LANES];
        for l in 0..LANES {
            c[l] = to_unit(y[l], bound).0;
        }
        let b = kn.bin(bins, true, &c);
        let two_b = bound + bound;
        let mut q = [0f32; LANES];
        for l in 0..LANES {
            let (_, inside) = to_unit(y[l], bound);
            let f = ((c[l] - b.s0[l]) / (b.s1[l] - b.s0[l])).max(0.0).min(1.0);
            let (v0, v1) = (b.v0[l], b.v1[l]);
            let disc = (1.0 - f) * v0 * v0 + f * v1 * v1;
            let alpha = (f * (v0 + v1) / (v0 + disc.sqrt())).max(0.0).min(1.0);
            let u = b.x0[l] * (1.0 - alpha) + b.x1[l] * alpha;
            let xv = (two_b * u - bound).max(-bound).min(bound);
            q[l] = v0 * (1.0 - alpha) + v1 * alpha;
            x[l] = select(inside, xv, y[l]);
        }
        if let Some(ld) = ld {
            for l in 0..LANES {
                let (_, inside) = to_unit(y[l], bound);
                ld[l] = select(inside, -ln(q[l]), 0.0);
            }
        }
    }

    /// [`Spline1d::backward`] per lane; the bins below `b` are those whose upper knot is `<= u`.
    #[inline(always)]
    fn backward_lanes(
        kn: &mut LaneKnots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        x: &Lane,
        gy: &Lane,
        gl: &Lane,
        gth: &mut [Lane],
        gx: &mut Lane,
    ) {
        kn.build(th, bins);
        let two_b = bound + bound;
        let half = 0.5f32;
        let mut u = [0f32; LANES];
        let mut inside = [false; LANES];
        for l in 0..LANES {
            (u[l], inside[l]) = to_unit(x[l], bound);
        }
        let b = kn.bin(bins, false, &u);
        // Per-lane scalars of the bin.
        let (mut alpha, mut q, mut gc, mut gq, mut d) = (
            [0f32; LANES],
            [0f32; LANES],
            [0f32; LANES],
            [0f32; LANES],
            [0f32; LANES],
        );
        let mut shift = [0f32; LANES];
        for l in 0..LANES {
            alpha[l] = ((u[l] - b.x0[l]) / (b.x1[l] - b.x0[l])).max(0.0).min(1.0);
            d[l] = b.v1[l] - b.v0[l];
            q[l] = b.v0[l] * (1.0 - alpha[l]) + b.v1[l] * alpha[l];
            // Outside [-B, B] every gradient but dL/dx = gy is zero.
            gc[l] = select(inside[l], two_b * gy[l], 0.0);
            gq[l] = select(inside[l], gl[l] / q[l], 0.0);
            let dxv = gy[l] * q[l] + gq[l] * d[l] / (b.w[l] * two_b);
            gx[l] = select(inside[l], dxv, gy[l]);
            shift[l] = -gq[l] * d[l] / b.w[l];
        }
        let (gw, gv) = (&mut kn.gw, &mut kn.gv);
        gv[..=bins].fill([0.0; LANES]);
        for j in 0..bins {
            for l in 0..LANES {
                let below = j + 1 < bins && kn.x[j + 1][l] <= u[l];
                let at_or_above = j == 0 || kn.x[j][l] <= u[l];
                let is_b = at_or_above && !below;
                let wj = kn.w[j][l];
                let a = select(below, gc[l] * half * wj, 0.0);
                gv[j][l] += a;
                gv[j + 1][l] += a;
                let a2 = alpha[l] * alpha[l];
                let gw_below = gc[l] * (half * (kn.v[j][l] + kn.v[j + 1][l]) - q[l]) + shift[l];
                let gw_b = -gc[l] * a2 * half * d[l] + shift[l] * alpha[l];
                gw[j][l] = select(below, gw_below, select(is_b, gw_b, 0.0));
            }
        }
        for j in 0..bins {
            for l in 0..LANES {
                let below = j + 1 < bins && kn.x[j + 1][l] <= u[l];
                let at_or_above = j == 0 || kn.x[j][l] <= u[l];
                let is_b = at_or_above && !below;
                let a2 = alpha[l] * alpha[l];
                let wb = b.w[l];
                let t0 = gc[l] * wb * (alpha[l] - half * a2) + gq[l] * (1.0 - alpha[l]);
                let t1 = gc[l] * wb * half * a2 + gq[l] * alpha[l];
                gv[j][l] += select(is_b, t0, 0.0);
                gv[j + 1][l] += select(is_b, t1, 0.0);
            }
        }
        // Area normalisation V = Vhat / A.
        let mut pdot = [0f32; LANES];
        for j in 0..=bins {
            for l in 0..LANES {
                pdot[l] += gv[j][l] * kn.v[j][l];
            }
        }
        // (The per-knot conditions are hoisted out of the lane loops, which then vectorise.)
        let zero = [0f32; LANES];
        for j in 0..=bins {
            if j < bins {
                let (vj, vj1) = (kn.v[j], kn.v[j + 1]);
                for l in 0..LANES {
                    gw[j][l] -= pdot[l] * half * (vj[l] + vj1[l]);
                }
            }
            let wl = if j >= 1 { kn.w[j - 1] } else { zero };
            let wr = if j < bins { kn.w[j] } else { zero };
            let (gvj, tvj) = (gv[j], th[bins + j]);
            let mut out = zero;
            for l in 0..LANES {
                let da = half * wl[l] + half * wr[l];
                let gvh = (gvj[l] - pdot[l] * da) / kn.area[l];
                out[l] = gvh * lanes::sigmoid(tvj[l]);
            }
            gth[bins + j] = out;
        }
        // Width softmax.
        let scale = (1.0 - min_width(bins) * bins as f64) as f32;
        let mut dot = [0f32; LANES];
        for i in 0..bins {
            for l in 0..LANES {
                dot[l] += gw[i][l] * kn.p[i][l];
            }
        }
        for i in 0..bins {
            for l in 0..LANES {
                gth[i][l] = scale * kn.p[i][l] * (gw[i][l] - dot[l]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::linear::checks::*;
    use super::*;
    use crate::engine::Rng;

    /// Knot positions in `x` coordinates.
    fn knots_x(theta: &[f64], bins: usize, bound: f64) -> Vec<f64> {
        Knots::new(theta, bins)
            .x
            .iter()
            .map(|&u| -bound + 2.0 * bound * u)
            .collect()
    }

    #[test]
    fn n_params_is_two_k_plus_one() {
        assert_eq!(Quadratic::n_params(8), 17);
    }

    #[test]
    fn constant_theta_is_identity() {
        // Equal widths and equal vertices: uniform density, C(u) = u.
        let th = vec![0.4f64; 13];
        for &x in &[-2.5, -1.0, 0.0, 0.3, 2.9] {
            let (y, ld) = Quadratic::forward(x, &th, 6, 3.0);
            assert!((y - x).abs() < 1e-12 && ld.abs() < 1e-12, "{x}: {y} {ld}");
        }
    }

    #[test]
    fn round_trip_f64_and_f32() {
        let mut rng = Rng::new(11);
        for &(bins, bound) in &[(1, 1.0), (5, 3.0), (16, 4.5), (70, 2.0)] {
            let th = random_theta(&mut rng, 2 * bins + 1, 1.0);
            roundtrip_f64::<Quadratic>(bins, bound, &th, 1e-10);
            roundtrip_f32::<Quadratic>(bins, bound, &th, 1e-5);
        }
    }

    #[test]
    fn inverse_is_stable_for_nearly_equal_vertices() {
        // V_{b+1} - V_b ~ 1e-12 relative: the naive root formula would cancel catastrophically.
        let bins = 4;
        let mut th = vec![0.0; 2 * bins + 1];
        th[bins + 2] = 1e-9;
        th[0] = 0.7;
        roundtrip_f64::<Quadratic>(bins, 2.0, &th, 1e-12);
        roundtrip_f32::<Quadratic>(bins, 2.0, &th, 2e-6);
    }

    #[test]
    fn logdet_matches_finite_differences() {
        let mut rng = Rng::new(12);
        for &(bins, bound) in &[(5, 3.0), (12, 1.5)] {
            let th = random_theta(&mut rng, 2 * bins + 1, 1.0);
            let xs = points_off_knots(&mut rng, bound, &knots_x(&th, bins, bound), 30, 1e-4);
            logdet_fd::<Quadratic>(bins, bound, &th, &xs, 1e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(13);
        for &(bins, bound) in &[(1, 2.0), (6, 3.0), (10, 1.0)] {
            let th = random_theta(&mut rng, 2 * bins + 1, 1.0);
            let xs = points_off_knots(&mut rng, bound, &knots_x(&th, bins, bound), 12, 1e-4);
            backward_fd::<Quadratic>(bins, bound, &th, &xs, &mut rng, 1e-6);
        }
    }

    #[test]
    fn density_integrates_to_one() {
        let mut rng = Rng::new(14);
        for &(bins, bound) in &[(3, 1.0), (9, 5.0)] {
            let th = random_theta(&mut rng, 2 * bins + 1, 1.5);
            integrates_to_one::<Quadratic>(bins, bound, &th, &knots_x(&th, bins, bound));
        }
    }

    #[test]
    fn finite_at_knots_bounds_and_outliers() {
        let mut rng = Rng::new(15);
        for scale in [1.0, 30.0] {
            let th = random_theta(&mut rng, 17, scale);
            finite_everywhere::<Quadratic>(8, 3.0, &th, &knots_x(&th, 8, 3.0));
        }
        // Extreme logits: minimum widths and the vertex floor, still invertible.
        let th = vec![1e3, -1e3, 0.0, -1e3, -1e3, 1e3, -50.0, 40.0, 0.0];
        finite_everywhere::<Quadratic>(4, 2.0, &th, &knots_x(&th, 4, 2.0));
        roundtrip_f64::<Quadratic>(4, 2.0, &th, 1e-8);
    }

    #[test]
    fn lane_kernels_match_the_scalar_code_on_every_path() {
        for (bins, bound, scale) in [(8, 5.0, 1.0), (1, 2.0, 1.0), (16, 3.0, 2.0), (5, 1.0, 0.1)] {
            super::super::lanes::tests::matches_scalar_f64::<Quadratic>(bins, bound, scale, 2e-4);
        }
    }

    #[test]
    fn degenerate_shapes_are_identity() {
        let th = [0.3, -0.2, 0.1];
        assert_eq!(Quadratic::forward(0.5, &th, 1, 0.0), (0.5, 0.0));
        assert_eq!(Quadratic::inverse(0.5, &th, 1, f64::NAN), (0.5, 0.0));
        assert_eq!(Quadratic::forward(0.5, &[0.0], 0, 1.0), (0.5, 0.0));
        // NaN passes through the identity branch instead of being clamped onto the spline.
        let th = [0.3, -0.2, 0.1];
        let (y, ld) = Quadratic::forward(f64::NAN, &th, 1, 1.0);
        assert!(y.is_nan() && ld == 0.0);
    }
}
