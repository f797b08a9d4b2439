//! `hepflow log-prob`.

use super::data::{columns, load_table, match_model_columns};
use anyhow::{Context, Result};
use clap::Args;
use hepflow::engine::Matrix;
use hepflow::io::{Format, Table, write_table};
use hepflow::model::{Model, encode_context};
use std::path::PathBuf;

/// Arguments of `hepflow log-prob`.
#[derive(Args, Debug)]
pub struct LogProbArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Events to evaluate (columns matched to the model's features by name).
    #[arg(long)]
    pub data: PathBuf,
    /// Force the input format.
    #[arg(long)]
    pub format: Option<String>,
    /// Output file with one column `log_prob` (nats, original units).
    #[arg(long)]
    pub out: PathBuf,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// RK4 steps of a flow-matching model's ODE (default: the model's own).
    #[arg(long)]
    pub ode_steps: Option<usize>,
}

/// Runs `hepflow log-prob`.
pub fn run(a: LogProbArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let mut model = Model::load(&a.model)?;
    if let Some(k) = a.ode_steps {
        model.set_ode_steps(k)?;
    }
    let mut t = load_table(&a.data, a.format.as_deref())?;
    match_model_columns(&mut t, &model, &a.data);
    let x = columns(&t, &model.config.features, &a.data)?;
    let ctx = if model.config.context.is_empty() {
        None
    } else {
        let names: Vec<String> = model
            .config
            .context
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let raw = columns(&t, &names, &a.data)?;
        Some(
            encode_context(&model.config.context, &raw)
                .with_context(|| format!("{}", a.data.display()))?,
        )
    };
    if let Some(p) = &model.config.preprocessing {
        for (col, count) in p.out_of_range(&x.cast::<f64>()) {
            eprintln!(
                "warning: {}: {count} event(s) have {} outside the range seen in training; their density is the model's extrapolation",
                a.data.display(),
                model.config.features[col]
            );
        }
    }
    let lp = model.log_prob(&x, ctx.as_ref())?;
    let outside = lp.iter().filter(|v| !v.is_finite()).count();
    if outside > 0 {
        eprintln!(
            "warning: {}: {outside} event(s) lie outside the model's support (zero density); their log_prob is written as {:e}",
            a.data.display(),
            hepflow::model::LOG_PROB_FLOOR
        );
    }
    // log_prob (floored where the density is zero) and the 0/1 flag of events outside the
    // model's support, so that a far outlier is never mistaken for an ordinary event.
    let flags = model.outside_support(&x)?;
    let data = Matrix::from_fn(lp.len(), 2, |i, j| {
        if j == 0 {
            lp[i].max(hepflow::model::LOG_PROB_FLOOR) as f32
        } else {
            f32::from(u8::from(flags[i] || !lp[i].is_finite()))
        }
    });
    let format = Format::from_path(&a.out)
        .with_context(|| format!("{}: unknown output extension", a.out.display()))?;
    write_table(
        &a.out,
        &Table {
            columns: vec!["log_prob".into(), "outside_support".into()],
            data,
        },
        format,
    )?;
    let inside: Vec<f64> = lp.iter().copied().filter(|v| v.is_finite()).collect();
    let mean = inside.iter().sum::<f64>() / inside.len().max(1) as f64;
    println!(
        "wrote {} log-densities to {} (mean log p = {mean:.4} nats over the events inside the support)",
        lp.len(),
        a.out.display()
    );
    Ok(())
}
