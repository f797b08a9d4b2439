//! `hepflow demo`: the whole workflow on the bundled HIGGS sample.
//!
//! For background (label 0) and signal (label 1) separately: hold out 30% of the events, train the
//! default preset and the seminar's Glow on the rest (higgs18 features), generate as many events as
//! were held out, evaluate them against the held-out MC events, and write everything under DIR.

use super::evaluate::{evaluate_model, print_headline};
use super::progress::TrainProgress;
use anyhow::{Context, Result};
use clap::Args;
use hepflow::engine::{Matrix, Rng};
use hepflow::fsutil::atomic_write;
use hepflow::io::{Format, Table, write_table};
use hepflow::io::{Preset as Features, bundled_higgs_path, read_higgs};
use hepflow::model::Model;
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

/// Runs `hepflow demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let t_start = std::time::Instant::now();
    let presets: Vec<Preset> = a
        .models
        .split(',')
        .map(|m| match m.trim() {
            "default" => Ok(Preset::DEFAULT),
            other => other.parse::<Preset>().map_err(|e| anyhow::anyhow!(e)),
        })
        .collect::<Result<_>>()?;
    let mut presets_unique = Vec::new();
    for p in presets {
        if !presets_unique.contains(&p) {
            presets_unique.push(p);
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let classes = demo_classes(&a)?;
    println!(
        "hepflow demo: {} -> {}",
        a.data.as_deref().unwrap_or("the bundled HIGGS sample"),
        a.out.display()
    );
    let mut rows = Vec::new();
    for (class, description, table) in &classes {
        let class = class.as_str();
        let names = table.columns.clone();
        let mut x = table.data.clone();
        if a.max_events > 0 && x.rows() > a.max_events {
            x = x.slice_rows(0, a.max_events);
        }
        // Deterministic 70/30 split into training (+ validation) and held-out test events.
        let mut idx: Vec<usize> = (0..x.rows()).collect();
        Rng::stream(a.seed, 0x7E57).shuffle(&mut idx);
        let n_test = x.rows() * 3 / 10;
        let test = take_rows(&x, &idx[..n_test]);
        let train = take_rows(&x, &idx[n_test..]);
        let class_dir = a.out.join(class);
        std::fs::create_dir_all(&class_dir).with_context(|| format!("{}", class_dir.display()))?;
        for (file, part) in [("mc_train.csv", &train), ("mc_test.csv", &test)] {
            let table = Table {
                columns: names.clone(),
                data: part.clone(),
            };
            write_table(&class_dir.join(file), &table, Format::Csv)?;
        }
        for &preset in &presets_unique {
            let dir = class_dir.join(preset.name());
            let job = TrainJob {
                feature_names: names.clone(),
                features: train.clone(),
                context_names: Vec::new(),
                context: None,
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
                out_dir: dir.join("model"),
                resume: false,
                data_description: format!("{description}, 70% training split"),
                ensemble: 1,
            };
            println!(
                "[{class}] training {} on {} events ({} held out for the test)",
                preset,
                train.rows(),
                test.rows()
            );
            let mut obs = TrainProgress::new(&format!("{class}/{preset}"));
            let s = train_model(&job, &mut obs)?;
            let model = Model::load(&job.out_dir)?;
            let n_gen = test.rows();
            let generated = super::evaluate::generate_for(&model, n_gen, a.seed + 100, None)?;
            write_table(
                &dir.join("generated.csv"),
                &Table {
                    columns: names.clone(),
                    data: generated.clone(),
                },
                Format::Csv,
            )?;
            let ev = evaluate_model(
                &model,
                &test,
                None,
                None,
                Some((generated, None::<Matrix<f32>>)),
                n_gen,
                a.seed,
                None,
                &dir.join("report"),
                &[
                    ("sample".into(), description.clone()),
                    (
                        "training time".into(),
                        format!("{:.1} s, {} epochs", s.seconds, s.epochs_run),
                    ),
                ],
            )?;
            print_headline(&format!("[{class}] {preset}"), &ev);
            let m = &ev.metrics;
            rows.push(Row {
                class: class.into(),
                model: preset.name().into(),
                nll: m.test_nll,
                nll_err: m.test_nll_err,
                auc: m.c2st_auc,
                auc_err: m.c2st_auc_err,
                auc_mc: m.c2st_auc_mc_vs_mc,
                ks_max: m.features.iter().map(|f| f.ks).fold(0.0, f64::max),
                seconds: s.seconds,
                report: format!("{class}/{}/report/report.html", preset.name()),
            });
        }
    }
    // A small index page linking the self-contained per-model reports.
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hepflow demo</title><style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 10px;text-align:right}th{background:#eee}</style></head><body><h1>hepflow demo: generated events vs Monte Carlo</h1><p>{SAMPLE} Each model was trained on 70% of one class and compared with the held-out 30%. Test NLL in nats per event in original units (lower is better); C2ST AUC: 0.5 = a classifier cannot tell generated from MC events.</p><table><tr><th>class</th><th>model</th><th>test NLL</th><th>C2ST AUC</th><th>MC vs MC AUC</th><th>max KS</th><th>training s</th><th>report</th></tr>",
    );
    html = html.replace(
        "{SAMPLE}",
        if a.data.is_some() {
            "Events from the file given with --data."
        } else {
            "Bundled sample: real UCI HIGGS events (Baldi, Sadowski &amp; Whiteson 2014, CC BY 4.0), 18 features."
        },
    );
    for r in &rows {
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
    println!(
        "\ndone in {:.0} s. Summary:",
        t_start.elapsed().as_secs_f64()
    );
    println!(
        "{:<11} {:<10} {:>16} {:>15} {:>8}",
        "class", "model", "test NLL", "C2ST AUC", "max KS"
    );
    for r in &rows {
        println!(
            "{:<11} {:<10} {:>8.3} ± {:<5.3} {:>7.3} ± {:<5.3} {:>8.3}",
            r.class, r.model, r.nll, r.nll_err, r.auc, r.auc_err, r.ks_max
        );
    }
    println!(
        "open {} (per-model reports are linked from it)",
        index.display()
    );
    Ok(())
}
