//! The options of a training run, their defaults and their validation, in one place.
//!
//! [`TrainOptions`] is the one configuration type: the command line (`hepflow train` flags), the
//! TOML file (`--config flow.toml`), the Rust API and the Python package (`hepflow.train(**kw)`)
//! all fill it, and [`TrainOptions::resolve`] turns it into checked [`TrainSettings`]. Every
//! error names the option and says what is allowed, before any data is read or any training
//! starts. The checks that need the data (feature count, split sizes, memory) are in
//! [`TrainSettings::check_data`].

use crate::distributions::made_mog::MAX_COMPONENTS;
use crate::presets::{Preset, PresetOptions};
use crate::train::{Schedule, TrainConfig};
use crate::transforms::continuous::MAX_ODE_STEPS;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An option with a value outside its allowed range, an unknown option, or an unreadable file.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// One option has a value that is not allowed.
    #[error("option `{option}` = {value}: {allowed}")]
    Invalid {
        /// The option's name (as in the TOML file and the Python keywords).
        option: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A configuration text (TOML file, Python keywords) could not be parsed.
    #[error("{source_name}: {message}")]
    Parse {
        /// Where the text came from (file name, "keyword arguments").
        source_name: String,
        /// The parser's message (names the unknown option or the wrong type).
        message: String,
    },
    /// The options do not fit the data (too few events, too little memory, ...).
    #[error("{0}")]
    Data(String),
}

fn invalid(option: &'static str, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        option,
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

/// Parses the value of a named choice (`key`) that only the flow-matching model takes.
fn flow_matching_choice<T: std::str::FromStr>(
    preset: Preset,
    key: &'static str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    if !preset.is_flow_matching() {
        return Err(invalid(key, value, "applies only to model = flow-matching"));
    }
    value.parse().map_err(|_| invalid(key, value, expected))
}

/// Largest hidden width of a conditioner.
pub const MAX_HIDDEN: usize = 1 << 16;
/// Largest number of spline bins.
pub const MAX_BINS: usize = 64;
/// Largest number of flow blocks.
pub const MAX_BLOCKS: usize = 1000;
/// Default maximum epochs of the flow-matching preset.
pub const FLOW_MATCHING_EPOCHS: usize = 1000;
/// Default early-stopping patience of the flow-matching preset.
pub const FLOW_MATCHING_PATIENCE: usize = 100;

/// Every option of a training run. `None` (or an empty list) means the default, which for some
/// options depends on the model (`residual`, `dropout`). Field names are the TOML keys and the
/// Python keywords; the command line spells them with dashes (`--batch-size`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    /// Input format: csv, npy, parquet, root or higgs (UCI HIGGS layout); default from the extension.
    pub format: Option<String>,
    /// Feature preset of the HIGGS layout: higgs18 or higgs28 (the CLI's `--preset`).
    pub features: Option<String>,
    /// Feature columns by name or 0-based index (default: every column except the condition,
    /// weight and `label` columns).
    pub columns: Option<Vec<String>>,
    /// Keep only rows where COLUMN equals VALUE, written `COLUMN=VALUE`.
    pub select: Vec<String>,
    /// Context columns of a conditional flow.
    pub condition: Vec<String>,
    /// Column holding per-event weights.
    pub weight: Option<String>,
    /// Value for `Jet_pt[k]` columns in events with fewer than k+1 elements (default: such
    /// events are dropped, and the count is printed).
    pub fill: Option<f32>,
    /// Architecture: realnvp, glow, pq-spline, rq-spline, maf, made-mog (default) or
    /// flow-matching.
    pub model: Option<String>,
    /// Number of flow blocks (default 10; made-mog: 0, MAF layers under its mixture base).
    pub blocks: Option<usize>,
    /// Hidden widths of the conditioners (default [128, 128]).
    pub hidden: Option<Vec<usize>>,
    /// Spline bins (default 8).
    pub bins: Option<usize>,
    /// Splines act on [-bound, bound] (default 5).
    pub bound: Option<f64>,
    /// Residual conditioners (default: true for the spline models).
    pub residual: Option<bool>,
    /// Dropout of the conditioners' hidden units in training (made-mog: of its MADE's; default
    /// 0.2 for pq-spline and made-mog, else 0).
    pub dropout: Option<f64>,
    /// Runge-Kutta steps of the flow-matching model's ODE (default 16; `hepflow sample
    /// --ode-steps` overrides it per run).
    pub ode_steps: Option<usize>,
    /// Gaussian components per feature of the made-mog model (default 10).
    pub components: Option<usize>,
    /// Hidden activation of the flow-matching velocity network: relu, silu or tanh (default
    /// relu).
    pub activation: Option<String>,
    /// Path times of the flow-matching loss: uniform or logit-normal (default uniform).
    pub time_sampling: Option<String>,
    /// Maximum epochs (default 200, 1000 for flow-matching; early stopping usually ends sooner).
    pub epochs: Option<usize>,
    /// Events per optimizer step (default 512).
    pub batch_size: Option<usize>,
    /// Peak learning rate of Adam (default 1e-3).
    pub lr: Option<f64>,
    /// Learning-rate schedule: cosine (default), plateau or constant.
    pub schedule: Option<String>,
    /// Early-stopping patience in epochs (default 15, 100 for flow-matching).
    pub patience: Option<usize>,
    /// Fraction of events held out for validation (default 0.2).
    pub val_fraction: Option<f64>,
    /// Decoupled weight decay of Adam (default 0).
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clipping threshold (default 5).
    pub clip_grad_norm: Option<f64>,
    /// Weight averaging (EMA) decay, 0 = off (default 0).
    pub ema_decay: Option<f64>,
    /// Largest min-max margin per side of the preprocessing, as a fraction of the range
    /// (default 0.25; hard edges get far less, see the preprocessing).
    pub margin: Option<f64>,
    /// Seed of the split, initialisation, shuffling and dropout (default 0).
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Ensemble members, 1-16 (default 1): train that many flows with seeds `seed`, `seed + 1`,
    /// ... on the same split and save one model whose density is their average.
    pub ensemble: Option<usize>,
}

/// The checked, complete settings of a training run (every default applied).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    /// Architecture.
    pub preset: Preset,
    /// Architecture size.
    pub preset_options: PresetOptions,
    /// Optimisation.
    pub train: TrainConfig,
    /// Fraction of events held out for validation.
    pub val_fraction: f64,
    /// Min-max margin of the preprocessing.
    pub margin: f64,
    /// Worker threads (`None` = all cores).
    pub threads: Option<usize>,
    /// Ensemble members (1 = a single flow).
    pub ensemble: usize,
}

/// Default validation fraction.
pub const DEFAULT_VAL_FRACTION: f64 = 0.2;
/// Default largest min-max margin per side (see [`crate::preprocess`]).
pub const DEFAULT_MARGIN: f64 = crate::preprocess::DEFAULT_MARGIN;

macro_rules! merge_fields {
    ($base:ident, $over:ident; $($f:ident),*) => {
        $( if $over.$f.is_some() { $base.$f = $over.$f.clone(); } )*
    };
}

impl TrainOptions {
    /// Parses a TOML configuration (unknown keys and wrong types are errors naming the key).
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_string(),
            message: e.message().to_string(),
        })
    }

    /// Reads a TOML configuration file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Options from a JSON object (the Python package passes its keyword arguments this way);
    /// `null` values mean "default".
    pub fn from_json(value: serde_json::Value, source_name: &str) -> Result<Self, ConfigError> {
        let value = match value {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .collect::<serde_json::Map<_, _>>(),
            ),
            other => other,
        };
        serde_json::from_value(value).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })
    }

    /// These options with every option that is set in `over` taken from `over` (command-line
    /// flags over a configuration file).
    pub fn merged(mut self, over: &TrainOptions) -> TrainOptions {
        merge_fields!(self, over; format, features, columns, weight, fill, model, blocks, hidden, bins,
            bound, residual, dropout, ode_steps, components, activation, time_sampling, epochs, batch_size, lr, schedule,
            patience, val_fraction,
            weight_decay, clip_grad_norm, ema_decay, margin, seed, threads, ensemble);
        if !over.select.is_empty() {
            self.select = over.select.clone();
        }
        if !over.condition.is_empty() {
            self.condition = over.condition.clone();
        }
        self
    }

    /// The architecture named by `model` (default made-mog).
    pub fn preset(&self) -> Result<Preset, ConfigError> {
        match &self.model {
            None => Ok(Preset::DEFAULT),
            Some(m) => m.parse().map_err(|_| {
                invalid(
                    "model",
                    m,
                    "expected one of realnvp, glow, pq-spline, rq-spline, maf, made-mog, flow-matching",
                )
            }),
        }
    }

    /// Applies the defaults and checks every option's range and the options' combination.
    pub fn resolve(&self) -> Result<TrainSettings, ConfigError> {
        self.check_columns()?;
        let preset = self.preset()?;
        let preset_options = self.preset_options(preset)?;
        let train = self.train_config(preset)?;
        let val_fraction = self.val_fraction.unwrap_or(DEFAULT_VAL_FRACTION);
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(invalid(
                "val_fraction",
                val_fraction,
                "must be strictly between 0 and 1",
            ));
        }
        let margin = self.margin.unwrap_or(DEFAULT_MARGIN);
        if !(0.0..=1.0).contains(&margin) {
            return Err(invalid("margin", margin, "must be between 0 and 1"));
        }
        if let Some(f) = self.fill
            && !f.is_finite()
        {
            return Err(invalid("fill", f, "must be a finite number"));
        }
        let ensemble = self.ensemble.unwrap_or(1);
        if !(1..=crate::model::MAX_MEMBERS).contains(&ensemble) {
            return Err(invalid(
                "ensemble",
                ensemble,
                &format!("must be between 1 and {}", crate::model::MAX_MEMBERS),
            ));
        }
        if let Some(t) = self.threads
            && t == 0
        {
            return Err(invalid("threads", t, "must be at least 1"));
        }
        Ok(TrainSettings {
            preset,
            preset_options,
            train,
            val_fraction,
            margin,
            threads: self.threads,
            ensemble,
        })
    }

    /// Feature, condition and weight columns must be distinct.
    fn check_columns(&self) -> Result<(), ConfigError> {
        if self.features.is_some() && self.columns.is_some() {
            return Err(invalid(
                "columns",
                self.columns.as_deref().unwrap_or_default().join(","),
                "give either a feature preset or columns, not both",
            ));
        }
        let features = self.columns.as_deref().unwrap_or_default();
        if let Some(d) = first_duplicate(features) {
            return Err(invalid(
                "columns",
                features.join(","),
                &format!("column '{d}' is listed twice"),
            ));
        }
        if let Some(d) = first_duplicate(&self.condition) {
            return Err(invalid(
                "condition",
                self.condition.join(","),
                &format!("column '{d}' is listed twice"),
            ));
        }
        if let Some(c) = self.condition.iter().find(|c| features.contains(c)) {
            return Err(invalid(
                "condition",
                self.condition.join(","),
                &format!(
                    "column '{c}' is also a feature column; a column is either modelled or conditioned on"
                ),
            ));
        }
        if let Some(w) = &self.weight {
            if features.contains(w) || self.condition.contains(w) {
                return Err(invalid(
                    "weight",
                    w,
                    "the weight column cannot also be a feature or condition column",
                ));
            }
            if w.trim().is_empty() {
                return Err(invalid("weight", "\"\"", "must name a column"));
            }
        }
        Ok(())
    }

    /// The architecture options that are set, by name (value as text).
    fn size_options(&self) -> [(&'static str, Option<String>); 5] {
        [
            ("blocks", self.blocks.map(|v| v.to_string())),
            ("bins", self.bins.map(|v| v.to_string())),
            ("bound", self.bound.map(|v| v.to_string())),
            ("residual", self.residual.map(|v| v.to_string())),
            ("dropout", self.dropout.map(|v| v.to_string())),
        ]
    }

    fn preset_options(&self, preset: Preset) -> Result<PresetOptions, ConfigError> {
        let mut o = preset.default_options();
        if let Some(b) = self.blocks {
            // made-mog is a density model without transforms; blocks adds MAF layers under it.
            let lowest = usize::from(preset != Preset::MadeMog);
            if !(lowest..=MAX_BLOCKS).contains(&b) {
                return Err(invalid(
                    "blocks",
                    b,
                    &format!("must be between {lowest} and 1000"),
                ));
            }
            o.blocks = b;
        }
        if let Some(k) = self.components {
            if preset != Preset::MadeMog {
                return Err(invalid("components", k, "applies only to model = made-mog"));
            }
            if !(1..=MAX_COMPONENTS).contains(&k) {
                return Err(invalid("components", k, "must be between 1 and 64"));
            }
            o.components = k;
        }
        if let Some(h) = &self.hidden {
            if h.is_empty() || h.iter().any(|w| *w == 0 || *w > MAX_HIDDEN) {
                return Err(invalid(
                    "hidden",
                    format!("{h:?}"),
                    "needs at least one width, each between 1 and 65536",
                ));
            }
            o.hidden = h.clone();
        }
        if let Some(b) = self.bins {
            if !(1..=MAX_BINS).contains(&b) {
                return Err(invalid("bins", b, "must be between 1 and 64"));
            }
            o.bins = b;
        }
        if let Some(b) = self.bound {
            if !(b.is_finite() && b > 0.0 && b <= 1e3) {
                return Err(invalid("bound", b, "must be finite, > 0 and <= 1000"));
            }
            o.bound = b;
        }
        if let Some(r) = self.residual {
            o.residual = r;
        }
        if let Some(p) = self.dropout {
            if !(0.0..0.9).contains(&p) {
                return Err(invalid("dropout", p, "must be in [0, 0.9)"));
            }
            o.dropout = p;
        }
        if let Some(k) = self.ode_steps {
            if !preset.is_flow_matching() {
                return Err(invalid(
                    "ode_steps",
                    k,
                    "applies only to model = flow-matching",
                ));
            }
            if !(1..=MAX_ODE_STEPS).contains(&k) {
                return Err(invalid("ode_steps", k, "must be between 1 and 100000"));
            }
            o.ode_steps = k;
        }
        if let Some(a) = &self.activation {
            o.activation =
                flow_matching_choice(preset, "activation", a, "expected relu, silu or tanh")?;
        }
        // Options a model has no use for are refused rather than silently ignored.
        let unused: &[&str] = match preset {
            // One MADE (its dropout applies to the MADE's hidden units) and optionally MAF layers:
            // no splines or residual nets.
            Preset::MadeMog => &["bins", "bound", "residual"],
            // One velocity network: no blocks, splines or dropout (its exact divergence assumes
            // the evaluation network).
            Preset::FlowMatching => &["blocks", "bins", "bound", "dropout"],
            _ => &[],
        };
        if let Some((name, v)) = self
            .size_options()
            .into_iter()
            .find(|(name, v)| v.is_some() && unused.contains(name))
        {
            let hint = match preset {
                Preset::MadeMog => "one MADE network; set hidden, components, dropout and blocks",
                _ => "one velocity network; set hidden, residual and ode_steps",
            };
            return Err(invalid(
                name,
                v.unwrap_or_default(),
                &format!("does not apply to model = {preset} ({hint})"),
            ));
        }
        Ok(o)
    }

    fn train_config(&self, preset: Preset) -> Result<TrainConfig, ConfigError> {
        let mut c = TrainConfig::default();
        if preset.is_flow_matching() {
            // Measured on HIGGS (docs/FIDELITY.md): the velocity field keeps improving for
            // ~1000 epochs (~20k steps on 10k events); an epoch costs one network pass per event.
            c.epochs = FLOW_MATCHING_EPOCHS;
            c.patience = FLOW_MATCHING_PATIENCE;
        }
        if let Some(v) = self.epochs {
            if v == 0 || v > 1_000_000 {
                return Err(invalid("epochs", v, "must be between 1 and 1000000"));
            }
            c.epochs = v;
        }
        if let Some(v) = self.batch_size {
            if v < 2 {
                return Err(invalid("batch_size", v, "must be at least 2"));
            }
            c.batch_size = v;
        }
        if let Some(v) = self.lr {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(invalid("lr", v, "must be finite, > 0 and <= 1"));
            }
            c.lr = v;
        }
        if let Some(s) = &self.schedule {
            c.schedule = Schedule::from_name(s)
                .ok_or_else(|| invalid("schedule", s, "expected cosine, plateau or constant"))?;
        }
        if let Some(v) = self.patience {
            if v == 0 {
                return Err(invalid("patience", v, "must be at least 1"));
            }
            c.patience = v;
        }
        if let Some(v) = self.weight_decay {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(invalid("weight_decay", v, "must be in [0, 1)"));
            }
            c.adam.weight_decay = v;
        }
        if let Some(v) = self.clip_grad_norm {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid("clip_grad_norm", v, "must be finite and > 0"));
            }
            c.clip_grad_norm = v;
        }
        if let Some(v) = self.ema_decay {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid("ema_decay", v, "must be in [0, 1) (0 = off)"));
            }
            c.ema_decay = v;
        }
        if let Some(v) = &self.time_sampling {
            c.time_sampling = flow_matching_choice(
                preset,
                "time_sampling",
                v,
                "expected uniform or logit-normal",
            )?;
        }
        c.seed = self.seed.unwrap_or(0);
        Ok(c)
    }

    /// Every option with its default and a one-line description, in documentation order (for
    /// `--help` texts, the Python docstrings and the README).
    pub fn documentation() -> Vec<(&'static str, &'static str, &'static str)> {
        vec![
            (
                "format",
                "from the extension",
                "csv, npy, parquet, root or higgs",
            ),
            (
                "features",
                "none",
                "HIGGS feature preset: higgs18 or higgs28",
            ),
            (
                "columns",
                "all but condition/weight/label",
                "feature columns (names or 0-based indices)",
            ),
            ("select", "[]", "keep rows where COLUMN=VALUE"),
            ("condition", "[]", "context columns (conditional flow)"),
            ("weight", "none", "per-event weight column"),
            (
                "fill",
                "drop such events",
                "value for Jet_pt[k] in events with fewer than k+1 jets",
            ),
            (
                "model",
                "made-mog",
                "realnvp, glow, pq-spline, rq-spline, maf, made-mog or flow-matching",
            ),
            (
                "blocks",
                "10 (made-mog: 0)",
                "flow blocks (1-1000; made-mog: MAF layers under the mixture, 0-1000)",
            ),
            (
                "hidden",
                "[128, 128]",
                "conditioner hidden widths (1-65536 each)",
            ),
            ("bins", "8", "spline bins (1-64)"),
            ("bound", "5.0", "splines act on [-bound, bound]"),
            ("residual", "true for splines", "residual conditioners"),
            (
                "dropout",
                "0.2 for pq-spline and made-mog, else 0",
                "conditioner (made-mog: MADE) dropout in [0, 0.9), training only",
            ),
            (
                "ode_steps",
                "16",
                "RK4 steps of the flow-matching ODE (1-100000)",
            ),
            (
                "components",
                "10",
                "Gaussian components per feature of made-mog (1-64)",
            ),
            (
                "activation",
                "relu",
                "flow-matching velocity network: relu, silu or tanh",
            ),
            (
                "time_sampling",
                "uniform",
                "flow-matching path times: uniform or logit-normal",
            ),
            (
                "epochs",
                "200 (1000 for flow-matching)",
                "maximum epochs (early stopping ends sooner)",
            ),
            ("batch_size", "512", "events per optimizer step"),
            ("lr", "0.001", "peak learning rate"),
            ("schedule", "cosine", "cosine, plateau or constant"),
            (
                "patience",
                "15 (100 for flow-matching)",
                "early-stopping patience in epochs",
            ),
            ("val_fraction", "0.2", "fraction held out for validation"),
            ("weight_decay", "0.0", "decoupled weight decay"),
            (
                "clip_grad_norm",
                "5.0",
                "gradient-norm clipping threshold (> 0)",
            ),
            ("ema_decay", "0.0", "weight averaging decay (0 = off)"),
            (
                "margin",
                "0.5",
                "largest min-max margin per side (hard edges get far less)",
            ),
            (
                "seed",
                "0",
                "seed of split, initialisation, shuffling and dropout",
            ),
            ("threads", "all cores", "worker threads"),
            (
                "ensemble",
                "1",
                "ensemble members (1-16), seeds seed..seed+K-1, density averaged",
            ),
        ]
    }
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| n.as_str())
}

impl TrainSettings {
    /// Checks the settings against the data: at least 2 features, enough events for a
    /// training and a validation split, and an architecture whose training fits in memory.
    pub fn check_data(
        &self,
        n_events: usize,
        dim: usize,
        context_dim: usize,
    ) -> Result<(), ConfigError> {
        if dim < 2 {
            return Err(ConfigError::Data(format!(
                "{dim} feature column(s) selected: hepflow's flows need at least 2 features (their coupling and autoregressive layers transform some features conditioned on others); give more --columns"
            )));
        }
        let n_val = ((n_events as f64 * self.val_fraction).round() as usize).max(1);
        let n_train = n_events.saturating_sub(n_val);
        if n_events < 10 || n_train < 2 {
            return Err(ConfigError::Data(format!(
                "need at least 10 events (and 2 after holding out val_fraction = {} for validation) to train, got {n_events}",
                self.val_fraction
            )));
        }
        let need = estimate_training_bytes(self, dim, context_dim);
        let have = available_memory_bytes();
        if need > have {
            return Err(ConfigError::Data(format!(
                "the requested architecture ({} blocks, hidden {:?}, batch {}) needs about {:.1} GB to train, more than the {:.1} GB of memory available; use smaller hidden widths, fewer blocks or a smaller batch",
                self.preset_options.blocks,
                self.preset_options.hidden,
                self.train.batch_size,
                need / 1e9,
                have / 1e9
            )));
        }
        Ok(())
    }
}

/// Trainable parameters of one MLP conditioner (weights and biases of every dense layer).
fn mlp_params(input: usize, hidden: &[usize], output: usize) -> f64 {
    let mut prev = input as f64;
    let mut total = 0.0;
    for &h in hidden.iter().chain(std::iter::once(&output)) {
        total += prev * h as f64 + h as f64;
        prev = h as f64;
    }
    total
}

/// An upper estimate of the memory a training run needs: about 12 copies of the parameters
/// (parameters, gradients per chunk and reduced, Adam moments, best, EMA and roll-back copies,
/// checkpoint bytes) plus the activations of one batch through every conditioner.
pub fn estimate_training_bytes(s: &TrainSettings, dim: usize, context_dim: usize) -> f64 {
    let o = &s.preset_options;
    let half = dim as f64 / 2.0;
    let (cond_in, cond_out) = match s.preset {
        Preset::Realnvp | Preset::Glow => (half.floor() + context_dim as f64, 2.0 * half.ceil()),
        Preset::PqSpline | Preset::RqSpline => (
            half.floor() + context_dim as f64,
            half.ceil() * (3 * o.bins + 1) as f64,
        ),
        Preset::Maf => (dim as f64 + context_dim as f64, 2.0 * dim as f64),
        Preset::MadeMog => (
            dim as f64 + context_dim as f64,
            (3 * o.components * dim) as f64,
        ),
        Preset::FlowMatching => (
            (dim + context_dim + 1 + 2 * crate::presets::TIME_FREQUENCIES) as f64,
            dim as f64,
        ),
    };
    let per_block = mlp_params(cond_in as usize, &o.hidden, cond_out as usize)
        + (dim * dim) as f64
        + 4.0 * dim as f64;
    // made-mog: its MADE base on top of `blocks` MAF layers (estimated as large as the base).
    let nets = o.blocks as f64 + f64::from(u8::from(s.preset == Preset::MadeMog));
    let params = per_block * nets;
    let chunks = (s.train.batch_size as f64 / s.train.chunk_rows as f64).ceil();
    let param_bytes = 4.0 * params * (10.0 + chunks);
    let width: f64 = o.hidden.iter().map(|h| *h as f64).sum::<f64>() + cond_out + 2.0 * dim as f64;
    let act_bytes = 4.0 * 4.0 * s.train.batch_size as f64 * width * nets;
    param_bytes + act_bytes
}

/// Memory available to this process: `MemAvailable` of /proc/meminfo where there is one, else
/// 16 GB.
pub fn available_memory_bytes() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb * 1024.0)
        .unwrap_or(16e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(toml: &str) -> Result<TrainSettings, ConfigError> {
        TrainOptions::from_toml(toml, "test.toml")?.resolve()
    }

    #[test]
    fn defaults_resolve_to_the_default_preset() {
        let s = TrainOptions::default().resolve().unwrap();
        assert_eq!(s.preset, Preset::DEFAULT);
        assert_eq!(s.preset_options, Preset::DEFAULT.default_options());
        assert_eq!(s.train, TrainConfig::default());
        assert_eq!((s.val_fraction, s.margin), (0.2, DEFAULT_MARGIN));
    }

    #[test]
    fn every_bad_value_names_its_option() {
        let cases = [
            ("model = \"pq-spline\"\nbound = 0.0", "bound"),
            ("model = \"pq-spline\"\nbound = -1.0", "bound"),
            ("hidden = [0]", "hidden"),
            ("hidden = []", "hidden"),
            ("model = \"pq-spline\"\nhidden = [100000, 100000]", "hidden"),
            ("epochs = 0", "epochs"),
            ("clip_grad_norm = -1.0", "clip_grad_norm"),
            ("model = \"pq-spline\"\nbins = 0", "bins"),
            ("model = \"pq-spline\"\nbins = 65", "bins"),
            ("model = \"pq-spline\"\nblocks = 0", "blocks"),
            ("model = \"pq-spline\"\ndropout = 0.95", "dropout"),
            ("lr = 0.0", "lr"),
            ("batch_size = 1", "batch_size"),
            ("schedule = \"linear\"", "schedule"),
            ("patience = 0", "patience"),
            ("val_fraction = 1.0", "val_fraction"),
            ("margin = -0.1", "margin"),
            ("ema_decay = 1.0", "ema_decay"),
            ("weight_decay = -1.0", "weight_decay"),
            ("threads = 0", "threads"),
            ("ensemble = 0", "ensemble"),
            ("ensemble = 17", "ensemble"),
            ("model = \"nsf\"", "model"),
            ("ode_steps = 8", "ode_steps"),
            ("model = \"flow-matching\"\node_steps = 0", "ode_steps"),
            ("model = \"flow-matching\"\nbins = 4", "bins"),
            ("activation = \"silu\"", "activation"),
            ("time_sampling = \"logit-normal\"", "time_sampling"),
            (
                "model = \"flow-matching\"\ntime_sampling = \"beta\"",
                "time_sampling",
            ),
            (
                "model = \"flow-matching\"\nactivation = \"gelu\"",
                "activation",
            ),
            ("model = \"flow-matching\"\ndropout = 0.1", "dropout"),
            ("columns = [\"a\", \"a\"]", "columns"),
            ("columns = [\"a\"]\ncondition = [\"a\"]", "condition"),
            ("columns = [\"a\", \"w\"]\nweight = \"w\"", "weight"),
        ];
        for (text, option) in cases {
            let e = opts(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { option: o, .. } if *o == option),
                "{text}: {e}"
            );
            assert!(e.to_string().contains(&format!("`{option}`")), "{e}");
        }
    }

    #[test]
    fn made_mog_takes_components_and_zero_blocks_and_refuses_what_it_lacks() {
        let s = opts("model = \"made-mog\"").unwrap();
        assert_eq!(s.preset, Preset::MadeMog);
        let o = &s.preset_options;
        assert_eq!(
            (o.blocks, o.components),
            (0, crate::presets::DEFAULT_COMPONENTS)
        );
        assert!(s.check_data(1000, 18, 2).is_ok());
        let s = opts("model = \"made-mog\"\ncomponents = 3\nblocks = 2").unwrap();
        assert_eq!(
            (s.preset_options.components, s.preset_options.blocks),
            (3, 2)
        );
        // Dropout applies to the MADE's hidden units and reaches the base distribution.
        let s = opts("model = \"made-mog\"\ndropout = 0.1").unwrap();
        let base = crate::presets::build_base(s.preset, 18, &s.preset_options);
        match base {
            crate::distributions::BaseSpec::MadeMog(c) => assert_eq!(c.dropout, 0.1),
            other => panic!("{other:?}"),
        }
        for (text, option) in [
            ("model = \"made-mog\"\ncomponents = 0", "components"),
            ("model = \"made-mog\"\ncomponents = 65", "components"),
            ("model = \"made-mog\"\ndropout = 0.95", "dropout"),
            ("model = \"made-mog\"\nresidual = true", "residual"),
            ("model = \"made-mog\"\nbins = 4", "bins"),
            ("model = \"pq-spline\"\ncomponents = 4", "components"),
            ("model = \"pq-spline\"\nblocks = 0", "blocks"),
        ] {
            match opts(text) {
                Err(ConfigError::Invalid { option: o, .. }) => assert_eq!(o, option, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn flow_matching_has_its_own_training_defaults_and_ode_steps() {
        let s = opts("model = \"flow-matching\"").unwrap();
        assert_eq!(s.preset, Preset::FlowMatching);
        assert_eq!(
            (s.train.epochs, s.train.patience),
            (FLOW_MATCHING_EPOCHS, FLOW_MATCHING_PATIENCE)
        );
        assert_eq!(
            s.preset_options.ode_steps,
            crate::presets::DEFAULT_ODE_STEPS
        );
        let s = opts("model = \"flow-matching\"\node_steps = 8\nepochs = 5").unwrap();
        assert_eq!((s.preset_options.ode_steps, s.train.epochs), (8, 5));
        let s = opts("model = \"flow-matching\"\nactivation = \"tanh\"").unwrap();
        assert_eq!(s.preset_options.activation, crate::nn::Activation::Tanh);
        assert!(s.check_data(1000, 18, 2).is_ok());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let e = opts("epoch = 3").unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("epoch"), "{e}");
        let e = opts("epochs = \"many\"").unwrap_err().to_string();
        assert!(e.contains("test.toml"), "{e}");
        let e = TrainOptions::from_json(serde_json::json!({"epoch": 3}), "keyword arguments")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("epoch") && e.contains("keyword arguments"),
            "{e}"
        );
    }

    #[test]
    fn json_nulls_are_defaults_and_merging_prefers_the_override() {
        let j = TrainOptions::from_json(
            serde_json::json!({"epochs": 7, "lr": null, "hidden": [16, 16]}),
            "kw",
        )
        .unwrap();
        assert_eq!(j.epochs, Some(7));
        assert_eq!(j.lr, None);
        let file = TrainOptions::from_toml(
            "model = \"pq-spline\"\nepochs = 3\nlr = 0.01\nbins = 4",
            "f",
        )
        .unwrap();
        let m = file.merged(&j);
        assert_eq!((m.epochs, m.lr, m.bins), (Some(7), Some(0.01), Some(4)));
        assert_eq!(m.hidden, Some(vec![16, 16]));
        let s = m.resolve().unwrap();
        assert_eq!(s.train.epochs, 7);
        assert_eq!(s.preset_options.bins, 4);
    }

    #[test]
    fn data_checks_refuse_one_feature_tiny_data_and_huge_models() {
        let s = TrainOptions::default().resolve().unwrap();
        assert!(s.check_data(1000, 18, 0).is_ok());
        let e = s.check_data(1000, 1, 0).unwrap_err().to_string();
        assert!(e.contains("at least 2 features"), "{e}");
        assert!(s.check_data(5, 3, 0).is_err());
        let big = opts("hidden = [60000, 60000]").unwrap();
        let e = big.check_data(1000, 18, 0).unwrap_err().to_string();
        assert!(e.contains("GB"), "{e}");
        // The estimate grows with the architecture.
        let small = opts("hidden = [16]").unwrap();
        assert!(estimate_training_bytes(&small, 18, 0) < estimate_training_bytes(&s, 18, 0));
    }

    #[test]
    fn readme_toml_examples_are_valid_configurations() {
        let readme = include_str!("../README.md");
        let mut found = 0;
        for block in readme.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let o = TrainOptions::from_toml(text, "README.md").unwrap();
            o.resolve().unwrap();
            found += 1;
        }
        assert!(found >= 1, "the README has no TOML example");
    }

    #[test]
    fn documentation_lists_every_option() {
        let doc: Vec<&str> = TrainOptions::documentation().iter().map(|d| d.0).collect();
        let json = serde_json::to_value(TrainOptions::default()).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(doc.len(), keys.len());
        for k in keys {
            assert!(doc.contains(&k.as_str()), "{k} is not documented");
        }
    }
}
