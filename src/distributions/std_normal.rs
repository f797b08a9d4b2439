//! The standard normal base distribution `N(0, I)`.
//!
//! `log p(z) = -|z|^2 / 2 - (D/2) log(2 pi)`, `d log p / dz = -z`; event `index` of the sample
//! with seed `seed` is `z_d = Rng::stream(seed, index).normal()`, `d = 0..D` in turn
//! ([`crate::flow::base_sample`], the draws of every model file written before base
//! distributions existed).

use super::{BaseSpec, Distribution};
use crate::engine::{Matrix, Real, Tape};
use crate::flow::{base_sample, std_normal_log_prob};

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
        for (r, &idx) in indices.iter().enumerate() {
            base_sample(seed, idx, out.row_mut(r));
        }
    }
}
