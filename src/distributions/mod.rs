//! Base distributions of a flow: the density `p_base(z | c)` at the latent end of the transforms
//! (nflows' `distributions/`).
//!
//! - [`StdNormal`]: `N(0, I)`, no parameters, the base of every transform preset.
//! - [`MadeMog`]: an autoregressive mixture of Gaussians whose weights, means and scales come from
//!   a MADE network (Papamakarios et al. 2017, "MADE MoG"); the `made-mog` preset is this base
//!   with no transforms, and a MADE-MoG base under MAF layers is MAF-MoG.
//!
//! A distribution gives its log-density per row (evaluation and training), the gradient of the
//! training loss with respect to its input and parameters, and draws per event: event `index`
//! of the sample with seed `seed` depends only on `Rng::stream(seed, index)` and its context, so
//! samples are reproducible for any thread count, chunking or shard.

pub mod made_mog;
pub mod std_normal;

pub use made_mog::{MadeMog, MadeMogConfig};
pub use std_normal::StdNormal;

use crate::engine::{Matrix, Real, Rng, Tape};
use crate::transforms::Param;
use serde::{Deserialize, Serialize};

/// The serialisable description of a flow's base distribution (its shape, not its trained
/// values, which go to safetensors as `base.{name}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BaseSpec {
    /// The standard normal `N(0, I)` (every model file written before base distributions
    /// existed).
    #[default]
    StdNormal,
    /// An autoregressive mixture of Gaussians with a MADE network.
    MadeMog(MadeMogConfig),
}

impl BaseSpec {
    /// Whether this is the parameter-free standard normal.
    pub fn is_std_normal(&self) -> bool {
        matches!(self, BaseSpec::StdNormal)
    }

    /// Short name of the distribution kind.
    pub fn kind(&self) -> &'static str {
        match self {
            BaseSpec::StdNormal => "std_normal",
            BaseSpec::MadeMog(_) => "made_mog",
        }
    }

    /// The context width the distribution reads (`None` when it reads none).
    pub fn context_dim(&self) -> Option<usize> {
        match self {
            BaseSpec::StdNormal => None,
            BaseSpec::MadeMog(c) => Some(c.context_dim),
        }
    }

    /// Hidden widths of its network (empty when it has none).
    pub fn hidden(&self) -> &[usize] {
        match self {
            BaseSpec::StdNormal => &[],
            BaseSpec::MadeMog(c) => &c.hidden,
        }
    }

    /// Outputs per feature of its network (0 when it has none).
    pub fn outputs_per_feature(&self) -> usize {
        match self {
            BaseSpec::StdNormal => 0,
            BaseSpec::MadeMog(c) => 3 * c.components,
        }
    }

    /// Checks the description against the number of features.
    pub fn validate(&self, dim: usize) -> Result<(), String> {
        match self {
            BaseSpec::StdNormal => Ok(()),
            BaseSpec::MadeMog(c) => c.validate(dim),
        }
    }

    /// Builds the distribution with freshly initialised parameters drawn from `rng`.
    pub fn build<T: Real>(&self, dim: usize, rng: &mut Rng) -> Box<dyn Distribution<T>> {
        match self {
            BaseSpec::StdNormal => Box::new(StdNormal::new(dim)),
            BaseSpec::MadeMog(c) => Box::new(MadeMog::new(c.clone(), rng)),
        }
    }
}

/// A density over `dim` features, optionally conditioned on a context, with its training
/// gradient and per-event sampling.
///
/// Output matrices and vectors are resized by the callee; parameter gradients are *added* to
/// `grads`, laid out as the concatenation of [`Distribution::params`].
pub trait Distribution<T: Real>: Send + Sync {
    /// The serialisable description.
    fn spec(&self) -> BaseSpec;

    /// Number of features.
    fn dim(&self) -> usize;

    /// Trainable parameters, in gradient order.
    fn params(&self) -> Vec<&Param<T>> {
        Vec::new()
    }

    /// Mutable trainable parameters, in gradient order.
    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        Vec::new()
    }

    /// Total number of trainable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.data.len()).sum()
    }

    /// `log p(z_i | c_i)` of every row into `lp`; `scratch` keeps buffers between calls.
    fn log_prob_reusing(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        scratch: &mut Tape<T>,
    );

    /// Training pass: as [`Distribution::log_prob_reusing`], keeping on `tape` what
    /// [`Distribution::backward`] needs.
    fn log_prob_train(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        lp: &mut Vec<T>,
        tape: &mut Tape<T>,
    ) {
        self.log_prob_reusing(z, ctx, lp, tape);
    }

    /// Backward pass of [`Distribution::log_prob_train`] on the same `z`: given
    /// `dlp_i = dL/d log p(z_i)`, adds `dL/d theta` to `grads` and, when asked, writes
    /// `dL/dz` into `dz`.
    fn backward(
        &self,
        z: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dlp: &[T],
        dz: Option<&mut Matrix<T>>,
        grads: &mut [T],
    );

    /// Draws the events `indices` of the sample with seed `seed` (row `r` is event
    /// `indices[r]`, with context row `r`) into `out`.
    fn sample_reusing(
        &self,
        seed: u64,
        indices: &[u64],
        ctx: Option<&Matrix<T>>,
        out: &mut Matrix<T>,
        scratch: &mut Tape<T>,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_base_is_the_standard_normal_and_round_trips_through_json() {
        assert!(BaseSpec::default().is_std_normal());
        let spec = BaseSpec::MadeMog(MadeMogConfig {
            dim: 3,
            hidden: vec![8],
            context_dim: 2,
            components: 4,
            order: vec![2, 0, 1],
            log_scale_clamp: 5.0,
            dropout: 0.0,
        });
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"type\":\"made_mog\""), "{json}");
        let back: BaseSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.context_dim(), Some(2));
        assert!(back.validate(3).is_ok());
        assert!(back.validate(4).is_err());
    }
}
