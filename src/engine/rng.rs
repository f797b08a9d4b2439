//! A small, fast, reproducible random number generator (xoshiro256++ seeded by SplitMix64).
//!
//! Reproducibility is a feature of hepflow: the same seed gives the same model and the same
//! events on every machine and for every thread count. [`Rng::stream`] derives independent
//! generators from `(seed, index)`, so event `i` of a sample can be drawn without drawing events
//! `0..i` first (which is what makes sharded generation possible).

use super::box_muller;

/// xoshiro256++ pseudo-random generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

#[inline]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Self {
            s,
            spare_normal: None,
        }
    }

    /// The generator for sub-stream `index` of `seed` (independent of every other index).
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut st = seed ^ 0xD1B5_4A32_D192_ED03;
        let a = splitmix64(&mut st);
        let mut st2 = a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self::new(splitmix64(&mut st2))
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = (self.s[0].wrapping_add(self.s[3]))
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal N(0, 1) by the Box-Muller transform ([`box_muller::pair`] of
    /// `u1 = 1 - uniform()` and `u2 = uniform()`, the same bits on every machine): the pair's
    /// first value, then its second on the next call.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare_normal.take() {
            return v;
        }
        let (u1, u2) = self.box_muller_uniforms();
        let (z0, z1) = box_muller::pair(u1, u2);
        self.spare_normal = Some(z1);
        z0
    }

    /// The two uniforms of the next Box-Muller pair: `u1` in `(0, 1]`, `u2` in `[0, 1)`.
    #[inline]
    pub fn box_muller_uniforms(&mut self) -> (f64, f64) {
        let u1 = 1.0 - self.uniform();
        (u1, self.uniform())
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments_and_streams_differ() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let a = Rng::stream(1, 0).next_u64();
        let b = Rng::stream(1, 1).next_u64();
        assert_ne!(a, b);
        assert_eq!(Rng::stream(1, 5).next_u64(), Rng::stream(1, 5).next_u64());
    }
}
