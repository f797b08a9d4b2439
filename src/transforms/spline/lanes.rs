//! The spline couplings' `f32` evaluation across events: [`LANES`] events at a time, in
//! structure-of-arrays form, on the SIMD path of [`crate::engine::simd`].
//!
//! A chunk of `n` events is cut into groups of [`LANES`] consecutive events (the last group is
//! padded with copies of its last event, whose results are dropped). For each group and
//! transformed feature the `P` spline parameters of the group's events are transposed into `P` lanes
//! (`th[k][l]` = parameter `k` of event `l`; from a feature-major conditioner output, one
//! contiguous load per parameter, see [`Params`]), and a [`LaneSpline`] kernel computes the knots, the
//! bin search (a running select over the sorted knots: the last knot `<= v` wins, which is the
//! `partition_point` of the scalar code), the map, its log-derivative and, in training, the
//! gradients, every step as a loop over the lanes without branches (selects instead).
//! Sampling ([`Direction::Sample`]) skips the log-derivatives.
//!
//! The kernels are plain Rust over `[f32; 32]` arrays, with `exp` and `ln` from
//! [`crate::engine::vmath`]; they are compiled once per path (AVX-512F, AVX2 + FMA, and FMA or
//! nothing for the portable path), where LLVM turns each lane loop into two 16-lane AVX-512
//! instructions or four 8-lane AVX2 ones. Two independent vectors per step, rather than one
//! (16 lanes), hide the latency of the kernels' long dependency chains (softmax, cumulative
//! knots, bin search, root): the rational-quadratic sampling kernel took 13.1 instead of 15.7 ns
//! per element on AVX-512 and 19.9 instead of 20.2 on AVX2 (one core, 64 events x 9 features,
//! 8 bins). Rust never contracts `a * b + c` into a fused
//! multiply-add, and the only fused operations are the explicit `mul_add`s of `vmath`, so every
//! path computes the same IEEE-754 operations per element and gives the same bits. Events are
//! independent, so results do not depend on an event's position in its chunk either.
//!
//! All scratch is a few KiB of fixed arrays on the stack, built once per chunk (the knots of a
//! group are rebuilt in place, see [`LaneSpline`]): the passes allocate nothing. The lane
//! kernels take up to [`LANE_MAX_BINS`] bins; the scalar [`super::Spline1d`] code (and every `f64`
//! evaluation, which the gradient checks use) covers the rest.

use super::{STACK, Spline1d};
use crate::engine::simd::{self, SimdPath};
use crate::transforms::Direction;

/// Events per group.
pub const LANES: usize = 32;
/// One value per event of a group.
pub type Lane = [f32; LANES];
/// Most bins the lane kernels take (knot arrays of [`STACK`] entries).
pub const LANE_MAX_BINS: usize = STACK - 1;
/// Most parameters per feature at [`LANE_MAX_BINS`] bins (rational-quadratic: `3K - 1`).
const MAX_PARAMS: usize = 3 * LANE_MAX_BINS;
/// Knot arrays of one group.
pub(crate) type Knots = [Lane; STACK];

/// A spline evaluated on [`LANES`] events at once. `th` holds `n_params(bins)` lanes of
/// unnormalised parameters; `bins <= LANE_MAX_BINS` and `bound` finite and positive. `kn` is
/// the kernel's scratch for one group's knots, which each call rebuilds (as far as `bins`
/// needs) before reading: the chunk loops keep one per chunk, so no group zeroes or copies it.
pub trait LaneSpline: Spline1d {
    /// The knot arrays of one group.
    type Knots: Default;
    /// `y = f(x)` and `ld = log f'(x)` per lane (identity and 0 outside `[-B, B]`).
    #[allow(clippy::too_many_arguments)]
    fn forward_lanes(
        kn: &mut Self::Knots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        x: &Lane,
        y: &mut Lane,
        ld: &mut Lane,
    );
    /// `x = f^{-1}(y)` and, when `ld` is given, `ld = -log f'(x)` per lane (sampling needs no
    /// log-derivatives; `x` has the same bits either way).
    #[allow(clippy::too_many_arguments)]
    fn inverse_lanes(
        kn: &mut Self::Knots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        y: &Lane,
        x: &mut Lane,
        ld: Option<&mut Lane>,
    );
    /// Backward of `forward_lanes` at `x` for `gy = dL/dy`, `gl = dL/d log f'`: writes `dL/dx`
    /// to `gx` and `dL/dtheta` to `gth` (`n_params(bins)` lanes, overwritten).
    #[allow(clippy::too_many_arguments)]
    fn backward_lanes(
        kn: &mut Self::Knots,
        th: &[Lane],
        bins: usize,
        bound: f32,
        x: &Lane,
        gy: &Lane,
        gl: &Lane,
        gth: &mut [Lane],
        gx: &mut Lane,
    );
}

/// The layout of one coupling's chunk: row-major `cols`-wide inputs whose columns `tr` are
/// transformed, and a row-major conditioner output of `n_params(bins) * tr.len()` columns.
#[derive(Clone, Copy, Debug)]
pub struct ChunkShape<'a> {
    /// Transformed columns.
    pub tr: &'a [usize],
    /// Width of the input rows.
    pub cols: usize,
    /// Number of bins.
    pub bins: usize,
    /// The spline acts on `[-B, B]`.
    pub bound: f32,
}

/// Where a chunk's conditioner output lies: the `P` parameters of transformed feature `j` of
/// event `i`, parameter `k` at
/// - `RowMajor`: `h[i (P |tr|) + j P + k]` (one row per event), as the training passes keep it;
/// - `FeatureMajor`: `h[(j P + k) n + i]` (one row per parameter, `n` events), as a coupling's
///   feature-major evaluation leaves it. The first `scaled` parameters of each feature are
///   multiplied by `scale` as they are read: the bijection's fixed rescaling
///   ([`crate::transforms::Elementwise::rescale`]), the same multiplication as a separate pass.
#[derive(Clone, Copy, Debug)]
pub enum Params<'a> {
    /// Row-major, already rescaled.
    RowMajor(&'a [f32]),
    /// Feature-major, rescaled as read.
    FeatureMajor {
        /// The `P |tr| x n` output.
        h: &'a [f32],
        /// Events (row length of `h`).
        n: usize,
        /// Leading parameters of each feature that are rescaled.
        scaled: usize,
        /// Their factor.
        scale: f32,
    },
}

impl Params<'_> {
    fn len(&self) -> usize {
        match self {
            Params::RowMajor(h) | Params::FeatureMajor { h, .. } => h.len(),
        }
    }
}

/// Applies the spline (or its inverse) to the columns `shape.tr` of the `n x cols` matrix `y`
/// (`n = ladj.len()`) in place, with the row-major parameters `h` (see [`Params`]), adding the
/// log-derivatives to `ladj` (left as it is with [`Direction::Sample`]), on the active SIMD
/// path.
///
/// # Panics
/// If `shape.bins` is not in `1..=LANE_MAX_BINS`, or the slices are shorter than the shapes.
pub fn apply<S: LaneSpline>(
    shape: &ChunkShape,
    h: &[f32],
    dir: Direction,
    y: &mut [f32],
    ladj: &mut [f32],
) {
    apply_on::<S>(simd::active(), shape, Params::RowMajor(h), dir, y, ladj);
}

/// [`apply`] with parameters in either layout, on a given path (which must be supported;
/// panics otherwise). The layout changes no bit of the results.
///
/// # Panics
/// As [`apply`], and if a feature-major `h` is not `P |tr| x n` with `n = ladj.len()`.
pub fn apply_on<S: LaneSpline>(
    path: SimdPath,
    shape: &ChunkShape,
    params: Params,
    dir: Direction,
    y: &mut [f32],
    ladj: &mut [f32],
) {
    let n = ladj.len();
    check::<S>(path, shape, params.len(), y, n);
    if let Params::FeatureMajor {
        n: cols, scaled, ..
    } = params
    {
        assert!(
            cols == n && scaled <= S::n_params(shape.bins),
            "spline lanes: feature-major parameters of another shape"
        );
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (checked above).
        SimdPath::Avx512 => unsafe { avx512::apply::<S>(shape, params, dir, y, ladj) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (checked above).
        SimdPath::Avx2 => unsafe { avx2::apply::<S>(shape, params, dir, y, ladj) },
        _ => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: FMA is present.
                    unsafe { fma::apply::<S>(shape, params, dir, y, ladj) };
                    return;
                }
            }
            apply_chunk::<S>(shape, params, dir, y, ladj);
        }
    }
}

/// The backward pass of a forward [`apply`] on input `x` (`n x cols`, `n = dladj.len()`):
/// overwrites `dh` (`n x P |tr|`) with `dL/dtheta` and the columns `tr` of `dx` with `dL/dx`,
/// from `dy` and `dladj`, on the active SIMD path.
///
/// # Panics
/// As [`apply`].
#[allow(clippy::too_many_arguments)]
pub fn backward<S: LaneSpline>(
    shape: &ChunkShape,
    x: &[f32],
    h: &[f32],
    dy: &[f32],
    dladj: &[f32],
    dx: &mut [f32],
    dh: &mut [f32],
) {
    backward_on::<S>(simd::active(), shape, x, h, dy, dladj, dx, dh);
}

/// [`backward`] on a given path (which must be supported; panics otherwise).
#[allow(clippy::too_many_arguments)]
pub fn backward_on<S: LaneSpline>(
    path: SimdPath,
    shape: &ChunkShape,
    x: &[f32],
    h: &[f32],
    dy: &[f32],
    dladj: &[f32],
    dx: &mut [f32],
    dh: &mut [f32],
) {
    let n = dladj.len();
    check::<S>(path, shape, h.len(), x, n);
    check::<S>(path, shape, dh.len(), dx, n);
    assert!(dy.len() >= n * shape.cols, "spline lanes: dy too short");
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (checked above).
        SimdPath::Avx512 => unsafe { avx512::backward::<S>(shape, x, h, dy, dladj, dx, dh) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (checked above).
        SimdPath::Avx2 => unsafe { avx2::backward::<S>(shape, x, h, dy, dladj, dx, dh) },
        _ => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: FMA is present.
                    unsafe { fma::backward::<S>(shape, x, h, dy, dladj, dx, dh) };
                    return;
                }
            }
            backward_chunk::<S>(shape, x, h, dy, dladj, dx, dh);
        }
    }
}

fn check<S: LaneSpline>(path: SimdPath, shape: &ChunkShape, h_len: usize, y: &[f32], n: usize) {
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    assert!(
        (1..=LANE_MAX_BINS).contains(&shape.bins),
        "spline lanes: bins must be in 1..={LANE_MAX_BINS}"
    );
    assert!(
        shape.bound.is_finite() && shape.bound > 0.0,
        "spline lanes: the bound must be finite and positive"
    );
    assert!(
        shape.tr.iter().all(|&d| d < shape.cols),
        "spline lanes: column out of range"
    );
    assert!(
        y.len() >= n * shape.cols && h_len >= n * shape.tr.len() * S::n_params(shape.bins),
        "spline lanes: slices shorter than the chunk"
    );
}

/// Transposes the row-major parameters of feature `j` of events `i0..i0 + m` into `th`
/// (padding with the last event).
#[inline(always)]
fn gather(h: &[f32], hcols: usize, p: usize, j: usize, (i0, m): (usize, usize), th: &mut [Lane]) {
    if m == LANES {
        // A full group: parameter k of the group's events is a strided column (one gather each).
        let base = i0 * hcols + j * p;
        let block = &h[base..base + (LANES - 1) * hcols + p];
        for (k, t) in th.iter_mut().enumerate() {
            for (l, tl) in t.iter_mut().enumerate() {
                *tl = block[l * hcols + k];
            }
        }
        return;
    }
    for l in 0..LANES {
        let i = i0 + l.min(m - 1);
        let row = &h[i * hcols + j * p..i * hcols + (j + 1) * p];
        for (t, &r) in th.iter_mut().zip(row) {
            t[l] = r;
        }
    }
}

/// The feature-major parameters of feature `j` of events `i0..i0 + m` into `th` (padding with
/// the last event; see [`Params::FeatureMajor`]): one contiguous load per parameter, the first
/// `scaled` multiplied by `scale`.
#[inline(always)]
fn gather_feature_major(
    h: &[f32],
    n: usize,
    (scaled, scale): (usize, f32),
    (p, j): (usize, usize),
    (i0, m): (usize, usize),
    th: &mut [Lane],
) {
    let rows = h[j * p * n..(j + 1) * p * n].chunks_exact(n);
    if m == LANES {
        // One bounds check for all rows (each is `n` long), and the scaled rows apart from the
        // others, so the loops carry no test per row. Copy, then scale in place: LLVM
        // vectorises this form (one load, multiply and store per parameter vector), but
        // compiled the fused `t[l] = src[l] * scale` loop into one scalar multiply per lane.
        assert!(
            i0 + LANES <= n,
            "spline lanes: event block outside the chunk"
        );
        let scaled = scaled.min(th.len());
        let (th_scaled, th_plain) = th.split_at_mut(scaled);
        let mut rows = rows.map(|row| &row[i0..i0 + LANES]);
        for (t, src) in th_scaled.iter_mut().zip(&mut rows) {
            t.copy_from_slice(src);
            for tl in t.iter_mut() {
                *tl *= scale;
            }
        }
        for (t, src) in th_plain.iter_mut().zip(rows) {
            t.copy_from_slice(src);
        }
        return;
    }
    for (k, (t, row)) in th.iter_mut().zip(rows).enumerate() {
        for (l, tl) in t.iter_mut().enumerate() {
            let v = row[i0 + l.min(m - 1)];
            *tl = if k < scaled { v * scale } else { v };
        }
    }
}

/// Column `d` of the `cols`-wide rows `i0..i0 + m` of `src` into `v` (padding with the last).
#[inline(always)]
fn gather_column(src: &[f32], (cols, d): (usize, usize), (i0, m): (usize, usize), v: &mut Lane) {
    if m == LANES {
        let block = &src[i0 * cols + d..(i0 + LANES - 1) * cols + d + 1];
        for (l, vl) in v.iter_mut().enumerate() {
            *vl = block[l * cols];
        }
        return;
    }
    for (l, vl) in v.iter_mut().enumerate() {
        *vl = src[(i0 + l.min(m - 1)) * cols + d];
    }
}

#[inline(always)]
fn apply_chunk<S: LaneSpline>(
    shape: &ChunkShape,
    params: Params,
    dir: Direction,
    y: &mut [f32],
    ladj: &mut [f32],
) {
    let (bins, bound, cols) = (shape.bins, shape.bound, shape.cols);
    let p = S::n_params(bins);
    let hcols = p * shape.tr.len();
    let n = ladj.len();
    let mut th = [[0f32; LANES]; MAX_PARAMS];
    let mut kn = S::Knots::default();
    let (mut vin, mut out, mut ld) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    for i0 in (0..n).step_by(LANES) {
        let m = (n - i0).min(LANES);
        let mut acc = [0f32; LANES];
        for (j, &d) in shape.tr.iter().enumerate() {
            match params {
                Params::RowMajor(h) => gather(h, hcols, p, j, (i0, m), &mut th[..p]),
                Params::FeatureMajor {
                    h,
                    n,
                    scaled,
                    scale,
                } => {
                    gather_feature_major(h, n, (scaled, scale), (p, j), (i0, m), &mut th[..p]);
                }
            }
            gather_column(y, (cols, d), (i0, m), &mut vin);
            let th = &th[..p];
            match dir {
                Direction::Forward => {
                    S::forward_lanes(&mut kn, th, bins, bound, &vin, &mut out, &mut ld)
                }
                Direction::Inverse => {
                    S::inverse_lanes(&mut kn, th, bins, bound, &vin, &mut out, Some(&mut ld));
                }
                Direction::Sample => {
                    S::inverse_lanes(&mut kn, th, bins, bound, &vin, &mut out, None)
                }
            }
            for l in 0..m {
                y[(i0 + l) * cols + d] = out[l];
            }
            if dir.needs_ladj() {
                for l in 0..LANES {
                    acc[l] += ld[l];
                }
            }
        }
        if dir.needs_ladj() {
            for (a, &s) in ladj[i0..i0 + m].iter_mut().zip(&acc) {
                *a += s;
            }
        }
    }
}

#[inline(always)]
fn backward_chunk<S: LaneSpline>(
    shape: &ChunkShape,
    x: &[f32],
    h: &[f32],
    dy: &[f32],
    dladj: &[f32],
    dx: &mut [f32],
    dh: &mut [f32],
) {
    let (bins, bound, cols) = (shape.bins, shape.bound, shape.cols);
    let p = S::n_params(bins);
    let hcols = p * shape.tr.len();
    let n = dladj.len();
    let mut th = [[0f32; LANES]; MAX_PARAMS];
    let mut gth = [[0f32; LANES]; MAX_PARAMS];
    let mut kn = S::Knots::default();
    let (mut xin, mut gy, mut gl, mut gx) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    for i0 in (0..n).step_by(LANES) {
        let m = (n - i0).min(LANES);
        for l in 0..LANES {
            gl[l] = dladj[i0 + l.min(m - 1)];
        }
        for (j, &d) in shape.tr.iter().enumerate() {
            gather(h, hcols, p, j, (i0, m), &mut th[..p]);
            gather_column(x, (cols, d), (i0, m), &mut xin);
            for l in 0..LANES {
                gy[l] = dy[(i0 + l.min(m - 1)) * cols + d];
            }
            S::backward_lanes(
                &mut kn,
                &th[..p],
                bins,
                bound,
                &xin,
                &gy,
                &gl,
                &mut gth[..p],
                &mut gx,
            );
            for l in 0..m {
                let i = i0 + l;
                let row = &mut dh[i * hcols + j * p..i * hcols + (j + 1) * p];
                for (r, g) in row.iter_mut().zip(&gth[..p]) {
                    *r = g[l];
                }
                dx[i * cols + d] = gx[l];
            }
        }
    }
}

/// The chunk loops compiled for one instruction set (see the module documentation).
macro_rules! lane_path {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::{ChunkShape, Direction, LaneSpline, Params};

            #[target_feature(enable = $features)]
            pub(super) unsafe fn apply<S: LaneSpline>(
                shape: &ChunkShape,
                params: Params,
                dir: Direction,
                y: &mut [f32],
                ladj: &mut [f32],
            ) {
                super::apply_chunk::<S>(shape, params, dir, y, ladj);
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn backward<S: LaneSpline>(
                shape: &ChunkShape,
                x: &[f32],
                h: &[f32],
                dy: &[f32],
                dladj: &[f32],
                dx: &mut [f32],
                dh: &mut [f32],
            ) {
                super::backward_chunk::<S>(shape, x, h, dy, dladj, dx, dh);
            }
        }
    };
}
lane_path!(avx512, "avx512f");
lane_path!(avx2, "avx2,fma");
// The portable path on an x86-64 CPU that has FMA: `mul_add` as an instruction.
lane_path!(fma, "fma");

/// `sel ? a : b` per lane, as bit operations on a mask: LLVM keeps them in vector registers
/// (a plain `if` on values loaded from two arrays can become a select of the two addresses and a
/// scalar load per lane).
#[inline(always)]
pub(crate) fn select(sel: bool, a: f32, b: f32) -> f32 {
    let mask = (sel as u32).wrapping_neg();
    f32::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
}

/// Numerically stable softmax of the lanes `logits` into `out` (same length), as
/// [`super::softmax`] per event: `exp(u_k - max u) * (1 / sum exp(u_j - max u))`.
#[inline(always)]
pub(crate) fn softmax_lanes(logits: &[Lane], out: &mut [Lane]) {
    use crate::engine::vmath::exp;
    let mut mx = [f32::NEG_INFINITY; LANES];
    for t in logits {
        for l in 0..LANES {
            mx[l] = mx[l].max(t[l]);
        }
    }
    for m in &mut mx {
        // All -inf would give NaN below; fall back to a zero shift (as the scalar code).
        *m = select(m.is_finite(), *m, 0.0);
    }
    let mut sum = [0f32; LANES];
    for (o, t) in out.iter_mut().zip(logits) {
        for l in 0..LANES {
            o[l] = exp(t[l] - mx[l]);
            sum[l] += o[l];
        }
    }
    // One division per lane, then a multiplication per bin (as the scalar softmax): a vector
    // division costs about ten times a multiplication. Measured, the rational-quadratic
    // kernel's share of NSF-shaped sampling fell from 12.9 % to 12.2 %.
    let mut inv = [0f32; LANES];
    for l in 0..LANES {
        inv[l] = 1.0 / sum[l];
    }
    for o in out.iter_mut() {
        lane_loop_barrier();
        for l in 0..LANES {
            o[l] *= inv[l];
        }
    }
}

/// Stops LLVM from vectorising the enclosing loop (over bins) across its iterations: without it
/// the AVX-512 build turned `o[l] /= sum[l]` over `k` into gathers, eight-wide divisions and
/// scatters per lane `l`; with it the lanes of one iteration become whole vector operations. An
/// empty `asm!` block changes no value, so every path keeps the same bits.
#[inline(always)]
fn lane_loop_barrier() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: an empty assembly block; it reads and writes no register, memory or flag.
    unsafe {
        std::arch::asm!("", options(nomem, nostack, preserves_flags))
    };
}

/// `log(1 + e^t)` without overflow, per lane value.
#[inline(always)]
pub(crate) fn softplus(t: f32) -> f32 {
    use crate::engine::vmath::{exp, ln_1p};
    t.max(0.0) + ln_1p(exp(-t.abs()))
}

/// `out = add + softplus(t + shift)` elementwise over whole lanes, as one flat loop: LLVM
/// vectorises a flat loop on every path, where a nest of 16-lane loops was left scalar in the
/// AVX2 build of the piecewise-quadratic kernels (the `exp` and `ln` in it ran one lane at a
/// time). `shift = 0` adds nothing: `softplus(+0) = softplus(-0)`.
#[inline(always)]
pub(crate) fn softplus_lanes(t: &[Lane], shift: f32, add: f32, out: &mut [Lane]) {
    for (o, &v) in out.as_flattened_mut().iter_mut().zip(t.as_flattened()) {
        *o = add + softplus(v + shift);
    }
}

/// `1 / (1 + e^{-t})` without overflow, per lane value.
#[inline(always)]
pub(crate) fn sigmoid(t: f32) -> f32 {
    let e = crate::engine::vmath::exp(-t.abs());
    let r = 1.0 / (1.0 + e);
    select(t >= 0.0, r, e * r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::Rng;

    /// A chunk of `n` events with `cols` columns, of which `tr` are transformed: inputs spread over
    /// `[-1.4B, 1.4B]` (so about 30% in the identity tails), with events exactly at `+-B`, at 0
    /// and just inside and outside the bound, and conditioner outputs of scale `scale`.
    pub(crate) fn chunk<S: LaneSpline>(
        n: usize,
        cols: usize,
        tr: &[usize],
        bins: usize,
        bound: f32,
        scale: f64,
        rng: &mut Rng,
    ) -> (Vec<f32>, Vec<f32>) {
        let p = S::n_params(bins);
        let h = (0..n * p * tr.len())
            .map(|_| (rng.normal() * scale) as f32)
            .collect();
        let special = [
            -bound,
            bound,
            0.0,
            bound * (1.0 - f32::EPSILON),
            -bound * (1.0 + f32::EPSILON),
        ];
        let x = (0..n * cols)
            .map(|i| match special.get(i % 23) {
                Some(&v) => v,
                None => (rng.uniform_range(-1.4, 1.4) * bound as f64) as f32,
            })
            .collect();
        (h, x)
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / (1.0 + a.abs().max(b.abs()))
    }

    /// The lane kernels on every supported path agree bit for bit, and agree with the scalar
    /// `f64` code (itself checked against finite differences in each spline's tests) on the map,
    /// the log-derivative, the inverse and every gradient, tails included; `n` is not a multiple
    /// of [`LANES`], so the padded last group is covered.
    pub(crate) fn matches_scalar_f64<S: LaneSpline>(bins: usize, bound: f32, scale: f64, tol: f64) {
        let mut rng = Rng::new(bins as u64 * 31 + 5);
        let (n, cols, tr) = (53, 3, [0usize, 2]);
        let p = S::n_params(bins);
        let shape = ChunkShape {
            tr: &tr,
            cols,
            bins,
            bound,
        };
        let (h, x) = chunk::<S>(n, cols, &tr, bins, bound, scale, &mut rng);
        let dy: Vec<f32> = (0..n * cols).map(|_| rng.normal() as f32).collect();
        let dl: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let run = |path: SimdPath| {
            let mut y = x.clone();
            let mut ly = vec![0.25f32; n];
            apply_on::<S>(
                path,
                &shape,
                Params::RowMajor(&h),
                Direction::Forward,
                &mut y,
                &mut ly,
            );
            let mut back = y.clone();
            let mut lb = vec![0f32; n];
            apply_on::<S>(
                path,
                &shape,
                Params::RowMajor(&h),
                Direction::Inverse,
                &mut back,
                &mut lb,
            );
            // Sampling skips the log-derivatives and leaves `ladj` alone, with the same events.
            let mut sampled = y.clone();
            let mut ls = vec![0.5f32; n];
            apply_on::<S>(
                path,
                &shape,
                Params::RowMajor(&h),
                Direction::Sample,
                &mut sampled,
                &mut ls,
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&sampled),
                bits(&back),
                "{path}: sampling differs from the inverse"
            );
            assert!(ls.iter().all(|&l| l == 0.5), "{path}: sampling wrote ladj");
            let mut dx = dy.clone();
            let mut dh = vec![f32::NAN; h.len()];
            backward_on::<S>(path, &shape, &x, &h, &dy, &dl, &mut dx, &mut dh);
            [y, ly, back, lb, dx, dh]
        };
        let reference = run(SimdPath::Portable);
        for path in simd::supported_paths() {
            let got = run(path);
            for (g, r) in got.iter().zip(&reference) {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(g), bits(r), "{path} differs from portable");
            }
        }
        let [y, ly, back, lb, dx, dh] = reference;
        let (mut inside, mut outside) = (0, 0);
        for i in 0..n {
            // The inverse's log-derivative is compared with -log f' at the inverse's output (the
            // inverse of a flat bin is ill-conditioned: one f32 ulp of `y` moves `x` by
            // `ulp / f'`), with 10 tol: in a bin of the minimum width (0.002B) one f32 ulp of the
            // output moves `xi` by 1e-4 and, in the steepest such bins, `log f'` by 1e-3
            // (measured: 5e-4 relative in the 16-bin case).
            let (mut ld64, mut lb64) = (0.0, 0.0);
            for (j, &d) in tr.iter().enumerate() {
                let th: Vec<f64> = h[(i * tr.len() + j) * p..(i * tr.len() + j + 1) * p]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let xv = x[i * cols + d] as f64;
                let (y64, l64) = S::forward(xv, &th, bins, bound as f64);
                ld64 += l64;
                let yv = y[i * cols + d] as f64;
                assert!(rel(yv, y64) < tol, "y({xv}) = {yv}, f64 {y64}");
                assert!(
                    rel(back[i * cols + d] as f64, xv) < tol,
                    "round trip of {xv}"
                );
                // The inverse's log-derivative is -log f' at its own output.
                let xb = back[i * cols + d] as f64;
                lb64 -= S::forward(xb, &th, bins, bound as f64).1;
                if xv.abs() <= bound as f64 {
                    inside += 1;
                } else {
                    outside += 1;
                    assert_eq!(yv, xv, "tail");
                }
                let mut g64 = vec![0.0; p];
                let gx64 = S::backward(
                    xv,
                    &th,
                    bins,
                    bound as f64,
                    dy[i * cols + d] as f64,
                    dl[i] as f64,
                    &mut g64,
                );
                assert!(rel(dx[i * cols + d] as f64, gx64) < tol, "dL/dx at {xv}");
                let gl = &dh[(i * tr.len() + j) * p..(i * tr.len() + j + 1) * p];
                for (k, (&a, &b)) in gl.iter().zip(&g64).enumerate() {
                    assert!(rel(a as f64, b) < tol, "dL/dtheta_{k} at {xv}: {a} vs {b}");
                }
            }
            assert!(rel(ly[i] as f64 - 0.25, ld64) < tol, "log-det of row {i}");
            assert!(
                rel(lb[i] as f64, lb64) < 10.0 * tol,
                "inverse log-det of row {i}: {} vs {lb64}",
                lb[i]
            );
        }
        // The untransformed column is untouched.
        assert!((0..n).all(|i| y[i * cols + 1] == x[i * cols + 1]));
        assert!(
            inside > 40 && outside > 10,
            "{inside} inside, {outside} outside"
        );
    }
}
