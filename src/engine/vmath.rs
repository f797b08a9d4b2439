//! Vectorised single-precision `exp` and soft clamp `a tanh(x / a)` over slices.
//!
//! libm evaluates one element per call; the coupling layers need millions per second. These are
//! branch-free polynomial versions (fused multiply-adds, no float-to-int casts) that the compiler
//! turns into 16-lane AVX-512 or 8-lane AVX2 code, chosen at run time by [`super::simd`]; the
//! portable path runs the same operations one element at a time, so all paths give the same bits
//! (on every CPU; libm's results may differ between libm versions and CPU-specific variants):
//!
//! - `exp(x) = 2^n p(r)`, `n = round(x / ln 2)`, `r = x - n ln 2` (two-part `ln 2`), `p` the
//!   degree-6 Taylor polynomial of `e^r` on `|r| <= ln(2)/2`; relative error below `3e-7`.
//!   Inputs are clamped to `[-87.3, 88.3]` (the finite, normal range of `f32`); NaN stays NaN.
//! - `tanh(y)`: the odd Taylor polynomial to `y^9` for `|y| < 0.2`, else
//!   `sign(y) (1 - 2 / (e^{2|y|} + 1))`; absolute error below `3e-7`.

use super::simd::{self, SimdPath};

/// `x <- exp(x)` for every element, on the [`simd::active`] path.
pub fn exp_in_place(xs: &mut [f32]) {
    exp_in_place_on(simd::active(), xs);
}

/// `x <- a tanh(x / a)` for every element (the soft clamp of a log-scale to `(-a, a)`), on the
/// [`simd::active`] path.
pub fn soft_clamp_in_place(xs: &mut [f32], a: f32) {
    soft_clamp_in_place_on(simd::active(), xs, a);
}

/// [`exp_in_place`] on a given path (which must be supported; panics otherwise).
pub fn exp_in_place_on(path: SimdPath, xs: &mut [f32]) {
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (asserted above).
        SimdPath::Avx512 => unsafe { avx512::exp_in_place(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (asserted above).
        SimdPath::Avx2 => unsafe { avx2::exp_in_place(xs) },
        _ => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: FMA is present.
                    unsafe { fma::exp_in_place(xs) };
                    return;
                }
            }
            for x in xs {
                *x = exp(*x);
            }
        }
    }
}

/// [`soft_clamp_in_place`] on a given path (which must be supported; panics otherwise).
pub fn soft_clamp_in_place_on(path: SimdPath, xs: &mut [f32], a: f32) {
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (asserted above).
        SimdPath::Avx512 => unsafe { avx512::soft_clamp_in_place(xs, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (asserted above).
        SimdPath::Avx2 => unsafe { avx2::soft_clamp_in_place(xs, a) },
        _ => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: FMA is present.
                    unsafe { fma::soft_clamp_in_place(xs, a) };
                    return;
                }
            }
            let inv = 1.0 / a;
            for x in xs {
                *x = a * tanh(*x * inv);
            }
        }
    }
}

/// The same scalar code compiled for each instruction set; LLVM vectorises the loops (16 or 8
/// lanes) without changing any operation, so every path gives the same bits.
macro_rules! vector_path {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn exp_in_place(xs: &mut [f32]) {
                for x in xs {
                    *x = super::exp(*x);
                }
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn soft_clamp_in_place(xs: &mut [f32], a: f32) {
                let inv = 1.0 / a;
                for x in xs {
                    *x = a * super::tanh(*x * inv);
                }
            }
        }
    };
}
vector_path!(avx512, "avx512f");
vector_path!(avx2, "avx2,fma");
// The portable path on an x86-64 CPU that has FMA (forced portable): `mul_add` as an instruction.
vector_path!(fma, "fma");

/// Branch-free `e^x` (see the module documentation).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Comparisons (not f32::clamp) so that NaN passes through unchanged.
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    // Round x / ln 2 to the nearest integer n with the 1.5 * 2^23 trick: after the addition,
    // the low mantissa bits of t hold n in two's complement (exact for |n| < 2^22). Unlike a
    // float -> int cast this stays in vector registers.
    const MAGIC: f32 = 12_582_912.0;
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    // Horner with fused multiply-adds (one rounding per step, and half the latency).
    let p = (1.0 / 720.0f32).mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    // 2^n through the exponent bits; n is in [-126, 127] after the clamp (for NaN the bits are
    // garbage, but p is NaN anyway).
    let e = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    let scale = f32::from_bits(e);
    p * scale
}

/// Branch-free `tanh(y)` (see the module documentation).
#[inline(always)]
fn tanh(y: f32) -> f32 {
    let ay = y.abs();
    let y2 = y * y;
    let small = (62.0 / 2835.0f32).mul_add(y2, -17.0 / 315.0);
    let small = small.mul_add(y2, 2.0 / 15.0);
    let small = small.mul_add(y2, -1.0 / 3.0);
    let small = (small * y2).mul_add(y, y);
    let e = exp(2.0 * ay);
    let large = 1.0 - 2.0 / (e + 1.0);
    let large = if y < 0.0 { -large } else { large };
    if ay < 0.2 { small } else { large }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.025).collect();
        v.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-8,
            0.1999,
            0.2,
            0.2001,
            87.0,
            88.0,
            88.3,
            88.72,
            89.0,
            1e4,
            -87.0,
            -88.0,
            -103.0,
            -1e4,
            f32::MAX,
            f32::MIN,
        ]);
        v
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let xs = grid();
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x.clamp(-87.3, 88.3) as f64).exp();
            let rel = ((g as f64 - want) / want).abs();
            assert!(rel < 5e-7, "exp({x}) = {g}, want {want} (rel {rel:e})");
            assert!(g.is_finite() && g > 0.0);
        }
        // The scalar form of the polynomial agrees with it too (whichever path ran above).
        for &x in &xs {
            let (g, want) = (exp(x) as f64, (x.clamp(-87.3, 88.3) as f64).exp());
            assert!(((g - want) / want).abs() < 5e-7);
        }
        let mut nan = [f32::NAN];
        exp_in_place(&mut nan);
        assert!(nan[0].is_nan());
    }

    /// Every supported path gives the portable path's bits.
    #[test]
    fn every_path_gives_the_same_bits() {
        let xs = grid();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut e_ref = xs.clone();
        exp_in_place_on(SimdPath::Portable, &mut e_ref);
        let mut t_ref = xs.clone();
        soft_clamp_in_place_on(SimdPath::Portable, &mut t_ref, 3.0);
        for path in simd::supported_paths() {
            let mut e = xs.clone();
            exp_in_place_on(path, &mut e);
            assert_eq!(bits(&e), bits(&e_ref), "exp on {path}");
            let mut t = xs.clone();
            soft_clamp_in_place_on(path, &mut t, 3.0);
            assert_eq!(bits(&t), bits(&t_ref), "tanh on {path}");
        }
    }

    #[test]
    fn soft_clamp_matches_tanh() {
        let xs = grid();
        for a in [3.0f32, 1.0] {
            let mut got = xs.clone();
            soft_clamp_in_place(&mut got, a);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = a as f64 * (x as f64 / a as f64).tanh();
                assert!(
                    (g as f64 - want).abs() < 1e-6 * a as f64,
                    "{a} tanh({x}/{a}) = {g}, want {want}"
                );
                assert!(g.abs() <= a);
            }
        }
        // Odd symmetry, and exact zero at zero.
        let mut v = [0.7f32, -0.7, 0.0];
        soft_clamp_in_place(&mut v, 3.0);
        assert_eq!(v[0], -v[1]);
        assert_eq!(v[2], 0.0);
        let mut nan = [f32::NAN];
        soft_clamp_in_place(&mut nan, 3.0);
        assert!(nan[0].is_nan());
    }
}
