//! `hepflow train`.

use super::progress::TrainProgress;
use anyhow::{Context, Result};
use clap::Args;
use hepflow::config::{TrainOptions, TrainSettings};
use hepflow::dataset;
use hepflow::pipeline::{TrainJob, train_model};
use std::path::PathBuf;

/// Arguments of `hepflow train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Event files (.csv[.gz], .tsv, .npy, .parquet, .root): several paths, shell-style globs
    /// (quote them: 'ntuples/*.root'), `file.root:tree` for a TTree or RNTuple by name.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<String>,
    /// Value for `Jet_pt[k]` columns in events with fewer than k+1 elements (default: drop them).
    #[arg(long, allow_negative_numbers = true)]
    pub fill: Option<f32>,
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
    /// Column of per-event weights (negative weights allowed).
    #[arg(long)]
    pub weight: Option<String>,
    /// Architecture: made-mog (default), pq-spline, rq-spline, glow, realnvp, maf, flow-matching.
    #[arg(long)]
    pub model: Option<String>,
    /// RK4 steps of the flow-matching ODE, stored in the model [default: 16].
    #[arg(long)]
    pub ode_steps: Option<usize>,
    /// Gaussian components per feature of the made-mog model [default: 10].
    #[arg(long)]
    pub components: Option<usize>,
    /// Hidden activation of the flow-matching velocity network: relu, silu or tanh.
    #[arg(long)]
    pub activation: Option<String>,
    /// Path times of the flow-matching loss: uniform or logit-normal.
    #[arg(long)]
    pub time_sampling: Option<String>,
    /// Number of flow blocks (made-mog: MAF layers under its mixture base, default 0).
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
    /// Seed (split, initialisation, shuffling) [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train K flows (seeds seed..seed+K-1, same split) and save one model averaging their
    /// densities (1-16) [default: 1].
    #[arg(long)]
    pub ensemble: Option<usize>,
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

fn split_list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--hidden '{s}': expected widths like 128,128"))
}

/// The options given on the command line, as the library's one configuration type.
fn cli_options(a: &TrainArgs) -> Result<TrainOptions> {
    Ok(TrainOptions {
        format: a.format.clone(),
        features: a.preset.clone(),
        columns: split_list(&a.columns),
        select: a.select.clone(),
        condition: split_list(&a.condition).unwrap_or_default(),
        weight: a.weight.clone(),
        fill: a.fill,
        model: a.model.clone(),
        blocks: a.blocks,
        hidden: a.hidden.as_deref().map(parse_hidden).transpose()?,
        bins: a.bins,
        ode_steps: a.ode_steps,
        components: a.components,
        activation: a.activation.clone(),
        time_sampling: a.time_sampling.clone(),
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        schedule: a.schedule.clone(),
        patience: a.patience,
        val_fraction: a.val_fraction,
        seed: a.seed,
        threads: a.threads,
        ensemble: a.ensemble,
        ..TrainOptions::default()
    })
}

/// The merged options (command-line flags over the `--config` file) and the checked settings.
pub fn options_from_args(a: &TrainArgs) -> Result<(TrainOptions, TrainSettings)> {
    let file = match &a.config {
        Some(p) => TrainOptions::from_toml_file(p)?,
        None => TrainOptions::default(),
    };
    let opts = file.merged(&cli_options(a)?);
    let settings = opts.resolve()?;
    Ok((opts, settings))
}

/// Builds the training job from the arguments: options first (no data is read when they are
/// wrong), then the data, then the checks of the options against the data.
pub fn job_from_args(a: &TrainArgs) -> Result<TrainJob> {
    let (opts, settings) = options_from_args(a)?;
    super::set_threads(settings.threads)?;
    let data = dataset::load(&a.data, &opts)?;
    for note in &data.notes {
        eprintln!("note: {note}");
    }
    Ok(TrainJob::new(&settings, data, a.out.clone(), a.resume)?)
}

/// Runs `hepflow train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let job = job_from_args(&a)?;
    super::stop_on_signals();
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
    if let Some(ess) = s.effective_sample_size {
        println!(
            "weighted training: effective sample size {ess:.0} of {} training events",
            s.n_train
        );
    }
    if s.spikes > 0 {
        println!(
            "note: {} training batch(es) had a loss far above their epoch's median (see train_nll_median and spikes in history.csv)",
            s.spikes
        );
    }
    if s.rollbacks > 0 {
        println!(
            "note: {} roll-back(s) after non-finite losses; the learning rate was lowered each time",
            s.rollbacks
        );
    }
    Ok(())
}
