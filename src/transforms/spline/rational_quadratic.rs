//! Rational-quadratic spline (Durkan, Bekasov, Murray & Papamakarios 2019, "Neural Spline Flows").
//!
//! `K` bins on `[-B, B]`; `theta = [u^w (K), u^h (K), u^d (K - 1)]`, so `n_params = 3K - 1`:
//! - widths `w_k = w_min + (1 - w_min K) softmax(u^w)_k`, knots `x_0 = -B`,
//!   `x_k = -B + 2B sum_{j<k} w_j`, `x_K = B`; heights and `y_k` likewise from `u^h`;
//! - knot derivatives `d_0 = d_K = 1` (so the identity tails join with slope 1) and
//!   `d_k = d_min + softplus(u^d_{k-1} + c)` for `k = 1..K-1`, with `c = ln(e^{1 - d_min} - 1)` so that
//!   zero parameters give `d_k = 1`: a freshly initialised layer (zero conditioner output) is the identity.
//!
//! In bin `k`, with `W = x_{k+1} - x_k`, `H = y_{k+1} - y_k`, `s = H / W`,
//! `xi = (x - x_k) / W` and `t = xi (1 - xi)`:
//!
//! `y = y_k + H (s xi^2 + d_k t) / D`, `D = s + (d_k + d_{k+1} - 2 s) t`,
//!
//! `f'(x) = s^2 (d_{k+1} xi^2 + 2 s t + d_k (1 - xi)^2) / D^2`.
//!
//! The inverse solves `a xi^2 + b xi + c = 0` with `eta = y - y_k`,
//! `a = H (s - d_k) + eta (d_k + d_{k+1} - 2s)`, `b = H d_k - eta (d_k + d_{k+1} - 2s)`,
//! `c = -s eta`, whose root in `[0, 1]` is `xi = 2c / (-b - sqrt(b^2 - 4ac))`; that form (nflows')
//! cancels catastrophically when `b < 0` (steep upper end of a flat bin, seen as 1e-3 errors in
//! f32), so there the algebraically equal `(-b + sqrt(b^2 - 4ac)) / (2a)` is used instead.
//! Outside `[-B, B]` the map is the identity with zero log-derivative and zero `theta`-gradient.

use super::lanes::{self, LANES, Lane, LaneSpline, select};
use super::{
    MAX_BINS, MAX_KNOTS, MIN_BIN_HEIGHT, MIN_BIN_WIDTH, MIN_DERIVATIVE, Spline1d, search_bin,
    softmax, softmax_backward, softplus, softplus_grad,
};
use crate::engine::vmath::ln;

/// Shift of the derivative parameters: `softplus(c) = 1 - d_min`, so zero parameters give slope 1.
const DERIVATIVE_SHIFT: f64 = 0.539_742_417_236_952_2;
use crate::engine::Real;

/// The rational-quadratic spline of Durkan et al. 2019 (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct RationalQuadratic;

/// Knots of one spline, in fixed stack arrays (no allocation per element).
struct Knots<T> {
    /// Width probabilities `softmax(u^w)` (first `K`).
    pw: [T; MAX_KNOTS],
    /// Height probabilities `softmax(u^h)` (first `K`).
    ph: [T; MAX_KNOTS],
    /// `x_0..=x_K`.
    xs: [T; MAX_KNOTS],
    /// `y_0..=y_K`.
    ys: [T; MAX_KNOTS],
    /// `d_0..=d_K`.
    ds: [T; MAX_KNOTS],
}

/// Cumulative knot positions `-B + 2B cumsum(min + (1 - min K) p)`, with the last knot at `B`.
#[inline]
fn cumulate<T: Real>(p: &[T], min: T, bound: T, out: &mut [T]) {
    let k = p.len();
    let scale = T::one() - min * T::c(k as f64);
    let two_b = bound + bound;
    let mut acc = T::zero();
    out[0] = -bound;
    for j in 1..k {
        acc += min + scale * p[j - 1];
        out[j] = -bound + two_b * acc;
    }
    out[k] = bound;
}

impl<T: Real> Knots<T> {
    #[inline]
    fn new(theta: &[T], bins: usize, bound: T) -> Self {
        assert!(
            (1..=MAX_BINS).contains(&bins),
            "rational-quadratic spline: bins must be in 1..={MAX_BINS}, got {bins}"
        );
        debug_assert_eq!(theta.len(), 3 * bins - 1);
        let z = T::zero();
        let mut s = Self {
            pw: [z; MAX_KNOTS],
            ph: [z; MAX_KNOTS],
            xs: [z; MAX_KNOTS],
            ys: [z; MAX_KNOTS],
            ds: [z; MAX_KNOTS],
        };
        softmax(&theta[..bins], &mut s.pw[..bins]);
        softmax(&theta[bins..2 * bins], &mut s.ph[..bins]);
        cumulate(&s.pw[..bins], T::c(MIN_BIN_WIDTH), bound, &mut s.xs);
        cumulate(&s.ph[..bins], T::c(MIN_BIN_HEIGHT), bound, &mut s.ys);
        let md = T::c(MIN_DERIVATIVE);
        s.ds[0] = T::one();
        s.ds[bins] = T::one();
        for k in 1..bins {
            s.ds[k] = md + softplus(theta[2 * bins + k - 1] + T::c(DERIVATIVE_SHIFT));
        }
        s
    }
}

/// Quantities of one bin evaluated at `xi`.
struct Bin<T> {
    w: T,
    h: T,
    s: T,
    d0: T,
    d1: T,
}

impl<T: Real> Bin<T> {
    #[inline]
    fn of(kn: &Knots<T>, k: usize) -> Self {
        let w = kn.xs[k + 1] - kn.xs[k];
        let h = kn.ys[k + 1] - kn.ys[k];
        Self {
            w,
            h,
            s: h / w,
            d0: kn.ds[k],
            d1: kn.ds[k + 1],
        }
    }

    /// `(H N / D, log f')` at `xi`, with `N = s xi^2 + d0 t`.
    #[inline]
    fn eval(&self, xi: T) -> (T, T) {
        let one = T::one();
        let t = xi * (one - xi);
        let om = one - xi;
        let num = self.s * xi * xi + self.d0 * t;
        let den = self.s + (self.d0 + self.d1 - self.s - self.s) * t;
        let q = self.d1 * xi * xi + (self.s + self.s) * t + self.d0 * om * om;
        let logd = T::c(2.0) * self.s.ln() + q.ln() - T::c(2.0) * den.ln();
        (self.h * num / den, logd)
    }
}

impl Spline1d for RationalQuadratic {
    fn n_params(bins: usize) -> usize {
        3 * bins - 1
    }

    fn forward<T: Real>(x: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !(x >= -bound && x <= bound) {
            return (x, T::zero());
        }
        let xc = x.max(-bound).min(bound);
        let kn = Knots::new(theta, bins, bound);
        let k = search_bin(&kn.xs[..=bins], xc);
        let b = Bin::of(&kn, k);
        let xi = ((xc - kn.xs[k]) / b.w).max(T::zero()).min(T::one());
        let (dy, logd) = b.eval(xi);
        (kn.ys[k] + dy, logd)
    }

    fn inverse<T: Real>(y: T, theta: &[T], bins: usize, bound: T) -> (T, T) {
        if !(y >= -bound && y <= bound) {
            return (y, T::zero());
        }
        let yc = y.max(-bound).min(bound);
        let kn = Knots::new(theta, bins, bound);
        let k = search_bin(&kn.ys[..=bins], yc);
        let b = Bin::of(&kn, k);
        let eta = (yc - kn.ys[k]).max(T::zero()).min(b.h);
        let sum = b.d0 + b.d1 - b.s - b.s;
        let a = b.h * (b.s - b.d0) + eta * sum;
        let bb = b.h * b.d0 - eta * sum;
        let c = -b.s * eta;
        let disc = (bb * bb - T::c(4.0) * a * c).max(T::zero());
        // The root in [0, 1] is 2c / (-b - sqrt(disc)) = (-b + sqrt(disc)) / (2a). Pick the form
        // without cancellation: the first for b >= 0, the second for b < 0 (then
        // a >= -b - c > 0 because P(1) = a + b + c = s (H - eta) >= 0 and c <= 0).
        let sq = disc.sqrt();
        let xi = if bb >= T::zero() {
            let den = -bb - sq;
            if den < T::zero() {
                (c + c) / den
            } else {
                T::zero()
            }
        } else if a > T::zero() {
            (sq - bb) / (a + a)
        } else {
            T::one()
        };
        let xi = xi.max(T::zero()).min(T::one());
        let (_, logd) = b.eval(xi);
        (kn.xs[k] + xi * b.w, -logd)
    }

    fn backward<T: Real>(
        x: T,
        theta: &[T],
        bins: usize,
        bound: T,
        gy: T,
        gl: T,
        gtheta: &mut [T],
    ) -> T {
        if !(x >= -bound && x <= bound) {
            return gy;
        }
        let one = T::one();
        let two = T::c(2.0);
        let xc = x.max(-bound).min(bound);
        let kn = Knots::new(theta, bins, bound);
        let k = search_bin(&kn.xs[..=bins], xc);
        let Bin { w, h, s, d0, d1 } = Bin::of(&kn, k);
        let xi = ((xc - kn.xs[k]) / w).max(T::zero()).min(one);
        let om = one - xi;
        let t = xi * om;
        let u = xi * xi;
        let sum = d0 + d1 - two * s;
        let num = s * u + d0 * t;
        let den = s + sum * t;
        let q = d1 * u + two * s * t + d0 * om * om;
        let den2 = den * den;
        let r = num / den;
        // Partials of y and of l = log f' w.r.t. xi, s, d0, d1 (and H explicitly, for y).
        let y_xi = h * s * q / den2;
        let y_s = h * (u * den - num * (one - two * t)) / den2;
        let y_d0 = h * t * (den - num) / den2;
        let y_d1 = -h * num * t / den2;
        let y_h = r;
        let dt = one - two * xi;
        let q_xi = two * (d1 * xi + s * dt - d0 * om);
        let den_xi = sum * dt;
        let l_xi = q_xi / q - two * den_xi / den;
        let l_s = two / s + two * t / q - two * (one - two * t) / den;
        let l_d0 = om * om / q - two * t / den;
        let l_d1 = u / q - two * t / den;
        let g_xi = gy * y_xi + gl * l_xi;
        let g_s = gy * y_s + gl * l_s;
        let g_d0 = gy * y_d0 + gl * l_d0;
        let g_d1 = gy * y_d1 + gl * l_d1;
        // Chain through xi = (x - x_k) / W and s = H / W.
        let gx = g_xi / w;
        let g_w = -g_xi * xi / w - g_s * s / w;
        let g_h = gy * y_h + g_s / w;
        // Knot gradients: W = x_{k+1} - x_k, H = y_{k+1} - y_k, y = y_k + H r.
        let z = T::zero();
        let mut gxs = [z; MAX_KNOTS];
        let mut gys = [z; MAX_KNOTS];
        gxs[k] = -gx - g_w;
        gxs[k + 1] = g_w;
        gys[k] = gy - g_h;
        gys[k + 1] = g_h;
        // x_j = -B + 2B sum_{i<j} w_i for j < K (x_K = B is constant), so
        // dL/dw_i = 2B sum_{i<j<K} dL/dx_j; then through the min-width mixing and the softmax.
        let two_b = bound + bound;
        let mut gw = [z; MAX_KNOTS];
        let mut gh = [z; MAX_KNOTS];
        let (mut ax, mut ay) = (z, z);
        for i in (0..bins).rev() {
            if i + 1 < bins {
                ax += gxs[i + 1];
                ay += gys[i + 1];
            }
            gw[i] = two_b * ax;
            gh[i] = two_b * ay;
        }
        let kf = T::c(bins as f64);
        softmax_backward(
            &kn.pw[..bins],
            &gw[..bins],
            one - T::c(MIN_BIN_WIDTH) * kf,
            &mut gtheta[..bins],
        );
        softmax_backward(
            &kn.ph[..bins],
            &gh[..bins],
            one - T::c(MIN_BIN_HEIGHT) * kf,
            &mut gtheta[bins..2 * bins],
        );
        // Interior derivatives d_j = d_min + softplus(u^d_{j-1}), j = 1..K-1.
        if k >= 1 {
            gtheta[2 * bins + k - 1] +=
                g_d0 * softplus_grad(theta[2 * bins + k - 1] + T::c(DERIVATIVE_SHIFT));
        }
        if k + 1 < bins {
            gtheta[2 * bins + k] +=
                g_d1 * softplus_grad(theta[2 * bins + k] + T::c(DERIVATIVE_SHIFT));
        }
        gx
    }
}

/// The knots of 16 splines, built as `Knots::new` does per event, without the
/// interior derivatives: a bin needs only its two (`LaneKnots::bin`), so the kernels take the
/// softplus of 2 parameters per lane instead of `K - 1`, with the same bits. Also the scratch of
/// the backward pass's knot gradients.
#[derive(Default)]
pub struct LaneKnots {
    pw: lanes::Knots,
    ph: lanes::Knots,
    xs: lanes::Knots,
    ys: lanes::Knots,
    gw: lanes::Knots,
    gh: lanes::Knots,
}

/// [`cumulate`] per lane.
#[inline(always)]
fn cumulate_lanes(p: &[Lane], min: f32, bound: f32, out: &mut [Lane]) {
    let k = p.len();
    let scale = 1.0 - min * k as f32;
    let two_b = bound + bound;
    let mut acc = [0f32; LANES];
    out[0] = [-bound; LANES];
    for j in 1..k {
        for l in 0..LANES {
            acc[l] += min + scale * p[j - 1][l];
            out[j][l] = -bound + two_b * acc[l];
        }
    }
    out[k] = [bound; LANES];
}

/// `d = d_min + softplus(u + c)` per lane (the interior knot derivative of parameter `u`).
#[inline(always)]
fn derivative_lanes(u: &Lane) -> Lane {
    let mut d = [0f32; LANES];
    lanes::softplus_lanes(
        std::slice::from_ref(u),
        DERIVATIVE_SHIFT as f32,
        MIN_DERIVATIVE as f32,
        std::slice::from_mut(&mut d),
    );
    d
}

impl LaneKnots {
    /// Builds the widths, heights and knots of `th` (the first `bins + 1` of each array).
    #[inline(always)]
    fn build(&mut self, th: &[Lane], bins: usize, bound: f32) {
        lanes::softmax_lanes(&th[..bins], &mut self.pw[..bins]);
        lanes::softmax_lanes(&th[bins..2 * bins], &mut self.ph[..bins]);
        cumulate_lanes(
            &self.pw[..bins],
            MIN_BIN_WIDTH as f32,
            bound,
            &mut self.xs[..=bins],
        );
        cumulate_lanes(
            &self.ph[..bins],
            MIN_BIN_HEIGHT as f32,
            bound,
            &mut self.ys[..=bins],
        );
    }

    /// The bin of `v` among the knots `by` (`xs` or `ys`) per lane (as [`search_bin`]: the
    /// number of interior knots `<= v`), and the bin's knots and derivatives
    /// `(x0, y0, w, h, d0, d1)`: `d_k = d_min + softplus(u^d_{k-1} + c)` from the derivative
    /// parameters `th[2K..]` of the bin's two knots, 1 at `d_0` and `d_K`.
    #[inline(always)]
    fn bin(&self, th: &[Lane], bins: usize, by_y: bool, v: &Lane) -> ([u32; LANES], [Lane; 6]) {
        let by = if by_y { &self.ys } else { &self.xs };
        let ud = &th[2 * bins..3 * bins - 1];
        let mut k = [0u32; LANES];
        let (mut x0, mut x1, mut y0, mut y1) = (self.xs[0], self.xs[1], self.ys[0], self.ys[1]);
        // The derivative parameters of knots k and k + 1 (unused where the knot is an end).
        let (mut u0, mut u1) = ([0f32; LANES], *ud.first().unwrap_or(&[0f32; LANES]));
        for j in 1..bins {
            let next = &ud[j.min(bins - 2)];
            for l in 0..LANES {
                let c = by[j][l] <= v[l];
                k[l] += c as u32;
                x0[l] = select(c, self.xs[j][l], x0[l]);
                x1[l] = select(c, self.xs[j + 1][l], x1[l]);
                y0[l] = select(c, self.ys[j][l], y0[l]);
                y1[l] = select(c, self.ys[j + 1][l], y1[l]);
                u0[l] = select(c, ud[j - 1][l], u0[l]);
                u1[l] = select(c, next[l], u1[l]);
            }
        }
        let (s0, s1) = (derivative_lanes(&u0), derivative_lanes(&u1));
        let (mut w, mut h, mut d0, mut d1) = ([0f32; LANES], [0f32; LANES], s0, s1);
        let last = bins as u32 - 1;
        for l in 0..LANES {
            w[l] = x1[l] - x0[l];
            h[l] = y1[l] - y0[l];
            d0[l] = select(k[l] == 0, 1.0, s0[l]);
            d1[l] = select(k[l] == last, 1.0, s1[l]);
        }
        (k, [x0, y0, w, h, d0, d1])
    }
}

/// [`Bin::eval`] per lane value: `(H N / D, log f')`.
#[inline(always)]
fn eval_lane(xi: f32, h: f32, s: f32, d0: f32, d1: f32) -> (f32, f32) {
    let t = xi * (1.0 - xi);
    let om = 1.0 - xi;
    let num = s * xi * xi + d0 * t;
    let den = s + (d0 + d1 - s - s) * t;
    let q = d1 * xi * xi + (s + s) * t + d0 * om * om;
    let logd = 2.0 * ln(s) + ln(q) - 2.0 * ln(den);
    (h * num / den, logd)
}

// `max(lo).min(hi)` rather than `clamp`: a NaN becomes `lo` (as with the scalar code's
// `Float::max`) instead of staying NaN, and `clamp` would check `lo <= hi` on every call.
#[allow(clippy::manual_clamp)]
impl LaneSpline for RationalQuadratic {
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
        kn.build(th, bins, bound);
        let mut xc = [0f32; LANES];
        for l in 0..LANES {
            xc[l] = x[l].max(-bound).min(bound);
        }
        let (_, [x0, y0, w, h, d0, d1]) = kn.bin(th, bins, false, &xc);
        for l in 0..LANES {
            let inside = x[l] >= -bound && x[l] <= bound;
            let xi = ((xc[l] - x0[l]) / w[l]).max(0.0).min(1.0);
            let (dy, logd) = eval_lane(xi, h[l], h[l] / w[l], d0[l], d1[l]);
            y[l] = select(inside, y0[l] + dy, x[l]);
            ld[l] = select(inside, logd, 0.0);
        }
    }

    /// [`Spline1d::inverse`] per lane (both roots computed, the cancellation-free one selected).
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
        kn.build(th, bins, bound);
        let mut yc = [0f32; LANES];
        for l in 0..LANES {
            yc[l] = y[l].max(-bound).min(bound);
        }
        let (_, [x0, y0, w, h, d0, d1]) = kn.bin(th, bins, true, &yc);
        let mut xis = [0f32; LANES];
        for l in 0..LANES {
            let inside = y[l] >= -bound && y[l] <= bound;
            let (h, d0, d1) = (h[l], d0[l], d1[l]);
            let s = h / w[l];
            let eta = (yc[l] - y0[l]).max(0.0).min(h);
            let sum = d0 + d1 - s - s;
            let a = h * (s - d0) + eta * sum;
            let bb = h * d0 - eta * sum;
            let c = -s * eta;
            let disc = (bb * bb - 4.0 * a * c).max(0.0);
            let sq = disc.sqrt();
            let den = -bb - sq;
            let first = select(den < 0.0, (c + c) / den, 0.0);
            let second = select(a > 0.0, (sq - bb) / (a + a), 1.0);
            let xi = select(bb >= 0.0, first, second).max(0.0).min(1.0);
            x[l] = select(inside, x0[l] + xi * w[l], y[l]);
            xis[l] = xi;
        }
        if let Some(ld) = ld {
            for l in 0..LANES {
                let inside = y[l] >= -bound && y[l] <= bound;
                let (_, logd) = eval_lane(xis[l], h[l], h[l] / w[l], d0[l], d1[l]);
                ld[l] = select(inside, -logd, 0.0);
            }
        }
    }

    /// [`Spline1d::backward`] per lane; the knot gradients live at the bin's two knots only.
    #[inline(always)]
    fn backward_lanes(
        kn: &mut LaneKnots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        x: &Lane,
        gy_in: &Lane,
        gl_in: &Lane,
        gth: &mut [Lane],
        gx_out: &mut Lane,
    ) {
        kn.build(th, bins, bound);
        let mut xc = [0f32; LANES];
        for l in 0..LANES {
            xc[l] = x[l].max(-bound).min(bound);
        }
        let (k, [x0, _, w, h, d0, d1]) = kn.bin(th, bins, false, &xc);
        let two_b = bound + bound;
        // Per lane: the knot gradients at x_k, x_{k+1}, y_k, y_{k+1}, and dL/dd0, dL/dd1.
        let z = [0f32; LANES];
        let (mut gx0, mut gx1, mut gy0, mut gy1, mut gd0, mut gd1) = (z, z, z, z, z, z);
        for l in 0..LANES {
            let inside = x[l] >= -bound && x[l] <= bound;
            // Outside [-B, B] every gradient but dL/dx = gy is zero.
            let gy = select(inside, gy_in[l], 0.0);
            let gl = select(inside, gl_in[l], 0.0);
            let (w, h, d0, d1) = (w[l], h[l], d0[l], d1[l]);
            let s = h / w;
            let xi = ((xc[l] - x0[l]) / w).max(0.0).min(1.0);
            let om = 1.0 - xi;
            let t = xi * om;
            let u = xi * xi;
            let sum = d0 + d1 - 2.0 * s;
            let num = s * u + d0 * t;
            let den = s + sum * t;
            let q = d1 * u + 2.0 * s * t + d0 * om * om;
            let den2 = den * den;
            let r = num / den;
            let y_xi = h * s * q / den2;
            let y_s = h * (u * den - num * (1.0 - 2.0 * t)) / den2;
            let y_d0 = h * t * (den - num) / den2;
            let y_d1 = -h * num * t / den2;
            let y_h = r;
            let dt = 1.0 - 2.0 * xi;
            let q_xi = 2.0 * (d1 * xi + s * dt - d0 * om);
            let den_xi = sum * dt;
            let l_xi = q_xi / q - 2.0 * den_xi / den;
            let l_s = 2.0 / s + 2.0 * t / q - 2.0 * (1.0 - 2.0 * t) / den;
            let l_d0 = om * om / q - 2.0 * t / den;
            let l_d1 = u / q - 2.0 * t / den;
            let g_xi = gy * y_xi + gl * l_xi;
            let g_s = gy * y_s + gl * l_s;
            gd0[l] = gy * y_d0 + gl * l_d0;
            gd1[l] = gy * y_d1 + gl * l_d1;
            let gx = g_xi / w;
            let g_w = -g_xi * xi / w - g_s * s / w;
            let g_h = gy * y_h + g_s / w;
            gx0[l] = -gx - g_w;
            gx1[l] = g_w;
            gy0[l] = gy - g_h;
            gy1[l] = g_h;
            gx_out[l] = select(inside, gx, gy_in[l]);
        }
        // dL/dw_i = 2B sum_{i<j<K} dL/dx_j (x_K = B is constant), where dL/dx_j is gx0 at j = k
        // and gx1 at j = k + 1; likewise for the heights.
        let (mut ax, mut ay) = (z, z);
        let (gw, gh) = (&mut kn.gw, &mut kn.gh);
        for i in (0..bins).rev() {
            if i + 1 < bins {
                let j = (i + 1) as u32;
                for l in 0..LANES {
                    let at_k = k[l] == j;
                    let at_k1 = k[l] + 1 == j;
                    ax[l] += select(at_k, gx0[l], select(at_k1, gx1[l], 0.0));
                    ay[l] += select(at_k, gy0[l], select(at_k1, gy1[l], 0.0));
                }
            }
            for l in 0..LANES {
                gw[i][l] = two_b * ax[l];
                gh[i][l] = two_b * ay[l];
            }
        }
        let kf = bins as f32;
        softmax_backward_lanes(
            &kn.pw[..bins],
            &gw[..bins],
            1.0 - MIN_BIN_WIDTH as f32 * kf,
            &mut gth[..bins],
        );
        softmax_backward_lanes(
            &kn.ph[..bins],
            &gh[..bins],
            1.0 - MIN_BIN_HEIGHT as f32 * kf,
            &mut gth[bins..2 * bins],
        );
        // Interior derivatives d_j = d_min + softplus(u^d_{j-1}): parameter m is d_{m+1}, which
        // is d0 of bin m + 1 and d1 of bin m.
        for m in 0..bins - 1 {
            for l in 0..LANES {
                let g = select(k[l] == m as u32 + 1, gd0[l], 0.0)
                    + select(k[l] == m as u32, gd1[l], 0.0);
                gth[2 * bins + m][l] =
                    g * lanes::sigmoid(th[2 * bins + m][l] + DERIVATIVE_SHIFT as f32);
            }
        }
    }
}

/// [`softmax_backward`] per lane, writing (not adding) `scale p_k (g_k - sum_j p_j g_j)`.
#[inline(always)]
fn softmax_backward_lanes(p: &[Lane], g: &[Lane], scale: f32, out: &mut [Lane]) {
    let mut dot = [0f32; LANES];
    for (pk, gk) in p.iter().zip(g) {
        for l in 0..LANES {
            dot[l] += pk[l] * gk[l];
        }
    }
    for ((o, pk), gk) in out.iter_mut().zip(p).zip(g) {
        for l in 0..LANES {
            o[l] = scale * pk[l] * (gk[l] - dot[l]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    type Rq = RationalQuadratic;
    const B: f64 = 3.0;

    fn random_theta(bins: usize, scale: f64, rng: &mut Rng) -> Vec<f64> {
        (0..Rq::n_params(bins))
            .map(|_| rng.normal() * scale)
            .collect()
    }

    fn knots(theta: &[f64], bins: usize) -> Vec<f64> {
        let kn = Knots::new(theta, bins, B);
        kn.xs[..=bins].to_vec()
    }

    fn loss(x: f64, theta: &[f64], bins: usize, gy: f64, gl: f64) -> f64 {
        let (y, l) = Rq::forward(x, theta, bins, B);
        gy * y + gl * l
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / (1.0 + a.abs().max(b.abs()))
    }

    /// Central finite-difference check of `backward` for x and every theta entry.
    /// `eps` and `tol`: step and relative tolerance (at knots f'' jumps, so central differences
    /// are only first-order accurate there and need a smaller step).
    fn check_backward_central(
        x: f64,
        theta: &[f64],
        bins: usize,
        (gy, gl): (f64, f64),
        (eps, tol): (f64, f64),
    ) {
        let mut g = vec![0.0; theta.len()];
        let gx = Rq::backward(x, theta, bins, B, gy, gl, &mut g);
        let fd =
            (loss(x + eps, theta, bins, gy, gl) - loss(x - eps, theta, bins, gy, gl)) / (2.0 * eps);
        assert!(rel(gx, fd) < tol, "dL/dx at {x}: {gx} vs {fd}");
        for i in 0..theta.len() {
            let (mut tp, mut tm) = (theta.to_vec(), theta.to_vec());
            tp[i] += eps;
            tm[i] -= eps;
            let fd = (loss(x, &tp, bins, gy, gl) - loss(x, &tm, bins, gy, gl)) / (2.0 * eps);
            assert!(
                rel(g[i], fd) < tol,
                "dL/dtheta[{i}] at {x}: {} vs {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn lane_kernels_match_the_scalar_code_on_every_path() {
        for (bins, bound, scale) in [(8, 5.0, 1.0), (1, 2.0, 1.0), (16, 3.0, 1.5), (5, 1.0, 0.1)] {
            super::super::lanes::tests::matches_scalar_f64::<Rq>(bins, bound, scale, 3e-4);
        }
    }

    #[test]
    fn round_trip_and_inverse_log_derivative() {
        let mut rng = Rng::new(1);
        for &bins in &[1usize, 2, 5, 8, 64] {
            let theta = random_theta(bins, 1.5, &mut rng);
            let kn = Knots::new(&theta, bins, B);
            let mut ys: Vec<f64> = (0..200).map(|_| rng.uniform_range(-B, B)).collect();
            ys.extend_from_slice(&kn.ys[..=bins]);
            ys.extend_from_slice(&[-B, B, 3.5, -100.0]);
            for &y in &ys {
                let (x, li) = Rq::inverse(y, &theta, bins, B);
                let (y2, lf) = Rq::forward(x, &theta, bins, B);
                assert!((y2 - y).abs() < 1e-12, "bins {bins}: f(f^-1({y})) = {y2}");
                assert!(
                    (lf + li).abs() < 1e-10,
                    "bins {bins}: log-dets {lf} vs {li}"
                );
                let (x2, _) = Rq::inverse(y2, &theta, bins, B);
                assert!((x2 - x).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn log_derivative_matches_finite_differences() {
        let mut rng = Rng::new(2);
        for &bins in &[1usize, 3, 8] {
            let theta = random_theta(bins, 1.5, &mut rng);
            let kn = knots(&theta, bins);
            let mut checked = 0;
            while checked < 100 {
                let x = rng.uniform_range(-B, B);
                if kn.iter().any(|k| (k - x).abs() < 1e-4) {
                    continue;
                }
                let eps = 1e-6;
                let fd = ((Rq::forward(x + eps, &theta, bins, B).0
                    - Rq::forward(x - eps, &theta, bins, B).0)
                    / (2.0 * eps))
                    .ln();
                let (_, l) = Rq::forward(x, &theta, bins, B);
                assert!(rel(l, fd) < 1e-7, "bins {bins}, x {x}: {l} vs {fd}");
                checked += 1;
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences_at_random_points() {
        let mut rng = Rng::new(3);
        for &bins in &[1usize, 2, 5, 8] {
            let theta = random_theta(bins, 1.2, &mut rng);
            let kn = knots(&theta, bins);
            let mut checked = 0;
            while checked < 20 {
                let x = rng.uniform_range(-B, B);
                if kn.iter().any(|k| (k - x).abs() < 1e-4) {
                    continue;
                }
                check_backward_central(x, &theta, bins, (rng.normal(), rng.normal()), (1e-6, 1e-7));
                checked += 1;
            }
        }
    }

    #[test]
    fn backward_on_knots_and_bounds() {
        let mut rng = Rng::new(4);
        let bins = 6;
        let theta = random_theta(bins, 1.2, &mut rng);
        let kn = knots(&theta, bins);
        let eps = 1e-7;
        for (i, &x) in kn.iter().enumerate() {
            // y is C^1 across knots (in x and in theta): central differences apply with gl = 0.
            check_backward_central(x, &theta, bins, (0.8, 0.0), (1e-8, 1e-6));
            // log f' has a kink at knots: x belongs to the bin on its right (the left one at +B),
            // so compare with a one-sided difference into that bin.
            let (gy, gl) = (-0.6, 1.3);
            let mut g = vec![0.0; theta.len()];
            let gx = Rq::backward(x, &theta, bins, B, gy, gl, &mut g);
            let h = if i == bins { -eps } else { eps };
            let fd = (loss(x + h, &theta, bins, gy, gl) - loss(x, &theta, bins, gy, gl)) / h;
            assert!(
                rel(gx, fd) < 1e-5,
                "one-sided dL/dx at knot {i}: {gx} vs {fd}"
            );
            // Theta gradients at a knot are the limit from inside its bin.
            let xin = x + if i == bins { -1e-9 } else { 1e-9 };
            let mut g2 = vec![0.0; theta.len()];
            Rq::backward(xin, &theta, bins, B, gy, gl, &mut g2);
            for (a, b) in g.iter().zip(&g2) {
                assert!(rel(*a, *b) < 1e-6, "theta gradient at knot {i}: {a} vs {b}");
            }
        }
        // At ±B the map is pinned: y = ±B and log f' = 0 for every theta.
        for x in [-B, B] {
            let mut g = vec![0.0; theta.len()];
            Rq::backward(x, &theta, bins, B, 1.0, 1.0, &mut g);
            assert!(
                g.iter().all(|v| v.abs() < 1e-12),
                "theta grad at {x}: {g:?}"
            );
            let (y, l) = Rq::forward(x, &theta, bins, B);
            assert!((y - x).abs() < 1e-14 && l.abs() < 1e-14);
        }
    }

    #[test]
    fn identity_tails_and_outliers_are_finite() {
        let mut rng = Rng::new(5);
        for scale in [1.0, 30.0, 300.0] {
            let bins = 8;
            let theta = random_theta(bins, scale, &mut rng);
            let kn = Knots::new(&theta, bins, B);
            let mut pts = vec![1e4, -1e4, 3.0 + 1e-12, -B, B, 0.0];
            pts.extend_from_slice(&kn.xs[..=bins]);
            pts.extend_from_slice(&kn.ys[..=bins]);
            for &x in &pts {
                let (y, l) = Rq::forward(x, &theta, bins, B);
                let (xi, li) = Rq::inverse(x, &theta, bins, B);
                let mut g = vec![0.0; theta.len()];
                let gx = Rq::backward(x, &theta, bins, B, 1.0, 1.0, &mut g);
                assert!(y.is_finite() && l.is_finite() && xi.is_finite() && li.is_finite());
                assert!(gx.is_finite() && g.iter().all(|v| v.is_finite()), "x = {x}");
                if x.abs() > B {
                    assert_eq!((y, l, xi, li, gx), (x, 0.0, x, 0.0, 1.0));
                    assert!(g.iter().all(|&v| v == 0.0));
                }
            }
            // Monotone on a fine grid, also for extreme parameters.
            let mut prev = -B;
            for i in 0..=1000 {
                let x = -B + 2.0 * B * i as f64 / 1000.0;
                let (y, _) = Rq::forward(x, &theta, bins, B);
                assert!(y >= prev - 1e-12, "not monotone at {x}");
                prev = y;
            }
        }
        // f32 stays finite on extreme inputs as well.
        let theta32: Vec<f32> = random_theta(8, 5.0, &mut rng)
            .iter()
            .map(|&v| v as f32)
            .collect();
        for x in [1e4f32, -1e4, 3.0, -3.0, 0.0, 2.999_999] {
            let (y, l) = Rq::forward(x, &theta32, 8, 3.0);
            let (xi, li) = Rq::inverse(x, &theta32, 8, 3.0);
            assert!(y.is_finite() && l.is_finite() && xi.is_finite() && li.is_finite());
        }
    }

    #[test]
    fn zero_parameters_give_uniform_bins() {
        let bins = 4;
        let theta = vec![0.0; Rq::n_params(bins)];
        let kn = Knots::new(&theta, bins, B);
        for k in 0..=bins {
            let want = -B + 2.0 * B * k as f64 / bins as f64;
            assert!((kn.xs[k] - want).abs() < 1e-12 && (kn.ys[k] - want).abs() < 1e-12);
            // Knots are fixed points of the map (s = 1 in every bin).
            let (y, _) = Rq::forward(kn.xs[k], &theta, bins, B);
            assert!((y - want).abs() < 1e-12);
        }
        assert_eq!(Rq::n_params(bins), 11);
    }

    #[test]
    fn f32_round_trip_is_as_accurate_as_the_conditioning_allows() {
        // |x - f^-1(f(x))| in f32 must stay within a small multiple of the error that rounding y
        // alone causes, ~3e-7 / f'(x) (B = 5). nflows' single root formula fails this by ~1000x
        // on flat bins with a steep upper end.
        let mut rng = Rng::new(9);
        let bins = 8;
        for scale in [1.0, 3.0, 6.0] {
            for _ in 0..50 {
                let th: Vec<f64> = random_theta(bins, scale, &mut rng);
                let th32: Vec<f32> = th.iter().map(|&v| v as f32).collect();
                for _ in 0..50 {
                    let x = rng.uniform_range(-5.0, 5.0);
                    let (y, _) = Rq::forward(x as f32, &th32, bins, 5.0);
                    let (xr, _) = Rq::inverse(y, &th32, bins, 5.0);
                    let (_, l64) = Rq::forward(x, &th, bins, 5.0);
                    let err = (xr as f64 - x).abs();
                    let cond = (3e-7 / l64.exp()).max(1e-6);
                    assert!(err <= 50.0 * cond, "x {x}: error {err:e}, f' {}", l64.exp());
                }
            }
        }
    }
}
