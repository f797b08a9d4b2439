//! `hepflow demo`: the whole workflow on the bundled HIGGS sample.
//!
//! Hold out 30% of the background (label 0) and of the signal (label 1) events, train the default
//! preset and the seminar's Glow on the rest (higgs18 features), each as one conditional model
//! `p(x | label)` for both classes (`--separate`: one model per class), generate as many events of
//! each class as were held out, evaluate them against the held-out MC events, and write everything
//! under DIR. With `--data`, the file's events form one class and the models are unconditional.

use super::evaluate::{evaluate_model, print_headline};
use super::progress::TrainProgress;
use anyhow::{Context, Result};
use clap::Args;
use hepflow::engine::{Matrix, Rng};
use hepflow::fsutil::atomic_write;
use hepflow::io::{Format, Table, write_table};
use hepflow::io::{Preset as Features, bundled_higgs_path, read_higgs};
use hepflow::model::Model;
use hepflow::pipeline::train::TrainSummary;
use hepflow::pipeline::train::take_rows;
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::presets::Preset;
use hepflow::train::TrainConfig;
use std::path::PathBuf;

/// Arguments of `hepflow demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "hepflow-demo")]
    pub out: PathBuf,
    /// Maximum epochs per model (early stopping may end sooner).
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// Use at most this many events per class (smaller = faster; 0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_events: usize,
    /// Architectures to train (comma separated).
    #[arg(long, default_value = "default,glow")]
    pub models: String,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run on your own event file instead of the bundled HIGGS sample (all events form one
    /// class; every numeric column except `label` is a feature unless --columns is given).
    #[arg(long)]
    pub data: Option<String>,
    /// Feature columns of --data (comma separated names or 0-based indices).
    #[arg(long, requires = "data")]
    pub columns: Option<String>,
    /// Train one model per class instead of one conditional model for both (the bundled sample).
    #[arg(long)]
    pub separate: bool,
}

/// The event samples the demo models: (class name, description, events).
fn demo_classes(a: &DemoArgs) -> Result<Vec<(String, String, Table)>> {
    if let Some(source) = &a.data {
        let opts = hepflow::config::TrainOptions {
            columns: a.columns.as_ref().map(|c| {
                c.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            ..Default::default()
        };
        let d = hepflow::dataset::load(std::slice::from_ref(source), &opts)?;
        let table = Table {
            columns: d.feature_names,
            data: d.features,
        };
        return Ok(vec![("data".into(), d.description, table)]);
    }
    let path = bundled_higgs_path();
    let mut out = Vec::new();
    for (label, class) in [(0u8, "background"), (1u8, "signal")] {
        let table = read_higgs(&path, Features::Higgs18, Some(label))?;
        out.push((
            class.to_string(),
            format!("bundled HIGGS sample, {class} (label={label}), higgs18"),
            table,
        ));
    }
    Ok(out)
}

struct Row {
    class: String,
    model: String,
    nll: f64,
    nll_err: f64,
    auc: f64,
    auc_err: f64,
    auc_mc: Option<f64>,
    ks_max: f64,
    seconds: f64,
    report: String,
}

/// One class of the demo, its events split 70/30 (the same split whatever is trained).
struct DemoClass {
    name: String,
    description: String,
    /// The class's value of the context `label` when one conditional model learns every class.
    label: Option<f32>,
    names: Vec<String>,
    train: Matrix<f32>,
    test: Matrix<f32>,
}

/// Runs `hepflow demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let t_start = std::time::Instant::now();
    let presets = parse_presets(&a.models)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let tables = demo_classes(&a)?;
    let conditional = !a.separate && tables.len() > 1;
    let classes = split_classes(&a, tables, conditional)?;
    println!(
        "hepflow demo: {} -> {}",
        a.data.as_deref().unwrap_or("the bundled HIGGS sample"),
        a.out.display()
    );
    let mut rows = Vec::new();
    for &preset in &presets {
        if conditional {
            rows.extend(run_conditional(&a, preset, &classes)?);
        } else {
            for c in &classes {
                rows.push(run_separate(&a, preset, c)?);
            }
        }
    }
    // Class by class, in the order of the models.
    rows.sort_by_key(|r| classes.iter().position(|c| c.name == r.class));
    let index = write_index(&a, &rows, conditional)?;
    print_summary(t_start, &rows, &index);
    Ok(())
}

/// The `--models` list, `default` resolved, duplicates dropped.
fn parse_presets(models: &str) -> Result<Vec<Preset>> {
    let mut presets = Vec::new();
    for m in models.split(',') {
        let p = match m.trim() {
            "default" => Preset::DEFAULT,
            other => other.parse::<Preset>().map_err(|e| anyhow::anyhow!(e))?,
        };
        if !presets.contains(&p) {
            presets.push(p);
        }
    }
    Ok(presets)
}

/// Splits each class 70/30 (deterministically, by `--seed`) and writes `DIR/CLASS/mc_train.csv`
/// and `mc_test.csv`.
fn split_classes(
    a: &DemoArgs,
    tables: Vec<(String, String, Table)>,
    conditional: bool,
) -> Result<Vec<DemoClass>> {
    let mut out = Vec::new();
    for (k, (name, description, table)) in tables.into_iter().enumerate() {
        let mut x = table.data;
        if a.max_events > 0 && x.rows() > a.max_events {
            x = x.slice_rows(0, a.max_events);
        }
        let mut idx: Vec<usize> = (0..x.rows()).collect();
        Rng::stream(a.seed, 0x7E57).shuffle(&mut idx);
        let n_test = x.rows() * 3 / 10;
        let class = DemoClass {
            name,
            description,
            label: conditional.then_some(k as f32),
            names: table.columns,
            test: take_rows(&x, &idx[..n_test]),
            train: take_rows(&x, &idx[n_test..]),
        };
        let class_dir = a.out.join(&class.name);
        std::fs::create_dir_all(&class_dir).with_context(|| format!("{}", class_dir.display()))?;
        for (file, part) in [("mc_train.csv", &class.train), ("mc_test.csv", &class.test)] {
            let table = Table {
                columns: class.names.clone(),
                data: part.clone(),
            };
            write_table(&class_dir.join(file), &table, Format::Csv)?;
        }
        out.push(class);
    }
    Ok(out)
}

/// The training job of one demo model: `--epochs`, `--seed`, 20% of the training events for
/// validation, the preset's defaults; conditional on `label` when `context` is given.
fn demo_job(
    a: &DemoArgs,
    preset: Preset,
    names: &[String],
    features: Matrix<f32>,
    context: Option<Matrix<f32>>,
    out_dir: PathBuf,
    description: String,
) -> TrainJob {
    TrainJob {
        feature_names: names.to_vec(),
        features,
        context_names: if context.is_some() {
            vec!["label".into()]
        } else {
            Vec::new()
        },
        context,
        weights: None,
        preset,
        preset_options: preset.default_options(),
        train: TrainConfig {
            epochs: a.epochs,
            seed: a.seed,
            ..TrainConfig::default()
        },
        val_fraction: 0.2,
        margin: hepflow::preprocess::DEFAULT_MARGIN,
        discrete: None,
        out_dir,
        resume: false,
        data_description: description,
        ensemble: 1,
    }
}

/// Trains `preset` on one class and evaluates it.
fn run_separate(a: &DemoArgs, preset: Preset, c: &DemoClass) -> Result<Row> {
    let dir = a.out.join(&c.name).join(preset.name());
    let job = demo_job(
        a,
        preset,
        &c.names,
        c.train.clone(),
        None,
        dir.join("model"),
        format!("{}, 70% training split", c.description),
    );
    println!(
        "[{}] training {preset} on {} events ({} held out for the test)",
        c.name,
        c.train.rows(),
        c.test.rows()
    );
    let mut obs = TrainProgress::new(&format!("{}/{preset}", c.name));
    let s = train_model(&job, &mut obs)?;
    let model = Model::load(&job.out_dir)?;
    evaluate_class(a, &model, preset, c, &s)
}

/// Trains one conditional `preset` model on every class (context `label` = the class's index)
/// and evaluates it on each class.
fn run_conditional(a: &DemoArgs, preset: Preset, classes: &[DemoClass]) -> Result<Vec<Row>> {
    let features = Matrix::stack_rows(&classes.iter().map(|c| &c.train).collect::<Vec<_>>());
    let labels: Vec<f32> = classes
        .iter()
        .flat_map(|c| std::iter::repeat_n(c.label.unwrap_or(0.0), c.train.rows()))
        .collect();
    let context = Matrix::from_fn(labels.len(), 1, |i, _| labels[i]);
    let description = classes
        .iter()
        .map(|c| format!("{} (label={})", c.description, c.label.unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join("; ");
    let job = demo_job(
        a,
        preset,
        &classes[0].names,
        features,
        Some(context),
        a.out.join(preset.name()).join("model"),
        format!("{description}; 70% training splits"),
    );
    println!(
        "[all classes] training one conditional {preset} on {} events (context: label)",
        job.features.rows()
    );
    let mut obs = TrainProgress::new(&format!("label/{preset}"));
    let s = train_model(&job, &mut obs)?;
    let model = Model::load(&job.out_dir)?;
    classes
        .iter()
        .map(|c| evaluate_class(a, &model, preset, c, &s))
        .collect()
}

/// Generates as many events of class `c` as it holds out, writes them, evaluates them against the
/// held-out events (report in `DIR/CLASS/PRESET/report`) and prints the headline.
fn evaluate_class(
    a: &DemoArgs,
    model: &Model,
    preset: Preset,
    c: &DemoClass,
    s: &TrainSummary,
) -> Result<Row> {
    let dir = a.out.join(&c.name).join(preset.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let n_gen = c.test.rows();
    let ctx = c.label.map(|v| Matrix::from_fn(n_gen, 1, |_, _| v));
    let generated = super::evaluate::generate_for(model, n_gen, a.seed + 100, ctx.as_ref())?;
    let table = Table {
        columns: c.names.clone(),
        data: generated.clone(),
    };
    write_table(&dir.join("generated.csv"), &table, Format::Csv)?;
    let mut summary = vec![
        ("sample".into(), c.description.clone()),
        (
            "training time".into(),
            format!("{:.1} s, {} epochs", s.seconds, s.epochs_run),
        ),
    ];
    if let Some(v) = c.label {
        summary.push((
            "model".into(),
            format!("one conditional model, label = {v}"),
        ));
    }
    let ev = evaluate_model(
        model,
        &c.test,
        ctx.as_ref(),
        None,
        Some((generated, ctx.clone())),
        n_gen,
        a.seed,
        None,
        &dir.join("report"),
        &summary,
    )?;
    print_headline(&format!("[{}] {preset}", c.name), &ev);
    let m = &ev.metrics;
    Ok(Row {
        class: c.name.clone(),
        model: preset.name().into(),
        nll: m.test_nll,
        nll_err: m.test_nll_err,
        auc: m.c2st_auc,
        auc_err: m.c2st_auc_err,
        auc_mc: m.c2st_auc_mc_vs_mc,
        ks_max: m.features.iter().map(|f| f.ks).fold(0.0, f64::max),
        seconds: s.seconds,
        report: format!("{}/{}/report/report.html", c.name, preset.name()),
    })
}

/// Writes `DIR/report.html`, a small index page linking the self-contained per-model reports.
fn write_index(a: &DemoArgs, rows: &[Row], conditional: bool) -> Result<PathBuf> {
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hepflow demo</title><style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 10px;text-align:right}th{background:#eee}</style></head><body><h1>hepflow demo: generated events vs Monte Carlo</h1><p>{SAMPLE} {MODELS} Test NLL in nats per event in original units (lower is better); C2ST AUC: 0.5 = a classifier cannot tell generated from MC events.</p><table><tr><th>class</th><th>model</th><th>test NLL</th><th>C2ST AUC</th><th>MC vs MC AUC</th><th>max KS</th><th>training s</th><th>report</th></tr>",
    );
    let sample = if a.data.is_some() {
        "Events from the file given with --data."
    } else {
        "Bundled sample: real UCI HIGGS events (Baldi, Sadowski &amp; Whiteson 2014, CC BY 4.0), 18 features."
    };
    let models = if conditional {
        "Each model is one conditional flow p(x | label) trained on 70% of every class and compared, class by class, with the held-out 30%."
    } else {
        "Each model was trained on 70% of one class and compared with the held-out 30%."
    };
    html = html.replace("{SAMPLE}", sample).replace("{MODELS}", models);
    for r in rows {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3} ± {:.3}</td><td>{:.3} ± {:.3}</td><td>{}</td><td>{:.3}</td><td>{:.0}</td><td><a href=\"{}\">report</a></td></tr>",
            r.class,
            r.model,
            r.nll,
            r.nll_err,
            r.auc,
            r.auc_err,
            r.auc_mc.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
            r.ks_max,
            r.seconds,
            r.report
        ));
    }
    html.push_str("</table></body></html>\n");
    let index = a.out.join("report.html");
    atomic_write(&index, html.as_bytes()).with_context(|| format!("{}", index.display()))?;
    Ok(index)
}

fn print_summary(t_start: std::time::Instant, rows: &[Row], index: &std::path::Path) {
    println!(
        "\ndone in {:.0} s. Summary:",
        t_start.elapsed().as_secs_f64()
    );
    println!(
        "{:<11} {:<10} {:>16} {:>15} {:>8}",
        "class", "model", "test NLL", "C2ST AUC", "max KS"
    );
    for r in rows {
        println!(
            "{:<11} {:<10} {:>8.3} ± {:<5.3} {:>7.3} ± {:<5.3} {:>8.3}",
            r.class, r.model, r.nll, r.nll_err, r.auc, r.auc_err, r.ks_max
        );
    }
    println!(
        "open {} (per-model reports are linked from it)",
        index.display()
    );
}
