//! Standard normal draws by the Box–Muller transform, with our own `f64` logarithm, sine and
//! cosine: the same bits on every CPU, SIMD path and C library, and vectorised across draws.
//!
//! From two uniforms `u1` in `(0, 1]` and `u2` in `[0, 1)`,
//! `r = sqrt(-2 ln u1)`, `z0 = r cos(2 pi u2)`, `z1 = r sin(2 pi u2)` are independent `N(0, 1)`.
//!
//! libm's `ln` and `sin_cos` are not a fixed function: glibc picks a variant per CPU (with or
//! without FMA), and its implementations change between versions, so the same seed could give
//! different events on two machines in their last bits. Here every value goes through the same
//! IEEE-754 operations (`+ - * /`, `sqrt` and bit manipulation, each exactly rounded, no fused
//! multiply-adds), so the bits depend on nothing but the inputs; the slice form runs that code
//! compiled for AVX-512, AVX2 or plain x86-64 ([`super::simd`]), 8 or 4 lanes at a time.
//!
//! - `ln(x)`, `x` positive, normal and finite: fdlibm's `__ieee754_log`. `x = m 2^e` with `m` in
//!   `[sqrt(1/2), sqrt(2))` from the exponent bits, `f = m - 1` (exact), `s = f / (2 + f)`,
//!   `ln(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2)))` with fdlibm's degree-14 minimax `R`, and
//!   `e ln 2` in two parts; error below 1 ulp.
//! - `sin(2 pi u)`, `cos(2 pi u)`, `u` in `[0, 1)`: the nearest quarter turn `k = round(4u)` is
//!   taken off exactly (`u - k/4` is a multiple of `2^-53` below `1/8` in magnitude), the rest
//!   `a = 2 pi (u - k/4)` lies in `[-pi/4, pi/4]`, where fdlibm's `__kernel_sin` and
//!   `__kernel_cos` polynomials give `sin a` and `cos a`; the quadrant `k` swaps and negates
//!   them. Error below 2 ulp (the reduction is more accurate than rounding `2 pi u` first).

use super::simd::{self, SimdPath};

/// `(r cos(2 pi u2), r sin(2 pi u2))` with `r = sqrt(-2 ln u1)`, for `u1` in `(0, 1]` (at least
/// `2^-1022`) and `u2` in `[0, 1)`.
#[inline(always)]
pub fn pair(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * ln(u1)).sqrt();
    let (s, c) = sin_cos_turns(u2);
    (r * c, r * s)
}

/// [`pair`] over slices, on the [`simd::active`] path: `a[i]` holds `u1` and becomes `z0`,
/// `b[i]` holds `u2` and becomes `z1`.
///
/// # Panics
/// If the slices differ in length.
pub fn pairs_in_place(a: &mut [f64], b: &mut [f64]) {
    pairs_in_place_on(simd::active(), a, b);
}

/// [`pairs_in_place`] on a given path (which must be supported; panics otherwise). Every path
/// gives the same bits as [`pair`].
pub fn pairs_in_place_on(path: SimdPath, a: &mut [f64], b: &mut [f64]) {
    assert!(
        path.supported(),
        "the {path} SIMD path is not supported here"
    );
    assert_eq!(a.len(), b.len(), "Box-Muller: slices of different lengths");
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (asserted above).
        SimdPath::Avx512 => unsafe { avx512::pairs(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (asserted above).
        SimdPath::Avx2 => unsafe { avx2::pairs(a, b) },
        _ => pairs(a, b),
    }
}

#[inline(always)]
fn pairs(a: &mut [f64], b: &mut [f64]) {
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        (*x, *y) = pair(*x, *y);
    }
}

/// The same loop compiled for an instruction set; LLVM vectorises it without changing any
/// operation (there are no fused multiply-adds to form), so the bits are those of [`pair`].
macro_rules! vector_path {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn pairs(a: &mut [f64], b: &mut [f64]) {
                super::pairs(a, b);
            }
        }
    };
}
vector_path!(avx512, "avx512f");
vector_path!(avx2, "avx2,fma");

/// `2^52` as an `f64`: `from_bits(bits(2^52) | n) - 2^52 = n` exactly for `n < 2^52` (an integer
/// to float conversion without the 64-bit vector instruction AVX2 lacks), and
/// `(x + 1.5 2^52) - 1.5 2^52` rounds `|x| < 2^51` to the nearest integer.
const TWO52: f64 = 4_503_599_627_370_496.0;

/// Natural logarithm of a positive, normal, finite `x` (see the module documentation).
// fdlibm's constants as it prints them (21 digits, which round to the intended doubles).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    const LG1: f64 = 6.666_666_666_666_735_130e-01;
    const LG2: f64 = 3.999_999_999_940_941_908e-01;
    const LG3: f64 = 2.857_142_874_366_239_149e-01;
    const LG4: f64 = 2.222_219_843_214_978_396e-01;
    const LG5: f64 = 1.818_357_216_161_805_012e-01;
    const LG6: f64 = 1.531_383_769_920_937_332e-01;
    const LG7: f64 = 1.479_819_860_511_658_591e-01;
    /// Bits of `sqrt(1/2)`; adding `bits(1) - bits(sqrt(1/2))` carries into the exponent
    /// field exactly when the mantissa is at least `sqrt(2)`'s, so the field then holds `e`
    /// for `m` in `[sqrt(1/2), sqrt(2))`.
    const SQRT_HALF_BITS: u64 = 0x3FE6_A09E_667F_3BCD;
    const ONE_BITS: u64 = 0x3FF0_0000_0000_0000;
    const MANTISSA: u64 = 0x000F_FFFF_FFFF_FFFF;
    let ix = x.to_bits().wrapping_add(ONE_BITS - SQRT_HALF_BITS);
    let e = f64::from_bits(TWO52.to_bits() | (ix >> 52)) - (TWO52 + 1023.0);
    let m = f64::from_bits((ix & MANTISSA) + SQRT_HALF_BITS);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let r = LG7;
    let r = LG6 + z * r;
    let r = LG5 + z * r;
    let r = LG4 + z * r;
    let r = LG3 + z * r;
    let r = LG2 + z * r;
    let r = LG1 + z * r;
    let r = z * r;
    let hfsq = 0.5 * f * f;
    e * LN2_HI - ((hfsq - (s * (hfsq + r) + e * LN2_LO)) - f)
}

/// `(sin(2 pi u), cos(2 pi u))` for `u` in `[0, 1)` (see the module documentation).
#[inline(always)]
pub fn sin_cos_turns(u: f64) -> (f64, f64) {
    const ROUND: f64 = 1.5 * TWO52;
    let k = (4.0 * u + ROUND) - ROUND;
    let a = (u - 0.25 * k) * std::f64::consts::TAU;
    let (s, c) = (kernel_sin(a), kernel_cos(a));
    // Quarter turns: (cos, sin) of (k pi/2 + a) is (c, s), (-s, c), (-c, -s), (s, -c).
    let odd = k == 1.0 || k == 3.0;
    let (x, y) = if odd { (s, c) } else { (c, s) };
    let cos = if k == 1.0 || k == 2.0 { -x } else { x };
    let sin = if k == 2.0 || k == 3.0 { -y } else { y };
    (sin, cos)
}

/// `sin(a)` for `|a| <= pi/4` (fdlibm's `__kernel_sin` with no tail).
// fdlibm's constants as it prints them (21 digits, which round to the intended doubles).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn kernel_sin(a: f64) -> f64 {
    const S1: f64 = -1.666_666_666_666_663_243_48e-01;
    const S2: f64 = 8.333_333_333_322_489_461_24e-03;
    const S3: f64 = -1.984_126_982_985_794_931_34e-04;
    const S4: f64 = 2.755_731_370_707_006_767_89e-06;
    const S5: f64 = -2.505_076_025_340_686_341_95e-08;
    const S6: f64 = 1.589_690_995_211_550_102_21e-10;
    let z = a * a;
    let v = z * a;
    let r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    a + v * (S1 + z * r)
}

/// `cos(a)` for `|a| <= pi/4` (fdlibm's `__kernel_cos` with no tail: `1 - (z/2 - z R(z))`
/// below `|a| = 0.3`, above it the split `(1 - q) - ((z/2 - q) - z R(z))` with `q = |a|/4` cut
/// to its leading 21 bits, or `0.28125` above `|a| = 0.78125`, which keeps `1 - q` exact).
// fdlibm's constants as it prints them (21 digits, which round to the intended doubles).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn kernel_cos(a: f64) -> f64 {
    const C1: f64 = 4.166_666_666_666_660_190_37e-02;
    const C2: f64 = -1.388_888_888_887_410_957_49e-03;
    const C3: f64 = 2.480_158_728_947_672_941_78e-05;
    const C4: f64 = -2.755_731_435_139_066_330_35e-07;
    const C5: f64 = 2.087_572_321_298_174_827_90e-09;
    const C6: f64 = -1.135_964_755_778_819_482_65e-11;
    let z = a * a;
    let r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let small = 1.0 - (0.5 * z - z * r);
    // fdlibm's qx: x/4 with the low word cleared (the high word minus 2 in the exponent).
    let ix = a.abs().to_bits();
    let qx = f64::from_bits(ix.wrapping_sub(0x0020_0000_0000_0000) & 0xFFFF_FFFF_0000_0000);
    let qx = if a.abs() > 0.78125 { 0.28125 } else { qx };
    let large = (1.0 - qx) - ((0.5 * z - qx) - z * r);
    if a.abs() < 0.3 { small } else { large }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::engine::simd::supported_paths;

    /// `|got - want| <= ulps * ulp(want)` (with `ulp` of the magnitude's binade).
    fn close(got: f64, want: f64, ulps: f64) -> bool {
        let ulp = f64::EPSILON * want.abs().max(f64::MIN_POSITIVE);
        (got - want).abs() <= ulps * ulp
    }

    #[test]
    fn ln_matches_libm_to_an_ulp() {
        let mut rng = Rng::new(3);
        let mut xs: Vec<f64> = (0..200_000).map(|_| 1.0 - rng.uniform()).collect();
        // Tails and binade edges: the smallest uniforms, 1, and numbers around sqrt(1/2).
        xs.extend((0..=53).map(|k| 2f64.powi(-k)));
        xs.extend((1..2000).map(|k| k as f64 * 2f64.powi(-53)));
        let h = std::f64::consts::FRAC_1_SQRT_2;
        xs.extend([
            h,
            h.next_up(),
            h.next_down(),
            1.0f64.next_down(),
            1e300,
            3.0,
            1e-300,
        ]);
        for &x in &xs {
            assert!(
                close(ln(x), x.ln(), 1.0),
                "ln({x:e}) = {:e}, libm {:e}",
                ln(x),
                x.ln()
            );
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sin_cos_turns_match_libm_in_every_quadrant() {
        let mut rng = Rng::new(4);
        let mut us: Vec<f64> = (0..200_000).map(|_| rng.uniform()).collect();
        // Quadrant edges (k changes at odd eighths of a turn), the ends, and 2^-53 steps.
        for k in 0..=8 {
            let e = k as f64 / 8.0;
            us.extend([e, e.next_up(), e.next_down()]);
        }
        us.extend((0..100).map(|k| k as f64 * 2f64.powi(-53)));
        us.retain(|u| (0.0..1.0).contains(u));
        for &u in &us {
            // libm on the exactly reduced angle in the double-double sense: sin(2 pi u) with
            // 2 pi u rounded once would carry up to 4e-16 of absolute error, so compare in
            // absolute terms at that scale.
            let (s, c) = sin_cos_turns(u);
            let (ws, wc) = (std::f64::consts::TAU * u).sin_cos();
            assert!(
                (s - ws).abs() < 1e-15,
                "sin(2 pi {u:e}) = {s:e}, libm {ws:e}"
            );
            assert!(
                (c - wc).abs() < 1e-15,
                "cos(2 pi {u:e}) = {c:e}, libm {wc:e}"
            );
            assert!(s.abs() <= 1.0 && c.abs() <= 1.0);
        }
        // Exact at the quarter turns.
        assert_eq!(sin_cos_turns(0.0), (0.0, 1.0));
        assert_eq!(sin_cos_turns(0.25), (1.0, 0.0));
        assert_eq!(sin_cos_turns(0.5), (0.0, -1.0));
        assert_eq!(sin_cos_turns(0.75), (-1.0, 0.0));
    }

    #[test]
    fn kernels_are_accurate_to_two_ulp_on_their_interval() {
        let q = std::f64::consts::FRAC_PI_4;
        for i in 0..=100_000 {
            let a = -q + 2.0 * q * i as f64 / 100_000.0;
            assert!(close(kernel_sin(a), a.sin(), 2.0), "sin({a:e})");
            assert!(close(kernel_cos(a), a.cos(), 2.0), "cos({a:e})");
        }
    }

    #[test]
    fn every_path_gives_the_bits_of_the_scalar_pair() {
        let mut rng = Rng::new(9);
        // 1027 pairs: whole vectors and a remainder; the tails u1 = 2^-53 and 1 included.
        let mut u1: Vec<f64> = (0..1025).map(|_| 1.0 - rng.uniform()).collect();
        u1.extend([2f64.powi(-53), 1.0]);
        let u2: Vec<f64> = (0..u1.len()).map(|_| rng.uniform()).collect();
        let want: Vec<(f64, f64)> = u1.iter().zip(&u2).map(|(&a, &b)| pair(a, b)).collect();
        for path in supported_paths() {
            let (mut a, mut b) = (u1.clone(), u2.clone());
            pairs_in_place_on(path, &mut a, &mut b);
            for (i, &(z0, z1)) in want.iter().enumerate() {
                assert_eq!(a[i].to_bits(), z0.to_bits(), "{path} z0 of pair {i}");
                assert_eq!(b[i].to_bits(), z1.to_bits(), "{path} z1 of pair {i}");
            }
        }
        // The largest draw: u1 = 2^-53 gives r = sqrt(106 ln 2).
        let (z0, _) = pair(2f64.powi(-53), 0.0);
        assert!(close(z0, (106.0 * std::f64::consts::LN_2).sqrt(), 2.0));
    }
}
