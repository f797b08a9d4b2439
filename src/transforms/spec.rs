//! Serialisable layer descriptions: a model file stores one [`LayerSpec`] per layer (its shape and
//! fixed choices such as masks and permutations); the trained values go to safetensors.

use super::Transform;
use super::{
    ActNorm, ActNormConfig, AffineCoupling, AffineCouplingConfig, BatchNorm, BatchNormConfig,
    LuLinear, LuLinearConfig, Maf, MafConfig, Permutation, PermutationConfig, SplineCoupling,
    SplineCouplingConfig,
};
use crate::engine::{Real, Rng};
use serde::{Deserialize, Serialize};

/// The description of one layer of a flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    /// RealNVP affine coupling.
    AffineCoupling(AffineCouplingConfig),
    /// Fixed permutation of the features (reverse or seeded random).
    Permutation(PermutationConfig),
    /// Glow's invertible linear layer in LU form.
    LuLinear(LuLinearConfig),
    /// Batch normalisation as a flow layer.
    BatchNorm(BatchNormConfig),
    /// Activation normalisation (data-initialised affine).
    ActNorm(ActNormConfig),
    /// Piecewise-linear, piecewise-quadratic or rational-quadratic spline coupling.
    SplineCoupling(SplineCouplingConfig),
    /// Masked autoregressive affine flow with a MADE conditioner.
    Maf(MafConfig),
}

impl LayerSpec {
    /// Short name of the layer kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::AffineCoupling(_) => "affine_coupling",
            LayerSpec::Permutation(_) => "permutation",
            LayerSpec::LuLinear(_) => "lu_linear",
            LayerSpec::BatchNorm(_) => "batch_norm",
            LayerSpec::ActNorm(_) => "act_norm",
            LayerSpec::SplineCoupling(_) => "spline_coupling",
            LayerSpec::Maf(_) => "maf",
        }
    }

    /// Builds the layer with freshly initialised parameters drawn from `rng`.
    pub fn build<T: Real>(&self, rng: &mut Rng) -> Box<dyn Transform<T>> {
        match self {
            LayerSpec::AffineCoupling(c) => Box::new(AffineCoupling::new(c.clone(), rng)),
            LayerSpec::Permutation(c) => Box::new(Permutation::new(c.clone())),
            LayerSpec::LuLinear(c) => Box::new(LuLinear::new(c.clone(), rng)),
            LayerSpec::BatchNorm(c) => Box::new(BatchNorm::new(c.clone())),
            LayerSpec::ActNorm(c) => Box::new(ActNorm::new(c.clone())),
            LayerSpec::SplineCoupling(c) => Box::new(SplineCoupling::new(c.clone(), rng)),
            LayerSpec::Maf(c) => Box::new(Maf::new(c.clone(), rng)),
        }
    }
}
