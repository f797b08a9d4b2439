//! Fidelity comparison helper: one fixed split of the bundled HIGGS sample, hepflow training on it,
//! and the same metrics for hepflow and for externally generated events (the nflows side).
//!
//! ```text
//! cargo run --release --example fidelity -- split --out DIR [--seed 1]
//! cargo run --release --example fidelity -- train --dir DIR --class background --preset rq-spline \
//!     [--config flow.toml] [--epochs N] [--seed 0] --out MODELDIR [--json results.jsonl]
//! cargo run --release --example fidelity -- score --test DIR/background/test.csv \
//!     --generated gen.csv (--log-prob logp.csv | --nll X --nll-err Y) --name nflows-nsf \
//!     --class background --seconds S [--json results.jsonl]
//! ```
//!
//! `split` writes `DIR/{background,signal}/{train,val,test}.csv` (60/15/25 %, shuffled by
//! `Rng::stream(seed, 0xF1DE)`, higgs18 features). `train` trains on `train.csv`, stops early on
//! exactly the events of `val.csv` (see [`arrange_for_split`]) and evaluates on `test.csv`; `score`
//! evaluates events generated elsewhere. Both end with [`hepflow::evaluate::evaluate`] on the test
//! split with the same options and seed, and print one JSON line:
//! `test_nll = -(1/n) sum_i log p(x_i)` over the test events (nats, original units) with its
//! standard error `std(log p)/sqrt(n)`, the C2ST AUC (5-fold boosted trees, test vs as many
//! generated events) with the standard error over the folds, the MC-vs-MC C2ST baseline, and the
//! largest two-sample Kolmogorov-Smirnov distance over the features.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hepflow::config::TrainOptions;
use hepflow::engine::{Matrix, Rng};
use hepflow::evaluate::{EvalOptions, Evaluation, evaluate};
use hepflow::flow::Flow;
use hepflow::io::{
    Format, Preset as Features, ReadOptions, Table, bundled_higgs_path, read_higgs, read_table,
    write_table,
};
use hepflow::model::Model;
use hepflow::pipeline::train::{split_indices, take_rows};
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::presets::Preset;
use hepflow::train::{EpochEnd, TrainObserver};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Seed of the evaluation (C2ST folds and subsampling), identical for every model.
const EVAL_SEED: u64 = 1234;

#[derive(Parser, Debug)]
#[command(
    about = "hepflow vs nflows fidelity comparison on a fixed split of the bundled HIGGS sample"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Writes DIR/{background,signal}/{train,val,test}.csv (60/15/25 %).
    Split {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the shuffle.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Trains a hepflow preset on DIR/CLASS/train.csv (early stopping on val.csv) and scores it on test.csv.
    Train {
        /// Directory written by `split`.
        #[arg(long)]
        dir: PathBuf,
        /// background or signal.
        #[arg(long)]
        class: String,
        /// realnvp, glow, pq-spline, rq-spline, maf, or default (the preset of `hepflow train`).
        #[arg(long, default_value = "default")]
        preset: String,
        /// TOML file with architecture / optimisation options (same keys as `hepflow train --config`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Maximum epochs (overrides the config).
        #[arg(long)]
        epochs: Option<usize>,
        /// Early-stopping patience in epochs (overrides the config).
        #[arg(long)]
        patience: Option<usize>,
        /// Seed of initialisation, shuffling and sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Name in the results (default: hepflow-PRESET).
        #[arg(long)]
        name: Option<String>,
        /// Model output directory.
        #[arg(long)]
        out: PathBuf,
        /// Append the JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Prints the name of the preset `hepflow train` uses without `--model`.
    DefaultPreset,
    /// Scores externally generated events against the test split.
    Score {
        /// Test events (CSV with header, as written by `split`).
        #[arg(long)]
        test: PathBuf,
        /// Generated events (same columns).
        #[arg(long)]
        generated: PathBuf,
        /// One column of per-event log p(x) on the test events (original units); gives the test NLL.
        #[arg(long)]
        log_prob: Option<PathBuf>,
        /// Test NLL computed elsewhere (when --log-prob is not given).
        #[arg(long, allow_hyphen_values = true)]
        nll: Option<f64>,
        /// Standard error of --nll.
        #[arg(long)]
        nll_err: Option<f64>,
        /// Model name in the results.
        #[arg(long)]
        name: String,
        /// background or signal.
        #[arg(long)]
        class: String,
        /// Training wall-clock seconds.
        #[arg(long, default_value_t = f64::NAN)]
        seconds: f64,
        /// Epochs run (for the table).
        #[arg(long)]
        epochs_run: Option<usize>,
        /// Epoch of the kept model.
        #[arg(long)]
        best_epoch: Option<usize>,
        /// Trainable parameters.
        #[arg(long)]
        num_params: Option<usize>,
        /// Append the JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    match cli.cmd {
        Cmd::Split { out, seed } => split(&out, seed),
        Cmd::DefaultPreset => {
            println!("{}", Preset::DEFAULT.name());
            Ok(())
        }
        Cmd::Train {
            dir,
            class,
            preset,
            config,
            epochs,
            patience,
            seed,
            name,
            out,
            json,
        } => train(&TrainArgs {
            dir,
            class,
            preset,
            config,
            epochs,
            patience,
            seed,
            name,
            out,
            json,
        }),
        Cmd::Score {
            test,
            generated,
            log_prob,
            nll,
            nll_err,
            name,
            class,
            seconds,
            epochs_run,
            best_epoch,
            num_params,
            json,
        } => {
            let test_t = read_csv(&test)?;
            let gen_t = read_csv(&generated)?;
            if gen_t.columns != test_t.columns {
                bail!(
                    "{}: columns {:?} differ from the test split's {:?}",
                    generated.display(),
                    gen_t.columns,
                    test_t.columns
                );
            }
            let lp = match &log_prob {
                Some(p) => {
                    let t = read_csv(p)?;
                    if t.cols() != 1 || t.rows() != test_t.rows() {
                        bail!(
                            "{}: expected one column with {} rows (one log p per test event), got {} x {}",
                            p.display(),
                            test_t.rows(),
                            t.rows(),
                            t.cols()
                        );
                    }
                    Some(
                        t.data
                            .as_slice()
                            .iter()
                            .map(|&v| v as f64)
                            .collect::<Vec<f64>>(),
                    )
                }
                None => None,
            };
            let ev = evaluate(
                &test_t.data,
                &gen_t.data,
                &test_t.columns,
                lp.as_deref(),
                &eval_options(),
            )?;
            let (test_nll, test_nll_err) = match (lp.is_some(), nll) {
                (true, _) => (ev.metrics.test_nll, ev.metrics.test_nll_err),
                (false, Some(v)) => (v, nll_err.unwrap_or(f64::NAN)),
                (false, None) => bail!("give --log-prob FILE or --nll X"),
            };
            let line = result_line(
                &name,
                &class,
                &ev,
                test_nll,
                test_nll_err,
                seconds,
                serde_json::json!({
                    "epochs_run": epochs_run,
                    "best_epoch": best_epoch,
                    "num_params": num_params,
                }),
            );
            emit(&line, json.as_deref())
        }
    }
}

/// Evaluation settings shared by both sides (defaults of `hepflow evaluate`, fixed seed).
fn eval_options() -> EvalOptions {
    EvalOptions {
        seed: EVAL_SEED,
        ..EvalOptions::default()
    }
}

fn read_csv(path: &Path) -> Result<Table> {
    read_table(path, &ReadOptions::default()).with_context(|| format!("{}", path.display()))
}

fn write_csv(path: &Path, columns: &[String], data: &Matrix<f32>) -> Result<()> {
    write_table(
        path,
        &Table {
            columns: columns.to_vec(),
            data: data.clone(),
        },
        Format::Csv,
    )
    .with_context(|| format!("{}", path.display()))
}

/// The fixed 60/15/25 split of each class.
fn split(out: &Path, seed: u64) -> Result<()> {
    let path = bundled_higgs_path();
    let mut summary = serde_json::Map::new();
    for (label, class) in [(0u8, "background"), (1u8, "signal")] {
        let table = read_higgs(&path, Features::Higgs18, Some(label))
            .with_context(|| format!("{}", path.display()))?;
        let n = table.rows();
        let mut idx: Vec<usize> = (0..n).collect();
        Rng::stream(seed, 0xF1DE).shuffle(&mut idx);
        let n_train = (n as f64 * 0.60).round() as usize;
        let n_val = (n as f64 * 0.15).round() as usize;
        let parts = [
            ("train", &idx[..n_train]),
            ("val", &idx[n_train..n_train + n_val]),
            ("test", &idx[n_train + n_val..]),
        ];
        let dir = out.join(class);
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let mut sizes = serde_json::Map::new();
        for (part, rows) in parts {
            let p = dir.join(format!("{part}.csv"));
            write_csv(&p, &table.columns, &take_rows(&table.data, rows))?;
            sizes.insert(part.into(), rows.len().into());
        }
        eprintln!(
            "[split] {class}: {n} events -> train {n_train}, val {n_val}, test {}",
            n - n_train - n_val
        );
        summary.insert(class.into(), serde_json::Value::Object(sizes));
    }
    summary.insert("seed".into(), seed.into());
    summary.insert("source".into(), path.display().to_string().into());
    summary.insert("features".into(), "higgs18".into());
    let p = out.join("split.json");
    std::fs::write(&p, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("{}", p.display()))?;
    Ok(())
}

/// Arguments of the `train` subcommand.
struct TrainArgs {
    dir: PathBuf,
    class: String,
    preset: String,
    config: Option<PathBuf>,
    epochs: Option<usize>,
    patience: Option<usize>,
    seed: u64,
    name: Option<String>,
    out: PathBuf,
    json: Option<PathBuf>,
}

/// Stacks `train` and `val` into one matrix whose rows at the validation indices chosen by
/// [`split_indices`]`(n, n_val / n, seed)` are exactly the `val` events, so that `train_model`
/// (which draws its validation split from one matrix) validates on the fixed `val.csv` events and
/// trains on the `train.csv` events. Returns the matrix and the validation fraction to use.
fn arrange_for_split(
    train: &Matrix<f32>,
    val: &Matrix<f32>,
    seed: u64,
) -> Result<(Matrix<f32>, f64)> {
    let (nt, nv) = (train.rows(), val.rows());
    let n = nt + nv;
    let frac = nv as f64 / n as f64;
    let (tr_idx, va_idx) = split_indices(n, frac, seed);
    if tr_idx.len() != nt || va_idx.len() != nv {
        bail!(
            "cannot reproduce the fixed split: split_indices gave {} + {} rows for {nt} + {nv}",
            tr_idx.len(),
            va_idx.len()
        );
    }
    let mut m = Matrix::zeros(n, train.cols());
    for (k, &i) in tr_idx.iter().enumerate() {
        m.row_mut(i).copy_from_slice(train.row(k));
    }
    for (k, &i) in va_idx.iter().enumerate() {
        m.row_mut(i).copy_from_slice(val.row(k));
    }
    Ok((m, frac))
}

/// Prints one line per epoch to stderr.
struct EpochLog {
    tag: String,
}

impl TrainObserver for EpochLog {
    fn on_epoch_end(&mut self, _flow: &Flow<f32>, end: &EpochEnd<'_>) -> Result<(), String> {
        let r = end.record;
        eprintln!(
            "[{}] epoch {:>3}  train {:.4}  val {:.4}  lr {:.2e}  {:.1} s",
            self.tag, r.epoch, r.train_nll, r.val_nll, r.lr, r.seconds
        );
        Ok(())
    }
    fn on_rollback(&mut self, epoch: usize, new_lr: f64) {
        eprintln!(
            "[{}] epoch {epoch}: non-finite loss, rolled back, lr -> {new_lr:.2e}",
            self.tag
        );
    }
}

fn train(a: &TrainArgs) -> Result<()> {
    // The same options, defaults and checks as `hepflow train --config` (hepflow::config); the
    // validation split is fixed here, so `val_fraction` is ignored.
    let file = match &a.config {
        Some(p) => TrainOptions::from_toml_file(p)?,
        None => TrainOptions::default(),
    };
    let over = TrainOptions {
        model: (a.preset != "default").then(|| a.preset.clone()),
        epochs: a.epochs,
        patience: a.patience,
        seed: Some(a.seed),
        ..TrainOptions::default()
    };
    let settings = file.merged(&over).resolve()?;
    let (preset, opts, cfg, margin) = (
        settings.preset,
        settings.preset_options.clone(),
        settings.train.clone(),
        settings.margin,
    );

    let cdir = a.dir.join(&a.class);
    let train_t = read_csv(&cdir.join("train.csv"))?;
    let val_t = read_csv(&cdir.join("val.csv"))?;
    let test_t = read_csv(&cdir.join("test.csv"))?;
    if val_t.columns != train_t.columns || test_t.columns != train_t.columns {
        bail!("{}: train/val/test columns differ", cdir.display());
    }
    let (features, val_fraction) = arrange_for_split(&train_t.data, &val_t.data, cfg.seed)?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("hepflow-{}", a.preset));
    let job = TrainJob {
        feature_names: train_t.columns.clone(),
        features,
        context_names: Vec::new(),
        context: None,
        weights: None,
        preset,
        preset_options: opts,
        train: cfg.clone(),
        val_fraction,
        margin,
        discrete: None,
        out_dir: a.out.clone(),
        resume: false,
        data_description: format!(
            "fidelity split {}: {} train + {} val ({})",
            cdir.display(),
            train_t.rows(),
            val_t.rows(),
            a.class
        ),
    };
    eprintln!(
        "[{}/{name}] preset {} ({} blocks, hidden {:?}), {} train + {} val events, max {} epochs",
        a.class,
        preset,
        job.preset_options.blocks,
        job.preset_options.hidden,
        train_t.rows(),
        val_t.rows(),
        cfg.epochs
    );
    let mut obs = EpochLog {
        tag: format!("{}/{name}", a.class),
    };
    let summary = train_model(&job, &mut obs)?;
    let model = Model::load(&a.out)?;
    let lp = model.log_prob(&test_t.data, None)?;
    let n_gen = test_t.rows();
    let generated = model.sample_range(0, n_gen, a.seed.wrapping_add(100), None)?;
    write_csv(
        &a.out.join("generated.csv"),
        &test_t.columns,
        &finite_rows(&generated),
    )?;
    let ev = evaluate(
        &test_t.data,
        &generated,
        &test_t.columns,
        Some(&lp),
        &eval_options(),
    )?;
    let line = result_line(
        &name,
        &a.class,
        &ev,
        ev.metrics.test_nll,
        ev.metrics.test_nll_err,
        summary.seconds,
        serde_json::json!({
            "preset": preset.name(),
            "epochs_run": summary.epochs_run,
            "best_epoch": summary.best_epoch,
            "early_stopped": summary.early_stopped,
            "best_val_nll": summary.best_val_nll,
            "num_params": summary.num_params,
            "n_train": summary.n_train,
            "n_val": summary.n_val,
            "rollbacks": summary.rollbacks,
        }),
    );
    emit(&line, a.json.as_deref())
}

/// The rows of `m` whose values are all finite (CSV output refuses NaN/inf).
fn finite_rows(m: &Matrix<f32>) -> Matrix<f32> {
    let keep: Vec<usize> = (0..m.rows())
        .filter(|&i| m.row(i).iter().all(|v| v.is_finite()))
        .collect();
    take_rows(m, &keep)
}

/// One result as a JSON object; `extra`'s fields are merged in.
fn result_line(
    name: &str,
    class: &str,
    ev: &Evaluation,
    test_nll: f64,
    test_nll_err: f64,
    seconds: f64,
    extra: serde_json::Value,
) -> serde_json::Value {
    let m = &ev.metrics;
    let (ks_max, ks_feature) = m
        .features
        .iter()
        .fold((0.0f64, String::new()), |(best, bn), f| {
            if f.ks > best {
                (f.ks, f.name.clone())
            } else {
                (best, bn)
            }
        });
    let num = |v: f64| {
        if v.is_finite() {
            serde_json::json!(v)
        } else {
            serde_json::Value::Null
        }
    };
    let mut obj = serde_json::json!({
        "name": name,
        "class": class,
        "test_nll": num(test_nll),
        "test_nll_err": num(test_nll_err),
        "c2st_auc": num(m.c2st_auc),
        "c2st_auc_err": num(m.c2st_auc_err),
        "c2st_auc_mc_vs_mc": m.c2st_auc_mc_vs_mc.map(num),
        "ks_max": num(ks_max),
        "ks_max_feature": ks_feature,
        "frechet_distance": num(m.frechet_distance),
        "corr_frobenius": num(m.corr_frobenius),
        "train_seconds": num(seconds),
        "n_test": m.n_reference,
        "n_generated": m.n_generated,
        "dropped_generated": ev.dropped_generated,
        "nll_skipped": ev.nll_skipped,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (obj.as_object_mut(), extra) {
        for (k, v) in e {
            o.insert(k, v);
        }
    }
    obj
}

fn emit(line: &serde_json::Value, json: Option<&Path>) -> Result<()> {
    let s = serde_json::to_string(line)?;
    println!("{s}");
    if let Some(p) = json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("{}", p.display()))?;
        writeln!(f, "{s}").with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}
