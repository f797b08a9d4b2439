//! A trained model on disk: `model.json` (architecture, preprocessing, feature names, context
//! encoding, training metadata) and `model.safetensors` (every parameter and buffer, f32).
//!
//! The density of an event in original (physical) units is
//! `log p(x | c) = log p_flow(g(x) | e(c)) + log|det dg/dx|`, where `g` is the preprocessing chain
//! (min-max -> logit -> standardize) and `e` the context encoding.

use crate::distributions::BaseSpec;
use crate::engine::{Matrix, Rng};
use crate::flow::Flow;
use crate::fsutil::atomic_write;
use crate::pipeline::train::take_rows;
use crate::preprocess::Preprocessor;
use crate::transforms::LayerSpec;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The value written to files for `log p = -inf` (an event outside the model's support, see
/// [`Model::outside_support`]): table writers accept finite values only, and every log-density
/// inside the support is far above it.
pub const LOG_PROB_FLOOR: f64 = -1e30;

/// Version of the on-disk format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Errors loading or saving a model directory.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// model.json is not valid.
    #[error("{path}: invalid model description: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file is corrupt or does not match the architecture.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the tensor).
        message: String,
    },
    /// The input does not fit the model.
    #[error("{0}")]
    Input(String),
    /// Training was interrupted (Ctrl-C, SIGTERM, KeyboardInterrupt).
    #[error(
        "interrupted during epoch {epoch}; the last complete checkpoint is in {checkpoint} (continue with --resume)"
    )]
    Interrupted {
        /// The epoch that was running.
        epoch: usize,
        /// The checkpoint directory.
        checkpoint: PathBuf,
    },
}

/// One context column: how a data column becomes part of the context vector.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContextColumn {
    /// One-hot encoding over the listed values.
    Categorical {
        /// Column name.
        name: String,
        /// Allowed values, in one-hot order.
        values: Vec<f64>,
    },
    /// Standardised continuous value `(v - mean) / std`.
    Continuous {
        /// Column name.
        name: String,
        /// Training mean.
        mean: f64,
        /// Training standard deviation.
        std: f64,
    },
}

impl ContextColumn {
    /// Column name.
    pub fn name(&self) -> &str {
        match self {
            ContextColumn::Categorical { name, .. } | ContextColumn::Continuous { name, .. } => {
                name
            }
        }
    }

    /// Width of this column's encoding.
    pub fn width(&self) -> usize {
        match self {
            ContextColumn::Categorical { values, .. } => values.len(),
            ContextColumn::Continuous { .. } => 1,
        }
    }

    /// Fits the encoding of `name` on its values: categorical when it has at most 16 distinct
    /// integer values, continuous otherwise.
    pub fn fit(name: &str, values: &[f32]) -> Result<Self, ModelError> {
        let mut distinct: Vec<f64> = values.iter().map(|v| *v as f64).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.is_empty() {
            return Err(ModelError::Input(format!(
                "context column '{name}' is empty"
            )));
        }
        if distinct.len() <= 16 && distinct.iter().all(|v| v.fract() == 0.0) {
            return Ok(ContextColumn::Categorical {
                name: name.to_string(),
                values: distinct,
            });
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        if var <= 0.0 {
            return Err(ModelError::Input(format!(
                "context column '{name}' is constant"
            )));
        }
        Ok(ContextColumn::Continuous {
            name: name.to_string(),
            mean,
            std: var.sqrt(),
        })
    }

    /// Checks a (deserialised) encoding: categorical values finite, sorted and distinct (1 to
    /// 1024 of them); continuous mean finite and std finite and positive.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ContextColumn::Categorical { name, values } => {
                if values.is_empty() || values.len() > 1024 {
                    return Err(format!("context column '{name}' needs 1 to 1024 values"));
                }
                if values.iter().any(|v| !v.is_finite()) || values.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(format!(
                        "context column '{name}': values must be finite, sorted and distinct"
                    ));
                }
            }
            ContextColumn::Continuous { name, mean, std } => {
                if !(mean.is_finite() && std.is_finite() && *std > 0.0) {
                    return Err(format!(
                        "context column '{name}' needs a finite mean and a finite std > 0"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the encoding of `v` into `out` (length [`ContextColumn::width`]).
    pub fn encode(&self, v: f64, out: &mut [f32]) -> Result<(), ModelError> {
        match self {
            ContextColumn::Categorical { name, values } => {
                out.fill(0.0);
                let k = values.iter().position(|x| *x == v).ok_or_else(|| {
                    ModelError::Input(format!("context column '{name}': value {v} was not seen in training (allowed: {values:?})"))
                })?;
                out[k] = 1.0;
            }
            ContextColumn::Continuous { mean, std, .. } => out[0] = ((v - mean) / std) as f32,
        }
        Ok(())
    }
}

/// `n` rows taken cyclically from `raw` (which must have at least one row).
pub fn cycle_rows(raw: &Matrix<f32>, n: usize) -> Matrix<f32> {
    Matrix::from_fn(n, raw.cols(), |i, j| raw.get(i % raw.rows(), j))
}

/// Encodes rows of raw context values (one column per [`ContextColumn`]) into context vectors.
pub fn encode_context(
    columns: &[ContextColumn],
    raw: &Matrix<f32>,
) -> Result<Matrix<f32>, ModelError> {
    let width: usize = columns.iter().map(|c| c.width()).sum();
    let mut out = Matrix::zeros(raw.rows(), width);
    for i in 0..raw.rows() {
        let mut off = 0;
        for (j, c) in columns.iter().enumerate() {
            let w = c.width();
            c.encode(raw.get(i, j) as f64, &mut out.row_mut(i)[off..off + w])?;
            off += w;
        }
    }
    Ok(out)
}

/// The JSON half of a model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelConfig {
    /// On-disk format version.
    pub format_version: u32,
    /// Name of the preset the layers came from.
    pub preset: String,
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Context encoding (empty for an unconditional model).
    #[serde(default)]
    pub context: Vec<ContextColumn>,
    /// Preprocessing chain (None = the flow sees the raw values).
    pub preprocessing: Option<Preprocessor>,
    /// The flow's layers, data side first.
    pub layers: Vec<LayerSpec>,
    /// The flow's base distribution (the standard normal when absent from `model.json`, so
    /// files written before base distributions existed load and save unchanged).
    #[serde(default, skip_serializing_if = "BaseSpec::is_std_normal")]
    pub base: BaseSpec,
    /// Free-form training metadata (configuration, data checksum, best epoch, ...).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Ensemble members (1 = a single flow; absent from `model.json` then, so single-flow files
    /// are unchanged). Every member has the architecture `layers`; see [`Model`].
    #[serde(default = "one_member", skip_serializing_if = "is_one_member")]
    pub members: usize,
}

/// The most members of an ensemble.
pub const MAX_MEMBERS: usize = 16;

fn one_member() -> usize {
    1
}

fn is_one_member(k: &usize) -> bool {
    *k == 1
}

/// The most parameters a model file may declare (1 GB of f32 values).
pub const MAX_PARAMS: f64 = (1u64 << 28) as f64;
const MAX_SPLINE_BINS: usize = 64;

/// An upper bound on the parameters of a conditioner MLP `input -> hidden -> output`.
fn conditioner_size(input: usize, hidden: &[usize], output: usize) -> f64 {
    if hidden.is_empty() {
        return 0.0;
    }
    let mut prev = input as f64;
    let mut total = 0.0;
    for &h in hidden.iter().chain(std::iter::once(&output)) {
        total += (prev + 1.0) * h as f64;
        prev = h as f64;
    }
    total
}

impl ModelConfig {
    /// Checks that every part agrees with the feature and context lists: each layer's shape, the
    /// context width every conditioner reads, the context encodings and the preprocessing. A
    /// model that passes can be built and evaluated without panicking.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_MEMBERS).contains(&self.members) {
            return Err(format!(
                "members = {} (must be between 1 and {MAX_MEMBERS})",
                self.members
            ));
        }
        let dim = self.features.len();
        if dim == 0 {
            return Err("the model has no features".into());
        }
        if let Some(i) = (0..dim).find(|&i| self.features[..i].contains(&self.features[i])) {
            return Err(format!("feature '{}' is listed twice", self.features[i]));
        }
        for c in &self.context {
            c.validate()?;
        }
        let ctx: usize = self.context.iter().map(|c| c.width()).sum();
        if self.layers.is_empty() && self.base.is_std_normal() {
            return Err("the model has no layers".into());
        }
        self.base
            .validate(dim)
            .map_err(|m| format!("base ({}): {m}", self.base.kind()))?;
        if let Some(r) = self.base.context_dim()
            && r != ctx
        {
            return Err(format!(
                "the base ({}) reads a context of width {r}, but the context columns encode to width {ctx}",
                self.base.kind()
            ));
        }
        let mut params = conditioner_size(
            dim + ctx,
            self.base.hidden(),
            dim * self.base.outputs_per_feature(),
        );
        if params > MAX_PARAMS {
            return Err(format!(
                "the base holds more than {MAX_PARAMS} parameters; the file is damaged or not a hepflow model"
            ));
        }
        for (k, l) in self.layers.iter().enumerate() {
            l.validate(dim)
                .map_err(|m| format!("layer {k} ({}): {m}", l.kind()))?;
            let hidden: &[usize] = match l {
                LayerSpec::AffineCoupling(c) => &c.hidden,
                LayerSpec::SplineCoupling(c) => &c.hidden,
                LayerSpec::Maf(c) => &c.hidden,
                LayerSpec::Continuous(c) => &c.hidden,
                _ => &[],
            };
            if matches!(l, LayerSpec::Continuous(_)) && self.layers.len() > 1 {
                return Err(format!(
                    "layer {k} (continuous) must be the model's only layer (it has {})",
                    self.layers.len()
                ));
            }
            params += conditioner_size(dim + ctx, hidden, dim * (3 * MAX_SPLINE_BINS + 1));
            if params > MAX_PARAMS {
                return Err(format!(
                    "the layers hold more than {MAX_PARAMS} parameters (layer {k}); the file is damaged or not a hepflow model"
                ));
            }
            let reads = match l {
                LayerSpec::AffineCoupling(c) => Some(c.context_dim),
                LayerSpec::SplineCoupling(c) => Some(c.context_dim),
                LayerSpec::Maf(c) => Some(c.context_dim),
                LayerSpec::Continuous(c) => Some(c.context_dim),
                _ => None,
            };
            if let Some(r) = reads
                && r != ctx
            {
                return Err(format!(
                    "layer {k} ({}) reads a context of width {r}, but the context columns {:?} encode to width {ctx}",
                    l.kind(),
                    self.context.iter().map(|c| c.name()).collect::<Vec<_>>()
                ));
            }
        }
        if let Some(p) = &self.preprocessing {
            p.validate().map_err(|e| format!("preprocessing: {e}"))?;
            if p.features.len() != dim {
                return Err(format!(
                    "preprocessing has {} features but the model has {dim}",
                    p.features.len()
                ));
            }
        }
        Ok(())
    }
}

/// A model: configuration plus the flow with its trained values, or an ensemble of `K` flows
/// (`config.members`) sharing the preprocessing and context encoding.
///
/// An ensemble's density is the average of its members' densities,
/// `log p(x) = logsumexp_k log p_k(x) - log K`; event `i` of a sample with seed `s` is drawn from
/// member [`ensemble_member`]`(s, i, K)` with base vector `base_sample(s, i)`, so a sample stays
/// reproducible per event (shards and thread counts give the same events). In `model.safetensors`
/// member `k` (1-based) of an ensemble names its tensors `member{k}.layers.…`; a single flow keeps
/// the names `layers.…`.
pub struct Model {
    /// Architecture and metadata.
    pub config: ModelConfig,
    /// The flow (f32); of an ensemble, its first member.
    pub flow: Flow<f32>,
    /// The other members of an ensemble (empty for a single flow).
    pub others: Vec<Flow<f32>>,
}

/// The member (0-based, below `k`) that draws event `index` of the sample with seed `seed`.
pub fn ensemble_member(seed: u64, index: u64, k: usize) -> usize {
    if k <= 1 {
        return 0;
    }
    Rng::stream(seed ^ 0x0E45_E3B1_E000_0000, index).below(k)
}

impl Model {
    /// A fresh model with parameters initialised from `seed` (member `k` of an ensemble from
    /// `seed + k`).
    pub fn new(config: ModelConfig, seed: u64) -> Self {
        let ctx: usize = config.context.iter().map(|c| c.width()).sum();
        let build =
            |s: u64| Flow::from_parts(config.features.len(), ctx, &config.base, &config.layers, s);
        let flow = build(seed);
        let others = (1..config.members.max(1) as u64)
            .map(|k| build(seed.wrapping_add(k)))
            .collect();
        Self {
            config,
            flow,
            others,
        }
    }

    /// An ensemble of trained single-flow models that share `config`'s preprocessing, context
    /// encoding and layers (the members' own configurations are not checked beyond the layers).
    pub fn ensemble(mut config: ModelConfig, members: Vec<Model>) -> Result<Self, ModelError> {
        let mut flows = members.into_iter().map(|m| m.flow);
        let flow = flows
            .next()
            .ok_or_else(|| ModelError::Input("an ensemble needs at least one member".into()))?;
        let others: Vec<Flow<f32>> = flows.collect();
        config.members = others.len() + 1;
        if config.members > MAX_MEMBERS {
            return Err(ModelError::Input(format!(
                "an ensemble has at most {MAX_MEMBERS} members, got {}",
                config.members
            )));
        }
        let arch = |f: &Flow<f32>| serde_json::to_value((f.specs(), f.base_spec())).ok();
        let specs = arch(&flow);
        if others.iter().any(|f| arch(f) != specs) {
            return Err(ModelError::Input(
                "the ensemble's members have different architectures".into(),
            ));
        }
        Ok(Self {
            config,
            flow,
            others,
        })
    }

    /// Every member's flow (one for a single-flow model).
    pub fn members(&self) -> impl Iterator<Item = &Flow<f32>> {
        std::iter::once(&self.flow).chain(self.others.iter())
    }

    /// Trainable parameters of all members.
    pub fn num_params(&self) -> usize {
        self.members().map(|f| f.num_params()).sum()
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.config.features.len()
    }

    /// The ODE steps of a flow-matching model (`None` for a model without a continuous layer).
    pub fn ode_steps(&self) -> Option<usize> {
        self.flow.specs().iter().find_map(|l| match l {
            LayerSpec::Continuous(c) => Some(c.ode_steps),
            _ => None,
        })
    }

    /// Sets the ODE steps of a flow-matching model for this session (sampling and log-density;
    /// `hepflow sample --ode-steps`), keeping the trained parameters.
    pub fn set_ode_steps(&mut self, steps: usize) -> Result<(), ModelError> {
        if !(1..=crate::transforms::continuous::MAX_ODE_STEPS).contains(&steps) {
            return Err(ModelError::Input(format!(
                "ode_steps = {steps} must be between 1 and {}",
                crate::transforms::continuous::MAX_ODE_STEPS
            )));
        }
        let mut specs = self.flow.specs();
        let mut found = false;
        for l in &mut specs {
            if let LayerSpec::Continuous(c) = l {
                c.ode_steps = steps;
                found = true;
            }
        }
        if !found {
            return Err(ModelError::Input(format!(
                "ode_steps applies to flow-matching models only; this model is '{}'",
                self.config.preset
            )));
        }
        let rebuilt: Vec<Flow<f32>> = self
            .members()
            .map(|old| {
                let mut flow =
                    Flow::from_parts(old.dim(), old.context_dim(), &old.base_spec(), &specs, 0);
                flow.set_param_vector(&old.param_vector());
                flow.set_buffer_vector(&old.buffer_vector());
                flow
            })
            .collect();
        let mut rebuilt = rebuilt.into_iter();
        if let Some(first) = rebuilt.next() {
            self.flow = first;
        }
        self.others = rebuilt.collect();
        self.config.layers = specs;
        Ok(())
    }

    /// Maps physical-unit events into the flow's space: returns the transformed events and the
    /// per-event preprocessing log-determinant. `rng` enables dequantisation noise (training).
    pub fn to_model_space(
        &self,
        x: &Matrix<f32>,
        rng: Option<&mut Rng>,
    ) -> Result<(Matrix<f32>, Vec<f64>), ModelError> {
        self.check_width(x)?;
        match &self.config.preprocessing {
            Some(p) => {
                let (z, l) = p
                    .forward(&x.cast::<f64>(), rng)
                    .map_err(|e| ModelError::Input(e.to_string()))?;
                Ok((z.cast(), l))
            }
            None => Ok((x.clone(), vec![0.0; x.rows()])),
        }
    }

    fn check_width(&self, x: &Matrix<f32>) -> Result<(), ModelError> {
        if x.cols() != self.dim() {
            return Err(ModelError::Input(format!(
                "{} columns given, the model has {} features",
                x.cols(),
                self.dim()
            )));
        }
        Ok(())
    }

    /// Maps flow-space events back to physical units.
    pub fn to_physical(&self, z: &Matrix<f32>) -> Result<Matrix<f32>, ModelError> {
        match &self.config.preprocessing {
            Some(p) => Ok(p
                .inverse(&z.cast::<f64>())
                .map_err(|e| ModelError::Input(e.to_string()))?
                .cast()),
            None => Ok(z.clone()),
        }
    }

    /// `log p(x | c)` per event in physical units (`ctx` already encoded). An event outside the
    /// model's support ([`Model::outside_support`]) has density zero: `-inf`. Never NaN (a
    /// non-finite flow output is reported as `-inf`).
    pub fn log_prob(
        &self,
        x: &Matrix<f32>,
        ctx: Option<&Matrix<f32>>,
    ) -> Result<Vec<f64>, ModelError> {
        self.check_context(x.rows(), ctx)?;
        let (z, pre) = self.to_model_space(x, None)?;
        let lp = self.flow_log_prob(&z, ctx);
        let outside = self.outside_support(x)?;
        Ok(lp
            .iter()
            .zip(&pre)
            .zip(&outside)
            .map(|((a, b), &out)| {
                let v = *a as f64 + b;
                if out || v.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    v
                }
            })
            .collect())
    }

    /// `log p(z | c)` of the flow (of an ensemble: `logsumexp_k log p_k - log K`) in model space.
    pub fn flow_log_prob(&self, z: &Matrix<f32>, ctx: Option<&Matrix<f32>>) -> Vec<f32> {
        if self.others.is_empty() {
            return self.flow.log_prob(z, ctx);
        }
        let per: Vec<Vec<f32>> = self.members().map(|f| f.log_prob(z, ctx)).collect();
        let log_k = (per.len() as f64).ln();
        (0..z.rows())
            .map(|i| {
                let m = per
                    .iter()
                    .map(|v| v[i] as f64)
                    .fold(f64::NEG_INFINITY, f64::max);
                if !m.is_finite() {
                    return m as f32;
                }
                let s: f64 = per.iter().map(|v| (v[i] as f64 - m).exp()).sum();
                (m + s.ln() - log_k) as f32
            })
            .collect()
    }

    /// Per event: true when it lies outside the model's support (a non-finite value, a value
    /// outside the preprocessing's `(lo, hi)`, or a value a discrete feature never takes; see
    /// [`Preprocessor::outside_support`]). Always false without preprocessing, except for
    /// non-finite values.
    pub fn outside_support(&self, x: &Matrix<f32>) -> Result<Vec<bool>, ModelError> {
        self.check_width(x)?;
        Ok(match &self.config.preprocessing {
            Some(p) => p.outside_support(&x.cast::<f64>()),
            None => (0..x.rows())
                .map(|i| x.row(i).iter().any(|v| !v.is_finite()))
                .collect(),
        })
    }

    /// Counts events pinned at an end of the support (see [`Preprocessor::pinned`]); all zero
    /// without preprocessing.
    pub fn pinned(&self, x: &Matrix<f32>) -> crate::preprocess::PinnedEvents {
        match &self.config.preprocessing {
            Some(p) => p.pinned(&x.cast::<f64>()),
            None => crate::preprocess::PinnedEvents {
                events: x.rows(),
                per_feature: vec![0; x.cols()],
                ..Default::default()
            },
        }
    }

    fn check_context(&self, rows: usize, ctx: Option<&Matrix<f32>>) -> Result<(), ModelError> {
        let want = self.flow.context_dim();
        match ctx {
            None if want > 0 => Err(ModelError::Input(
                "the model is conditional: a context is required".into(),
            )),
            Some(c) if c.cols() != want || c.rows() != rows => Err(ModelError::Input(format!(
                "context of {} x {} given, expected {rows} x {want}",
                c.rows(),
                c.cols()
            ))),
            _ => Ok(()),
        }
    }

    /// Events `start..start+n` of the sample with seed `seed`, in physical units.
    pub fn sample_range(
        &self,
        start: u64,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<f32>>,
    ) -> Result<Matrix<f32>, ModelError> {
        self.check_context(n, ctx)?;
        let z = if self.others.is_empty() {
            self.flow.sample_events(start, n, seed, ctx)
        } else {
            self.ensemble_sample(start, n, seed, ctx)
        };
        self.to_physical(&z)
    }

    /// Model-space events `start..start+n` of an ensemble: each member maps the base vectors of
    /// the events [`ensemble_member`] gives it.
    fn ensemble_sample(
        &self,
        start: u64,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<f32>>,
    ) -> Matrix<f32> {
        let d = self.dim();
        let k = self.config.members;
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); k];
        for i in 0..n {
            let m = ensemble_member(seed, start + i as u64, k);
            if let Some(r) = rows.get_mut(m) {
                r.push(i);
            }
        }
        let mut out = Matrix::zeros(n, d);
        for (flow, idx) in self.members().zip(&rows) {
            if idx.is_empty() {
                continue;
            }
            let events: Vec<u64> = idx.iter().map(|&i| start + i as u64).collect();
            let c = ctx.map(|c| take_rows(c, idx));
            let z = flow.sample_base(seed, &events, c.as_ref());
            let x = flow.events_from_base(&z, c.as_ref());
            for (r, &i) in idx.iter().enumerate() {
                out.row_mut(i).copy_from_slice(x.row(r));
            }
        }
        out
    }

    /// Events `0..n` of the sample with seed `seed` in physical units, generated in batches (the
    /// same events as `hepflow sample`). A conditional model takes raw context rows `raw_context`
    /// (column order of the model's context), cycled to `n` rows: reusing a reference's contexts
    /// this way reproduces its composition (e.g. its signal fraction) in the generated sample.
    pub fn generate(
        &self,
        n: usize,
        seed: u64,
        raw_context: Option<&Matrix<f32>>,
    ) -> Result<Matrix<f32>, ModelError> {
        const BATCH: usize = 65536;
        let ctx = match raw_context {
            Some(raw) if raw.rows() > 0 => {
                Some(encode_context(&self.config.context, &cycle_rows(raw, n))?)
            }
            Some(_) => return Err(ModelError::Input("the context has no rows".into())),
            None => None,
        };
        let len = n
            .checked_mul(self.dim())
            .ok_or_else(|| ModelError::Input(format!("n = {n} events is too many")))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| {
            ModelError::Input(format!(
                "n = {n} events x {} features do not fit in memory",
                self.dim()
            ))
        })?;
        let mut s = 0;
        while s < n {
            let b = BATCH.min(n - s);
            let c = ctx.as_ref().map(|c| c.slice_rows(s, s + b));
            let x = self.sample_range(s as u64, b, seed, c.as_ref())?;
            data.extend_from_slice(x.as_slice());
            s += b;
        }
        Matrix::from_vec(n, self.dim(), data)
            .ok_or_else(|| ModelError::Input("generated events have an unexpected shape".into()))
    }

    /// Writes `dir/model.json` and `dir/model.safetensors` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let json_path = dir.join("model.json");
        let mut config = self.config.clone();
        config.layers = self.flow.specs();
        config.base = self.flow.base_spec();
        let json = serde_json::to_vec_pretty(&config).map_err(|e| ModelError::Json {
            path: json_path.clone(),
            message: e.to_string(),
        })?;
        let st_path = dir.join("model.safetensors");
        let bytes = self.weights_bytes().map_err(|m| ModelError::Weights {
            path: st_path.clone(),
            message: m,
        })?;
        atomic_write(&st_path, &bytes).map_err(|e| ModelError::Io {
            path: st_path.clone(),
            source: e,
        })?;
        atomic_write(&json_path, &json).map_err(|e| ModelError::Io {
            path: json_path,
            source: e,
        })?;
        Ok(())
    }

    /// The safetensors bytes of every parameter and buffer (of every member, see [`Model`]).
    pub fn weights_bytes(&self) -> Result<Vec<u8>, String> {
        if self.others.is_empty() {
            return flow_weights_bytes(&self.flow);
        }
        let named: Vec<(String, &crate::transforms::Param<f32>)> = self
            .members()
            .enumerate()
            .flat_map(|(k, f)| {
                f.named_tensors()
                    .into_iter()
                    .map(move |(n, p)| (format!("member{}.{n}", k + 1), p))
            })
            .collect();
        serialize_named(&named)
    }

    /// Loads a model directory, checking every tensor's presence, dtype, shape and finiteness.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let json_path = dir.join("model.json");
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found",
                ),
            });
        }
        let text = std::fs::read(&json_path).map_err(|e| ModelError::Io {
            path: json_path.clone(),
            source: e,
        })?;
        let config: ModelConfig = serde_json::from_slice(&text).map_err(|e| ModelError::Json {
            path: json_path.clone(),
            message: e.to_string(),
        })?;
        if config.format_version > FORMAT_VERSION {
            return Err(ModelError::Json {
                path: json_path,
                message: format!(
                    "format version {} is newer than this hepflow ({FORMAT_VERSION})",
                    config.format_version
                ),
            });
        }
        if let Err(message) = config.validate() {
            return Err(ModelError::Json {
                path: json_path,
                message,
            });
        }
        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| ModelError::Io {
            path: st_path.clone(),
            source: e,
        })?;
        let mut model = Model::new(config, 0);
        model
            .load_weights(&bytes)
            .map_err(|m| ModelError::Weights {
                path: st_path,
                message: m,
            })?;
        Ok(model)
    }

    /// Overwrites every parameter and buffer from safetensors bytes.
    pub fn load_weights(&mut self, bytes: &[u8]) -> Result<(), String> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let members = self.others.len() + 1;
        let expected: usize = self.members().map(|f| f.named_tensors().len()).sum();
        if st.len() != expected {
            let per = self.flow.named_tensors().len().max(1);
            let hint = if st.len() % per == 0 && st.len() / per != members {
                format!(
                    " (that is {} members of this architecture, but model.json says {members})",
                    st.len() / per
                )
            } else {
                String::new()
            };
            return Err(format!(
                "holds {} tensors but the architecture in model.json needs {expected}{hint}",
                st.len()
            ));
        }
        let ensemble = members > 1;
        let flows = std::iter::once(&mut self.flow).chain(self.others.iter_mut());
        for (m, flow) in flows.enumerate() {
            let prefix = if ensemble {
                format!("member{}.", m + 1)
            } else {
                String::new()
            };
            for (k, layer) in flow.layers_mut().iter_mut().enumerate() {
                for p in layer.params_mut().into_iter() {
                    let name = format!("{prefix}layers.{k}.{}", p.name);
                    fill_tensor(&st, &name, &p.shape, &mut p.data)?;
                }
                for p in layer.buffers_mut().into_iter() {
                    let name = format!("{prefix}layers.{k}.{}", p.name);
                    fill_tensor(&st, &name, &p.shape, &mut p.data)?;
                }
            }
            for p in flow.base_mut().params_mut() {
                let name = format!("{prefix}base.{}", p.name);
                fill_tensor(&st, &name, &p.shape, &mut p.data)?;
            }
        }
        Ok(())
    }
}

/// Serialises every parameter and buffer of `flow` (named `layers.{k}.{name}`) as safetensors.
pub fn flow_weights_bytes(flow: &Flow<f32>) -> Result<Vec<u8>, String> {
    serialize_named(&flow.named_tensors())
}

fn serialize_named(named: &[(String, &crate::transforms::Param<f32>)]) -> Result<Vec<u8>, String> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                p.shape.clone(),
                p.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views = BTreeMap::new();
    for (n, shape, bytes) in &raw {
        let v = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| format!("tensor {n}: {e}"))?;
        views.insert(n.clone(), v);
    }
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

fn fill_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    out: &mut [f32],
) -> Result<(), String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor '{name}' is missing"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor '{name}' has dtype {:?}, expected F32",
            t.dtype()
        ));
    }
    if t.shape() != shape {
        return Err(format!(
            "tensor '{name}' has shape {:?}, expected {:?}",
            t.shape(),
            shape
        ));
    }
    for (o, c) in out.iter_mut().zip(t.data().chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "tensor '{name}' holds a non-finite value at index {i}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::{Preset, build_specs};
    use crate::transforms::testing::randomize_params;

    /// A model of the default preset (small random weights) with preprocessing fitted on
    /// `train`, a pT-like, an eta-like and a mass-like column.
    fn model_and_data() -> (Model, Matrix<f32>) {
        let mut rng = Rng::new(21);
        let train = Matrix::from_fn(400, 3, |_, j| match j {
            0 => (25.0 - 20.0 * (1.0 - rng.uniform()).ln()) as f32,
            1 => (2.5 * rng.normal()) as f32,
            _ => (3.0 * rng.uniform().powi(2)) as f32,
        });
        let names: Vec<String> = ["pt", "eta", "m"].map(String::from).to_vec();
        let pre = Preprocessor::fit(&train.cast::<f64>(), &names, &[], 0.05).unwrap();
        let mut opts = Preset::PqSpline.default_options();
        opts.hidden = vec![16, 16];
        let config = ModelConfig {
            format_version: FORMAT_VERSION,
            preset: Preset::PqSpline.name().into(),
            features: names,
            context: Vec::new(),
            preprocessing: Some(pre),
            layers: build_specs(Preset::PqSpline, 3, &opts, 2),
            base: Default::default(),
            training: serde_json::Value::Null,
            members: 1,
        };
        let mut model = Model::new(config, 3);
        for l in model.flow.layers_mut() {
            randomize_params(l.as_mut(), 0.05, &mut rng);
        }
        (model, train)
    }

    #[test]
    fn far_outliers_score_below_every_training_event_and_are_flagged() {
        let (model, train) = model_and_data();
        let lp_train = model.log_prob(&train, None).unwrap();
        assert!(lp_train.iter().all(|v| v.is_finite()));
        assert!(model.outside_support(&train).unwrap().iter().all(|o| !o));
        let lowest = lp_train.iter().copied().fold(f64::INFINITY, f64::min);
        let p = model.config.preprocessing.as_ref().unwrap();
        let f0 = &p.features[0];
        let (_, max0) = f0.data_range.unwrap();
        // Far beyond the support, a negative mass, a NaN: -inf (never NaN), flagged.
        // Inside the margin, just below hi: a finite density, lower than every training event.
        let x = Matrix::from_vec(
            4,
            3,
            vec![
                1e6,
                0.0,
                1.0, //
                40.0,
                0.0,
                -0.5, //
                40.0,
                f32::NAN,
                1.0, //
                (max0 + 0.99 * (f0.hi - max0)) as f32,
                0.0,
                1.0,
            ],
        )
        .unwrap();
        let lp = model.log_prob(&x, None).unwrap();
        assert_eq!(
            model.outside_support(&x).unwrap(),
            vec![true, true, true, false]
        );
        assert!(lp[..3].iter().all(|v| *v == f64::NEG_INFINITY), "{lp:?}");
        assert!(lp[3].is_finite() && lp[3] < lowest, "{} vs {lowest}", lp[3]);
        // Sampling never leaves the support: a non-negative column stays non-negative.
        let s = model.sample_range(0, 2000, 5, None).unwrap();
        assert!((0..2000).all(|i| s.get(i, 0) >= 0.0 && s.get(i, 2) >= 0.0));
        assert_eq!(model.pinned(&s).all_features, 0);
    }

    /// A model saved by hepflow before ensembles existed (`tests/fixtures/model_before_ensembles`,
    /// written by `hepflow train` of commit c6bed36 with its first 20 events of `hepflow sample
    /// --seed 4`) loads, saves back byte for byte and samples the same events (to float precision).
    #[test]
    fn a_model_saved_before_ensembles_loads_saves_and_samples_unchanged() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model_before_ensembles");
        let model = Model::load(&dir).unwrap();
        assert_eq!(model.config.members, 1);
        assert!(model.others.is_empty());
        let out = std::env::temp_dir().join(format!("hepflow-ens-old-{}", std::process::id()));
        model.save(&out).unwrap();
        for f in ["model.json", "model.safetensors"] {
            assert_eq!(
                std::fs::read(dir.join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{f} changed"
            );
        }
        std::fs::remove_dir_all(&out).unwrap();
        let text = std::fs::read_to_string(dir.join("sample_seed4.csv")).unwrap();
        let want: Vec<f32> = text
            .lines()
            .skip(1)
            .flat_map(|l| l.split(',').map(|v| v.parse::<f32>().unwrap()))
            .collect();
        let got = model.generate(20, 4, None).unwrap();
        // The LU layers' inverse became one GEMM with a cached inverse after the fixture was
        // written, so the events agree to float precision rather than bit for bit.
        assert_eq!(got.as_slice().len(), want.len());
        for (g, w) in got.as_slice().iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    /// Two trained-looking members (random weights from different seeds) of the same config.
    fn two_members() -> (ModelConfig, Model, Model) {
        let (a, _) = model_and_data();
        let mut b = Model::new(a.config.clone(), 9);
        let mut rng = Rng::new(33);
        for l in b.flow.layers_mut() {
            randomize_params(l.as_mut(), 0.05, &mut rng);
        }
        (a.config.clone(), a, b)
    }

    #[test]
    fn ensemble_log_prob_is_the_log_of_the_members_mean_density() {
        let (config, a, b) = two_members();
        let (_, train) = model_and_data();
        let (la, lb) = (
            a.log_prob(&train, None).unwrap(),
            b.log_prob(&train, None).unwrap(),
        );
        assert!(la.iter().zip(&lb).any(|(x, y)| (x - y).abs() > 1e-2));
        let ens = Model::ensemble(config, vec![a, b]).unwrap();
        assert_eq!(ens.config.members, 2);
        let le = ens.log_prob(&train, None).unwrap();
        for i in 0..train.rows() {
            let want = (la[i].exp() + lb[i].exp()).ln() - 2f64.ln();
            assert!(
                (le[i] - want).abs() < 1e-4 * want.abs().max(1.0),
                "event {i}: {} vs {want}",
                le[i]
            );
        }
        // Outside the support the ensemble is -inf, like each member.
        let far = Matrix::from_vec(1, 3, vec![1e6, 0.0, 1.0]).unwrap();
        assert_eq!(ens.log_prob(&far, None).unwrap()[0], f64::NEG_INFINITY);
        // A save/load round trip keeps every member, under prefixed tensor names.
        let dir = std::env::temp_dir().join(format!("hepflow-ens-rt-{}", std::process::id()));
        ens.save(&dir).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let names = st.names();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("member1.layers.") || n.starts_with("member2.layers."))
        );
        assert_eq!(names.len(), 2 * ens.flow.named_tensors().len());
        let back = Model::load(&dir).unwrap();
        assert_eq!(back.log_prob(&train, None).unwrap(), le);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ensemble_samples_are_reproducible_across_threads_and_shards_and_come_from_each_member() {
        let (config, a, b) = two_members();
        let a_flow_params = a.flow.param_vector();
        let b_flow_params = b.flow.param_vector();
        let ens = Model::ensemble(config.clone(), vec![a, b]).unwrap();
        let n = 300;
        let pool = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| ens.generate(n, 7, None).unwrap());
        let three = pool(3).install(|| ens.generate(n, 7, None).unwrap());
        assert_eq!(one.as_slice(), three.as_slice());
        let head = ens.sample_range(0, 137, 7, None).unwrap();
        let tail = ens.sample_range(137, n - 137, 7, None).unwrap();
        assert_eq!(&one.as_slice()[..137 * 3], head.as_slice());
        assert_eq!(&one.as_slice()[137 * 3..], tail.as_slice());
        // Event i is member m's event i, m = ensemble_member(7, i, 2); both members draw.
        let member = |p: &[f32]| {
            let mut m = Model::new(config.clone(), 0);
            m.flow.set_param_vector(p);
            m
        };
        let (ma, mb) = (member(&a_flow_params), member(&b_flow_params));
        let (sa, sb) = (
            ma.generate(n, 7, None).unwrap(),
            mb.generate(n, 7, None).unwrap(),
        );
        let mut counts = [0usize; 2];
        for i in 0..n {
            let m = ensemble_member(7, i as u64, 2);
            counts[m] += 1;
            let want = if m == 0 { sa.row(i) } else { sb.row(i) };
            for (g, w) in one.row(i).iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "event {i}: {g} vs {w}"
                );
            }
        }
        assert!(counts[0] > n / 4 && counts[1] > n / 4, "{counts:?}");
    }

    #[test]
    fn a_damaged_member_count_is_a_clear_error() {
        let (config, a, b) = two_members();
        let ens = Model::ensemble(config, vec![a, b]).unwrap();
        let dir = std::env::temp_dir().join(format!("hepflow-ens-bad-{}", std::process::id()));
        ens.save(&dir).unwrap();
        let json = std::fs::read_to_string(dir.join("model.json")).unwrap();
        assert!(json.contains("\"members\": 2"));
        for (bad, expect) in [
            (
                "\"members\": 3",
                "2 members of this architecture, but model.json says 3",
            ),
            (
                "\"members\": 1",
                "2 members of this architecture, but model.json says 1",
            ),
            ("\"members\": 0", "members = 0 (must be between 1 and 16)"),
            ("\"members\": 17", "members = 17 (must be between 1 and 16)"),
        ] {
            std::fs::write(dir.join("model.json"), json.replace("\"members\": 2", bad)).unwrap();
            let e = Model::load(&dir).err().expect(bad).to_string();
            assert!(e.contains(expect), "{bad}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
