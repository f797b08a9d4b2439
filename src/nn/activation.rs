//! Activations of the hidden layers of an [`super::Mlp`] and their derivatives.
//!
//! - `relu(a) = max(a, 0)`, `relu'(a) = [a > 0]` (the default; its kinks make the divergence of a
//!   ReLU velocity field jump, see [`crate::transforms::continuous`]);
//! - `silu(a) = a sigmoid(a)` (also called swish), `silu'(a) = s (1 + a (1 - s))` with
//!   `s = sigmoid(a) = 1 / (1 + e^{-a})`; smooth, so the divergence of a SiLU field is smooth too;
//! - `tanh(a)`, `tanh'(a) = 1 - tanh(a)^2`.
//!
//! The smooth activations run through [`Real::silu_in_place`] and [`Real::tanh_in_place`]
//! (vectorised for `f32` by [`crate::engine::vmath`], the same bits on every SIMD path). ReLU is
//! fused into the GEMM kernel of [`crate::engine::dense`] instead.

use crate::engine::Real;
use serde::{Deserialize, Serialize};

/// The activation of an MLP's hidden layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(a, 0)`.
    #[default]
    Relu,
    /// `a sigmoid(a)`.
    Silu,
    /// `tanh(a)`.
    Tanh,
}

impl Activation {
    /// Every activation, in the order of the documentation.
    pub const ALL: [Activation; 3] = [Activation::Relu, Activation::Silu, Activation::Tanh];

    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
        }
    }

    /// Whether this is ReLU (whose derivative the MLP reads off its outputs instead of storing).
    pub fn is_relu(self) -> bool {
        self == Activation::Relu
    }

    /// `a <- act(a)` elementwise; with `slope`, also `slope <- act'(a)` (same length as `a`).
    pub fn apply<T: Real>(self, a: &mut [T], slope: Option<&mut [T]>) {
        if let Some(s) = &slope {
            assert_eq!(s.len(), a.len(), "slope length");
        }
        match self {
            Activation::Relu => {
                if let Some(s) = slope {
                    for (v, d) in a.iter_mut().zip(s) {
                        *d = if *v > T::zero() { T::one() } else { T::zero() };
                        *v = v.max(T::zero());
                    }
                } else {
                    for v in a {
                        *v = v.max(T::zero());
                    }
                }
            }
            Activation::Silu => T::silu_in_place(a, slope),
            Activation::Tanh => T::tanh_in_place(a, slope),
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown activation '{s}': expected relu, silu or tanh"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored slope is the derivative of the activation (central differences in f64), and
    /// the f32 (vectorised) values agree with f64 to float precision.
    #[test]
    fn slopes_are_derivatives_and_f32_matches_f64() {
        let xs: Vec<f64> = (0..401).map(|i| -20.0 + 0.1 * i as f64 + 0.003).collect();
        for act in Activation::ALL {
            let (mut y, mut s) = (xs.clone(), vec![0.0; xs.len()]);
            act.apply(&mut y, Some(&mut s));
            let mut y_only = xs.clone();
            act.apply(&mut y_only, None);
            assert_eq!(y, y_only, "{act}: values with and without slopes");
            let eps = 1e-6;
            for (i, &x) in xs.iter().enumerate() {
                let (mut up, mut dn) = ([x + eps], [x - eps]);
                act.apply(&mut up, None);
                act.apply(&mut dn, None);
                let fd = (up[0] - dn[0]) / (2.0 * eps);
                assert!((fd - s[i]).abs() < 1e-7, "{act} at {x}: {fd} vs {}", s[i]);
            }
            let mut y32: Vec<f32> = xs.iter().map(|v| *v as f32).collect();
            let mut s32 = vec![0.0f32; xs.len()];
            act.apply(&mut y32, Some(&mut s32));
            for i in 0..xs.len() {
                // f32 inputs are rounded: compare with f64 at the rounded input.
                let x = xs[i] as f32 as f64;
                let (mut w, mut ws) = ([x], [0.0]);
                act.apply(&mut w, Some(&mut ws));
                assert!(
                    (y32[i] as f64 - w[0]).abs() < 1e-6 * (1.0 + w[0].abs()),
                    "{act} {x}"
                );
                assert!((s32[i] as f64 - ws[0]).abs() < 1e-6, "{act}' {x}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_default_is_relu() {
        for act in Activation::ALL {
            assert_eq!(act.name().parse::<Activation>(), Ok(act));
        }
        assert!("gelu".parse::<Activation>().is_err());
        assert_eq!(Activation::default(), Activation::Relu);
    }
}
