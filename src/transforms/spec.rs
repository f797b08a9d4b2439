//! Serialisable layer descriptions: a model file stores one [`LayerSpec`] per layer (its shape and
//! fixed choices such as masks and permutations); the trained values go to safetensors.

use super::Transform;
use super::{
    ActNorm, ActNormConfig, AffineCoupling, AffineCouplingConfig, BatchNorm, BatchNormConfig,
    ContinuousFlow, ContinuousFlowConfig, LuLinear, LuLinearConfig, Maf, MafConfig, Permutation,
    PermutationConfig, SplineCoupling, SplineCouplingConfig,
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
    /// Continuous flow: a velocity field integrated as an ODE (trained by flow matching).
    Continuous(ContinuousFlowConfig),
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
            LayerSpec::Continuous(_) => "continuous",
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
            LayerSpec::Continuous(c) => Box::new(ContinuousFlow::new(c.clone(), rng)),
        }
    }
}

fn check_perm(perm: &[usize], dim: usize, what: &str) -> Result<(), String> {
    let mut seen = vec![false; dim];
    if perm.len() != dim {
        return Err(format!("{what} has {} entries, expected {dim}", perm.len()));
    }
    for &p in perm {
        if p >= dim || std::mem::replace(&mut seen[p], true) {
            return Err(format!("{what} is not a permutation of 0..{dim}"));
        }
    }
    Ok(())
}

fn check_mask(mask: &[bool], dim: usize) -> Result<(), String> {
    if mask.len() != dim {
        return Err(format!("mask has {} entries, expected {dim}", mask.len()));
    }
    if mask.iter().all(|m| *m) || mask.iter().all(|m| !*m) {
        return Err("mask must mark some features as transformed and some as conditioning".into());
    }
    Ok(())
}

fn check_hidden(hidden: &[usize]) -> Result<(), String> {
    if hidden.iter().any(|h| *h == 0 || *h > 1 << 16) {
        return Err(format!(
            "hidden widths {hidden:?} must be between 1 and 65536"
        ));
    }
    Ok(())
}

impl LayerSpec {
    /// Checks that this layer is consistent with `dim` features, so that a hand-edited or
    /// corrupted model file gives an error instead of a panic.
    pub fn validate(&self, dim: usize) -> Result<(), String> {
        match self {
            LayerSpec::AffineCoupling(c) => {
                check_mask(&c.mask, dim)?;
                check_hidden(&c.hidden)?;
                if !(c.scale_clamp > 0.0 && c.scale_clamp.is_finite()) {
                    return Err("scale_clamp must be positive".into());
                }
            }
            LayerSpec::Permutation(c) => check_perm(&c.perm, dim, "perm")?,
            LayerSpec::LuLinear(c) => {
                if c.dim != dim {
                    return Err(format!("dim {} != {dim}", c.dim));
                }
                check_perm(&c.perm, dim, "perm")?;
            }
            LayerSpec::BatchNorm(c) => {
                if c.dim != dim {
                    return Err(format!("dim {} != {dim}", c.dim));
                }
                if !(0.0..1.0).contains(&c.momentum) || c.eps.is_nan() || c.eps <= 0.0 {
                    return Err("momentum must be in [0, 1) and eps > 0".into());
                }
            }
            LayerSpec::ActNorm(c) => {
                if c.dim != dim {
                    return Err(format!("dim {} != {dim}", c.dim));
                }
            }
            LayerSpec::SplineCoupling(c) => {
                check_mask(&c.mask, dim)?;
                check_hidden(&c.hidden)?;
                if c.bins == 0 || c.bins > 64 {
                    return Err(format!("bins = {} must be between 1 and 64", c.bins));
                }
                if !(c.bound > 0.0 && c.bound.is_finite()) {
                    return Err("bound must be positive".into());
                }
            }
            LayerSpec::Maf(c) => {
                if c.dim != dim {
                    return Err(format!("dim {} != {dim}", c.dim));
                }
                check_hidden(&c.hidden)?;
                check_perm(&c.order, dim, "order")?;
            }
            LayerSpec::Continuous(c) => {
                c.validate(dim)?;
                check_hidden(&c.hidden)?;
            }
        }
        Ok(())
    }
}
