//! Safe wrappers around the single-threaded GEMM kernel for the three products a dense layer
//! needs: `X W^T` (forward), `dY W` (input gradient) and `dY^T X` (weight gradient).

use super::Real;

/// `C[m x n] = alpha * A[m x k] * B[k x n] + beta * C`, all row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nn<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above guarantee the row-major shapes fit the slices.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// `C[m x n] = alpha * A[m x k] * B^T + beta * C` where `B` is `n x k` row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    // SAFETY: as above; B^T is read through swapped strides.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// `C[m x n] = alpha * A^T * B + beta * C` where `A` is `k x m` and `B` is `k x n`, row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tn<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    assert!(a.len() >= k * m && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: as above; A^T is read through swapped strides.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_naive_loops() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.11).cos()).collect(); // n x k
        let mut c = vec![0.0; m * n];
        gemm_nt(m, k, n, 1.0, &a, &bt, 0.0, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
        // A^T * C: (k x m)^T ... use a as k' x m' with k'=m, m'=k
        let mut g = vec![0.0; k * n];
        gemm_tn(k, m, n, 1.0, &a, &c, 0.0, &mut g);
        for i in 0..k {
            for j in 0..n {
                let want: f64 = (0..m).map(|l| a[l * k + i] * c[l * n + j]).sum();
                assert!((g[i * n + j] - want).abs() < 1e-12);
            }
        }
        let mut h = vec![0.0; m * k];
        gemm_nn(m, n, k, 1.0, &c, &bt, 0.0, &mut h);
        for i in 0..m {
            for j in 0..k {
                let want: f64 = (0..n).map(|l| c[i * n + l] * bt[l * k + j]).sum();
                assert!((h[i * k + j] - want).abs() < 1e-12);
            }
        }
    }
}
