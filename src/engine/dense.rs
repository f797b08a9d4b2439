//! The products of a dense layer `y = act(x W^T + b)`, with their elementwise parts fused into the
//! GEMM kernel where the scalar type and CPU allow it (`f32` with AVX-512, see
//! [`super::kernel`]), and plain loops after a GEMM otherwise (`f64`, other CPUs).
//!
//! - forward: `out = act(inp W^T + b) (+ skip)`, `act` = ReLU or identity, with `W^T` given as
//!   `wt` (`k x n`, contiguous rows) and an optional skip connection `skip` (`m x n`);
//! - input gradient: `dinp = (dout W) * g`, where the optional gate gives
//!   `g = keep * [gate > 0]` (the ReLU derivative of the layer below, with the inverted-dropout
//!   factor `keep`), or `g = 1`;
//! - bias gradient: `gb += sum_i dout[i, :]` (column sums).

use super::Real;
use super::gemm::gemm_nn;
use super::kernel::Epilogue;

/// `out[m x n] = act(inp[m x k] wt[k x n] + bias) (+ skip[m x n])`, `act` = ReLU when `relu`,
/// else identity; the skip connection is added after the activation.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    inp: &[T],
    wt: &[T],
    bias: &[T],
    relu: bool,
    skip: Option<&[T]>,
    out: &mut [T],
) {
    assert!(inp.len() >= m * k && wt.len() >= k * n && bias.len() >= n && out.len() >= m * n);
    if let Some(s) = skip {
        assert!(s.len() >= m * n, "skip connection smaller than the output");
    }
    let epilogue = Epilogue {
        bias: Some(bias),
        relu,
        residual: skip.map(|s| (s, n)),
        ..Epilogue::default()
    };
    if T::fused_product(m, k, n, inp, wt, out, &epilogue) {
        return;
    }
    gemm_nn(m, k, n, T::one(), inp, wt, T::zero(), out);
    for row in out[..m * n].chunks_exact_mut(n.max(1)) {
        for (v, b) in row.iter_mut().zip(bias) {
            let x = *v + *b;
            // max(x, 0) maps NaN to 0, as the fused kernel's max does.
            *v = if relu { x.max(T::zero()) } else { x };
        }
    }
    if let Some(s) = skip {
        for (v, x) in out[..m * n].iter_mut().zip(s) {
            *v += *x;
        }
    }
}

/// `dinp[m x k] = (dout[m x n] w[n x k]) * g` with `g = keep * [gate > 0]` (gate `m x k`) or 1.
#[allow(clippy::too_many_arguments)]
pub fn input_grad<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dout: &[T],
    w: &[T],
    gate: Option<&[T]>,
    keep: T,
    dinp: &mut [T],
) {
    assert!(dout.len() >= m * n && w.len() >= n * k && dinp.len() >= m * k);
    if let Some(g) = gate {
        assert!(g.len() >= m * k);
    }
    let epilogue = Epilogue {
        gate: gate.map(|g| (g, k)),
        gate_scale: keep,
        ..Epilogue::default()
    };
    if T::fused_product(m, n, k, dout, w, dinp, &epilogue) {
        return;
    }
    gemm_nn(m, n, k, T::one(), dout, w, T::zero(), dinp);
    if let Some(g) = gate {
        for (d, g) in dinp[..m * k].iter_mut().zip(g) {
            *d = if *g > T::zero() { *d * keep } else { T::zero() };
        }
    }
}

/// `out[j] += sum_i a[i * lda + j]` for `i < m`, `j < out.len()`.
pub fn add_col_sums<T: Real>(m: usize, a: &[T], lda: usize, out: &mut [T]) {
    let n = out.len();
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= n && a.len() >= (m - 1) * lda + n);
    if T::add_col_sums_fused(m, a, lda, out) {
        return;
    }
    for i in 0..m {
        for (o, v) in out.iter_mut().zip(&a[i * lda..i * lda + n]) {
            *o += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 (fused where available) and f64 (plain loops) give the same results.
    #[test]
    fn fused_and_plain_paths_agree() {
        let (m, k, n) = (19, 9, 33);
        let f = |i: usize| ((i * 7 % 13) as f64) * 0.1 - 0.6;
        let inp: Vec<f64> = (0..m * k).map(f).collect();
        let wt: Vec<f64> = (0..k * n).map(|i| f(i + 3)).collect();
        let bias: Vec<f64> = (0..n).map(|i| f(i + 5)).collect();
        let gate: Vec<f64> = (0..m * k).map(|i| f(i + 1)).collect();
        let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let close = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (*x as f64 - y).abs() < 1e-5 * (1.0 + y.abs()))
        };
        let skip: Vec<f64> = (0..m * n).map(|i| f(i + 6)).collect();
        for (relu, skipped) in [(false, false), (true, false), (true, true)] {
            let mut o64 = vec![0.0; m * n];
            let mut o32 = vec![0.0f32; m * n];
            let s32 = to32(&skip);
            forward(
                m,
                k,
                n,
                &inp,
                &wt,
                &bias,
                relu,
                skipped.then_some(&skip[..]),
                &mut o64,
            );
            forward(
                m,
                k,
                n,
                &to32(&inp),
                &to32(&wt),
                &to32(&bias),
                relu,
                skipped.then_some(&s32[..]),
                &mut o32,
            );
            assert!(close(&o32, &o64));
            if relu {
                // Without the skip every output is clamped at 0; with it, at the skip's value.
                let floor = |i: usize| if skipped { skip[i] } else { 0.0 };
                assert!(o64.iter().enumerate().all(|(i, v)| *v >= floor(i)));
            }
        }
        // Input gradient through W (n x k here is wt read as W with n = k', k = n').
        for gated in [false, true] {
            let mut d64 = vec![0.0; m * k];
            let mut d32 = vec![0.0f32; m * k];
            let dout: Vec<f64> = (0..m * n).map(|i| f(i + 2)).collect();
            let w: Vec<f64> = (0..n * k).map(|i| f(i + 4)).collect();
            let g32 = to32(&gate);
            input_grad(
                m,
                n,
                k,
                &dout,
                &w,
                gated.then_some(&gate[..]),
                2.0,
                &mut d64,
            );
            input_grad(
                m,
                n,
                k,
                &to32(&dout),
                &to32(&w),
                gated.then_some(&g32[..]),
                2.0,
                &mut d32,
            );
            assert!(close(&d32, &d64));
            if gated {
                for (d, g) in d64.iter().zip(&gate) {
                    assert!(*g > 0.0 || *d == 0.0);
                }
            }
        }
        let mut s64 = vec![1.0; n];
        let mut s32 = vec![1.0f32; n];
        add_col_sums(m, &inp, k, &mut s64[..k]);
        add_col_sums(m, &to32(&inp), k, &mut s32[..k]);
        assert!(close(&s32, &s64));
    }
}
