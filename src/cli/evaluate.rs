//! `hepflow evaluate`.

use super::data::{apply_select, columns, load_table, match_model_columns};
use super::info::summary;
use anyhow::{Context, Result, bail};
use clap::Args;
use hepflow::engine::Matrix;
use hepflow::evaluate::{EvalOptions, Evaluation, evaluate_weighted, physics_check, write_report};
use hepflow::model::{Model, encode_context};
use std::path::{Path, PathBuf};

/// Arguments of `hepflow evaluate`.
#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Reference (MC) events, ideally not used in training.
    #[arg(long)]
    pub reference: PathBuf,
    /// Force the reference format (csv, npy, parquet, root, higgs).
    #[arg(long)]
    pub format: Option<String>,
    /// Keep only reference rows where COLUMN equals VALUE (repeatable).
    #[arg(long, value_name = "COLUMN=VALUE")]
    pub select: Vec<String>,
    /// Generated events to compare (default: generate -n events with the model).
    #[arg(long, conflicts_with = "n")]
    pub generated: Option<PathBuf>,
    /// Number of events to generate (default: as many as the reference).
    #[arg(short = 'n', long = "events", value_name = "N")]
    pub n: Option<usize>,
    /// Seed of generation and of the classifier test.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Physics check on this label column: a signal-vs-background classifier trained on generated
    /// events and tested on MC, against one trained on MC (needs a model conditioned on it).
    #[arg(long)]
    pub physics: Option<String>,
    /// Per-event weights of the reference events, read from this column of the reference file
    /// (e.g. NLO MC weights, negative ones allowed; they must be finite with a positive total).
    /// Generated events are unweighted.
    #[arg(long, value_name = "COLUMN")]
    pub weight: Option<String>,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Report directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Generates `n` events for a comparison with `reference_ctx_raw` (per-event raw context, for a
/// conditional model) and returns them.
pub fn generate_for(
    model: &Model,
    n: usize,
    seed: u64,
    ctx_raw: Option<&Matrix<f32>>,
) -> Result<Matrix<f32>> {
    Ok(model.generate(n, seed, ctx_raw)?)
}

/// Runs the evaluation of `model` against reference events and writes the report to `out`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_model(
    model: &Model,
    reference: &Matrix<f32>,
    reference_ctx_raw: Option<&Matrix<f32>>,
    reference_weights: Option<(&[f64], &str)>,
    generated: Option<(Matrix<f32>, Option<Matrix<f32>>)>,
    n: usize,
    seed: u64,
    physics_labels: Option<(&[f32], &str)>,
    out: &Path,
    extra_summary: &[(String, String)],
) -> Result<Evaluation> {
    let ctx = match reference_ctx_raw {
        Some(raw) => Some(encode_context(&model.config.context, raw)?),
        None => None,
    };
    let lp = model.log_prob(reference, ctx.as_ref())?;
    let (gen_x, gen_ctx_raw) = match generated {
        Some(g) => g,
        None => {
            let g = generate_for(model, n, seed, reference_ctx_raw)?;
            let c = reference_ctx_raw.map(|raw| hepflow::model::cycle_rows(raw, n));
            (g, c)
        }
    };
    let mut opts = EvalOptions {
        seed,
        support: model.config.preprocessing.clone(),
        weight_column: reference_weights.map(|(_, c)| c.to_string()),
        ..EvalOptions::default()
    };
    if let Some((labels, name)) = physics_labels {
        let gen_ctx = gen_ctx_raw
            .as_ref()
            .context("the physics check needs generated events with labels")?;
        let j = model
            .config
            .context
            .iter()
            .position(|c| c.name() == name)
            .with_context(|| {
                format!("--physics {name}: the model is not conditioned on '{name}'")
            })?;
        let gen_labels: Vec<f32> = (0..gen_ctx.rows()).map(|i| gen_ctx.get(i, j)).collect();
        opts.physics = Some(physics_check(reference, labels, &gen_x, &gen_labels, seed)?);
    }
    let ev = evaluate_weighted(
        reference,
        reference_weights.map(|(w, _)| w),
        &gen_x,
        &model.config.features,
        Some(&lp),
        &opts,
    )?;
    let mut s = summary(model);
    s.extend_from_slice(extra_summary);
    write_report(out, &ev, &s)?;
    Ok(ev)
}

/// Prints the headline numbers of an evaluation.
pub fn print_headline(label: &str, ev: &Evaluation) {
    let m = &ev.metrics;
    let worst = m.features.iter().map(|f| f.ks).fold(0.0f64, f64::max);
    println!(
        "{label}: test NLL {:.3} ± {:.3} nats/event | C2ST AUC {:.3} ± {:.3}{} | max KS {:.3} | Frechet {:.4}",
        m.test_nll,
        m.test_nll_err,
        m.c2st_auc,
        m.c2st_auc_err,
        m.c2st_auc_mc_vs_mc
            .map(|v| format!(" (MC vs MC {v:.3})"))
            .unwrap_or_default(),
        worst,
        m.frechet_distance
    );
    if let Some(w) = &m.weighting {
        println!("{label}: {w}: every MC statistic is weighted");
    }
    if let Some(p) = &m.physics {
        println!(
            "{label}: physics check: signal/background AUC trained on MC {:.3}, trained on generated {:.3}",
            p.auc_trained_on_mc, p.auc_trained_on_generated
        );
    }
}

/// Runs `hepflow evaluate`.
pub fn run(a: EvaluateArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let model = Model::load(&a.model)?;
    let mut table = load_table(&a.reference, a.format.as_deref())?;
    match_model_columns(&mut table, &model, &a.reference);
    let table = apply_select(table, &a.select, &a.reference)?;
    let reference = columns(&table, &model.config.features, &a.reference)?;
    let ctx_names: Vec<String> = model
        .config
        .context
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let ctx_raw = if ctx_names.is_empty() {
        None
    } else {
        Some(columns(&table, &ctx_names, &a.reference)?)
    };
    let physics_labels = match &a.physics {
        Some(p) => {
            let t = columns(&table, std::slice::from_ref(p), &a.reference)?;
            Some(t.into_vec())
        }
        None => None,
    };
    let weights = match &a.weight {
        Some(col) => {
            let w = columns(&table, std::slice::from_ref(col), &a.reference)?.into_vec();
            let source = a.reference.display().to_string();
            hepflow::dataset::check_weights(&w, col, &source)
                .with_context(|| format!("--weight {col}"))?;
            Some(w.iter().map(|&v| v as f64).collect::<Vec<f64>>())
        }
        None => None,
    };
    let generated = match &a.generated {
        Some(g) => {
            let mut t = load_table(g, None)?;
            match_model_columns(&mut t, &model, g);
            let x = columns(&t, &model.config.features, g)?;
            let c = if ctx_names.is_empty() {
                None
            } else {
                Some(columns(&t, &ctx_names, g)?)
            };
            Some((x, c))
        }
        None => None,
    };
    if reference.rows() < 20 {
        bail!(
            "{}: only {} reference events; at least 20 are needed",
            a.reference.display(),
            reference.rows()
        );
    }
    let n = a.n.unwrap_or(reference.rows());
    let ev = evaluate_model(
        &model,
        &reference,
        ctx_raw.as_ref(),
        weights.as_deref().zip(a.weight.as_deref()),
        generated,
        n,
        a.seed,
        physics_labels.as_deref().zip(a.physics.as_deref()),
        &a.out,
        &[("reference".into(), a.reference.display().to_string())],
    )?;
    print_headline("evaluate", &ev);
    println!("report: {}", a.out.join("report.html").display());
    Ok(())
}
