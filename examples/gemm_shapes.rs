//! GFLOP/s of the `f32` GEMM kernel ([`hepflow::engine::kernel`]) on the conditioner shapes of
//! the bench models (chunks of 1024 events, and feature-major slabs of 64), on every SIMD path this CPU supports, per CPU-second
//! of the process (user + system time, `CLOCK_PROCESS_CPUTIME_ID`, so a shared machine's waits do not
//! count; Linux only). Each figure is the best of 3 runs of about 30 GFLOP.
//!
//! ```text
//! cargo run --release --example gemm_shapes
//! ```

mod common;

use hepflow::engine::Matrix;
use hepflow::engine::kernel::{Epilogue, sgemm_on};
use hepflow::engine::simd::supported_paths;

/// [`common::cpu_seconds`], which cannot fail on Linux.
fn cpu_seconds() -> f64 {
    common::cpu_seconds().expect("clock_gettime(CLOCK_PROCESS_CPUTIME_ID)")
}

fn main() {
    // (name, m, k, n, A read transposed as in the weight gradient `dY^T X`)
    let shapes: &[(&str, usize, usize, usize, bool)] = &[
        ("input 9->128", 1024, 9, 128, false),
        ("hidden 128->128", 1024, 128, 128, false),
        ("out pq 128->153", 1024, 128, 153, false),
        ("out rq 128->207", 1024, 128, 207, false),
        ("out nvp 128->18", 1024, 128, 18, false),
        ("lu 18->18", 1024, 18, 18, false),
        ("grad 128x512x128", 128, 512, 128, true),
        // Feature-major slabs of 64 events (`W inp^T`, affine couplings' evaluation passes).
        ("fm input 9->128", 128, 9, 64, false),
        ("fm hidden 128->128", 128, 128, 64, false),
        ("fm out rq 128->207", 207, 128, 64, false),
        ("fm out nvp 128->18", 18, 128, 64, false),
    ];
    // Optional filter: only the shapes whose name contains the first argument.
    let only = std::env::args().nth(1);
    for &(name, m, k, n, transposed) in shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // Operands in `Matrix` storage, which starts on a cache line as in the flows' passes.
        let a = Matrix::<f32>::from_fn(m, k, |i, j| (((i * k + j) * 7 % 13) as f32) * 0.1 - 0.6);
        let b = Matrix::<f32>::from_fn(k, n, |i, j| (((i * n + j) * 5 % 11) as f32) * 0.1 - 0.5);
        let (a, b) = (aligned(&a), aligned(&b));
        let bias = vec![0.1f32; n];
        let mut c = Matrix::<f32>::zeros(m, n);
        let ep = Epilogue {
            bias: Some(&bias),
            relu: true,
            ..Epilogue::default()
        };
        let (rsa, csa) = if transposed { (1, m) } else { (k, 1) };
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (30e9 / flops).ceil() as usize;
        let mut line = format!("{name:>18}");
        for path in supported_paths() {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t0 = cpu_seconds();
                for _ in 0..reps {
                    // SAFETY: A is m x k (read with strides rsa, csa), B is k x n and C is m x n,
                    // all row-major in the vectors above; C overlaps nothing.
                    unsafe {
                        sgemm_on(
                            path,
                            m,
                            k,
                            n,
                            a.as_slice().as_ptr(),
                            rsa,
                            csa,
                            b.as_slice().as_ptr(),
                            n,
                            c.as_mut_slice().as_mut_ptr(),
                            n,
                            &ep,
                        )
                    };
                }
                best = best.min(cpu_seconds() - t0);
            }
            line += &format!("  {path}: {:6.1}", flops * reps as f64 / best / 1e9);
        }
        println!("{line}");
    }
}

/// A copy of `x` in storage from [`Matrix::zeros`] (64-byte aligned; `from_fn` makes no promise).
fn aligned(x: &Matrix<f32>) -> Matrix<f32> {
    let mut y = Matrix::zeros(x.rows(), x.cols());
    y.as_mut_slice().copy_from_slice(x.as_slice());
    y
}
