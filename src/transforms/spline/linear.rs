//! Piecewise-linear monotone spline (Müller et al. 2019, "Neural Importance Sampling").
//!
//! On `[-B, B]` the input is mapped to the unit interval, `u = (x + B) / (2B)`, and pushed
//! through the CDF of a piecewise-constant density with `K` bins of equal width `1/K`:
//!
//! ```text
//! h = m + (1 - m K) softmax(theta)          (bin masses, sum h = 1, m = MIN_BIN_HEIGHT)
//! b = floor(u K),  alpha = u K - b          (bin index and position inside the bin)
//! C(u) = sum_{j<b} h_j + alpha h_b,         C'(u) = K h_b
//! y = 2B C(u) - B,                          log f'(x) = log C'(u) = log(K h_b)
//! ```
//!
//! Outside `[-B, B]` the map is the identity with log-derivative 0 and no parameter gradient.

use super::lanes::{self, LANES, Lane, LaneSpline, select};
use super::{Buf, MIN_BIN_HEIGHT, Spline1d};
use crate::engine::Real;
use crate::engine::vmath::ln;

/// Minimum bin mass actually used: `MIN_BIN_HEIGHT`, lowered to `0.5/K` for absurdly many bins
/// so that `1 - m K` stays positive.
fn min_mass(bins: usize) -> f64 {
    MIN_BIN_HEIGHT.min(0.5 / bins as f64)
}

/// Whether the spline is active (valid shape and bound); otherwise the map is the identity.
fn active<T: Real>(theta: &[T], bins: usize, bound: T) -> bool {
    debug_assert_eq!(
        theta.len(),
        Linear::n_params(bins),
        "linear spline: theta length"
    );
    bins >= 1 && theta.len() >= bins && bound > T::zero() && bound.is_finite()
}

/// Normalised spline of one feature: softmax `p`, bin masses `h` and cumulative masses `cum`
/// (`cum[0] = 0`, `cum[K] = 1` exactly).
struct Knots<T> {
    p: Buf<T>,
    h: Buf<T>,
    cum: Buf<T>,
    /// `1 - m K`, the softmax scale.
    scale: T,
}

impl<T: Real> Knots<T> {
    fn new(theta: &[T], bins: usize) -> Self {
        let m = min_mass(bins);
        let scale = T::c(1.0 - m * bins as f64);
        let mut p = Buf::zeros(bins);
        let mut h = Buf::zeros(bins);
        let mut cum = Buf::zeros(bins + 1);
        let mx = theta[..bins]
            .iter()
            .fold(T::neg_infinity(), |a, &t| a.max(t));
        let mut z = T::zero();
        for k in 0..bins {
            p[k] = (theta[k] - mx).exp();
            z += p[k];
        }
        let mut acc = T::zero();
        for k in 0..bins {
            p[k] /= z;
            h[k] = T::c(m) + scale * p[k];
            cum[k] = acc;
            acc += h[k];
        }
        cum[bins] = T::one();
        Self { p, h, cum, scale }
    }
}

/// Bin of `u` in `[0, 1]` with equal widths `1/K`, and the position `alpha` in it.
fn locate<T: Real>(u: T, bins: usize) -> (usize, T) {
    let s = u * T::c(bins as f64);
    let b = s.floor().to_usize().unwrap_or(0).min(bins - 1);
    let alpha = (s - T::c(b as f64)).max(T::zero()).min(T::one());
    (b, alpha)
}

/// Piecewise-linear CDF spline with `K` equal-width bins; `theta` holds `K` unnormalised bin
/// masses (softmax with minimum-mass mixing).
#[derive(Clone, Copy, Debug, Default)]
pub struct Linear;

impl Spline1d for Linear {
    /// `K` parameters: one unnormalised mass per bin.
    fn n_params(bins: usize) -> usize {
        bins
    }

    /// `y = 2B C(u) - B` with `C(u) = cum_b + alpha h_b`, and `log f'(x) = log(K h_b)`.
    fn forward<T: Real>(x: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !active(theta, bins, bound) || !(-bound..=bound).contains(&x) {
            return (x, T::zero());
        }
        let kn = Knots::new(theta, bins);
        let two_b = bound + bound;
        let u = ((x + bound) / two_b).max(T::zero()).min(T::one());
        let (b, alpha) = locate(u, bins);
        // Lerp form hits the knots exactly (alpha = 0 or 1), so f(+-B) = +-B exactly.
        let c = kn.cum[b] * (T::one() - alpha) + kn.cum[b + 1] * alpha;
        let y = (two_b * c - bound).max(-bound).min(bound);
        let ld = (T::c(bins as f64) * kn.h[b]).ln();
        (y, ld)
    }

    /// `u = (b + alpha) / K` with `alpha = (c - cum_b) / h_b`, `c = (y + B) / (2B)`;
    /// log-derivative `-log(K h_b)`.
    fn inverse<T: Real>(y: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !active(theta, bins, bound) || !(-bound..=bound).contains(&y) {
            return (y, T::zero());
        }
        let kn = Knots::new(theta, bins);
        let two_b = bound + bound;
        let c = ((y + bound) / two_b).max(T::zero()).min(T::one());
        // Largest b in [0, K-1] with cum[b] <= c.
        let b = kn.cum[1..bins].partition_point(|&s| s <= c);
        let dh = kn.cum[b + 1] - kn.cum[b];
        let alpha = ((c - kn.cum[b]) / dh).max(T::zero()).min(T::one());
        let u = (T::c(b as f64) + alpha) / T::c(bins as f64);
        let x = (two_b * u - bound).max(-bound).min(bound);
        let ld = -(T::c(bins as f64) * kn.h[b]).ln();
        (x, ld)
    }

    /// With `gC = 2B gy`: `dL/dh_j = gC [j < b] + (gC alpha + gl / h_b) [j = b]`, pulled back
    /// through `h = m + s softmax(theta)`: `dL/dtheta_i = s p_i (dL/dh_i - sum_j p_j dL/dh_j)`.
    /// `dL/dx = gy K h_b` (the log-derivative is piecewise constant in x).
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
        let two_b = bound + bound;
        let u = ((x + bound) / two_b).max(T::zero()).min(T::one());
        let (b, alpha) = locate(u, bins);
        let hb = kn.h[b];
        let gc = two_b * gy;
        let gh_b = gc * alpha + gl / hb;
        // sum_j p_j dL/dh_j
        let below: T = kn.p[..b].iter().copied().sum();
        let dot = gc * below + kn.p[b] * gh_b;
        for (j, g) in gtheta.iter_mut().enumerate().take(bins) {
            let gh = if j < b {
                gc
            } else if j == b {
                gh_b
            } else {
                T::zero()
            };
            *g += kn.scale * kn.p[j] * (gh - dot);
        }
        gy * T::c(bins as f64) * hb
    }
}

/// The knots of 16 splines (softmax `p`, masses `h`, cumulative masses `cum`), built as
/// `Knots::new` does per event.
#[derive(Default)]
pub struct LaneKnots {
    p: lanes::Knots,
    h: lanes::Knots,
    cum: lanes::Knots,
}

impl LaneKnots {
    #[inline(always)]
    fn build(&mut self, th: &[Lane], bins: usize) {
        let m = min_mass(bins);
        let scale = (1.0 - m * bins as f64) as f32;
        let m = m as f32;
        let kn = self;
        lanes::softmax_lanes(&th[..bins], &mut kn.p[..bins]);
        let mut acc = [0f32; LANES];
        for k in 0..bins {
            kn.cum[k] = acc;
            for l in 0..LANES {
                kn.h[k][l] = m + scale * kn.p[k][l];
                acc[l] += kn.h[k][l];
            }
        }
        kn.cum[bins] = [1.0; LANES];
    }

    /// Per lane, the bin `b` (as `f32`) whose `key` is the last one `<= v` among `key(1..K)`
    /// (the knots are sorted), and `(cum_b, cum_{b+1}, h_b)`.
    #[inline(always)]
    fn bin(&self, bins: usize, key: impl Fn(usize, usize) -> f32, v: &Lane) -> [Lane; 4] {
        let (mut b, mut c0, mut c1, mut h) = ([0f32; LANES], self.cum[0], self.cum[1], self.h[0]);
        for k in 1..bins {
            for l in 0..LANES {
                let c = key(k, l) <= v[l];
                b[l] = select(c, k as f32, b[l]);
                c0[l] = select(c, self.cum[k][l], c0[l]);
                c1[l] = select(c, self.cum[k + 1][l], c1[l]);
                h[l] = select(c, self.h[k][l], h[l]);
            }
        }
        [b, c0, c1, h]
    }
}

/// Per lane value: `u` clamped to `[0, 1]`, `s = u K`, the bin `floor(s)` clamped to
/// `0..=K-1` (as `f32`), `alpha` in `[0, 1]`, and whether `x` is in `[-B, B]`.
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn locate_lane(x: f32, bins: usize, bound: f32) -> (f32, f32, bool) {
    let two_b = bound + bound;
    let u = ((x + bound) / two_b).max(0.0).min(1.0);
    let s = u * bins as f32;
    let b = s.floor().max(0.0).min((bins - 1) as f32);
    let alpha = (s - b).max(0.0).min(1.0);
    (b, alpha, x >= -bound && x <= bound)
}

// `max(lo).min(hi)` rather than `clamp`: a NaN becomes `lo` (as with the scalar code's
// `Float::max`) instead of staying NaN, and `clamp` would check `lo <= hi` on every call.
#[allow(clippy::manual_clamp)]
impl LaneSpline for Linear {
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
        let (mut bf, mut alpha, mut inside) = ([0f32; LANES], [0f32; LANES], [false; LANES]);
        for l in 0..LANES {
            (bf[l], alpha[l], inside[l]) = locate_lane(x[l], bins, bound);
        }
        let [_, c0, c1, h] = kn.bin(bins, |k, _| k as f32, &bf);
        let two_b = bound + bound;
        for l in 0..LANES {
            let c = c0[l] * (1.0 - alpha[l]) + c1[l] * alpha[l];
            let yv = (two_b * c - bound).max(-bound).min(bound);
            y[l] = select(inside[l], yv, x[l]);
            ld[l] = select(inside[l], ln(bins as f32 * h[l]), 0.0);
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
        let two_b = bound + bound;
        let mut c = [0f32; LANES];
        for l in 0..LANES {
            c[l] = ((y[l] + bound) / two_b).max(0.0).min(1.0);
        }
        let [b, c0, c1, h] = kn.bin(bins, |k, l| kn.cum[k][l], &c);
        for l in 0..LANES {
            let inside = y[l] >= -bound && y[l] <= bound;
            let alpha = ((c[l] - c0[l]) / (c1[l] - c0[l])).max(0.0).min(1.0);
            let u = (b[l] + alpha) / bins as f32;
            let xv = (two_b * u - bound).max(-bound).min(bound);
            x[l] = select(inside, xv, y[l]);
        }
        if let Some(ld) = ld {
            for l in 0..LANES {
                let inside = y[l] >= -bound && y[l] <= bound;
                ld[l] = select(inside, -ln(bins as f32 * h[l]), 0.0);
            }
        }
    }

    /// [`Spline1d::backward`] per lane.
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
        let (mut bf, mut alpha, mut inside) = ([0f32; LANES], [0f32; LANES], [false; LANES]);
        for l in 0..LANES {
            (bf[l], alpha[l], inside[l]) = locate_lane(x[l], bins, bound);
        }
        let [_, _, _, hb] = kn.bin(bins, |k, _| k as f32, &bf);
        let two_b = bound + bound;
        let z = [0f32; LANES];
        let (mut gc, mut gh_b, mut below, mut pb) = (z, z, z, z);
        for l in 0..LANES {
            // Outside [-B, B] every gradient but dL/dx = gy is zero.
            gc[l] = select(inside[l], two_b * gy[l], 0.0);
            gh_b[l] = gc[l] * alpha[l] + select(inside[l], gl[l], 0.0) / hb[l];
            gx[l] = select(inside[l], gy[l] * bins as f32 * hb[l], gy[l]);
        }
        for j in 0..bins {
            for l in 0..LANES {
                let jf = j as f32;
                below[l] += select(jf < bf[l], kn.p[j][l], 0.0);
                pb[l] = select(jf == bf[l], kn.p[j][l], pb[l]);
            }
        }
        let scale = (1.0 - min_mass(bins) * bins as f64) as f32;
        let mut dot = z;
        for l in 0..LANES {
            dot[l] = gc[l] * below[l] + pb[l] * gh_b[l];
        }
        for j in 0..bins {
            for l in 0..LANES {
                let jf = j as f32;
                let gh = select(jf < bf[l], gc[l], select(jf == bf[l], gh_b[l], 0.0));
                gth[j][l] = scale * kn.p[j][l] * (gh - dot[l]);
            }
        }
    }
}

/// Generic property checks shared by the spline families' tests.
#[cfg(test)]
pub(crate) mod checks {
    use super::super::Spline1d;
    use crate::engine::Rng;

    /// Random `N(0, scale^2)` parameter vector.
    pub fn random_theta(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * rng.normal()).collect()
    }

    /// `x` grid over `[-B, B]` (endpoints included) plus tails.
    pub fn grid(bound: f64, n: usize) -> Vec<f64> {
        let mut xs: Vec<f64> = (0..=n)
            .map(|i| -bound + 2.0 * bound * i as f64 / n as f64)
            .collect();
        xs.extend_from_slice(&[
            -1e4,
            -2.0 * bound,
            -bound * 1.0001,
            bound * 1.0001,
            3.0 * bound,
            1e4,
        ]);
        xs
    }

    /// Whether `log f'` jumps within `1e-6 B` of `x` (a knot of a density with a jump), where
    /// forward and inverse may legitimately pick different sides.
    fn near_kink<S: Spline1d>(x: f64, theta: &[f64], bins: usize, bound: f64) -> bool {
        let d = 1e-6 * bound;
        let lm = S::forward(x - d, theta, bins, bound).1;
        let lp = S::forward(x + d, theta, bins, bound).1;
        (lm - lp).abs() > 1e-3
    }

    /// `inverse(forward(x)) = x` (f64, abs `tol`), inverse log-derivative = `-` forward one,
    /// `f` strictly increasing on the grid and onto: `f(+-B) = +-B` exactly.
    pub fn roundtrip_f64<S: Spline1d>(bins: usize, bound: f64, theta: &[f64], tol: f64) {
        for &x in &grid(bound, 400) {
            let (y, ld) = S::forward(x, theta, bins, bound);
            let (xr, ldi) = S::inverse(y, theta, bins, bound);
            assert!(y.is_finite() && ld.is_finite(), "x={x}: y={y} ld={ld}");
            assert!((xr - x).abs() <= tol, "x={x} y={y} xr={xr} err={}", xr - x);
            if !near_kink::<S>(x, theta, bins, bound) {
                assert!((ld + ldi).abs() <= 1e-9, "x={x}: ld={ld} ldi={ldi}");
            }
            if x.abs() > bound {
                assert_eq!((y, ld), (x, 0.0), "tail must be the identity");
            }
        }
        let xs: Vec<f64> = grid(bound, 400)
            .into_iter()
            .filter(|x| x.abs() <= bound)
            .collect();
        let ys: Vec<f64> = xs
            .iter()
            .map(|&x| S::forward(x, theta, bins, bound).0)
            .collect();
        for w in ys.windows(2) {
            assert!(w[1] > w[0], "not strictly increasing: {} !< {}", w[0], w[1]);
        }
        assert_eq!(S::forward(bound, theta, bins, bound).0, bound);
        assert_eq!(S::forward(-bound, theta, bins, bound).0, -bound);
        assert_eq!(S::inverse(bound, theta, bins, bound).0, bound);
        assert_eq!(S::inverse(-bound, theta, bins, bound).0, -bound);
    }

    /// Same round trip in `f32` with abs tolerance `tol`.
    pub fn roundtrip_f32<S: Spline1d>(bins: usize, bound: f64, theta: &[f64], tol: f32) {
        let th: Vec<f32> = theta.iter().map(|&t| t as f32).collect();
        let b = bound as f32;
        for &x64 in &grid(bound, 400) {
            let x = x64 as f32;
            let (y, ld) = S::forward(x, &th, bins, b);
            let (xr, ldi) = S::inverse(y, &th, bins, b);
            assert!(y.is_finite() && ld.is_finite(), "x={x}: y={y} ld={ld}");
            assert!(
                (xr - x).abs() <= tol,
                "f32 x={x} y={y} xr={xr} err={}",
                xr - x
            );
            // f32 rounding of x moves alpha, and log q varies like D / (W q) per unit of u.
            if !near_kink::<S>(x64, theta, bins, bound) {
                assert!((ld + ldi).abs() <= 1e-3, "f32 x={x}: ld={ld} ldi={ldi}");
            }
        }
        assert_eq!(S::forward(b, &th, bins, b).0, b);
        assert_eq!(S::forward(-b, &th, bins, b).0, -b);
    }

    /// Random points of `(-B, B)` at least `gap` away from every knot (knots given in `x`).
    pub fn points_off_knots(
        rng: &mut Rng,
        bound: f64,
        knots: &[f64],
        n: usize,
        gap: f64,
    ) -> Vec<f64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let x = rng.uniform_range(-bound, bound);
            if knots.iter().all(|&k| (x - k).abs() > gap) {
                out.push(x);
            }
        }
        out
    }

    /// `log f'(x)` against a central finite difference of `f`, relative tolerance `rel`.
    pub fn logdet_fd<S: Spline1d>(bins: usize, bound: f64, theta: &[f64], xs: &[f64], rel: f64) {
        let h = 1e-6;
        for &x in xs {
            let (_, ld) = S::forward(x, theta, bins, bound);
            let yp = S::forward(x + h, theta, bins, bound).0;
            let ym = S::forward(x - h, theta, bins, bound).0;
            let fd = (yp - ym) / (2.0 * h);
            let d = ld.exp();
            assert!((d - fd).abs() <= rel * d, "x={x}: f'={d} fd={fd}");
            // Inverse log-derivative against its own finite difference.
            let (y, _) = S::forward(x, theta, bins, bound);
            let (_, ldi) = S::inverse(y, theta, bins, bound);
            let xp = S::inverse(y + h, theta, bins, bound).0;
            let xm = S::inverse(y - h, theta, bins, bound).0;
            let fdi = (xp - xm) / (2.0 * h);
            assert!(
                (ldi.exp() - fdi).abs() <= rel * ldi.exp(),
                "y={y}: 1/f'={} fd={fdi}",
                ldi.exp()
            );
        }
    }

    /// `backward` against central finite differences of `L = gy y + gl log f'(x)` in `x` and in
    /// every `theta` entry; also checks that gradients are ADDED to `gtheta`.
    pub fn backward_fd<S: Spline1d>(
        bins: usize,
        bound: f64,
        theta: &[f64],
        xs: &[f64],
        rng: &mut Rng,
        rel: f64,
    ) {
        let h = 1e-6;
        for &x in xs {
            let gy = rng.normal();
            let gl = rng.normal();
            let loss = |x: f64, th: &[f64]| {
                let (y, ld) = S::forward(x, th, bins, bound);
                gy * y + gl * ld
            };
            let mut gt = vec![1.0; theta.len()];
            let gx = S::backward(x, theta, bins, bound, gy, gl, &mut gt);
            let close = |a: f64, b: f64| (a - b).abs() <= rel * (a.abs().max(b.abs()) + 1e-2);
            let fdx = (loss(x + h, theta) - loss(x - h, theta)) / (2.0 * h);
            assert!(close(gx, fdx), "dL/dx at x={x}: {gx} vs fd {fdx}");
            let mut th = theta.to_vec();
            for i in 0..theta.len() {
                th[i] = theta[i] + h;
                let lp = loss(x, &th);
                th[i] = theta[i] - h;
                let lm = loss(x, &th);
                th[i] = theta[i];
                let fd = (lp - lm) / (2.0 * h);
                let g = gt[i] - 1.0;
                assert!(close(g, fd), "dL/dtheta[{i}] at x={x}: {g} vs fd {fd}");
            }
        }
    }

    /// `f(+-B) = +-B` and the density integrates to one: `int_{-B}^{B} f'(x) dx = 2B`, done
    /// exactly (Simpson per sub-interval between knots; `f'` is piecewise polynomial of degree <= 1).
    pub fn integrates_to_one<S: Spline1d>(bins: usize, bound: f64, theta: &[f64], knots: &[f64]) {
        let mut pts = vec![-bound, bound];
        pts.extend(knots.iter().copied().filter(|k| k.abs() < bound));
        pts.sort_by(|a, b| a.total_cmp(b));
        let dens = |x: f64| S::forward(x, theta, bins, bound).1.exp();
        let mut total = 0.0;
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b - a < 1e-12 {
                continue;
            }
            // Nudge the ends inside so each piece is evaluated on its own polynomial.
            let d = 1e-12 * (b - a);
            total += (b - a) / 6.0 * (dens(a + d) + 4.0 * dens(0.5 * (a + b)) + dens(b - d));
        }
        assert!(
            (total - 2.0 * bound).abs() <= 1e-8 * bound,
            "integral {total} vs {}",
            2.0 * bound
        );
    }

    /// Forward, inverse and backward are finite at knots, at `+-B`, at `+-1e4` and just inside.
    pub fn finite_everywhere<S: Spline1d>(bins: usize, bound: f64, theta: &[f64], knots: &[f64]) {
        let mut xs = knots.to_vec();
        xs.extend_from_slice(&[-bound, bound, -1e4, 1e4, -bound + 1e-15, bound - 1e-15, 0.0]);
        for &x in &xs {
            let (y, ld) = S::forward(x, theta, bins, bound);
            let (xi, ldi) = S::inverse(x, theta, bins, bound);
            let mut gt = vec![0.0; theta.len()];
            let gx = S::backward(x, theta, bins, bound, 0.7, -1.3, &mut gt);
            assert!(y.is_finite() && ld.is_finite(), "forward at {x}: {y} {ld}");
            assert!(
                xi.is_finite() && ldi.is_finite(),
                "inverse at {x}: {xi} {ldi}"
            );
            assert!(
                gx.is_finite() && gt.iter().all(|g| g.is_finite()),
                "backward at {x}"
            );
            if x.abs() > bound {
                assert_eq!(gx, 0.7);
                assert!(
                    gt.iter().all(|&g| g == 0.0),
                    "tails carry no theta gradient"
                );
                assert_eq!((xi, ldi), (x, 0.0));
            }
        }
        // The same in f32.
        let th: Vec<f32> = theta.iter().map(|&t| t as f32).collect();
        for &x in &xs {
            let x = x as f32;
            let b = bound as f32;
            let (y, ld) = S::forward(x, &th, bins, b);
            let (xi, ldi) = S::inverse(x, &th, bins, b);
            let mut gt = vec![0f32; th.len()];
            let gx = S::backward(x, &th, bins, b, 0.7, -1.3, &mut gt);
            assert!(y.is_finite() && ld.is_finite() && xi.is_finite() && ldi.is_finite());
            assert!(
                gx.is_finite() && gt.iter().all(|g| g.is_finite()),
                "f32 backward at {x}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checks::*;
    use super::*;
    use crate::engine::Rng;

    fn knots_x(bins: usize, bound: f64) -> Vec<f64> {
        (0..=bins)
            .map(|j| -bound + 2.0 * bound * j as f64 / bins as f64)
            .collect()
    }

    #[test]
    fn lane_kernels_match_the_scalar_code_on_every_path() {
        for (bins, bound, scale) in [(8, 5.0, 1.0), (1, 2.0, 1.0), (16, 3.0, 2.0), (5, 1.0, 0.1)] {
            super::super::lanes::tests::matches_scalar_f64::<Linear>(bins, bound, scale, 2e-4);
        }
    }

    #[test]
    fn n_params_is_bins() {
        assert_eq!(Linear::n_params(8), 8);
    }

    #[test]
    fn zero_theta_is_identity() {
        let th = vec![0.0f64; 6];
        for &x in &[-2.5, -1.0, 0.0, 0.3, 2.9] {
            let (y, ld) = Linear::forward(x, &th, 6, 3.0);
            assert!((y - x).abs() < 1e-12 && ld.abs() < 1e-12, "{x}: {y} {ld}");
        }
    }

    #[test]
    fn round_trip_f64_and_f32() {
        let mut rng = Rng::new(1);
        for &(bins, bound) in &[(1, 1.0), (5, 3.0), (16, 4.5), (70, 2.0)] {
            let th = random_theta(&mut rng, bins, 1.0);
            roundtrip_f64::<Linear>(bins, bound, &th, 1e-10);
            roundtrip_f32::<Linear>(bins, bound, &th, 1e-5);
        }
    }

    #[test]
    fn logdet_matches_finite_differences() {
        let mut rng = Rng::new(2);
        for &(bins, bound) in &[(5, 3.0), (12, 1.5)] {
            let th = random_theta(&mut rng, bins, 1.0);
            let xs = points_off_knots(&mut rng, bound, &knots_x(bins, bound), 30, 1e-4);
            logdet_fd::<Linear>(bins, bound, &th, &xs, 1e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(3);
        for &(bins, bound) in &[(1, 2.0), (6, 3.0), (10, 1.0)] {
            let th = random_theta(&mut rng, bins, 1.0);
            let xs = points_off_knots(&mut rng, bound, &knots_x(bins, bound), 12, 1e-4);
            backward_fd::<Linear>(bins, bound, &th, &xs, &mut rng, 1e-6);
        }
    }

    #[test]
    fn density_integrates_to_one() {
        let mut rng = Rng::new(4);
        for &(bins, bound) in &[(3, 1.0), (9, 5.0)] {
            let th = random_theta(&mut rng, bins, 1.5);
            integrates_to_one::<Linear>(bins, bound, &th, &knots_x(bins, bound));
        }
    }

    #[test]
    fn finite_at_knots_bounds_and_outliers() {
        let mut rng = Rng::new(5);
        for scale in [1.0, 30.0] {
            let th = random_theta(&mut rng, 8, scale);
            finite_everywhere::<Linear>(8, 3.0, &th, &knots_x(8, 3.0));
        }
        // Extreme logits hit the minimum-mass floor and stay invertible.
        let th = vec![1e3, -1e3, 0.0, -1e3];
        finite_everywhere::<Linear>(4, 2.0, &th, &knots_x(4, 2.0));
        roundtrip_f64::<Linear>(4, 2.0, &th, 1e-9);
    }

    #[test]
    fn degenerate_shapes_are_identity() {
        let th = [0.3, -0.2];
        assert_eq!(Linear::forward(0.5, &th, 2, 0.0), (0.5, 0.0));
        assert_eq!(Linear::inverse(0.5, &th, 2, -1.0), (0.5, 0.0));
        assert_eq!(Linear::forward(0.5, &[], 0, 1.0), (0.5, 0.0));
    }
}
