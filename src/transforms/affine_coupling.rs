//! Affine coupling layer (RealNVP; Dinh, Sohl-Dickstein & Bengio 2016).
//!
//! With identity features `x_A` and transformed features `x_B` (chosen by a mask),
//! `(r, t) = NN([x_A, c])`, the log-scale is soft-clamped `s = a tanh(r / a)`, and
//!
//! `z_A = x_A`, `z_B = x_B * exp(s) + t`, `log|det dz/dx| = sum_j s_j`;
//! inverse `x_B = (z_B - t) * exp(-s)`.
//!
//! The soft clamp (`a` = 3 by default) bounds every scale to `[e^-a, e^a]` and keeps gradients
//! smooth, so a single bad batch cannot blow up the flow. The layer is the generic
//! [`super::coupling::Coupling`] with the [`super::affine::Affine`] bijection; this file holds
//! its configuration (the `affine_coupling` entry of a model file) and its tests.

use super::LayerSpec;
use super::affine::Affine;
use super::coupling::{ConditionerShape, Coupling};
use crate::engine::{Real, Rng};
use serde::{Deserialize, Serialize};

/// Shape of an [`AffineCoupling`] layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AffineCouplingConfig {
    /// `mask[d]` is true for transformed features, false for features the conditioner reads.
    pub mask: Vec<bool>,
    /// Hidden widths of the conditioner MLP.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Soft-clamp bound `a` of the log-scale.
    #[serde(default = "default_clamp")]
    pub scale_clamp: f64,
    /// Residual connections in the conditioner.
    #[serde(default)]
    pub residual: bool,
    /// Dropout probability of the conditioner's hidden units in training.
    #[serde(default)]
    pub dropout: f64,
}

fn default_clamp() -> f64 {
    3.0
}

/// RealNVP affine coupling layer: the generic [`Coupling`] with the [`Affine`] bijection.
pub type AffineCoupling<T> = Coupling<T, Affine>;

impl<T: Real> Coupling<T, Affine> {
    /// A new layer with a freshly initialised (identity-starting) conditioner.
    pub fn new(config: AffineCouplingConfig, rng: &mut Rng) -> Self {
        let bijection = Affine {
            clamp: config.scale_clamp,
        };
        let shape = ConditionerShape {
            mask: &config.mask,
            hidden: &config.hidden,
            context_dim: config.context_dim,
            residual: config.residual,
            dropout: config.dropout,
        };
        Coupling::build(
            LayerSpec::AffineCoupling(config.clone()),
            shape,
            bijection,
            rng,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Matrix, Tape};
    use crate::transforms::Transform;
    use crate::transforms::testing::{CheckOptions, check_transform};
    use crate::transforms::{alternating_mask, half_mask};

    fn layer(mask: Vec<bool>, ctx: usize, residual: bool) -> AffineCoupling<f64> {
        layer_with_dropout(mask, ctx, residual, 0.0)
    }

    fn layer_with_dropout(
        mask: Vec<bool>,
        ctx: usize,
        residual: bool,
        dropout: f64,
    ) -> AffineCoupling<f64> {
        let mut rng = Rng::new(3);
        AffineCoupling::new(
            AffineCouplingConfig {
                dropout,
                mask,
                hidden: vec![16, 16],
                context_dim: ctx,
                scale_clamp: 3.0,
                residual,
            },
            &mut rng,
        )
    }

    #[test]
    fn alternating_mask_passes_all_checks() {
        check_transform(
            Box::new(layer(alternating_mask(5, false), 0, false)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn dropout_conditioner_has_exact_gradients_for_its_mask() {
        // Training mode drops hidden units (fixed mask for a fixed tape seed); the gradient check
        // runs in training mode, the round trip in evaluation mode.
        for residual in [false, true] {
            check_transform(
                Box::new(layer_with_dropout(
                    alternating_mask(5, false),
                    2,
                    residual,
                    0.3,
                )),
                &CheckOptions::default(),
            );
        }
        // The mask really drops units: training output differs from evaluation output.
        let mut l = layer_with_dropout(alternating_mask(4, false), 0, true, 0.5);
        let mut rng = Rng::new(1);
        crate::transforms::testing::randomize_params(&mut l, 0.5, &mut rng);
        let x = Matrix::from_fn(16, 4, |_, _| rng.normal());
        let (mut y1, mut y2) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
        let (mut a, mut b) = (vec![0.0; 16], vec![0.0; 16]);
        l.forward(&x, None, &mut y1, &mut a);
        l.forward_train(&x, None, &mut y2, &mut b, &mut Tape::default());
        assert!(y1.max_abs_diff(&y2) > 1e-3);
    }

    #[test]
    fn half_mask_passes_all_checks() {
        check_transform(
            Box::new(layer(half_mask(6, true), 0, false)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn residual_conditioner_with_context_passes_all_checks() {
        check_transform(
            Box::new(layer(alternating_mask(4, true), 3, true)),
            &CheckOptions::default(),
        );
    }
}
