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
    affine_product(m, k, n, inp, wt, Bias::PerColumn(bias), relu, skip, out);
}

/// [`forward`] on feature-major activations (one row per feature, one column per event):
/// `out_t[n x m] = act(w[n x k] inp_t[k x m] + bias) (+ skip_t[n x m])`, with `w` the layer's
/// weight as stored (`n x k`, no transposed copy). With the fused kernel every element gets the
/// same fused multiply-adds in the same order and the same epilogue as in [`forward`], so the
/// result is the transpose of [`forward`]'s, bit for bit; and an `n`-wide output (e.g. 18
/// features) fills whole vectors, since the kernel's vectors now run over the events.
#[allow(clippy::too_many_arguments)]
pub fn forward_feature_major<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    inp_t: &[T],
    w: &[T],
    bias: &[T],
    relu: bool,
    skip_t: Option<&[T]>,
    out_t: &mut [T],
) {
    affine_product(n, k, m, w, inp_t, Bias::PerRow(bias), relu, skip_t, out_t);
}

/// Where the bias of [`affine_product`] goes.
#[derive(Clone, Copy)]
enum Bias<'a, T> {
    /// `bias[j]` added to column `j`.
    PerColumn(&'a [T]),
    /// `bias[i]` added to row `i`.
    PerRow(&'a [T]),
}

/// `c[r x q] = act(a[r x k] b[k x q] + bias) (+ skip[r x q])`: the fused kernel where the type
/// has one, else a product and the same steps in plain loops.
#[allow(clippy::too_many_arguments)]
fn affine_product<T: Real>(
    r: usize,
    k: usize,
    q: usize,
    a: &[T],
    b: &[T],
    bias: Bias<T>,
    relu: bool,
    skip: Option<&[T]>,
    c: &mut [T],
) {
    let (bias_len, bias_cols) = match bias {
        Bias::PerColumn(v) => (v.len(), q),
        Bias::PerRow(v) => (v.len(), r),
    };
    assert!(a.len() >= r * k && b.len() >= k * q && bias_len >= bias_cols && c.len() >= r * q);
    if let Some(s) = skip {
        assert!(s.len() >= r * q, "skip connection smaller than the output");
    }
    let epilogue = Epilogue {
        bias: match bias {
            Bias::PerColumn(v) => Some(v),
            Bias::PerRow(_) => None,
        },
        row_bias: match bias {
            Bias::PerRow(v) => Some(v),
            Bias::PerColumn(_) => None,
        },
        relu,
        residual: skip.map(|s| (s, q)),
        ..Epilogue::default()
    };
    if T::fused_product(r, k, q, a, b, c, &epilogue) {
        return;
    }
    gemm_nn(r, k, q, T::one(), a, b, T::zero(), c);
    for (i, row) in c[..r * q].chunks_exact_mut(q.max(1)).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let x = *v
                + match bias {
                    Bias::PerColumn(b) => b[j],
                    Bias::PerRow(b) => b[i],
                };
            // max(x, 0) maps NaN to 0, as the fused kernel's max does.
            *v = if relu { x.max(T::zero()) } else { x };
        }
    }
    if let Some(s) = skip {
        for (v, x) in c[..r * q].iter_mut().zip(s) {
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

    /// The feature-major layer is the transpose of the row-major one: bit for bit in `f32` (the
    /// fused kernel, on whichever path is active), to rounding in `f64` (plain loops), with and
    /// without ReLU and skip connection, and with output widths that leave partial vectors.
    #[test]
    fn feature_major_layer_is_the_transposed_row_major_layer() {
        let f = |i: usize| ((i * 7 % 13) as f64) * 0.1 - 0.6;
        for &(m, k, n) in &[(37, 9, 18), (70, 18, 18), (5, 3, 129)] {
            let inp: Vec<f64> = (0..m * k).map(f).collect();
            let w: Vec<f64> = (0..n * k).map(|i| f(i + 3)).collect();
            let bias: Vec<f64> = (0..n).map(|i| f(i + 5)).collect();
            let skip: Vec<f64> = (0..m * n).map(|i| f(i + 6)).collect();
            let mut wt = vec![0.0; k * n];
            crate::engine::matrix::transpose(&w, n, k, &mut wt);
            let t = |v: &[f64], r: usize, c: usize| {
                let mut o = vec![0.0; r * c];
                crate::engine::matrix::transpose(v, r, c, &mut o);
                o
            };
            let (inp_t, skip_t) = (t(&inp, m, k), t(&skip, m, n));
            let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
            for (relu, skipped) in [(false, false), (true, false), (true, true)] {
                let skipped = skipped && k == n;
                let mut o64 = vec![0.0; m * n];
                let mut o64_t = vec![0.0; n * m];
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
                forward_feature_major(
                    m,
                    k,
                    n,
                    &inp_t,
                    &w,
                    &bias,
                    relu,
                    skipped.then_some(&skip_t[..]),
                    &mut o64_t,
                );
                let back = t(&o64_t, n, m);
                assert!(o64.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-12));
                let mut o32 = vec![0.0f32; m * n];
                let mut o32_t = vec![f32::NAN; n * m];
                let (s32, s32_t) = (to32(&skip), to32(&skip_t));
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
                forward_feature_major(
                    m,
                    k,
                    n,
                    &to32(&inp_t),
                    &to32(&w),
                    &to32(&bias),
                    relu,
                    skipped.then_some(&s32_t[..]),
                    &mut o32_t,
                );
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(o32[i * n + j].to_bits(), o32_t[j * m + i].to_bits());
                    }
                }
            }
        }
    }
}
