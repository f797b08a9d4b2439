//! `hepflow sample`.

use super::data::{columns, load_table};
use super::progress::bar;
use anyhow::{Context, Result, bail};
use clap::Args;
use hepflow::engine::Matrix;
use hepflow::io::{Format, RootFormat};
use hepflow::model::{Model, encode_context};
use hepflow::pipeline::sample::SampleContext;
use hepflow::pipeline::{SampleJob, Shard, sample_to_file};
use std::path::PathBuf;

/// Arguments of `hepflow sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model directory written by `hepflow train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Number of events in the whole sample (all shards together).
    #[arg(short = 'n', long = "events", value_name = "N")]
    pub n: Option<u64>,
    /// Sample seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generate only shard K of M (1-based), e.g. 3/10.
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Events generated per batch (bounds memory).
    #[arg(long, default_value_t = 65536)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context of a conditional model, e.g. label=1 (repeatable for several columns).
    #[arg(long, value_name = "COLUMN=VALUE")]
    pub condition: Vec<String>,
    /// One event per row of this file's context columns.
    #[arg(long, conflicts_with = "condition")]
    pub condition_from: Option<PathBuf>,
    /// Output format (default: from the extension).
    #[arg(long)]
    pub format: Option<String>,
    /// Output file (.csv, .csv.gz, .npy, .parquet, .root).
    #[arg(long)]
    pub out: PathBuf,
    /// How a .root output stores the events: ttree (readable by every ROOT since 6.0) or
    /// rntuple (ROOT >= 6.34, uproot >= 5.6; written as the events are generated). Default:
    /// ttree.
    #[arg(long, value_name = "ttree|rntuple")]
    pub root_format: Option<RootFormat>,
    /// RK4 steps of a flow-matching model's ODE (default: the model's own).
    #[arg(long)]
    pub ode_steps: Option<usize>,
}

/// Runs `hepflow sample`.
pub fn run(a: SampleArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let mut model = Model::load(&a.model)?;
    if let Some(k) = a.ode_steps {
        model.set_ode_steps(k)?;
    }
    let format = match &a.format {
        Some(f) => Format::parse(f)
            .with_context(|| format!("--format '{f}': expected csv, npy, parquet or root"))?,
        None => Format::from_path(&a.out).with_context(|| {
            format!(
                "{}: cannot tell the output format from the extension; use --format",
                a.out.display()
            )
        })?,
    };
    if a.root_format.is_some() && format != Format::Root {
        bail!(
            "--root-format applies to ROOT output; {} is not a .root file",
            a.out.display()
        );
    }
    let ctx_cols = &model.config.context;
    let (context, n, context_columns) = if let Some(file) = &a.condition_from {
        if ctx_cols.is_empty() {
            bail!(
                "--condition-from: the model in {} is not conditional",
                a.model.display()
            );
        }
        let t = load_table(file, None)?;
        let names: Vec<String> = ctx_cols.iter().map(|c| c.name().to_string()).collect();
        let raw = columns(&t, &names, file)?;
        let enc = encode_context(ctx_cols, &raw).with_context(|| format!("{}", file.display()))?;
        let n = a.n.unwrap_or(raw.rows() as u64);
        if n > raw.rows() as u64 {
            bail!(
                "-n {n} is larger than the {} rows of {}",
                raw.rows(),
                file.display()
            );
        }
        (SampleContext::PerEvent(enc), n, Some((names, raw)))
    } else if !ctx_cols.is_empty() {
        let mut raw = vec![f32::NAN; ctx_cols.len()];
        for c in &a.condition {
            let (k, v) = c
                .split_once('=')
                .with_context(|| format!("--condition '{c}': expected COLUMN=VALUE"))?;
            let j = ctx_cols
                .iter()
                .position(|cc| cc.name() == k.trim())
                .with_context(|| {
                    format!(
                        "--condition '{c}': the model's context columns are {:?}",
                        ctx_cols.iter().map(|c| c.name()).collect::<Vec<_>>()
                    )
                })?;
            raw[j] = v
                .trim()
                .parse()
                .with_context(|| format!("--condition '{c}': '{v}' is not a number"))?;
        }
        if let Some(j) = raw.iter().position(|v| v.is_nan()) {
            bail!(
                "the model is conditional: give --condition {}=VALUE or --condition-from FILE",
                ctx_cols[j].name()
            );
        }
        let rawm = Matrix::from_vec(1, raw.len(), raw).context("context")?;
        let enc = encode_context(ctx_cols, &rawm)?;
        let names = ctx_cols.iter().map(|c| c.name().to_string()).collect();
        (
            SampleContext::Fixed(enc.row(0).to_vec()),
            a.n.context("-n N is required")?,
            Some((names, rawm)),
        )
    } else {
        if !a.condition.is_empty() {
            bail!(
                "--condition: the model in {} is not conditional",
                a.model.display()
            );
        }
        (SampleContext::None, a.n.context("-n N is required")?, None)
    };
    let job = SampleJob {
        n,
        seed: a.seed,
        shard: a.shard,
        batch: a.batch,
        out: a.out.clone(),
        format,
        root_format: a.root_format.unwrap_or_default(),
        context,
        context_columns,
    };
    let (s, e) = a.shard.range(n);
    super::stop_on_signals();
    let pb = bar(e - s, "sampling");
    let t0 = std::time::Instant::now();
    let summary = sample_to_file(&model, &job, &mut |d| pb.set_position(d))?;
    let written = summary.written;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "wrote {written} events (events {s}..{e} of {n}, seed {}) to {} in {:.2} s ({:.0} events/s)",
        a.seed,
        a.out.display(),
        secs,
        written as f64 / secs.max(1e-9)
    );
    if summary.pinned_any > 0 {
        eprintln!(
            "warning: {} of {written} generated events have a feature pinned at the end of the model's support ({} with every feature); the model may be undertrained",
            summary.pinned_any, summary.pinned_all
        );
    }
    Ok(())
}
