//! Our own single-precision GEMM micro-kernel, in three bit-identical variants (AVX-512, AVX2 +
//! FMA, portable Rust) chosen at run time by [`super::simd`].
//!
//! Computes `C[i, j] = sum_p A[i, p] B[p, j]` (or `C += ...`) where `A` is read through arbitrary
//! row/column strides (so `A` or `A^T` of a row-major matrix both work) and `B` and `C` have
//! contiguous rows. That covers the three products of a dense layer once the forward weights are
//! kept transposed: `H W^T = H (W^T)`, `dY W` and `dY^T H`.
//!
//! The shapes of a flow's conditioners are small and skinny (a chunk of 64-1024 events times
//! 9-128 features), where general-purpose GEMMs lose much of their time packing both operands on
//! every call. This kernel packs nothing: it walks `C` in register tiles of `MR` rows by
//! `L NV` columns (`L` = 16 lanes for AVX-512, 8 for AVX2), and for each `p` loads `NV` vectors of
//! `B`'s row `p` and broadcasts `MR` values of `A`'s column `p` into fused multiply-adds. `B`'s
//! panel (`k x 4L` floats) stays in L1/L2 while the row tiles sweep over it. The last vector of a
//! tile is masked, so widths such as 9 and 18 need no padding.
//!
//! **Same bits on every path.** Each output element is accumulated from zero by one fused
//! multiply-add per `p`, in increasing `p`, then the epilogue adds `C` (when accumulating) and the
//! bias, clamps and gates, in that order, with the same IEEE operations on every path. The tile
//! shapes differ between paths, but a tile only decides which elements are computed together,
//! never the order of the operations within one element.
//!
//! **Soundness.** The safe entry points ([`sgemm_rows`], [`add_col_sums`]) check every size with
//! checked arithmetic before any `unsafe` code runs, and panic with a message when a size
//! overflows or a slice is too short; an empty product (`m`, `n` or `k` zero) offsets no pointer
//! into its operands.

use super::simd::{self, SimdPath};

/// What happens to a tile of `A B` before it is stored into `C`, in this order:
/// `x = A B (+ C) (+ bias[j]) (+ row_bias[i])`, `x = max(x, 0)` when `relu`, `x = x + residual[i, j]` when a
/// residual is given, and `x = gate_scale * x` where `gate[i, j] > 0`, else `0`, when a gate is
/// given. Fusing these into the kernel saves the separate passes over the output that a dense
/// layer's bias, ReLU, skip connection and ReLU-derivative mask would cost.
/// Generic over the scalar so that [`crate::engine::Real`] can describe a fused product for any
/// type; the kernel itself takes `f32`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a, T = f32> {
    /// `C += A B` instead of `C = A B`.
    pub accumulate: bool,
    /// Added to every row (length `>= n`).
    pub bias: Option<&'a [T]>,
    /// `row_bias[i]` added to every element of row `i` (length `>= m`): the bias of a dense
    /// layer evaluated feature-major, `out^T = W inp^T + b`, where the output features are the
    /// rows of `C`.
    pub row_bias: Option<&'a [T]>,
    /// Clamp below at zero (`x > 0 ? x : 0`, so NaN and `-0` become `+0`).
    pub relu: bool,
    /// Row-major matrix added after the clamp (a skip connection), with its row stride
    /// (`residual[i * ld + j]`).
    pub residual: Option<(&'a [T], usize)>,
    /// Row-major gate matrix with its row stride (`gate[i * ld + j]`).
    pub gate: Option<(&'a [T], usize)>,
    /// Factor of the elements the gate keeps.
    pub gate_scale: T,
}

/// Smallest length of a row-major `rows x cols` matrix stored with row stride `ld >= cols`:
/// `(rows - 1) * ld + cols` (0 when empty). Panics with a message when it overflows `usize`.
fn strided_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    assert!(
        ld >= cols,
        "row stride {ld} shorter than the row length {cols}"
    );
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(cols))
        .unwrap_or_else(|| panic!("matrix size {rows} x {cols} (stride {ld}) overflows usize"))
}

/// Checks the epilogue's slices against an `m x n` output (panics with a message otherwise).
fn check_epilogue(m: usize, n: usize, ep: &Epilogue) {
    if let Some(bias) = ep.bias {
        assert!(bias.len() >= n, "bias shorter than the output width");
    }
    if let Some(row_bias) = ep.row_bias {
        assert!(
            row_bias.len() >= m,
            "row bias shorter than the output height"
        );
    }
    if let Some((gate, ld)) = ep.gate {
        assert!(
            gate.len() >= strided_len(m, n, ld),
            "gate smaller than the output"
        );
    }
    if let Some((res, ld)) = ep.residual {
        assert!(
            res.len() >= strided_len(m, n, ld),
            "residual smaller than the output"
        );
    }
}

/// `C = epilogue(A B)` with `A[i, p] = a[i * rsa + p * csa]`, `B[p, j] = b[p * ldb + j]` and
/// `C[i, j] = c[i * ldc + j]`, for `i < m`, `p < k`, `j < n` (see [`Epilogue`]), on the
/// [`simd::active`] path.
///
/// # Safety
/// The pointers must be valid for the elements the index formulas above reach, `C` must not
/// overlap `A`, `B` or the epilogue's inputs, and `C`'s rows must not overlap (`ldc >= n`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    epilogue: &Epilogue,
) {
    // SAFETY: forwarded contract.
    unsafe {
        sgemm_on(
            simd::active(),
            m,
            k,
            n,
            a,
            rsa,
            csa,
            b,
            ldb,
            c,
            ldc,
            epilogue,
        )
    }
}

/// [`sgemm`] on a given path (which must be [`SimdPath::supported`]; panics otherwise).
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_on(
    path: SimdPath,
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    epilogue: &Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_epilogue(m, n, epilogue);
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    // With k == 0 the vector kernels would still offset A and B (possibly empty) by the tile
    // origin; the portable kernel touches A and B only inside its loop over p.
    let path = if k == 0 { SimdPath::Portable } else { path };
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (asserted above); memory contract forwarded, and the
        // epilogue's slices were checked against the output shape.
        SimdPath::Avx512 => unsafe {
            avx512::sgemm(m, k, n, a, rsa, csa, b, ldb, c, ldc, epilogue)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (asserted above); as above.
        SimdPath::Avx2 => unsafe { avx2::sgemm(m, k, n, a, rsa, csa, b, ldb, c, ldc, epilogue) },
        // SAFETY: as above.
        _ => unsafe { portable::sgemm(m, k, n, a, rsa, csa, b, ldb, c, ldc, epilogue) },
    }
}

/// [`sgemm`] on row-major slices: `c[m x n] = epilogue(a[m x k] b[k x n])`. Panics with a message
/// when a slice is shorter than its shape or a size overflows.
pub fn sgemm_rows(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    epilogue: &Epilogue,
) {
    sgemm_rows_on(simd::active(), m, k, n, a, b, c, epilogue);
}

/// [`sgemm_rows`] on a given path (which must be supported; panics otherwise).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_rows_on(
    path: SimdPath,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    epilogue: &Epilogue,
) {
    let size = |r: usize, s: usize| {
        r.checked_mul(s)
            .unwrap_or_else(|| panic!("matrix size {r} x {s} overflows usize"))
    };
    assert!(
        a.len() >= size(m, k) && b.len() >= size(k, n) && c.len() >= size(m, n),
        "slices smaller than their shapes"
    );
    // SAFETY: the assert bounds A (stride k), B (stride n) and C (stride n); `c` is a unique
    // borrow, so it overlaps nothing.
    unsafe {
        sgemm_on(
            path,
            m,
            k,
            n,
            a.as_ptr(),
            k,
            1,
            b.as_ptr(),
            n,
            c.as_mut_ptr(),
            n,
            epilogue,
        )
    }
}

/// `out[j] += sum_i a[i * lda + j]` for `i < m`, `j < out.len()` (bias gradients: column sums of
/// a row-major matrix), each column summed in increasing `i` from zero and then added to `out`.
pub fn add_col_sums(m: usize, a: &[f32], lda: usize, out: &mut [f32]) {
    add_col_sums_on(simd::active(), m, a, lda, out);
}

/// [`add_col_sums`] on a given path (which must be supported; panics otherwise).
pub fn add_col_sums_on(path: SimdPath, m: usize, a: &[f32], lda: usize, out: &mut [f32]) {
    let n = out.len();
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= strided_len(m, n, lda),
        "matrix smaller than m x n"
    );
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present; the assert above bounds every read.
        SimdPath::Avx512 => unsafe { avx512::add_col_sums(m, a.as_ptr(), lda, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is present; the assert above bounds every read.
        SimdPath::Avx2 => unsafe { avx2::add_col_sums(m, a.as_ptr(), lda, out) },
        _ => portable::add_col_sums(m, a, lda, out),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Columns of `C` per panel: four 16-lane vectors.
    const PANEL: usize = 64;
    /// Longest `k` whose panels of `B` are packed (a `KPACK x PANEL` buffer on the stack,
    /// 32 KiB, which fits L1); longer products read `B` in place (packing a panel that does not fit
    /// L1 measured slower).
    const KPACK: usize = 128;

    /// The part of a [`super::Epilogue`] that one tile sees: raw pointers to its first bias
    /// column and first gate element (null = absent).
    struct Ep {
        accumulate: bool,
        bias: *const f32,
        row_bias: *const f32,
        relu: bool,
        res: *const f32,
        ldr: usize,
        gate: *const f32,
        ldg: usize,
        gate_scale: f32,
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn sgemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        ep: &super::Epilogue,
    ) {
        let (gate, ldg) = ep
            .gate
            .map_or((std::ptr::null(), 0), |(g, ld)| (g.as_ptr(), ld));
        let (res, ldr) = ep
            .residual
            .map_or((std::ptr::null(), 0), |(r, ld)| (r.as_ptr(), ld));
        // The packed copy of one panel of B (see [`pack_panel`]); only its first `k * PANEL`
        // floats are ever written and read.
        // Aligned to a cache line: unaligned, every vector load of the panel straddles two lines,
        // and whether it did depended on the caller's stack frame (RealNVP sampling ran 1.7x
        // slower in one build than in another with the same kernel code).
        #[repr(C, align(64))]
        struct Panel([f32; KPACK * PANEL]);
        let mut packed = std::mem::MaybeUninit::<Panel>::uninit();
        let packed = packed.as_mut_ptr().cast::<f32>();
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(PANEL);
            let nv = w.div_ceil(16);
            let rem = w - (nv - 1) * 16;
            let mask: __mmask16 = if rem == 16 {
                0xffff
            } else {
                ((1u32 << rem) - 1) as u16
            };
            // Rows per tile: as many as keep MR * NV <= 24 accumulators in registers.
            let mr_max = match nv {
                1 => 16,
                2 => 12,
                3 => 8,
                _ => 6,
            };
            // Pack the panel when more than one row tile reads it, it fits the buffer and its
            // rows are not already contiguous (`ldb <= PANEL`: a `B` at most one panel wide,
            // such as the feature-major slabs of a coupling layer, is read in place).
            let (bpanel, ldbp) = if k <= KPACK && m > mr_max && ldb > PANEL {
                // SAFETY: rows p < k and columns j0 .. j0 + w of B are in the caller's range;
                // the buffer holds KPACK >= k rows of PANEL >= 16 nv floats.
                unsafe { pack_panel(k, b.add(j0), ldb, nv, mask, packed) };
                (packed.cast_const(), PANEL)
            } else {
                // SAFETY: column j0 < n of B.
                (unsafe { b.add(j0) }, ldb)
            };
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(mr_max);
                // SAFETY: the tile lies inside the caller's m x n region (and so inside the
                // epilogue's bias and gate, which the public wrapper checked); the packed panel
                // has rows of stride PANEL holding the tile's columns.
                unsafe {
                    let ap = a.add(i0 * rsa);
                    let bp = bpanel;
                    let ldb = ldbp;
                    let cp = c.add(i0 * ldc + j0);
                    let tep = Ep {
                        accumulate: ep.accumulate,
                        bias: ep.bias.map_or(std::ptr::null(), |b| b.as_ptr().add(j0)),
                        row_bias: ep.row_bias.map_or(std::ptr::null(), |b| b.as_ptr().add(i0)),
                        relu: ep.relu,
                        res: if res.is_null() {
                            res
                        } else {
                            res.add(i0 * ldr + j0)
                        },
                        ldr,
                        gate: if gate.is_null() {
                            gate
                        } else {
                            gate.add(i0 * ldg + j0)
                        },
                        ldg,
                        gate_scale: ep.gate_scale,
                    };
                    macro_rules! dispatch {
                        ($($mr:literal $nv:literal),*) => {
                            match (mr, nv) {
                                $(($mr, $nv) => tile::<$mr, $nv>(k, ap, rsa, csa, bp, ldb, cp, ldc, mask, &tep),)*
                                _ => unreachable!("tile shape out of range"),
                            }
                        };
                    }
                    dispatch!(
                        1 1, 2 1, 3 1, 4 1, 5 1, 6 1, 7 1, 8 1, 9 1, 10 1, 11 1, 12 1, 13 1, 14 1, 15 1, 16 1,
                        1 2, 2 2, 3 2, 4 2, 5 2, 6 2, 7 2, 8 2, 9 2, 10 2, 11 2, 12 2,
                        1 3, 2 3, 3 3, 4 3, 5 3, 6 3, 7 3, 8 3,
                        1 4, 2 4, 3 4, 4 4, 5 4, 6 4
                    );
                }
                i0 += mr;
            }
            j0 += w;
        }
    }

    /// Copies `nv` vectors of each row `p < k` of a panel of `B` (row stride `ldb`; the last
    /// vector masked by `mask`, its other lanes written as zeros) to `dst` with row stride
    /// [`PANEL`]. A panel read in place has rows `4 ldb` bytes apart, which for `ldb = 128` puts
    /// all of them in a quarter of L1's sets, so a `128 x 64` panel that would fit L1 thrashes
    /// it; packed, the rows are contiguous. The values are copied exactly, so the products keep
    /// their bits.
    ///
    /// # Safety
    /// `b` must be valid for reads of `b[p * ldb + 16 v + l]` for `p < k`, `v < nv` and lanes
    /// `l` in `mask` for the last vector (all lanes otherwise), `dst` for writes of
    /// `k * PANEL` floats, and `nv <= PANEL / 16`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_panel(
        k: usize,
        b: *const f32,
        ldb: usize,
        nv: usize,
        mask: __mmask16,
        dst: *mut f32,
    ) {
        for p in 0..k {
            for v in 0..nv {
                // An empty `asm!` block per vector: without it LLVM turns the full vectors of a
                // row into a call to `memcpy` (a call, `vzeroupper` and reloads per row).
                // SAFETY: an empty assembly block reads and writes no register, memory or flag.
                unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) };
                let m = if v + 1 == nv { mask } else { 0xffff };
                // SAFETY: forwarded contract.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(m, b.add(p * ldb + 16 * v));
                    _mm512_storeu_ps(dst.add(p * PANEL + 16 * v), x);
                }
            }
        }
    }

    /// Column sums, 64 columns (four vectors) at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_col_sums(m: usize, a: *const f32, lda: usize, out: &mut [f32]) {
        let n = out.len();
        let mut j = 0;
        while j < n {
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut masks = [0u16; 4];
            for (v, mk) in masks.iter_mut().enumerate() {
                let lo = j + 16 * v;
                let cnt = n.saturating_sub(lo).min(16);
                *mk = if cnt == 16 {
                    0xffff
                } else {
                    ((1u32 << cnt) - 1) as u16
                };
            }
            // SAFETY: masked lanes are never touched; rows i < m and columns < n are in range.
            unsafe {
                for i in 0..m {
                    let row = a.add(i * lda + j);
                    for v in 0..4 {
                        if masks[v] != 0 {
                            acc[v] = _mm512_add_ps(
                                acc[v],
                                _mm512_maskz_loadu_ps(masks[v], row.add(16 * v)),
                            );
                        }
                    }
                }
                for v in 0..4 {
                    if masks[v] != 0 {
                        let o = out.as_mut_ptr().add(j + 16 * v);
                        let cur = _mm512_maskz_loadu_ps(masks[v], o);
                        _mm512_mask_storeu_ps(o, masks[v], _mm512_add_ps(cur, acc[v]));
                    }
                }
            }
            j += 64;
        }
    }

    /// One `MR x 16 NV` tile of `C`; the last of the `NV` vectors is masked by `mask`.
    ///
    /// Never inlined: inlined, the 42 instantiations made `sgemm` one huge function whose
    /// register allocation depended on the rest of the build, and in one build it kept several
    /// accumulators on the stack inside the `k` loop (RealNVP sampling 1.7x slower with the same
    /// kernel code). A call per tile costs nothing next to its `k` iterations.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mask: __mmask16,
        ep: &Ep,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let lanes = |v: usize| if v + 1 == NV { mask } else { 0xffff };
        // Index loops with constant bounds throughout (LLVM unrolls them before it splits the
        // array into registers; with slice iterators it kept `acc` on the stack, zeroed it with
        // `memset` and reloaded it around the loop over `p`).
        // SAFETY (whole body): every pointer stays inside the tile's rows/columns of A, B and C;
        // masked loads and stores do not touch (or fault on) the masked-out lanes.
        #[allow(clippy::needless_range_loop)]
        unsafe {
            for p in 0..k {
                let bp = b.add(p * ldb);
                let mut bv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = if v + 1 == NV {
                        _mm512_maskz_loadu_ps(mask, bp.add(16 * v))
                    } else {
                        _mm512_loadu_ps(bp.add(16 * v))
                    };
                }
                let ap = a.add(p * csa);
                for r in 0..MR {
                    let av = _mm512_set1_ps(*ap.add(r * rsa));
                    for v in 0..NV {
                        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            let scale = _mm512_set1_ps(ep.gate_scale);
            for r in 0..MR {
                for v in 0..NV {
                    let cp = c.add(r * ldc + 16 * v);
                    let m = lanes(v);
                    let mut out = acc[r][v];
                    if ep.accumulate {
                        out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, cp));
                    }
                    if !ep.bias.is_null() {
                        out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, ep.bias.add(16 * v)));
                    }
                    if !ep.row_bias.is_null() {
                        out = _mm512_add_ps(out, _mm512_set1_ps(*ep.row_bias.add(r)));
                    }
                    if ep.relu {
                        out = _mm512_max_ps(out, zero);
                    }
                    if !ep.res.is_null() {
                        out = _mm512_add_ps(
                            out,
                            _mm512_maskz_loadu_ps(m, ep.res.add(r * ep.ldr + 16 * v)),
                        );
                    }
                    if !ep.gate.is_null() {
                        let g = _mm512_maskz_loadu_ps(m, ep.gate.add(r * ep.ldg + 16 * v));
                        let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(g, zero);
                        out = _mm512_maskz_mul_ps(keep, out, scale);
                    }
                    _mm512_mask_storeu_ps(cp, m, out);
                }
            }
        }
    }
}

/// The AVX2 + FMA kernel: the AVX-512 kernel's algorithm with 8-lane vectors and integer-vector
/// masks for the remainders. With 16 registers the tiles are at most 6 x 16 (12 accumulators,
/// 2 vectors of `B`, 1 broadcast of `A`): a 3 x 32 tile needs 17 and LLVM spilled accumulators
/// to the stack inside the loop over `p`, which halved the kernel's speed.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Columns of `C` per panel: two 8-lane vectors.
    const PANEL: usize = 16;
    /// Columns per step of [`add_col_sums`]: four 8-lane vectors.
    const SUM_PANEL: usize = 32;

    /// The part of a [`super::Epilogue`] that one tile sees (null = absent).
    struct Ep {
        accumulate: bool,
        bias: *const f32,
        row_bias: *const f32,
        relu: bool,
        res: *const f32,
        ldr: usize,
        gate: *const f32,
        ldg: usize,
        gate_scale: f32,
    }

    /// A lane mask with the first `cnt` (0..=8) lanes on.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lane_mask(cnt: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), lanes)
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn sgemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        ep: &super::Epilogue,
    ) {
        let (gate, ldg) = ep
            .gate
            .map_or((std::ptr::null(), 0), |(g, ld)| (g.as_ptr(), ld));
        let (res, ldr) = ep
            .residual
            .map_or((std::ptr::null(), 0), |(r, ld)| (r.as_ptr(), ld));
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(PANEL);
            let nv = w.div_ceil(8);
            let last = w - (nv - 1) * 8;
            let mask = lane_mask(last);
            // Rows per tile: MR * NV accumulators + NV row vectors of B + 1 broadcast <= 16.
            let mr_max = match nv {
                1 => 12,
                _ => 6,
            };
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(mr_max);
                // SAFETY: the tile lies inside the caller's m x n region (and so inside the
                // epilogue's bias and gate, which the public wrapper checked).
                unsafe {
                    let ap = a.add(i0 * rsa);
                    let bp = b.add(j0);
                    let cp = c.add(i0 * ldc + j0);
                    let tep = Ep {
                        accumulate: ep.accumulate,
                        bias: ep.bias.map_or(std::ptr::null(), |b| b.as_ptr().add(j0)),
                        row_bias: ep.row_bias.map_or(std::ptr::null(), |b| b.as_ptr().add(i0)),
                        relu: ep.relu,
                        res: if res.is_null() {
                            res
                        } else {
                            res.add(i0 * ldr + j0)
                        },
                        ldr,
                        gate: if gate.is_null() {
                            gate
                        } else {
                            gate.add(i0 * ldg + j0)
                        },
                        ldg,
                        gate_scale: ep.gate_scale,
                    };
                    macro_rules! dispatch {
                        ($($mr:literal $nv:literal),*) => {
                            match (mr, nv, last == 8) {
                                $(
                                    ($mr, $nv, true) => tile::<$mr, $nv, false>(k, ap, rsa, csa, bp, ldb, cp, ldc, mask, &tep),
                                    ($mr, $nv, false) => tile::<$mr, $nv, true>(k, ap, rsa, csa, bp, ldb, cp, ldc, mask, &tep),
                                )*
                                _ => unreachable!("tile shape out of range"),
                            }
                        };
                    }
                    dispatch!(
                        1 1, 2 1, 3 1, 4 1, 5 1, 6 1, 7 1, 8 1, 9 1, 10 1, 11 1, 12 1,
                        1 2, 2 2, 3 2, 4 2, 5 2, 6 2
                    );
                }
                i0 += mr;
            }
            j0 += w;
        }
    }

    /// Column sums, 32 columns (four vectors) at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_col_sums(m: usize, a: *const f32, lda: usize, out: &mut [f32]) {
        let n = out.len();
        let mut j = 0;
        while j < n {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut cnts = [0usize; 4];
            for (v, cnt) in cnts.iter_mut().enumerate() {
                *cnt = n.saturating_sub(j + 8 * v).min(8);
            }
            let masks = cnts.map(|c| lane_mask(c));
            // SAFETY: masked lanes are never touched; rows i < m and columns < n are in range.
            unsafe {
                for i in 0..m {
                    let row = a.add(i * lda + j);
                    for v in 0..4 {
                        if cnts[v] != 0 {
                            acc[v] =
                                _mm256_add_ps(acc[v], _mm256_maskload_ps(row.add(8 * v), masks[v]));
                        }
                    }
                }
                for v in 0..4 {
                    if cnts[v] != 0 {
                        let o = out.as_mut_ptr().add(j + 8 * v);
                        let cur = _mm256_maskload_ps(o, masks[v]);
                        _mm256_maskstore_ps(o, masks[v], _mm256_add_ps(cur, acc[v]));
                    }
                }
            }
            j += SUM_PANEL;
        }
    }

    /// One `MR x 8 NV` tile of `C`; when `MASKED`, the last of the `NV` vectors is masked by
    /// `mask` (otherwise every vector is full and plain loads and stores are used: AMD CPUs run
    /// masked stores much slower than plain ones). Never inlined, as the AVX-512 tile.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const MR: usize, const NV: usize, const MASKED: bool>(
        k: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mask: __m256i,
        ep: &Ep,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        // Index loops with constant bounds, as in the AVX-512 tile.
        // SAFETY (whole body): every pointer stays inside the tile's rows/columns of A, B and C;
        // masked loads and stores do not touch (or fault on) the masked-out lanes.
        #[allow(clippy::needless_range_loop)]
        unsafe {
            for p in 0..k {
                let bp = b.add(p * ldb);
                let mut bv = [_mm256_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = if MASKED && v + 1 == NV {
                        _mm256_maskload_ps(bp.add(8 * v), mask)
                    } else {
                        _mm256_loadu_ps(bp.add(8 * v))
                    };
                }
                let ap = a.add(p * csa);
                for r in 0..MR {
                    let av = _mm256_set1_ps(*ap.add(r * rsa));
                    for v in 0..NV {
                        acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
                    }
                }
            }
            let zero = _mm256_setzero_ps();
            let scale = _mm256_set1_ps(ep.gate_scale);
            for r in 0..MR {
                for v in 0..NV {
                    let cp = c.add(r * ldc + 8 * v);
                    let masked = MASKED && v + 1 == NV;
                    let load = |p: *const f32| {
                        if masked {
                            _mm256_maskload_ps(p, mask)
                        } else {
                            _mm256_loadu_ps(p)
                        }
                    };
                    let mut out = acc[r][v];
                    if ep.accumulate {
                        out = _mm256_add_ps(out, load(cp));
                    }
                    if !ep.bias.is_null() {
                        out = _mm256_add_ps(out, load(ep.bias.add(8 * v)));
                    }
                    if !ep.row_bias.is_null() {
                        out = _mm256_add_ps(out, _mm256_set1_ps(*ep.row_bias.add(r)));
                    }
                    if ep.relu {
                        out = _mm256_max_ps(out, zero);
                    }
                    if !ep.res.is_null() {
                        out = _mm256_add_ps(out, load(ep.res.add(r * ep.ldr + 8 * v)));
                    }
                    if !ep.gate.is_null() {
                        let g = load(ep.gate.add(r * ep.ldg + 8 * v));
                        let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(g, zero);
                        out = _mm256_and_ps(keep, _mm256_mul_ps(out, scale));
                    }
                    if masked {
                        _mm256_maskstore_ps(cp, mask, out);
                    } else {
                        _mm256_storeu_ps(cp, out);
                    }
                }
            }
        }
    }
}

/// The plain-Rust kernel: same operations per element as the vector kernels, so the same bits.
/// Where the target has FMA (aarch64, x86-64 built with `+fma`) LLVM vectorises the inner loop.
mod portable {
    /// Columns per panel (one accumulator row on the stack).
    const PANEL: usize = 64;

    /// Runs [`body`] compiled with hardware FMA where the CPU has it (x86-64 CPUs with FMA but
    /// forced to this path); elsewhere as compiled for the target (`mul_add` is an instruction
    /// on aarch64, a slow but exact libm routine on x86-64 CPUs without FMA).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn sgemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        ep: &super::Epilogue,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: FMA is present; memory contract forwarded.
                unsafe { sgemm_fma(m, k, n, a, rsa, csa, b, ldb, c, ldc, ep) };
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { body(m, k, n, a, rsa, csa, b, ldb, c, ldc, ep) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn sgemm_fma(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        ep: &super::Epilogue,
    ) {
        // SAFETY: forwarded contract.
        unsafe { body(m, k, n, a, rsa, csa, b, ldb, c, ldc, ep) }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn body(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        ep: &super::Epilogue,
    ) {
        let mut acc = [0f32; PANEL];
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(PANEL);
            for i in 0..m {
                let acc = &mut acc[..w];
                acc.fill(0.0);
                // SAFETY: i < m, p < k and j0 + w <= n keep every read inside the caller's
                // A and B, and the row of C inside C, which overlaps neither.
                unsafe {
                    for p in 0..k {
                        let av = *a.add(i * rsa + p * csa);
                        let brow = std::slice::from_raw_parts(b.add(p * ldb + j0), w);
                        for (x, bv) in acc.iter_mut().zip(brow) {
                            *x = av.mul_add(*bv, *x);
                        }
                    }
                    let crow = std::slice::from_raw_parts_mut(c.add(i * ldc + j0), w);
                    for (j, (cv, x)) in crow.iter_mut().zip(acc.iter()).enumerate() {
                        let mut out = *x;
                        if ep.accumulate {
                            out += *cv;
                        }
                        if let Some(bias) = ep.bias {
                            out += bias[j0 + j];
                        }
                        if let Some(row_bias) = ep.row_bias {
                            out += row_bias[i];
                        }
                        if ep.relu {
                            out = if out > 0.0 { out } else { 0.0 };
                        }
                        if let Some((res, ldr)) = ep.residual {
                            out += res[i * ldr + j0 + j];
                        }
                        if let Some((gate, ldg)) = ep.gate {
                            out = if gate[i * ldg + j0 + j] > 0.0 {
                                out * ep.gate_scale
                            } else {
                                0.0
                            };
                        }
                        *cv = out;
                    }
                }
            }
            j0 += w;
        }
    }

    pub(super) fn add_col_sums(m: usize, a: &[f32], lda: usize, out: &mut [f32]) {
        let mut acc = [0f32; PANEL];
        for (jb, o) in out.chunks_mut(PANEL).enumerate() {
            let j0 = jb * PANEL;
            let acc = &mut acc[..o.len()];
            acc.fill(0.0);
            for i in 0..m {
                let row = &a[i * lda + j0..i * lda + j0 + o.len()];
                for (x, v) in acc.iter_mut().zip(row) {
                    *x += *v;
                }
            }
            for (o, x) in o.iter_mut().zip(acc.iter()) {
                *o += *x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape and remainder, on every path this CPU supports: the kernel against a
    /// naive triple loop, with `A` read directly and transposed, overwriting and accumulating;
    /// and every path gives the same bits as the portable one.
    #[test]
    fn matches_naive_products_for_all_tile_shapes_on_every_path() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 9),
            (17, 9, 18),
            (33, 128, 128),
            (64, 18, 130),
            (100, 7, 47),
            (7, 64, 200),
            (4, 0, 5),
        ] {
            for transposed_a in [false, true] {
                for accumulate in [false, true] {
                    let a: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 7 % 13) as f32) * 0.1 - 0.6)
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5)
                        .collect();
                    let (rsa, csa) = if transposed_a { (1, m) } else { (k, 1) };
                    let ldc = n + 3; // padded rows: the kernel must leave the padding alone
                    let before: Vec<f32> = (0..m * ldc).map(|i| (i % 5) as f32).collect();
                    let ep = Epilogue {
                        accumulate,
                        ..Epilogue::default()
                    };
                    let run = |path| {
                        let mut c = before.clone();
                        // SAFETY: shapes and strides match the vectors above.
                        unsafe {
                            sgemm_on(
                                path,
                                m,
                                k,
                                n,
                                a.as_ptr(),
                                rsa,
                                csa,
                                b.as_ptr(),
                                n,
                                c.as_mut_ptr(),
                                ldc,
                                &ep,
                            )
                        };
                        c
                    };
                    let reference = run(SimdPath::Portable);
                    for path in simd::supported_paths() {
                        let c = run(path);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&c), bits(&reference), "{path} m{m} k{k} n{n}");
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j];
                                if j >= n {
                                    assert_eq!(got, before[i * ldc + j], "padding touched");
                                    continue;
                                }
                                let mut want: f64 = if accumulate {
                                    before[i * ldc + j] as f64
                                } else {
                                    0.0
                                };
                                for p in 0..k {
                                    want += a[i * rsa + p * csa] as f64 * b[p * n + j] as f64;
                                }
                                assert!(
                                    (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{path} m{m} k{k} n{n} t{transposed_a} acc{accumulate} ({i},{j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bias, row bias, ReLU, residual and gate in the epilogue equal the same steps done after a
    /// plain product, and give the same bits on every path (including NaN and signed zeros through the
    /// ReLU), with the residual read through a row stride wider than the output.
    #[test]
    fn fused_epilogue_matches_separate_passes_on_every_path() {
        let (m, k, n) = (23, 20, 37);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32) * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5)
            .collect();
        let mut bias: Vec<f32> = (0..n).map(|j| (j as f32 * 0.3).sin()).collect();
        bias[3] = f32::NAN;
        bias[4] = -1e30;
        let row_bias: Vec<f32> = (0..m).map(|i| (i as f32 * 0.7).cos() - 0.2).collect();
        let gate: Vec<f32> = (0..m * n).map(|i| ((i * 3 % 7) as f32) - 3.0).collect();
        let ldr = n + 2;
        let residual: Vec<f32> = (0..m * ldr)
            .map(|i| ((i * 5 % 9) as f32) * 0.25 - 1.0)
            .collect();
        let plain =
            |i: usize, j: usize| -> f32 { (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum() };
        let ep = Epilogue {
            bias: Some(&bias),
            row_bias: Some(&row_bias),
            relu: true,
            residual: Some((&residual, ldr)),
            gate: Some((&gate, n)),
            gate_scale: 1.25,
            ..Epilogue::default()
        };
        let mut reference = vec![f32::NAN; m * n];
        sgemm_rows_on(SimdPath::Portable, m, k, n, &a, &b, &mut reference, &ep);
        for path in simd::supported_paths() {
            let mut c = vec![f32::NAN; m * n]; // overwritten, never read
            sgemm_rows_on(path, m, k, n, &a, &b, &mut c, &ep);
            for i in 0..m {
                for j in 0..n {
                    let x = plain(i, j) + bias[j] + row_bias[i];
                    let x = if x > 0.0 { x } else { 0.0 };
                    let x = x + residual[i * ldr + j];
                    let want = if gate[i * n + j] > 0.0 { 1.25 * x } else { 0.0 };
                    let got = c[i * n + j];
                    assert_eq!(got.to_bits(), reference[i * n + j].to_bits(), "{path}");
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{path} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn column_sums_add_to_the_output_on_every_path() {
        for &(m, n, lda) in &[(1, 1, 1), (37, 9, 11), (64, 128, 128), (5, 70, 70)] {
            let a: Vec<f32> = (0..m * lda)
                .map(|i| ((i * 7 % 13) as f32) * 0.37 - 1.5)
                .collect();
            let start: Vec<f32> = (0..n).map(|j| j as f32 * 0.1).collect();
            let mut reference = start.clone();
            add_col_sums_on(SimdPath::Portable, m, &a, lda, &mut reference);
            for path in simd::supported_paths() {
                let mut out = start.clone();
                add_col_sums_on(path, m, &a, lda, &mut out);
                for j in 0..n {
                    let want = start[j] + (0..m).map(|i| a[i * lda + j]).sum::<f32>();
                    assert!((out[j] - want).abs() <= 1e-4 * (1.0 + want.abs()));
                    assert_eq!(out[j].to_bits(), reference[j].to_bits(), "{path}");
                }
            }
        }
    }

    /// Sizes whose products overflow are refused before any memory is touched.
    #[test]
    #[should_panic(expected = "overflows usize")]
    fn overflowing_sizes_panic_before_reading() {
        let (a, b) = ([1.0f32; 4], [1.0f32; 4]);
        let mut c = [0.0f32; 4];
        sgemm_rows(
            usize::MAX / 2 + 1,
            2,
            2,
            &a,
            &b,
            &mut c,
            &Epilogue::default(),
        );
    }

    #[test]
    #[should_panic(expected = "overflows usize")]
    fn overflowing_column_sums_panic_before_reading() {
        let a = [1.0f32; 4];
        let mut out = [0.0f32; 2];
        add_col_sums(usize::MAX, &a, usize::MAX / 2, &mut out);
    }

    #[test]
    fn empty_products_touch_nothing() {
        let mut c = [7.0f32; 3];
        for path in simd::supported_paths() {
            // k = 0 with empty A and B: C = bias.
            let bias = [1.0f32, 2.0, 3.0];
            let ep = Epilogue {
                bias: Some(&bias),
                ..Epilogue::default()
            };
            sgemm_rows_on(path, 1, 0, 3, &[], &[], &mut c, &ep);
            assert_eq!(c, bias);
            sgemm_rows_on(path, 0, 5, 3, &[], &[0.0; 15], &mut [], &ep);
            add_col_sums_on(path, 0, &[], 3, &mut c);
            assert_eq!(c, bias);
        }
    }
}
