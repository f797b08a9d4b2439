//! Vectorised single-precision `exp` and soft clamp `a tanh(x / a)` over slices.
//!
//! libm evaluates one element per call; the coupling layers need millions per second. These are
//! branch-free polynomial versions (fused multiply-adds, no float-to-int casts) that the compiler
//! turns into 16-lane AVX-512 code, chosen at run time; other CPUs use libm:
//!
//! - `exp(x) = 2^n p(r)`, `n = round(x / ln 2)`, `r = x - n ln 2` (two-part `ln 2`), `p` the
//!   degree-6 Taylor polynomial of `e^r` on `|r| <= ln(2)/2`; relative error below `3e-7`.
//!   Inputs are clamped to `[-87.3, 88.3]` (the finite, normal range of `f32`); NaN stays NaN.
//! - `tanh(y)`: the odd Taylor polynomial to `y^9` for `|y| < 0.2`, else
//!   `sign(y) (1 - 2 / (e^{2|y|} + 1))`; absolute error below `3e-7`.

/// `x <- exp(x)` for every element.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernel::available() {
            // SAFETY: AVX-512F is present (checked by `available`).
            unsafe { avx512::exp_in_place(xs) };
            return;
        }
    }
    // Other CPUs: libm (the polynomial's fused multiply-adds would be slow without FMA).
    for x in xs {
        *x = x.clamp(-87.3, 88.3).exp();
    }
}

/// `x <- a tanh(x / a)` for every element (the soft clamp of a log-scale to `(-a, a)`).
pub fn soft_clamp_in_place(xs: &mut [f32], a: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernel::available() {
            // SAFETY: AVX-512F is present (checked by `available`).
            unsafe { avx512::soft_clamp_in_place(xs, a) };
            return;
        }
    }
    for x in xs {
        *x = a * (*x / a).tanh();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_in_place(xs: &mut [f32]) {
        for x in xs {
            *x = super::exp(*x);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn soft_clamp_in_place(xs: &mut [f32], a: f32) {
        let inv = 1.0 / a;
        for x in xs {
            *x = a * super::tanh(*x * inv);
        }
    }
}

/// Branch-free `e^x` (see the module documentation).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
