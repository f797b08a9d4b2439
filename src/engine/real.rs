//! The scalar type of the engine: `f32` for production, `f64` for gradient checks.

use num_traits::{Float, FromPrimitive, ToPrimitive};
use std::fmt::Debug;
use std::iter::Sum;

/// A floating-point scalar the engine can run on, with a single-threaded GEMM kernel.
///
/// `gemm` computes `C = alpha * op(A) * op(B) + beta * C` on strided row/column views, as
/// `matrixmultiply`'s `sgemm`/`dgemm` do.
pub trait Real:
    Float
    + FromPrimitive
    + ToPrimitive
    + Default
    + Debug
    + Send
    + Sync
    + Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + 'static
{
    /// Converts an `f64` constant into this type.
    fn c(x: f64) -> Self;

    /// Whether [`Real::fused_product`] is implemented (always returns `true`) for this type.
    const HAS_FUSED_PRODUCT: bool = false;

    /// `c[m x n] = epilogue(a[m x k] b[k x n])` on row-major slices in one fused kernel (see
    /// [`super::kernel::Epilogue`]; used by [`super::dense`]); `false` when this type/CPU has
    /// none and the caller must do the product and the epilogue itself.
    fn fused_product(
        _m: usize,
        _k: usize,
        _n: usize,
        _a: &[Self],
        _b: &[Self],
        _c: &mut [Self],
        _epilogue: &super::kernel::Epilogue<Self>,
    ) -> bool {
        false
    }

    /// [`super::dense::add_col_sums`] vectorised; `false` when this type/CPU has none.
    fn add_col_sums_fused(_m: usize, _a: &[Self], _lda: usize, _out: &mut [Self]) -> bool {
        false
    }

    /// `x <- exp(x)` elementwise (vectorised for `f32`, see [`super::vmath`]).
    fn exp_in_place(xs: &mut [Self]) {
        for x in xs {
            *x = x.exp();
        }
    }

    /// `x <- a tanh(x / a)` elementwise (vectorised for `f32`, see [`super::vmath`]).
    fn soft_clamp_in_place(xs: &mut [Self], a: Self) {
        for x in xs {
            *x = a * (*x / a).tanh();
        }
    }

    /// `x <- x sigmoid(x)` elementwise and, with `slope`, `slope <- d/dx (x sigmoid(x))`
    /// (vectorised for `f32`, see [`super::vmath`]).
    fn silu_in_place(xs: &mut [Self], slope: Option<&mut [Self]>) {
        let silu = |x: Self| {
            let s = Self::one() / (Self::one() + (-x).exp());
            (x * s, s * (Self::one() + x * (Self::one() - s)))
        };
        match slope {
            Some(d) => {
                for (x, d) in xs.iter_mut().zip(d) {
                    (*x, *d) = silu(*x);
                }
            }
            None => {
                for x in xs {
                    *x = silu(*x).0;
                }
            }
        }
    }

    /// `x <- tanh(x)` elementwise and, with `slope`, `slope <- 1 - tanh(x)^2` (vectorised for
    /// `f32`, see [`super::vmath`]).
    fn tanh_in_place(xs: &mut [Self], slope: Option<&mut [Self]>) {
        match slope {
            Some(d) => {
                for (x, d) in xs.iter_mut().zip(d) {
                    *x = x.tanh();
                    *d = Self::one() - *x * *x;
                }
            }
            None => {
                for x in xs {
                    *x = x.tanh();
                }
            }
        }
    }

    /// `C[m x n] = alpha * A[m x k] * B[k x n] + beta * C`, with arbitrary row/column strides.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (for C) memory of the
    /// stated shapes, exactly as for `matrixmultiply::sgemm`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Real for f32 {
    const HAS_FUSED_PRODUCT: bool = true;
    #[inline(always)]
    fn c(x: f64) -> Self {
        x as f32
    }
    fn exp_in_place(xs: &mut [Self]) {
        super::vmath::exp_in_place(xs);
    }
    fn fused_product(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        b: &[Self],
        c: &mut [Self],
        epilogue: &super::kernel::Epilogue<Self>,
    ) -> bool {
        super::kernel::sgemm_rows(m, k, n, a, b, c, epilogue);
        true
    }
    fn add_col_sums_fused(m: usize, a: &[Self], lda: usize, out: &mut [Self]) -> bool {
        super::kernel::add_col_sums(m, a, lda, out);
        true
    }
    fn soft_clamp_in_place(xs: &mut [Self], a: Self) {
        super::vmath::soft_clamp_in_place(xs, a);
    }
    fn silu_in_place(xs: &mut [Self], slope: Option<&mut [Self]>) {
        super::vmath::silu_in_place(xs, slope);
    }
    fn tanh_in_place(xs: &mut [Self], slope: Option<&mut [Self]>) {
        super::vmath::tanh_in_place(xs, slope);
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // Our kernel covers the products of dense layers (B and C with contiguous rows, C
        // overwritten or accumulated), which is every product the engine does in f32; anything
        // else goes to matrixmultiply (whose bits may depend on the CPU).
        if alpha == 1.0
            && (beta == 0.0 || beta == 1.0)
            && csb == 1
            && csc == 1
            && rsa >= 0
            && csa >= 0
            && rsb >= 0
            && rsc >= n as isize
        {
            let ep = super::kernel::Epilogue {
                accumulate: beta == 1.0,
                ..Default::default()
            };
            // SAFETY: forwarded contract of `gemm_raw`; all strides are non-negative here.
            unsafe {
                super::kernel::sgemm(
                    m,
                    k,
                    n,
                    a,
                    rsa as usize,
                    csa as usize,
                    b,
                    rsb as usize,
                    c,
                    rsc as usize,
                    &ep,
                )
            };
            return;
        }
        // SAFETY: forwarded contract of `gemm_raw`.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

impl Real for f64 {
    #[inline(always)]
    fn c(x: f64) -> Self {
        x
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract of `gemm_raw`.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}
