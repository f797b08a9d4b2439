//! `hepflow train`.

use super::data::{apply_select, columns, feature_names, load_table};
use super::progress::TrainProgress;
use anyhow::{Context, Result, bail};
use clap::Args;
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::presets::{Preset, PresetOptions};
use hepflow::train::{Schedule, TrainConfig};
use serde::Deserialize;
use std::path::PathBuf;

/// Arguments of `hepflow train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Event file (.csv[.gz], .tsv, .npy, .parquet, .root).
    #[arg(long)]
    pub data: PathBuf,
    /// Force the input format: csv, npy, parquet, root, or higgs (UCI HIGGS layout).
    #[arg(long)]
    pub format: Option<String>,
    /// Feature preset: higgs18 (the seminar's 18 features) or higgs28.
    #[arg(long, conflicts_with = "columns")]
    pub preset: Option<String>,
    /// Feature columns by name or 0-based index, comma separated.
    #[arg(long)]
    pub columns: Option<String>,
    /// Keep only rows where COLUMN equals VALUE (repeatable), e.g. label=0.
    #[arg(long, value_name = "COLUMN=VALUE")]
    pub select: Vec<String>,
    /// Conditional flow on these columns (comma separated), e.g. label.
    #[arg(long)]
    pub condition: Option<String>,
    /// Architecture: glow, realnvp, pq-spline (default), rq-spline, maf.
    #[arg(long)]
    pub model: Option<String>,
    /// Number of flow blocks.
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Hidden widths of the conditioners, e.g. 128,128.
    #[arg(long)]
    pub hidden: Option<String>,
    /// Spline bins.
    #[arg(long)]
    pub bins: Option<usize>,
    /// TOML file with any of these options (command-line flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Maximum epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Events per optimizer step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule: cosine or plateau.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Early-stopping patience in epochs.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Fraction of events held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Seed (split, initialisation, shuffling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue an interrupted run from OUT/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop (as if interrupted) after this epoch, leaving the checkpoint (for testing --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// Options a `--config` TOML file may set.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model: Option<String>,
    blocks: Option<usize>,
    hidden: Option<Vec<usize>>,
    bins: Option<usize>,
    bound: Option<f64>,
    residual: Option<bool>,
    dropout: Option<f64>,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    schedule: Option<String>,
    patience: Option<usize>,
    val_fraction: Option<f64>,
    weight_decay: Option<f64>,
    clip_grad_norm: Option<f64>,
    ema_decay: Option<f64>,
    margin: Option<f64>,
}

fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse::<usize>()).collect();
    let v = v.with_context(|| format!("--hidden '{s}': expected widths like 128,128"))?;
    if v.is_empty() || v.contains(&0) {
        bail!("--hidden '{s}': widths must be positive");
    }
    Ok(v)
}

/// Builds the training job from the arguments (shared with the demo).
pub fn job_from_args(a: &TrainArgs) -> Result<TrainJob> {
    let fc: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid configuration", p.display()))?
        }
        None => FileConfig::default(),
    };
    let preset: Preset = match a.model.as_deref().or(fc.model.as_deref()) {
        Some(m) => m.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        None => Preset::DEFAULT,
    };
    let mut opts: PresetOptions = preset.default_options();
    if let Some(b) = a.blocks.or(fc.blocks) {
        opts.blocks = b;
    }
    if let Some(h) = &a.hidden {
        opts.hidden = parse_hidden(h)?;
    } else if let Some(h) = fc.hidden {
        opts.hidden = h;
    }
    if let Some(b) = a.bins.or(fc.bins) {
        if b == 0 || b > 64 {
            bail!("--bins must be between 1 and 64");
        }
        opts.bins = b;
    }
    if let Some(b) = fc.bound {
        opts.bound = b;
    }
    if let Some(r) = fc.residual {
        opts.residual = r;
    }
    if let Some(p) = fc.dropout {
        if !(0.0..0.9).contains(&p) {
            bail!("dropout must be in [0, 0.9)");
        }
        opts.dropout = p;
    }
    if opts.blocks == 0 {
        bail!("--blocks must be at least 1");
    }
    let mut cfg = TrainConfig {
        seed: a.seed,
        ..TrainConfig::default()
    };
    if let Some(v) = a.epochs.or(fc.epochs) {
        cfg.epochs = v;
    }
    if let Some(v) = a.batch_size.or(fc.batch_size) {
        if v == 0 {
            bail!("--batch-size must be positive");
        }
        cfg.batch_size = v;
    }
    if let Some(v) = a.lr.or(fc.lr) {
        if !(v > 0.0 && v.is_finite()) {
            bail!("--lr must be positive");
        }
        cfg.lr = v;
    }
    if let Some(s) = a.schedule.as_deref().or(fc.schedule.as_deref()) {
        cfg.schedule = Schedule::from_name(s)
            .with_context(|| format!("--schedule '{s}': expected cosine, plateau or constant"))?;
    }
    if let Some(v) = a.patience.or(fc.patience) {
        cfg.patience = v.max(1);
    }
    if let Some(v) = fc.weight_decay {
        cfg.adam.weight_decay = v;
    }
    if let Some(v) = fc.clip_grad_norm {
        cfg.clip_grad_norm = v;
    }
    if let Some(v) = fc.ema_decay {
        cfg.ema_decay = v;
    }
    let val_fraction = a.val_fraction.or(fc.val_fraction).unwrap_or(0.2);
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        bail!("--val-fraction must be between 0 and 1");
    }
    let table = load_table(&a.data, a.format.as_deref())?;
    let table = apply_select(table, &a.select, &a.data)?;
    let context_names: Vec<String> = a
        .condition
        .as_deref()
        .map(|c| {
            c.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let names = feature_names(
        &table,
        a.preset.as_deref(),
        a.columns.as_deref(),
        &context_names,
    )?;
    if names.is_empty() {
        bail!("{}: no feature columns selected", a.data.display());
    }
    let features = columns(&table, &names, &a.data)?;
    let context = if context_names.is_empty() {
        None
    } else {
        Some(columns(&table, &context_names, &a.data)?)
    };
    Ok(TrainJob {
        feature_names: names,
        features,
        context_names,
        context,
        preset,
        preset_options: opts,
        train: cfg,
        val_fraction,
        margin: fc.margin.unwrap_or(hepflow::preprocess::DEFAULT_MARGIN),
        discrete: None,
        out_dir: a.out.clone(),
        resume: a.resume,
        data_description: format!(
            "{}{}",
            a.data
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            if a.select.is_empty() {
                String::new()
            } else {
                format!(" [{}]", a.select.join(", "))
            }
        ),
    })
}

/// Runs `hepflow train`.
pub fn run(a: TrainArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let job = job_from_args(&a)?;
    eprintln!(
        "training {} on {} events x {} features ({}), output {}",
        job.preset,
        job.features.rows(),
        job.features.cols(),
        job.data_description,
        job.out_dir.display()
    );
    let mut obs = TrainProgress::new("train");
    obs.stop_after = a.stop_after;
    let s = train_model(&job, &mut obs)?;
    println!(
        "best validation NLL {:.4} nats/event (original units) at epoch {} of {}{}; {} parameters; {:.1} s; model in {}",
        s.best_val_nll,
        s.best_epoch,
        s.epochs_run,
        if s.early_stopped {
            " (early stopped)"
        } else {
            ""
        },
        s.num_params,
        s.seconds,
        job.out_dir.display()
    );
    if s.rollbacks > 0 {
        println!(
            "note: {} roll-back(s) after non-finite losses; the learning rate was lowered each time",
            s.rollbacks
        );
    }
    Ok(())
}
