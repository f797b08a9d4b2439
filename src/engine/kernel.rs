//! Our own single-precision GEMM micro-kernel for x86-64 CPUs with AVX-512, chosen at run time.
//!
//! Computes `C[i, j] = sum_p A[i, p] B[p, j]` (or `C += ...`) where `A` is read through arbitrary
//! row/column strides (so `A` or `A^T` of a row-major matrix both work) and `B` and `C` have
//! contiguous rows. That covers the three products of a dense layer once the forward weights are
//! kept transposed: `H W^T = H (W^T)`, `dY W` and `dY^T H`.
//!
//! The shapes of a flow's conditioners are small and skinny (a chunk of 64-1024 events times
//! 9-128 features), where general-purpose GEMMs lose much of their time packing both operands on
//! every call. This kernel packs nothing: it walks `C` in register tiles of `MR` rows by
//! `16 NV` columns (`MR x NV <= 24` accumulators), and for each `p` loads `NV` vectors of `B`'s
//! row `p` and broadcasts `MR` values of `A`'s column `p` into fused multiply-adds. `B`'s 64-column
//! panel (`k x 64` floats) stays in L1/L2 while the row tiles sweep over it. The last vector of a
//! tile is masked, so widths such as 9 and 18 need no padding.

/// Whether the AVX-512 kernels (this GEMM and [`super::vmath`]) run: the CPU has AVX-512F and
/// the environment variable `HEPFLOW_NO_AVX512` is not set (it forces the portable
/// `matrixmultiply`/libm path, e.g. to test it or to compare). Checked once.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::env::var_os("HEPFLOW_NO_AVX512").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// What happens to a tile of `A B` before it is stored into `C`, in this order:
/// `x = A B (+ C) (+ bias[j])`, `x = max(x, 0)` when `relu`, and `x = gate_scale * x` where
/// `gate[i, j] > 0`, else `0`, when a gate is given. Fusing these into the kernel saves the
/// separate passes over the output that a dense layer's bias, ReLU and ReLU-derivative mask
/// would cost.
/// Generic over the scalar so that [`crate::engine::Real`] can describe a fused product for any
/// type; the kernel itself takes `f32`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a, T = f32> {
    /// `C += A B` instead of `C = A B`.
    pub accumulate: bool,
    /// Added to every row (length `>= n`).
    pub bias: Option<&'a [T]>,
    /// Clamp below at zero.
    pub relu: bool,
    /// Row-major gate matrix with its row stride (`gate[i * ld + j]`).
    pub gate: Option<(&'a [T], usize)>,
    /// Factor of the elements the gate keeps.
    pub gate_scale: T,
}

/// `C = epilogue(A B)` with `A[i, p] = a[i * rsa + p * csa]`, `B[p, j] = b[p * ldb + j]` and
/// `C[i, j] = c[i * ldc + j]`, for `i < m`, `p < k`, `j < n` (see [`Epilogue`]).
/// Returns `false` (and touches nothing) when the CPU lacks AVX-512.
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
) -> bool {
    if m == 0 || n == 0 {
        return available();
    }
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= n, "bias shorter than the output width");
    }
    if let Some((gate, ld)) = epilogue.gate {
        assert!(
            ld >= n && gate.len() >= (m - 1) * ld + n,
            "gate smaller than the output"
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        if available() {
            // SAFETY: AVX-512F is present (checked above); memory contract forwarded, and the
            // epilogue's slices were checked against the output shape.
            unsafe { avx512::sgemm(m, k, n, a, rsa, csa, b, ldb, c, ldc, epilogue) };
            return true;
        }
    }
    let _ = (k, a, rsa, csa, b, ldb, c, ldc);
    false
}

/// [`sgemm`] on row-major slices: `c[m x n] = epilogue(a[m x k] b[k x n])`. Returns `false` (and
/// touches nothing) when the CPU lacks AVX-512.
pub fn sgemm_rows(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    epilogue: &Epilogue,
) -> bool {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "slices smaller than their shapes"
    );
    // SAFETY: the assert bounds A (stride k), B (stride n) and C (stride n); `c` is a unique
    // borrow, so it overlaps nothing.
    unsafe {
        sgemm(
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
/// a row-major matrix). Returns `false` (and touches nothing) when the CPU lacks AVX-512.
pub fn add_col_sums(m: usize, a: &[f32], lda: usize, out: &mut [f32]) -> bool {
    let n = out.len();
    if m == 0 || n == 0 {
        return true;
    }
    assert!(
        lda >= n && a.len() >= (m - 1) * lda + n,
        "matrix smaller than m x n"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if available() {
            // SAFETY: AVX-512F is present; the assert above bounds every read.
            unsafe { avx512::add_col_sums(m, a.as_ptr(), lda, out) };
            return true;
        }
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Columns of `C` per panel: four 16-lane vectors.
    const PANEL: usize = 64;

    /// The part of a [`super::Epilogue`] that one tile sees: raw pointers to its first bias
    /// column and first gate element (null = absent).
    struct Ep {
        accumulate: bool,
        bias: *const f32,
        relu: bool,
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
                        relu: ep.relu,
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
    #[inline]
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
        // SAFETY (whole body): every pointer stays inside the tile's rows/columns of A, B and C;
        // masked loads and stores do not touch (or fault on) the masked-out lanes.
        unsafe {
            for p in 0..k {
                let bp = b.add(p * ldb);
                let mut bv = [_mm512_setzero_ps(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = if v + 1 == NV {
                        _mm512_maskz_loadu_ps(mask, bp.add(16 * v))
                    } else {
                        _mm512_loadu_ps(bp.add(16 * v))
                    };
                }
                let ap = a.add(p * csa);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * rsa));
                    for (x, bx) in row.iter_mut().zip(&bv) {
                        *x = _mm512_fmadd_ps(av, *bx, *x);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            let scale = _mm512_set1_ps(ep.gate_scale);
            for (r, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    let cp = c.add(r * ldc + 16 * v);
                    let m = if v + 1 == NV { mask } else { 0xffff };
                    let mut out = *x;
                    if ep.accumulate {
                        out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, cp));
                    }
                    if !ep.bias.is_null() {
                        out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, ep.bias.add(16 * v)));
                    }
                    if ep.relu {
                        out = _mm512_max_ps(out, zero);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape and remainder: the kernel against a naive triple loop, with `A` read
    /// directly and transposed, overwriting and accumulating.
    #[test]
    fn matches_naive_products_for_all_tile_shapes() {
        if !available() {
            return; // the matrixmultiply fallback is covered by engine::gemm's tests
        }
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 9),
            (17, 9, 18),
            (33, 128, 128),
            (64, 18, 130),
            (100, 7, 47),
            (7, 64, 200),
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
                    let mut c: Vec<f32> = (0..m * ldc).map(|i| (i % 5) as f32).collect();
                    let before = c.clone();
                    // SAFETY: shapes and strides match the vectors above.
                    let ep = Epilogue {
                        accumulate,
                        ..Epilogue::default()
                    };
                    let ran = unsafe {
                        sgemm(
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
                    assert!(ran);
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
                                "m{m} k{k} n{n} t{transposed_a} acc{accumulate} ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Bias, ReLU and gate in the epilogue equal the same steps done after a plain product.
    #[test]
    fn fused_epilogue_matches_separate_passes() {
        if !available() {
            return;
        }
        let (m, k, n) = (23, 20, 37);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32) * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|j| (j as f32 * 0.3).sin()).collect();
        let gate: Vec<f32> = (0..m * n).map(|i| ((i * 3 % 7) as f32) - 3.0).collect();
        let plain =
            |i: usize, j: usize| -> f32 { (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum() };
        let mut c = vec![f32::NAN; m * n]; // overwritten, never read
        let ep = Epilogue {
            bias: Some(&bias),
            relu: true,
            gate: Some((&gate, n)),
            gate_scale: 1.25,
            ..Epilogue::default()
        };
        // SAFETY: shapes and strides match the vectors above.
        assert!(unsafe {
            sgemm(
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
                &ep,
            )
        });
        for i in 0..m {
            for j in 0..n {
                let x = (plain(i, j) + bias[j]).max(0.0);
                let want = if gate[i * n + j] > 0.0 { 1.25 * x } else { 0.0 };
                assert!(
                    (c[i * n + j] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "({i},{j})"
                );
            }
        }
    }

    #[test]
    fn column_sums_add_to_the_output() {
        if !available() {
            return;
        }
        for &(m, n, lda) in &[(1, 1, 1), (37, 9, 11), (64, 128, 128), (5, 70, 70)] {
            let a: Vec<f32> = (0..m * lda)
                .map(|i| ((i * 7 % 13) as f32) * 0.25 - 1.5)
                .collect();
            let mut out: Vec<f32> = (0..n).map(|j| j as f32).collect();
            assert!(add_col_sums(m, &a, lda, &mut out));
            for j in 0..n {
                let want = j as f32 + (0..m).map(|i| a[i * lda + j]).sum::<f32>();
                assert!((out[j] - want).abs() <= 1e-4 * (1.0 + want.abs()));
            }
        }
    }
}
