//! The training job: split, fit preprocessing on the training split, train with early stopping,
//! checkpoint every epoch, and write `model.json`, `model.safetensors`, `history.csv` and
//! `training.png` atomically.

use super::fnv1a64;
use crate::config::{ConfigError, TrainSettings};
use crate::dataset::{Dataset, effective_sample_size};
use crate::engine::{Matrix, Rng};
use crate::evaluate::plot_training_curves;
use crate::flow::Flow;
use crate::flow_matching::FlowMatchingObjective;
use crate::fsutil::atomic_write;
use crate::model::{
    ContextColumn, FORMAT_VERSION, Model, ModelConfig, ModelError, encode_context,
    flow_weights_bytes,
};
use crate::preprocess::Preprocessor;
use crate::presets::{Preset, PresetOptions, build_base, build_specs};
use crate::train::{
    EpochEnd, Events, GradientEngine, Objective, TrainConfig, TrainError, TrainObserver,
    TrainState, fit_objective, initial_state, normalised_weights, weighted_mean_nll,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a training run needs.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Feature names (columns of `features`).
    pub feature_names: Vec<String>,
    /// Events x features, physical units.
    pub features: Matrix<f32>,
    /// Context column names (empty = unconditional).
    pub context_names: Vec<String>,
    /// Raw context values, events x context columns.
    pub context: Option<Matrix<f32>>,
    /// Per-event weights (`None` = unweighted); negative weights are allowed.
    pub weights: Option<Vec<f32>>,
    /// Architecture.
    pub preset: Preset,
    /// Architecture size.
    pub preset_options: PresetOptions,
    /// Optimisation.
    pub train: TrainConfig,
    /// Fraction of events held out for validation / early stopping.
    pub val_fraction: f64,
    /// Min-max margin of the preprocessing (fraction of the range added on each side).
    pub margin: f64,
    /// Indices of discrete features (dequantised); `None` = detect columns with <= 8 distinct values.
    pub discrete: Option<Vec<usize>>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint` when it exists.
    pub resume: bool,
    /// Free-form description of the data source for the metadata (file name, selection).
    pub data_description: String,
    /// Ensemble members (1 = a single flow): member `k` is trained with seed `seed + k` on the
    /// split of `seed`, into `out_dir/member{k+1}` (see [`train_model`]).
    pub ensemble: usize,
}

impl TrainJob {
    /// The job of training with `settings` on `data`, writing to `out_dir`; checks the settings
    /// against the data (feature count, split sizes, memory) before anything is trained.
    pub fn new(
        settings: &TrainSettings,
        data: Dataset,
        out_dir: PathBuf,
        resume: bool,
    ) -> Result<TrainJob, ConfigError> {
        let context_dim = data.context.as_ref().map_or(0, |c| c.cols());
        settings.check_data(data.features.rows(), data.features.cols(), context_dim)?;
        Ok(TrainJob {
            feature_names: data.feature_names,
            features: data.features,
            context_names: data.context_names,
            context: data.context,
            weights: data.weights,
            preset: settings.preset,
            preset_options: settings.preset_options.clone(),
            train: settings.train.clone(),
            val_fraction: settings.val_fraction,
            margin: settings.margin,
            discrete: None,
            out_dir,
            resume,
            data_description: data.description,
            ensemble: settings.ensemble,
        })
    }
}

/// What a finished training run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Best validation NLL, nats per event, original units.
    pub best_val_nll: f64,
    /// Epoch of the best model.
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs_run: usize,
    /// Whether early stopping ended the run.
    pub early_stopped: bool,
    /// Training and validation events.
    pub n_train: usize,
    /// Validation events.
    pub n_val: usize,
    /// Roll-backs after non-finite losses.
    pub rollbacks: usize,
    /// Trainable parameters.
    pub num_params: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Effective sample size `(sum w)^2 / sum w^2` of the weighted training split (`None` when
    /// unweighted).
    pub effective_sample_size: Option<f64>,
    /// Training batches whose loss spiked far above the epoch's median (see
    /// [`crate::train::SPIKE_NATS`]), summed over epochs.
    pub spikes: usize,
}

/// Deterministic train/validation split of row indices by `seed`.
pub fn split_indices(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::stream(seed, 0xDA7A).shuffle(&mut idx);
    let n_val = ((n as f64 * val_fraction).round() as usize).clamp(1.min(n), n.saturating_sub(1));
    let val = idx[..n_val].to_vec();
    let train = idx[n_val..].to_vec();
    (train, val)
}

/// Rows `idx` of `m`.
pub fn take_rows(m: &Matrix<f32>, idx: &[usize]) -> Matrix<f32> {
    let mut out = Matrix::zeros(idx.len(), m.cols());
    for (r, &i) in idx.iter().enumerate() {
        out.row_mut(r).copy_from_slice(m.row(i));
    }
    out
}

fn detect_discrete(x: &Matrix<f32>) -> Vec<usize> {
    (0..x.cols())
        .filter(|&j| {
            let mut vals: Vec<u32> = Vec::new();
            for i in 0..x.rows() {
                let b = x.get(i, j).to_bits();
                if !vals.contains(&b) {
                    vals.push(b);
                    if vals.len() > 8 {
                        return false;
                    }
                }
            }
            vals.len() > 1
        })
        .collect()
}

/// The checkpoint written after every epoch (`out_dir/checkpoint/`).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    state: TrainState,
    data_checksum: String,
    config_checksum: String,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

struct CheckpointWriter<'a> {
    dir: PathBuf,
    data_checksum: String,
    config_checksum: String,
    inner: &'a mut dyn TrainObserver,
}

impl TrainObserver for CheckpointWriter<'_> {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64) {
        self.inner.on_step(epoch, step, steps, loss);
    }
    fn on_rollback(&mut self, epoch: usize, new_lr: f64) {
        self.inner.on_rollback(epoch, new_lr);
    }
    fn on_epoch_end(&mut self, flow: &Flow<f32>, end: &EpochEnd<'_>) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        // Weights of the *current* flow (not the best): resuming continues from here.
        let bytes = flow_weights_bytes(flow)?;
        let ck = Checkpoint {
            state: end.state.clone(),
            data_checksum: self.data_checksum.clone(),
            config_checksum: self.config_checksum.clone(),
        };
        let json = serde_json::to_vec(&ck).map_err(|e| e.to_string())?;
        atomic_write(&self.dir.join("weights.safetensors"), &bytes).map_err(|e| e.to_string())?;
        atomic_write(&self.dir.join("state.json"), &json).map_err(|e| e.to_string())?;
        self.inner.on_epoch_end(flow, end)
    }
}

/// Trains a model as described by `job`, reporting progress to `observer`.
///
/// With `job.ensemble = K > 1`, trains `K` members one after the other, member `k` (0-based) with
/// seed `seed + k` but the split, preprocessing and architecture of `seed`, each a complete run of
/// its own in `out_dir/member{k+1}` (checkpoint, history, `--resume`), then writes the ensemble
/// (see [`Model`]) to `out_dir`. Its summary gives the ensemble's validation NLL, the members'
/// total parameters and seconds, and the longest member run's epochs.
pub fn train_model(
    job: &TrainJob,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary, ModelError> {
    if job.ensemble <= 1 {
        return train_single(job, job.train.seed, observer).map(|(_, s)| s);
    }
    let t0 = std::time::Instant::now();
    let base = job.train.seed;
    let mut members = Vec::with_capacity(job.ensemble);
    let mut summaries = Vec::with_capacity(job.ensemble);
    for k in 0..job.ensemble {
        let mut member = job.clone();
        member.ensemble = 1;
        member.train.seed = base.wrapping_add(k as u64);
        member.out_dir = job.out_dir.join(format!("member{}", k + 1));
        let (model, summary) = train_single(&member, base, observer)?;
        members.push(model);
        summaries.push(summary);
    }
    let mut config = members
        .first()
        .map(|m| m.config.clone())
        .ok_or_else(|| ModelError::Input("an ensemble needs at least one member".into()))?;
    // The members' validation NLL, as each run reported it, and the ensemble's on the same
    // validation events (physical units, events outside the support skipped).
    let (_, va_idx) = split_indices(job.features.rows(), job.val_fraction, base);
    let x_val = take_rows(&job.features, &va_idx);
    let c_val = match &job.context {
        Some(c) => Some(encode_context(&config.context, &take_rows(c, &va_idx))?),
        None => None,
    };
    // Weighted mean over the events kept (the weights need no normalisation).
    let w_val: Option<Vec<f32>> = job.weights.as_deref().map(|w| {
        va_idx
            .iter()
            .map(|&i| w.get(i).copied().unwrap_or(0.0))
            .collect()
    });
    let mut model_cfg = config.clone();
    model_cfg.training = serde_json::Value::Null;
    let mut model = Model::ensemble(model_cfg, members)?;
    let lp = model.log_prob(&x_val, c_val.as_ref())?;
    let (mut sum, mut wsum, mut skipped) = (0.0, 0.0, 0usize);
    for (i, v) in lp.iter().enumerate() {
        if v.is_finite() {
            let w = w_val.as_ref().map_or(1.0, |w| w[i] as f64);
            sum -= w * v;
            wsum += w;
        } else {
            skipped += 1;
        }
    }
    let ensemble_val_nll = if wsum != 0.0 { sum / wsum } else { f64::NAN };
    if let Some(obj) = config.training.as_object_mut() {
        obj.insert("ensemble".into(), job.ensemble.into());
        obj.insert(
            "members_best_val_nll".into(),
            serde_json::json!(summaries.iter().map(|s| s.best_val_nll).collect::<Vec<_>>()),
        );
        obj.insert(
            "ensemble_val_nll".into(),
            serde_json::json!(ensemble_val_nll),
        );
        obj.insert("ensemble_val_skipped".into(), skipped.into());
    }
    config.members = job.ensemble;
    model.config = config;
    model.save(&job.out_dir)?;
    let first = summaries
        .first()
        .cloned()
        .ok_or_else(|| ModelError::Input("an ensemble needs at least one member".into()))?;
    Ok(TrainSummary {
        best_val_nll: ensemble_val_nll,
        best_epoch: summaries.iter().map(|s| s.best_epoch).max().unwrap_or(0),
        epochs_run: summaries.iter().map(|s| s.epochs_run).max().unwrap_or(0),
        early_stopped: summaries.iter().all(|s| s.early_stopped),
        rollbacks: summaries.iter().map(|s| s.rollbacks).sum(),
        num_params: model.num_params(),
        seconds: t0.elapsed().as_secs_f64(),
        spikes: summaries.iter().map(|s| s.spikes).sum(),
        ..first
    })
}

/// One training run: split, preprocessing and architecture from `base_seed`, initialisation,
/// shuffling and dropout from `job.train.seed`. Returns the saved model.
fn train_single(
    job: &TrainJob,
    base_seed: u64,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainSummary), ModelError> {
    let t0 = std::time::Instant::now();
    let n = job.features.rows();
    let d = job.features.cols();
    if n < 10 {
        return Err(ModelError::Input(format!(
            "need at least 10 events to train, got {n}"
        )));
    }
    let (tr_idx, va_idx) = split_indices(n, job.val_fraction, base_seed);
    let x_train = take_rows(&job.features, &tr_idx);
    let x_val = take_rows(&job.features, &va_idx);
    let (w_train, w_val, ess) = split_weights(job.weights.as_deref(), &tr_idx, &va_idx)?;
    let discrete = job
        .discrete
        .clone()
        .unwrap_or_else(|| detect_discrete(&x_train));
    let pre = Preprocessor::fit(
        &x_train.cast::<f64>(),
        &job.feature_names,
        &discrete,
        job.margin,
    )
    .map_err(|e| ModelError::Input(e.to_string()))?;
    // Context encoding, fitted on the training split.
    let mut context_cols = Vec::new();
    let (c_train, c_val) = match &job.context {
        Some(c) => {
            let raw_train = take_rows(c, &tr_idx);
            for (j, name) in job.context_names.iter().enumerate() {
                let col: Vec<f32> = (0..raw_train.rows()).map(|i| raw_train.get(i, j)).collect();
                context_cols.push(ContextColumn::fit(name, &col)?);
            }
            let raw_val = take_rows(c, &va_idx);
            (
                Some(encode_context(&context_cols, &raw_train)?),
                Some(encode_context(&context_cols, &raw_val)?),
            )
        }
        None => (None, None),
    };
    let mut opts = job.preset_options.clone();
    opts.context_dim = context_cols.iter().map(|c| c.width()).sum();
    let specs = build_specs(job.preset, d, &opts, base_seed);
    let data_checksum = format!(
        "{:016x}",
        fnv1a64(
            job.features
                .as_slice()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .chain(
                    job.context
                        .as_ref()
                        .map(|c| c.as_slice().to_vec())
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|v| v.to_le_bytes())
                )
                .chain(job.weights.iter().flatten().flat_map(|v| v.to_le_bytes()))
        )
    );
    let training_meta = serde_json::json!({
        "data": job.data_description,
        "data_checksum": data_checksum,
        "n_events": n,
        "n_train": tr_idx.len(),
        "n_val": va_idx.len(),
        "val_fraction": job.val_fraction,
        "weighted": job.weights.is_some(),
        "effective_sample_size": ess,
        "margin": job.margin,
        "preset_options": opts,
        "config": job.train,
    });
    let config = ModelConfig {
        format_version: FORMAT_VERSION,
        preset: job.preset.name().to_string(),
        features: job.feature_names.clone(),
        context: context_cols,
        preprocessing: Some(pre),
        layers: specs,
        base: build_base(job.preset, d, &opts),
        training: training_meta,
        members: 1,
    };
    let config_checksum = format!(
        "{:016x}",
        fnv1a64(serde_json::to_vec(&config).unwrap_or_default())
    );
    let mut model = Model::new(config, job.train.seed);
    let mut deq_rng = Rng::stream(job.train.seed, 0xDE0);
    let (z_train, _) = model.to_model_space(&x_train, Some(&mut deq_rng))?;
    let (z_val, pre_val) = model.to_model_space(&x_val, None)?;
    let mean_pre_val = weighted_mean(&pre_val, w_val.as_deref());

    let ck_dir = job.out_dir.join("checkpoint");
    let mut state = initial_state(&model.flow, &job.train);
    if job.resume && ck_dir.join("state.json").exists() {
        let p = ck_dir.join("state.json");
        let text = std::fs::read(&p).map_err(|e| ModelError::Io {
            path: p.clone(),
            source: e,
        })?;
        let ck: Checkpoint = serde_json::from_slice(&text).map_err(|e| ModelError::Json {
            path: p.clone(),
            message: e.to_string(),
        })?;
        if ck.data_checksum != data_checksum || ck.config_checksum != config_checksum {
            return Err(ModelError::Input(format!(
                "{}: the checkpoint was made with other data or settings; remove it or drop --resume",
                ck_dir.display()
            )));
        }
        ck.state
            .check_sizes(&model.flow, &job.train)
            .map_err(|message| {
                ModelError::Input(format!(
                    "{}: {message}; remove the checkpoint or drop --resume",
                    p.display()
                ))
            })?;
        let wp = ck_dir.join("weights.safetensors");
        let bytes = std::fs::read(&wp).map_err(|e| ModelError::Io {
            path: wp.clone(),
            source: e,
        })?;
        model
            .load_weights(&bytes)
            .map_err(|m| ModelError::Weights {
                path: wp,
                message: m,
            })?;
        state = ck.state;
    }
    std::fs::create_dir_all(&job.out_dir).map_err(|e| io_err(&job.out_dir, e))?;
    let state = {
        let mut writer = CheckpointWriter {
            dir: ck_dir.clone(),
            data_checksum: data_checksum.clone(),
            config_checksum,
            inner: observer,
        };
        let train_events = Events {
            x: &z_train,
            ctx: c_train.as_ref(),
            weights: w_train.as_deref(),
        };
        let val_events = Events {
            x: &z_val,
            ctx: c_val.as_ref(),
            weights: w_val.as_deref(),
        };
        // The flow-matching preset regresses its velocity field; every other preset is trained
        // by maximum likelihood through its layers' backward passes.
        let mut objective: Box<dyn Objective> = if job.preset.is_flow_matching() {
            Box::new(
                FlowMatchingObjective::new(&model.flow, job.train.chunk_rows)
                    .map_err(|e| ModelError::Input(e.to_string()))?
                    .with_time_sampling(job.train.time_sampling),
            )
        } else {
            Box::new(GradientEngine::new(&model.flow, job.train.chunk_rows))
        };
        fit_objective(
            &mut model.flow,
            train_events,
            val_events,
            &job.train,
            state,
            &mut writer,
            objective.as_mut(),
        )
        .map_err(|e| match e {
            TrainError::Interrupted(epoch) => ModelError::Interrupted {
                epoch,
                checkpoint: ck_dir.clone(),
            },
            e => ModelError::Input(e.to_string()),
        })?
    };
    let to_orig = |v: f64| v - mean_pre_val;
    let flow_matching = job.preset.is_flow_matching();
    // The flow-matching history holds CFM losses; its validation NLL is computed once, exactly
    // (divergence integral), for the best model.
    let best_val_nll = if flow_matching {
        // As the maximum-likelihood presets' validation NLL: model space (events beyond the
        // support at its edge) plus the preprocessing log-det.
        to_orig(weighted_mean_nll(
            &model.flow,
            &z_val,
            c_val.as_ref(),
            w_val.as_deref(),
        ))
    } else {
        to_orig(state.best_val)
    };
    let rollbacks: usize = state.history.iter().map(|h| h.rollbacks).sum();
    if let Some(obj) = model.config.training.as_object_mut() {
        obj.insert("best_epoch".into(), state.best_epoch.into());
        obj.insert("best_val_nll".into(), serde_json::json!(best_val_nll));
        if flow_matching {
            obj.insert("best_val_cfm".into(), serde_json::json!(state.best_val));
        }
        obj.insert("epochs_run".into(), state.epoch.into());
        obj.insert("early_stopped".into(), state.stopped.into());
        obj.insert("rollbacks".into(), rollbacks.into());
    }
    model.save(&job.out_dir)?;
    // history.csv in original units. The training NLL uses the training split's mean
    // preprocessing log-det (dequantised), so both columns are comparable.
    let (_, pre_train) = model.to_model_space(&x_train, None)?;
    let mean_pre_train = weighted_mean(&pre_train, w_train.as_deref());
    // Flow matching: the CFM losses as they are (no log-det shift), under their own names.
    let (header, shift, shift_val) = if flow_matching {
        (
            "epoch,train_cfm,train_cfm_median,spikes,val_cfm,lr,seconds\n",
            0.0,
            0.0,
        )
    } else {
        (
            "epoch,train_nll,train_nll_median,spikes,val_nll,lr,seconds\n",
            mean_pre_train,
            mean_pre_val,
        )
    };
    let mut csv = String::from(header);
    let mut curves = Vec::new();
    for h in &state.history {
        let (a, b) = (h.train_nll - shift, h.val_nll - shift_val);
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:.3}\n",
            h.epoch,
            a,
            h.train_nll_median - shift,
            h.spikes,
            b,
            h.lr,
            h.seconds
        ));
        curves.push((h.epoch, a, b));
    }
    let hp = job.out_dir.join("history.csv");
    atomic_write(&hp, csv.as_bytes()).map_err(|e| ModelError::Io {
        path: hp,
        source: e,
    })?;
    if !curves.is_empty() {
        let pp = job.out_dir.join("training.png");
        plot_training_curves(&curves, &pp).map_err(|e| io_err(&pp, e))?;
    }
    let summary = TrainSummary {
        best_val_nll,
        best_epoch: state.best_epoch,
        epochs_run: state.epoch,
        early_stopped: state.stopped,
        n_train: tr_idx.len(),
        n_val: va_idx.len(),
        rollbacks,
        num_params: model.flow.num_params(),
        seconds: t0.elapsed().as_secs_f64(),
        effective_sample_size: ess,
        spikes: state.history.iter().map(|h| h.spikes).sum(),
    };
    Ok((model, summary))
}

/// Mean of `v`, weighted by `w` (normalised to mean 1) when given.
fn weighted_mean(v: &[f64], w: Option<&[f32]>) -> f64 {
    let n = v.len().max(1) as f64;
    match w {
        None => v.iter().sum::<f64>() / n,
        Some(w) => v.iter().zip(w).map(|(a, b)| a * *b as f64).sum::<f64>() / n,
    }
}

/// Training and validation weights, each normalised to mean 1 over its split (the loss is
/// normalised by the split's total weight, not per batch), and the training split's effective
/// sample size.
#[allow(clippy::type_complexity)]
fn split_weights(
    w: Option<&[f32]>,
    tr_idx: &[usize],
    va_idx: &[usize],
) -> Result<(Option<Vec<f32>>, Option<Vec<f32>>, Option<f64>), ModelError> {
    let Some(w) = w else {
        return Ok((None, None, None));
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| w[i]).collect::<Vec<f32>>();
    let (wt, wv) = (pick(tr_idx), pick(va_idx));
    let ess = effective_sample_size(&wt);
    let nt = normalised_weights(&wt).ok_or_else(|| {
        ModelError::Input(
            "the weights of the training split sum to <= 0; check the weight column".into(),
        )
    })?;
    let nv = normalised_weights(&wv).ok_or_else(|| {
        ModelError::Input(
            "the weights of the validation split sum to <= 0 (too many negative weights for its size); raise val_fraction".into(),
        )
    })?;
    Ok((Some(nt), Some(nv), Some(ess)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny job: 300 events of 3 features, a 1-block spline flow, 2 epochs.
    fn tiny_job(out_dir: PathBuf, ensemble: usize) -> TrainJob {
        let mut rng = Rng::new(5);
        let features = Matrix::from_fn(300, 3, |_, j| match j {
            0 => rng.normal() as f32,
            1 => (-(1.0 - rng.uniform()).ln()) as f32,
            _ => rng.uniform_range(-1.0, 1.0) as f32,
        });
        let preset = Preset::DEFAULT;
        let mut preset_options = preset.default_options();
        preset_options.blocks = 1;
        preset_options.hidden = vec![8];
        TrainJob {
            feature_names: ["a", "b", "c"].map(String::from).to_vec(),
            features,
            context_names: Vec::new(),
            context: None,
            weights: None,
            preset,
            preset_options,
            train: TrainConfig {
                epochs: 2,
                seed: 4,
                ..TrainConfig::default()
            },
            val_fraction: 0.2,
            margin: crate::preprocess::DEFAULT_MARGIN,
            discrete: None,
            out_dir,
            resume: false,
            data_description: "tiny".into(),
            ensemble,
        }
    }

    #[test]
    fn an_ensemble_trains_members_with_consecutive_seeds_on_one_split_and_averages_them() {
        let dir = std::env::temp_dir().join(format!("hepflow-ens-train-{}", std::process::id()));
        let job = tiny_job(dir.clone(), 2);
        let s = train_model(&job, &mut crate::train::Silent).unwrap();
        let ens = Model::load(&dir).unwrap();
        assert_eq!(ens.config.members, 2);
        let m1 = Model::load(&dir.join("member1")).unwrap();
        let m2 = Model::load(&dir.join("member2")).unwrap();
        assert_eq!(s.num_params, m1.num_params() + m2.num_params());
        // Seeds 4 and 5, the split and preprocessing of seed 4, the same architecture.
        assert_eq!(m1.config.training["config"]["seed"], 4);
        assert_eq!(m2.config.training["config"]["seed"], 5);
        for k in ["n_train", "n_val", "preset_options"] {
            assert_eq!(m1.config.training[k], m2.config.training[k], "{k}");
        }
        let pre = |m: &Model| serde_json::to_string(&m.config.preprocessing).unwrap();
        assert_eq!(pre(&m1), pre(&m2));
        assert_ne!(m1.flow.param_vector(), m2.flow.param_vector());
        // The member files are the members of the ensemble; a single run with seed 4 is member 1.
        let x = job.features.slice_rows(0, 50);
        let (a, b) = (
            m1.log_prob(&x, None).unwrap(),
            m2.log_prob(&x, None).unwrap(),
        );
        let e = ens.log_prob(&x, None).unwrap();
        for i in 0..50 {
            let want = (a[i].exp() + b[i].exp()).ln() - 2f64.ln();
            assert!((e[i] - want).abs() < 1e-4 * want.abs().max(1.0), "{i}");
        }
        let single_dir = dir.join("single");
        train_model(&tiny_job(single_dir.clone(), 1), &mut crate::train::Silent).unwrap();
        for f in ["model.json", "model.safetensors"] {
            assert_eq!(
                std::fs::read(single_dir.join(f)).unwrap(),
                std::fs::read(dir.join("member1").join(f)).unwrap(),
                "{f}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
