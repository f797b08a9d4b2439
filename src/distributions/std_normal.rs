//! The standard normal base distribution `N(0, I)`.
//!
//! `log p(z) = -|z|^2 / 2 - (D/2) log(2 pi)`, `d log p / dz = -z`; event `index` of the sample
//! with seed `seed` is `z_d = Rng::stream(seed, index).normal()`, `d = 0..D` in turn
//! ([`crate::flow::base_sample`], the draws of every model file written before base
//! distributions existed).

use super::{BaseSpec, Distribution};
use crate::engine::{Matrix, Real, Rng, Tape, box_muller};
use crate::flow::std_normal_log_prob;

/// `N(0, I)` over `dim` features; no parameters, no context.
#[derive(Clone, Copy, Debug)]
pub struct StdNormal {
    dim: usize,
}

impl StdNormal {
    /// The standard normal over `dim` features.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl<T: Real> Distribution<T> for StdNormal {
    fn spec(&self) -> BaseSpec {
        BaseSpec::StdNormal
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn log_prob_reusing(
        &self,
        z: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        _scratch: &mut Tape<T>,
    ) {
        lp.clear();
        lp.extend((0..z.rows()).map(|i| std_normal_log_prob(z.row(i))));
    }

    fn backward(
        &self,
        z: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _tape: &mut Tape<T>,
        dlp: &[T],
        dz: Option<&mut Matrix<T>>,
        _grads: &mut [T],
    ) {
        let Some(dz) = dz else { return };
        dz.resize(z.rows(), z.cols());
        for (i, g) in dlp.iter().enumerate().take(z.rows()) {
            for (o, v) in dz.row_mut(i).iter_mut().zip(z.row(i)) {
                *o = -*v * *g;
            }
        }
    }

    fn sample_reusing(
        &self,
        seed: u64,
        indices: &[u64],
        _ctx: Option<&Matrix<T>>,
        out: &mut Matrix<T>,
        _scratch: &mut Tape<T>,
    ) {
        out.resize(indices.len(), self.dim);
        draw_into(seed, indices, self.dim, out.as_mut_slice());
    }
}

/// Box-Muller pairs per batch of [`draw_into`] (two 2 KiB buffers on the stack).
const BATCH_PAIRS: usize = 256;

/// The base vectors of events `indices` into the `dim`-wide rows of `out`: row `r` holds
/// `Rng::stream(seed, indices[r]).normal()` called `dim` times, with the same bits. Each event's
/// uniforms are drawn from its stream in turn, and their Box-Muller pairs computed a batch at a
/// time on the SIMD path ([`box_muller::pairs_in_place`]) instead of one `normal()` call per
/// value.
pub(crate) fn draw_into<T: Real>(seed: u64, indices: &[u64], dim: usize, out: &mut [T]) {
    let pairs = dim.div_ceil(2);
    if pairs == 0 {
        return;
    }
    let (mut u1, mut u2) = ([0f64; BATCH_PAIRS], [0f64; BATCH_PAIRS]);
    let (mut len, mut first) = (0, 0);
    for &idx in indices {
        let mut rng = Rng::stream(seed, idx);
        for _ in 0..pairs {
            (u1[len], u2[len]) = rng.box_muller_uniforms();
            len += 1;
            if len == BATCH_PAIRS {
                flush(&mut u1, &mut u2, (first, pairs, dim), out);
                first += len;
                len = 0;
            }
        }
    }
    flush(&mut u1[..len], &mut u2[..len], (first, pairs, dim), out);
}

/// Turns the uniforms of pairs `first..first + u1.len()` (pair `p` of event `r` is number
/// `r pairs + p`) into normals and stores them at features `2p` and `2p + 1` of row `r` (the
/// second dropped past an odd `dim`, as `normal()`'s unused spare is).
fn flush<T: Real>(
    u1: &mut [f64],
    u2: &mut [f64],
    (first, pairs, dim): (usize, usize, usize),
    out: &mut [T],
) {
    box_muller::pairs_in_place(u1, u2);
    let (mut r, mut p) = (first / pairs, first % pairs);
    for (&z0, &z1) in u1.iter().zip(u2.iter()) {
        let row = &mut out[r * dim..(r + 1) * dim];
        row[2 * p] = T::c(z0);
        if 2 * p + 1 < dim {
            row[2 * p + 1] = T::c(z1);
        }
        p += 1;
        if p == pairs {
            (r, p) = (r + 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::base_sample;

    /// The batched draws give every event the bits of its own stream's `normal()` calls, for
    /// even and odd widths, batches that split an event, and a final partial one (on the active
    /// path; `box_muller`'s tests show every path gives the scalar bits); `base_sample` gives one
    /// event's.
    #[test]
    fn batched_draws_have_the_bits_of_sequential_normal_calls() {
        for dim in [1, 2, 7, 18, 600] {
            let indices: Vec<u64> = (0..300).map(|i| 5 * i + 3).collect();
            let mut want = Matrix::<f64>::zeros(indices.len(), dim);
            for (r, &i) in indices.iter().enumerate() {
                let mut rng = Rng::stream(11, i);
                want.row_mut(r).iter_mut().for_each(|v| *v = rng.normal());
            }
            let mut one = vec![0f64; dim];
            base_sample(11, indices[7], &mut one);
            assert_eq!(one.as_slice(), want.row(7), "base_sample, dim {dim}");
            let mut got = Matrix::<f64>::zeros(0, 0);
            let base = StdNormal::new(dim);
            Distribution::<f64>::sample_reusing(
                &base,
                11,
                &indices,
                None,
                &mut got,
                &mut Tape::default(),
            );
            assert_eq!((got.rows(), got.cols()), (indices.len(), dim));
            for (a, b) in got.as_slice().iter().zip(want.as_slice()) {
                assert_eq!(a.to_bits(), b.to_bits(), "dim {dim}");
            }
        }
        let mut none = Matrix::<f32>::zeros(0, 0);
        let base = StdNormal::new(0);
        Distribution::<f32>::sample_reusing(
            &base,
            1,
            &[0, 1],
            None,
            &mut none,
            &mut Tape::default(),
        );
        assert_eq!((none.rows(), none.cols()), (2, 0));
    }
}
