//! Inverted dropout masks for the hidden units of a training pass.
//!
//! A unit is dropped with probability `p` and a kept unit is scaled by `1 / (1 - p)`, so the
//! expected activation equals the evaluation pass's (which applies no dropout). Masks come from
//! `Rng::stream(seed, layer)`, `seed` being the tape's per-step, per-chunk seed set by the
//! training engine, so training is reproducible and independent of the thread count. Each 64-bit
//! draw gives four masks: a unit is dropped when its 16-bit field is below `round(p 2^16)` (`p`
//! acts in steps of `2^-16`). [`crate::nn::Mlp`]'s dropout draws its masks here too.

use crate::engine::{Real, Rng};

/// The drop decisions of one layer, unit after unit in row-major order.
pub struct DropMask {
    rng: Rng,
    threshold: u64,
    word: u64,
    left: u32,
}

impl DropMask {
    /// The mask stream of layer `layer` for a step with seed `seed` and dropout `p`.
    pub fn new(seed: u64, layer: usize, p: f64) -> Self {
        Self {
            rng: Rng::stream(seed, layer as u64),
            threshold: (p * 65536.0).round().clamp(0.0, 65536.0) as u64,
            word: 0,
            left: 0,
        }
    }

    /// Whether the next unit is dropped.
    pub fn dropped(&mut self) -> bool {
        if self.left == 0 {
            self.word = self.rng.next_u64();
            self.left = 4;
        }
        let field = self.word & 0xFFFF;
        self.word >>= 16;
        self.left -= 1;
        field < self.threshold
    }

    /// Applies inverted dropout with probability `p` in place: `h <- h m / (1 - p)`,
    /// `m ~ Bernoulli(1 - p)` per entry (masks from `seed` and `layer`). No-op for `p <= 0`.
    pub fn apply<T: Real>(h: &mut [T], seed: u64, layer: usize, p: f64) {
        if p <= 0.0 {
            return;
        }
        let mut mask = Self::new(seed, layer, p);
        let scale = T::c(1.0 / (1.0 - p));
        for v in h {
            *v = if mask.dropped() {
                T::zero()
            } else {
                *v * scale
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dropped fraction is `p` within sampling error, kept entries carry `1 / (1 - p)`, and
    /// the same seed and layer give the same mask while another layer gives another.
    #[test]
    fn masks_drop_a_fraction_p_and_follow_seed_and_layer() {
        let n = 40_000;
        for p in [0.1, 0.3, 0.5] {
            let mut h = vec![1.0f64; n];
            DropMask::apply(&mut h, 7, 0, p);
            let dropped = h.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((dropped - p).abs() < 5.0 * sd, "p {p}: dropped {dropped}");
            let kept = 1.0 / (1.0 - p);
            assert!(h.iter().all(|v| *v == 0.0 || (*v - kept).abs() < 1e-12));
            let mut again = vec![1.0f64; n];
            DropMask::apply(&mut again, 7, 0, p);
            assert_eq!(h, again);
            let mut other = vec![1.0f64; n];
            DropMask::apply(&mut other, 7, 1, p);
            assert_ne!(h, other);
        }
        let mut h = vec![2.0f64; 10];
        DropMask::apply(&mut h, 7, 0, 0.0);
        assert!(h.iter().all(|v| *v == 2.0));
    }
}
