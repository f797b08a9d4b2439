//! Ready-made flow architectures with sensible defaults (10 blocks, conditioners 2 x 128).
//!
//! - `realnvp`: [random permutation, affine coupling (half split)] x blocks (Dinh et al. 2016).
//! - `glow`: [batch norm, LU linear, affine coupling (half split)] x blocks, the seminar's model
//!   (Kingma & Dhariwal 2018 with batch norm in place of ActNorm).
//! - `pq-spline`: [LU linear, piecewise-quadratic coupling, K = 8 bins on +-5] x blocks, residual
//!   conditioners (Mueller et al. 2019), the default until 2026-12-04.
//! - `rq-spline`: [LU linear, rational-quadratic coupling, K = 8 bins, tails at +-5] x blocks,
//!   residual conditioners (Durkan et al. 2019, Neural Spline Flows).
//! - `maf`: [MAF with a MADE conditioner, alternating reversed/random orders] x blocks
//!   (Papamakarios et al. 2017).
//! - `made-mog`: no transforms; a MADE-MoG base distribution, an autoregressive mixture of K = 10
//!   Gaussians per feature whose weights, means and widths come from one MADE (2 x 256, dropout
//!   0.2 of its hidden units in training) (Papamakarios et al. 2017;
//!   [`crate::distributions::MadeMog`]). With `blocks` > 0 the base sits under that many MAF
//!   layers (MAF-MoG; the dropout applies to the base's MADE only).
//! - `flow-matching`: one continuous flow, a velocity MLP (3 x 256, time features) integrated
//!   with RK4, trained by conditional flow matching on straight paths (Lipman et al. 2023;
//!   [`crate::flow_matching`]). Not in [`Preset::ALL`] (the maximum-likelihood presets).

use crate::distributions::{BaseSpec, MadeMogConfig, made_mog::DEFAULT_LOG_SCALE_CLAMP};
use crate::engine::Rng;
use crate::nn::Activation;
use crate::transforms::{
    AffineCouplingConfig, BatchNormConfig, ContinuousFlowConfig, LayerSpec, LuLinearConfig,
    MafConfig, PermutationConfig, SplineCouplingConfig, SplineKind, half_mask,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A named flow architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Affine couplings with random permutations.
    Realnvp,
    /// Batch norm + LU linear + affine coupling (the seminar's model).
    Glow,
    /// LU linear + piecewise-quadratic coupling (the default until 2026-12-04).
    PqSpline,
    /// LU linear + rational-quadratic spline coupling.
    RqSpline,
    /// Masked autoregressive flow.
    Maf,
    /// Autoregressive mixture of Gaussians (MADE-MoG base, no transforms by default): the
    /// default, the best fidelity on HIGGS (docs/FIDELITY.md).
    MadeMog,
    /// Continuous flow trained by flow matching.
    FlowMatching,
}

impl Preset {
    /// Every preset trained by maximum likelihood through its layers' backward passes, in
    /// documentation order (the generic training, gradient and allocation checks run on these).
    pub const ALL: [Preset; 6] = [
        Preset::Realnvp,
        Preset::Glow,
        Preset::PqSpline,
        Preset::RqSpline,
        Preset::Maf,
        Preset::MadeMog,
    ];

    /// Every preset, in documentation order: [`Preset::ALL`] and flow matching.
    pub const EVERY: [Preset; 7] = [
        Preset::Realnvp,
        Preset::Glow,
        Preset::PqSpline,
        Preset::RqSpline,
        Preset::Maf,
        Preset::MadeMog,
        Preset::FlowMatching,
    ];

    /// The preset `hepflow train` uses without `--model`.
    pub const DEFAULT: Preset = Preset::MadeMog;

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Realnvp => "realnvp",
            Preset::Glow => "glow",
            Preset::PqSpline => "pq-spline",
            Preset::RqSpline => "rq-spline",
            Preset::Maf => "maf",
            Preset::MadeMog => "made-mog",
            Preset::FlowMatching => "flow-matching",
        }
    }

    /// Default options of this preset.
    pub fn default_options(self) -> PresetOptions {
        let mut o = PresetOptions::default();
        match self {
            Preset::RqSpline => {
                o.bins = 8;
                o.residual = true;
            }
            Preset::PqSpline => {
                o.bins = 8;
                o.residual = true;
                // Measured on held-out HIGGS events: dropout 0.2 in the conditioners lowers the
                // test NLL by ~0.2 nats at equal C2ST AUC (the flows overfit ~10k events).
                o.dropout = 0.2;
            }
            Preset::FlowMatching => {
                o.blocks = 1;
                o.hidden = vec![256, 256, 256];
            }
            Preset::MadeMog => {
                o.blocks = 0;
                o.hidden = vec![256, 256];
                o.components = DEFAULT_COMPONENTS;
                // Measured on the HIGGS fidelity split (3 seeds, docs/FIDELITY.md): dropout 0.2
                // in the MADE lowers the test NLL by ~0.2-0.25 nats and the C2ST AUC by ~0.02-0.03
                // (without it the MADE overfits after ~50 epochs).
                o.dropout = 0.2;
            }
            _ => {}
        }
        o
    }

    /// Whether the preset is trained by flow matching rather than maximum likelihood.
    pub fn is_flow_matching(self) -> bool {
        self == Preset::FlowMatching
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::EVERY
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown model '{s}' (expected one of: realnvp, glow, pq-spline, rq-spline, maf, made-mog, flow-matching)"))
    }
}

/// Size knobs shared by the presets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PresetOptions {
    /// Number of blocks.
    pub blocks: usize,
    /// Hidden widths of every conditioner.
    pub hidden: Vec<usize>,
    /// Spline bins `K`.
    pub bins: usize,
    /// Spline interval `[-B, B]`.
    pub bound: f64,
    /// Residual conditioners.
    pub residual: bool,
    /// Dropout probability in the coupling conditioners (training only).
    #[serde(default)]
    pub dropout: f64,
    /// Context width (conditional flows).
    pub context_dim: usize,
    /// Runge-Kutta steps of the flow-matching model's ODE (sampling and log-density).
    #[serde(default = "default_ode_steps")]
    pub ode_steps: usize,
    /// Gaussian components per feature of the MADE-MoG base.
    #[serde(default = "default_components")]
    pub components: usize,
    /// Hidden activation of the flow-matching velocity network (the coupling conditioners use
    /// ReLU).
    #[serde(default)]
    pub activation: Activation,
}

/// Default mixture components of the `made-mog` preset.
pub const DEFAULT_COMPONENTS: usize = 10;

fn default_components() -> usize {
    DEFAULT_COMPONENTS
}

/// Default ODE steps of the flow-matching preset (measured, docs/FIDELITY.md).
pub const DEFAULT_ODE_STEPS: usize = 16;
/// Fourier frequencies of the flow-matching preset's time embedding.
pub const TIME_FREQUENCIES: usize = 4;

fn default_ode_steps() -> usize {
    DEFAULT_ODE_STEPS
}

impl Default for PresetOptions {
    fn default() -> Self {
        Self {
            blocks: 10,
            hidden: vec![128, 128],
            bins: 8,
            bound: 5.0,
            residual: false,
            dropout: 0.0,
            context_dim: 0,
            ode_steps: DEFAULT_ODE_STEPS,
            components: DEFAULT_COMPONENTS,
            activation: Activation::Relu,
        }
    }
}

/// The base distribution of `preset` for `dim` features: the MADE-MoG of `made-mog` (natural
/// autoregressive order), the standard normal otherwise.
pub fn build_base(preset: Preset, dim: usize, opts: &PresetOptions) -> BaseSpec {
    match preset {
        Preset::MadeMog => BaseSpec::MadeMog(MadeMogConfig {
            dim,
            hidden: opts.hidden.clone(),
            context_dim: opts.context_dim,
            components: opts.components,
            order: (0..dim).collect(),
            log_scale_clamp: DEFAULT_LOG_SCALE_CLAMP,
            dropout: opts.dropout,
        }),
        _ => BaseSpec::StdNormal,
    }
}

/// The flow of `preset` for `dim` features with fresh parameters: the layers of [`build_specs`]
/// (fixed random choices from `seed`) on the base of [`build_base`], initialised from `seed`.
pub fn build_flow<T: crate::engine::Real>(
    preset: Preset,
    dim: usize,
    opts: &PresetOptions,
    seed: u64,
) -> crate::flow::Flow<T> {
    let specs = build_specs(preset, dim, opts, seed);
    let base = build_base(preset, dim, opts);
    crate::flow::Flow::from_parts(dim, opts.context_dim, &base, &specs, seed)
}

/// The layer list of `preset` for `dim` features; fixed random choices come from `seed`.
pub fn build_specs(preset: Preset, dim: usize, opts: &PresetOptions, seed: u64) -> Vec<LayerSpec> {
    if preset == Preset::FlowMatching {
        return vec![LayerSpec::Continuous(ContinuousFlowConfig {
            dim,
            hidden: opts.hidden.clone(),
            context_dim: opts.context_dim,
            residual: opts.residual,
            time_frequencies: TIME_FREQUENCIES,
            ode_steps: opts.ode_steps,
            activation: opts.activation,
        })];
    }
    let mut rng = Rng::new(seed ^ 0x5EED_F10E);
    let mut specs = Vec::new();
    for b in 0..opts.blocks {
        let flip = b % 2 == 1;
        match preset {
            Preset::Realnvp => {
                if b > 0 {
                    specs.push(LayerSpec::Permutation(PermutationConfig {
                        perm: rng.permutation(dim),
                    }));
                }
                specs.push(LayerSpec::AffineCoupling(AffineCouplingConfig {
                    mask: half_mask(dim, flip),
                    hidden: opts.hidden.clone(),
                    context_dim: opts.context_dim,
                    scale_clamp: 3.0,
                    residual: opts.residual,
                    dropout: opts.dropout,
                }));
            }
            Preset::Glow => {
                specs.push(LayerSpec::BatchNorm(BatchNormConfig {
                    dim,
                    momentum: 0.9,
                    eps: 1e-5,
                }));
                specs.push(LayerSpec::LuLinear(LuLinearConfig::random(dim, &mut rng)));
                specs.push(LayerSpec::AffineCoupling(AffineCouplingConfig {
                    mask: half_mask(dim, flip),
                    hidden: opts.hidden.clone(),
                    context_dim: opts.context_dim,
                    scale_clamp: 3.0,
                    residual: opts.residual,
                    dropout: opts.dropout,
                }));
            }
            Preset::PqSpline | Preset::RqSpline => {
                specs.push(LayerSpec::LuLinear(LuLinearConfig::random(dim, &mut rng)));
                specs.push(LayerSpec::SplineCoupling(SplineCouplingConfig {
                    mask: half_mask(dim, flip),
                    hidden: opts.hidden.clone(),
                    context_dim: opts.context_dim,
                    residual: opts.residual,
                    dropout: opts.dropout,
                    kind: if preset == Preset::PqSpline {
                        SplineKind::Quadratic
                    } else {
                        SplineKind::RationalQuadratic
                    },
                    bins: opts.bins,
                    bound: opts.bound,
                }));
            }
            Preset::Maf | Preset::MadeMog => {
                let order: Vec<usize> = if b % 2 == 0 {
                    (0..dim).collect()
                } else {
                    (0..dim).rev().collect()
                };
                let order = if b >= 2 { rng.permutation(dim) } else { order };
                specs.push(LayerSpec::Maf(MafConfig {
                    dim,
                    hidden: opts.hidden.clone(),
                    context_dim: opts.context_dim,
                    order,
                    scale_clamp: 3.0,
                }));
            }
            Preset::FlowMatching => {}
        }
    }
    specs
}
