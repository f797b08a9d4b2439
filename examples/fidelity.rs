//! Fidelity comparison helper: one fixed split of the bundled HIGGS sample, hepflow training on it,
//! and the same metrics for hepflow and for externally generated events (the nflows side).
//!
//! ```text
//! cargo run --release --example fidelity -- split --out DIR [--seed 1]
//! cargo run --release --example fidelity -- train --dir DIR --class background --preset rq-spline \
//!     [--config flow.toml] [--epochs N] [--seed 0] --out MODELDIR [--json results.jsonl]
//! cargo run --release --example fidelity -- support [--class background] [--preset default] [--epochs 3] [--n 100000]
//! cargo run --release --example fidelity -- prep --dir DIR --class background --out PREPDIR
//! cargo run --release --example fidelity -- score --test DIR/background/test.csv \
//!     --train DIR/background/train.csv [--model-space] --generated gen0.csv,gen1.csv,gen2.csv \
//!     (--log-prob logp.csv | --nll X --nll-err Y) --name nflows-nsf \
//!     --class background --seconds S [--json results.jsonl]
//! ```
//!
//! `split` writes `DIR/{background,signal}/{train,val,test}.csv` (60/15/25 %, shuffled by
//! `Rng::stream(seed, 0xF1DE)`, higgs18 features). `train` trains on `train.csv`, stops early on
//! exactly the events of `val.csv` (see [`arrange_for_split`]) and evaluates on `test.csv`; `score`
//! evaluates events generated elsewhere; `prep` writes the train/val/test events of a class mapped
//! by hepflow's own preprocessing (fitted on `train.csv` exactly as `train` fits it), with the
//! log-determinant per event, so that the PyTorch side trains in the same space and `score
//! --model-space` maps its samples back with the same map. `train` and `score` end with
//! [`hepflow::evaluate::evaluate`] on the test split, once per generated sample (three by
//! default, sampling seeds `seed + 100 + k`, evaluation seeds `1234 + k`), and print one JSON line:
//! `test_nll = -(1/n) sum_i log p(x_i)` over the test events (nats, original units) with its
//! standard error `std(log p)/sqrt(n)`, the C2ST AUC (5-fold boosted trees, test vs as many
//! generated events): mean over the repeats, their sample standard deviation, each value and the
//! mean standard error over the folds, the MC-vs-MC C2ST baseline (mean), the fraction of
//! generated events with any feature outside the range of `train.csv` (mean) next to the same
//! fraction for the test events (a second MC sample), and the largest two-sample
//! Kolmogorov-Smirnov distance over the features (mean over the repeats).

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
use hepflow::model::{Model, encode_context};
use hepflow::pipeline::train::{split_indices, take_rows};
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::presets::Preset;
use hepflow::train::{EpochEnd, TrainConfig, TrainObserver};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Seed of the first evaluation (C2ST folds and subsampling), identical for every model; repeat
/// `k` uses `EVAL_SEED + k`.
const EVAL_SEED: u64 = 1234;
/// Generated samples (and C2ST runs) per model.
const REPEATS: usize = 3;

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
        /// realnvp, glow, pq-spline, rq-spline, maf, made-mog, flow-matching, or default (the preset of `hepflow train`).
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
        /// Train one conditional model `p(x | label)` on both classes (`--class` must be
        /// `both`; label 0 = background, 1 = signal) and score it on each class's test events.
        #[arg(long)]
        conditional: bool,
        /// Name in the results (default: hepflow-PRESET).
        #[arg(long)]
        name: Option<String>,
        /// Generated samples scored (C2ST seeds).
        #[arg(long, default_value_t = REPEATS)]
        repeats: usize,
        /// Model output directory.
        #[arg(long)]
        out: PathBuf,
        /// Append the JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Generated events outside the training range, negative values of non-negative columns and
    /// pinned events, for the fixed 5% margins of earlier versions and for the current support
    /// rule, side by side (same events, seed and training budget).
    Support {
        /// background or signal.
        #[arg(long, default_value = "background")]
        class: String,
        /// Training epochs (a tiny budget: the point is the preprocessing, not the fit).
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Generated events per model.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Seed of the split, initialisation, training and sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Preset (default: the preset of `hepflow train`).
        #[arg(long, default_value = "default")]
        preset: String,
        /// Blocks of the preset (its own default when absent).
        #[arg(long)]
        blocks: Option<usize>,
        /// Width of its two conditioner layers (its own default when absent).
        #[arg(long)]
        hidden: Option<usize>,
    },
    /// Prints the name of the preset `hepflow train` uses without `--model`.
    DefaultPreset,
    /// Prints the training budget of `hepflow train`'s defaults as one JSON line (default
    /// preset and its dropout, epochs, patience, learning rate and schedule, batch size,
    /// gradient clip, weight decay), so that the PyTorch side gets the same knobs.
    Budget,
    /// Writes OUT/{train,val,test}.csv: the events of DIR/CLASS in hepflow's model space (the
    /// preprocessing `train` fits on train.csv), plus the columns `ladj` (log|det dz/dx|) and
    /// `outside_support` (1 where the event has density zero under any model with this map).
    Prep {
        /// Directory written by `split`.
        #[arg(long)]
        dir: PathBuf,
        /// background or signal.
        #[arg(long)]
        class: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Scores externally generated events against the test split.
    Score {
        /// Test events (CSV with header, as written by `split`).
        #[arg(long)]
        test: PathBuf,
        /// Training events (as written by `split`): their range, and the preprocessing of
        /// `--model-space`.
        #[arg(long)]
        train: PathBuf,
        /// Generated events (same columns), one file per repeat, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        generated: Vec<PathBuf>,
        /// The generated files are in model space (as the `prep` files): map them back with
        /// the preprocessing fitted on --train.
        #[arg(long)]
        model_space: bool,
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
        /// Training seed (for the table).
        #[arg(long)]
        seed: Option<u64>,
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
        Cmd::Support {
            class,
            epochs,
            n,
            seed,
            preset,
            blocks,
            hidden,
        } => support(&class, &preset, epochs, n, seed, blocks, hidden),
        Cmd::DefaultPreset => {
            println!("{}", Preset::DEFAULT.name());
            Ok(())
        }
        Cmd::Prep { dir, class, out } => prep(&dir, &class, &out),
        Cmd::Budget => {
            let st = TrainOptions::default().resolve()?;
            let t = &st.train;
            println!(
                "{}",
                serde_json::json!({
                    "preset": st.preset.name(),
                    "dropout": st.preset_options.dropout,
                    "epochs": t.epochs,
                    "patience": t.patience,
                    "lr": t.lr,
                    "schedule": format!("{:?}", t.schedule),
                    "batch_size": t.batch_size,
                    "clip_grad_norm": t.clip_grad_norm,
                    "weight_decay": t.adam.weight_decay,
                    "ema_decay": t.ema_decay,
                })
            );
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
            conditional,
            name,
            repeats,
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
            conditional,
            name,
            repeats,
            out,
            json,
        }),
        Cmd::Score {
            test,
            train,
            generated,
            model_space,
            log_prob,
            nll,
            nll_err,
            name,
            class,
            seconds,
            epochs_run,
            best_epoch,
            num_params,
            seed,
            json,
        } => {
            let test_t = read_csv(&test)?;
            let train_t = read_csv(&train)?;
            if train_t.columns != test_t.columns {
                bail!(
                    "{}: columns {:?} differ from the test split's {:?}",
                    train.display(),
                    train_t.columns,
                    test_t.columns
                );
            }
            let pre = model_space
                .then(|| fit_preprocessor(&train_t))
                .transpose()?;
            let mut samples = Vec::new();
            for g in &generated {
                let t = read_csv(g)?;
                if t.columns != test_t.columns {
                    bail!(
                        "{}: columns {:?} differ from the test split's {:?}",
                        g.display(),
                        t.columns,
                        test_t.columns
                    );
                }
                samples.push(match &pre {
                    Some(p) => p
                        .inverse(&t.data.cast::<f64>())
                        .with_context(|| format!("{}", g.display()))?
                        .cast::<f32>(),
                    None => t.data,
                });
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
            let evs = evaluate_repeats(&test_t, &samples, lp.as_deref())?;
            let (test_nll, test_nll_err) = match (lp.is_some(), nll) {
                (true, _) => (evs[0].metrics.test_nll, evs[0].metrics.test_nll_err),
                (false, Some(v)) => (v, nll_err.unwrap_or(f64::NAN)),
                (false, None) => bail!("give --log-prob FILE or --nll X"),
            };
            let line = result_line(
                &name,
                &class,
                &evs,
                &outside_training_range(&train_t.data, &test_t.data, &samples),
                test_nll,
                test_nll_err,
                seconds,
                serde_json::json!({
                    "epochs_run": epochs_run,
                    "best_epoch": best_epoch,
                    "num_params": num_params,
                    "seed": seed,
                }),
            );
            emit(&line, json.as_deref())
        }
    }
}

/// Evaluation settings shared by every side (defaults of `hepflow evaluate`), repeat `k`.
fn eval_options(k: usize) -> EvalOptions {
    EvalOptions {
        seed: EVAL_SEED + k as u64,
        ..EvalOptions::default()
    }
}

/// [`evaluate`] of each generated sample against the test events, repeat `k` with evaluation
/// seed `EVAL_SEED + k`.
fn evaluate_repeats(
    test: &Table,
    samples: &[Matrix<f32>],
    log_prob: Option<&[f64]>,
) -> Result<Vec<Evaluation>> {
    if samples.is_empty() {
        bail!("no generated sample to score");
    }
    samples
        .iter()
        .enumerate()
        .map(|(k, g)| {
            evaluate(&test.data, g, &test.columns, log_prob, &eval_options(k))
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Fractions of events outside the training range: `(per generated sample, MC)`.
type Outside = (Vec<f64>, f64);

/// Fraction of events outside the training range (any feature), for each generated sample and
/// for the test events (the MC's own fraction): `(generated, mc)`.
fn outside_training_range(
    train: &Matrix<f32>,
    test: &Matrix<f32>,
    samples: &[Matrix<f32>],
) -> Outside {
    use hepflow::evaluate::metrics::{column_ranges, outside_fractions};
    let d = train.cols();
    let flat = |m: &Matrix<f32>| m.as_slice().iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let ranges = column_ranges(&flat(train), d);
    let gen_fracs = samples
        .iter()
        .map(|g| outside_fractions(&flat(g), d, &ranges).1)
        .collect();
    (gen_fracs, outside_fractions(&flat(test), d, &ranges).1)
}

/// The preprocessing `train` fits on these training events (discrete columns detected as by
/// `hepflow train`, the default margin of `hepflow train`).
fn fit_preprocessor(train: &Table) -> Result<hepflow::preprocess::Preprocessor> {
    let margin = TrainOptions::default().resolve()?.margin;
    let discrete = detect_discrete(&train.data);
    hepflow::preprocess::Preprocessor::fit(
        &train.data.cast::<f64>(),
        &train.columns,
        &discrete,
        margin,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Columns with 2-8 distinct values (the rule of `hepflow train`'s automatic detection).
fn detect_discrete(x: &Matrix<f32>) -> Vec<usize> {
    (0..x.cols())
        .filter(|&j| {
            let mut v: Vec<f32> = (0..x.rows()).map(|i| x.get(i, j)).collect();
            v.sort_by(f32::total_cmp);
            v.dedup();
            (2..=8).contains(&v.len())
        })
        .collect()
}

/// The `prep` subcommand (see its help).
fn prep(dir: &Path, class: &str, out: &Path) -> Result<()> {
    let cdir = dir.join(class);
    let train_t = read_csv(&cdir.join("train.csv"))?;
    let pre = fit_preprocessor(&train_t)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    for part in ["train", "val", "test"] {
        let t = read_csv(&cdir.join(format!("{part}.csv")))?;
        if t.columns != train_t.columns {
            bail!("{}: columns differ from train.csv", cdir.display());
        }
        let x = t.data.cast::<f64>();
        let (z, ladj) = pre
            .forward(&x, None)
            .with_context(|| format!("{}/{part}.csv", cdir.display()))?;
        let outside = pre.outside_support(&x);
        let d = t.cols();
        let mut m = Matrix::<f32>::zeros(t.rows(), d + 2);
        for i in 0..t.rows() {
            let r = m.row_mut(i);
            for (rj, &v) in r.iter_mut().zip(z.row(i)) {
                *rj = v as f32;
            }
            r[d] = ladj[i] as f32;
            r[d + 1] = f32::from(u8::from(outside[i]));
        }
        let mut cols = t.columns.clone();
        cols.push("ladj".into());
        cols.push("outside_support".into());
        write_csv(&out.join(format!("{part}.csv")), &cols, &m)?;
    }
    eprintln!("[prep] {class}: model-space events in {}", out.display());
    Ok(())
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

/// The `support` subcommand (see its help).
fn support(
    class: &str,
    preset: &str,
    epochs: usize,
    n: usize,
    seed: u64,
    blocks: Option<usize>,
    hidden: Option<usize>,
) -> Result<()> {
    use hepflow::model::{FORMAT_VERSION, ModelConfig};
    use hepflow::preprocess::{DEFAULT_MARGIN, Preprocessor};
    use hepflow::presets::{build_base, build_specs};
    use hepflow::train::{Silent, fit, initial_state};
    let label = match class {
        "background" => 0u8,
        "signal" => 1,
        _ => bail!("--class must be background or signal"),
    };
    let path = bundled_higgs_path();
    let table = read_higgs(&path, Features::Higgs18, Some(label))
        .with_context(|| format!("{}", path.display()))?;
    let d = table.columns.len();
    let (fit_idx, test_idx) = split_indices(table.rows(), 0.3, seed);
    let (tr_idx, va_idx) = split_indices(fit_idx.len(), 0.15, seed + 1);
    let x_fit = take_rows(&table.data, &fit_idx);
    let x_tr = take_rows(&x_fit, &tr_idx);
    let x_va = take_rows(&x_fit, &va_idx);
    let x_te = take_rows(&table.data, &test_idx);
    let discrete: Vec<usize> = (0..d)
        .filter(|&j| {
            let mut v: Vec<f32> = (0..x_tr.rows()).map(|i| x_tr.get(i, j)).collect();
            v.sort_by(f32::total_cmp);
            v.dedup();
            v.len() <= 8
        })
        .collect();
    let x64 = x_tr.cast::<f64>();
    let preset: Preset = if preset == "default" {
        Preset::DEFAULT
    } else {
        preset.parse().map_err(|e: String| anyhow::anyhow!(e))?
    };
    let mut opts = preset.default_options();
    if let Some(b) = blocks {
        opts.blocks = b.max(1);
    }
    if let Some(h) = hidden {
        opts.hidden = vec![h.max(1); 2];
    }
    let cfg = TrainConfig {
        seed,
        epochs: epochs.max(1),
        ..TrainConfig::default()
    };
    // Training range and non-negative columns (continuous only).
    let range: Vec<Option<(f32, f32)>> = (0..d)
        .map(|j| {
            (!discrete.contains(&j)).then(|| {
                (0..x_tr.rows()).fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), i| {
                    (a.min(x_tr.get(i, j)), b.max(x_tr.get(i, j)))
                })
            })
        })
        .collect();
    // Fraction of the events of `x` with any continuous feature outside the training range,
    // and with a negative value where every training value is >= 0.
    let fractions = |x: &Matrix<f32>| {
        let (mut out, mut neg) = (0usize, 0usize);
        for i in 0..x.rows() {
            let r = x.row(i);
            let (mut o, mut g) = (false, false);
            for (j, rg) in range.iter().enumerate() {
                if let Some((lo, hi)) = rg {
                    o |= !(r[j] >= *lo && r[j] <= *hi);
                    g |= *lo >= 0.0 && r[j] < 0.0;
                }
            }
            out += usize::from(o);
            neg += usize::from(g);
        }
        let m = x.rows().max(1) as f64;
        (out as f64 / m, neg as f64 / m)
    };
    let (mc_out, _) = fractions(&x_te);
    println!(
        "{class}: {} training, {} validation, {} test events; preset {} ({} blocks, hidden {:?}), {} epochs, seed {seed}",
        x_tr.rows(),
        x_va.rows(),
        x_te.rows(),
        preset.name(),
        opts.blocks,
        opts.hidden,
        cfg.epochs
    );
    println!(
        "MC test split outside the training range: {:.3} % of {} events",
        100.0 * mc_out,
        x_te.rows()
    );
    println!(
        "| preprocessing | generated outside training range | negative where training >= 0 | pinned (every / any feature) | test NLL | test events outside support | training s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rules: [(&str, Preprocessor); 2] = [
        (
            "fixed 5% margins (before)",
            Preprocessor::fit_fixed_margin(&x64, &table.columns, &discrete, 0.05)?,
        ),
        (
            "support rule (after)",
            Preprocessor::fit(&x64, &table.columns, &discrete, DEFAULT_MARGIN)?,
        ),
    ];
    for (name, pre) in rules {
        let t0 = std::time::Instant::now();
        let config = ModelConfig {
            format_version: FORMAT_VERSION,
            preset: preset.name().into(),
            features: table.columns.clone(),
            context: Vec::new(),
            preprocessing: Some(pre),
            layers: build_specs(preset, d, &opts, seed),
            base: build_base(preset, d, &opts),
            training: serde_json::Value::Null,
            members: 1,
        };
        let mut model = Model::new(config, seed);
        let mut deq = Rng::stream(seed, 0xDE0);
        let (z_tr, _) = model.to_model_space(&x_tr, Some(&mut deq))?;
        let (z_va, _) = model.to_model_space(&x_va, None)?;
        let state = initial_state(&model.flow, &cfg);
        fit(
            &mut model.flow,
            &z_tr,
            None,
            &z_va,
            None,
            &cfg,
            state,
            &mut Silent,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = t0.elapsed().as_secs_f64();
        let g = model.sample_range(0, n, seed + 7, None)?;
        let (out, neg) = fractions(&g);
        let pin = model.pinned(&g);
        let lp = model.log_prob(&x_te, None)?;
        let finite: Vec<f64> = lp.iter().copied().filter(|v| v.is_finite()).collect();
        let nll = -finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        println!(
            "| {name} | {:.3} % | {:.3} % | {} / {} | {nll:.3} | {} | {secs:.0} |",
            100.0 * out,
            100.0 * neg,
            pin.all_features,
            pin.any_feature,
            lp.len() - finite.len()
        );
    }
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
    conditional: bool,
    name: Option<String>,
    repeats: usize,
    out: PathBuf,
    json: Option<PathBuf>,
}

/// The classes of the split and their label in a conditional model.
const CLASSES: [(&str, f32); 2] = [("background", 0.0), ("signal", 1.0)];

/// The train, validation and test events of one class of the split.
struct ClassSplit {
    train: Table,
    val: Table,
    test: Table,
}

fn read_class(dir: &Path, class: &str) -> Result<ClassSplit> {
    let cdir = dir.join(class);
    let c = ClassSplit {
        train: read_csv(&cdir.join("train.csv"))?,
        val: read_csv(&cdir.join("val.csv"))?,
        test: read_csv(&cdir.join("test.csv"))?,
    };
    if c.val.columns != c.train.columns || c.test.columns != c.train.columns {
        bail!("{}: train/val/test columns differ", cdir.display());
    }
    Ok(c)
}

/// `m` with a constant column `value` appended.
fn with_label(m: &Matrix<f32>, value: f32) -> Matrix<f32> {
    let d = m.cols();
    Matrix::from_fn(
        m.rows(),
        d + 1,
        |i, j| if j < d { m.get(i, j) } else { value },
    )
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
    let options = set_options(&file)?;
    let settings = file.merged(&over).resolve()?;
    let (preset, opts, cfg, margin) = (
        settings.preset,
        settings.preset_options.clone(),
        settings.train.clone(),
        settings.margin,
    );

    let name = a.name.clone().unwrap_or_else(|| {
        let kind = if a.conditional { "-conditional" } else { "" };
        format!("hepflow-{}{kind}", a.preset)
    });
    let classes: Vec<(String, Option<f32>, ClassSplit)> = if a.conditional {
        if a.class != "both" {
            bail!("--conditional trains one model on both classes: give --class both");
        }
        CLASSES
            .iter()
            .map(|&(c, v)| Ok((c.to_string(), Some(v), read_class(&a.dir, c)?)))
            .collect::<Result<_>>()?
    } else {
        vec![(a.class.clone(), None, read_class(&a.dir, &a.class)?)]
    };
    let data = training_data(&classes, cfg.seed)?;
    let job = TrainJob {
        feature_names: classes[0].2.train.columns.clone(),
        features: data.features,
        context_names: if a.conditional {
            vec!["label".to_string()]
        } else {
            Vec::new()
        },
        context: data.context,
        weights: None,
        preset,
        preset_options: opts,
        train: cfg.clone(),
        val_fraction: data.val_fraction,
        margin,
        discrete: None,
        out_dir: a.out.clone(),
        resume: false,
        data_description: format!(
            "fidelity split {}: {} train + {} val ({})",
            a.dir.display(),
            data.n_train,
            data.n_val,
            a.class
        ),
        ensemble: settings.ensemble,
    };
    eprintln!(
        "[{}/{name}] preset {} ({} blocks, hidden {:?}), {} train + {} val events, max {} epochs",
        a.class,
        preset,
        job.preset_options.blocks,
        job.preset_options.hidden,
        data.n_train,
        data.n_val,
        cfg.epochs
    );
    let mut obs = EpochLog {
        tag: format!("{}/{name}", a.class),
    };
    let summary = train_model(&job, &mut obs)?;
    let model = Model::load(&a.out)?;
    let extra = serde_json::json!({
        "preset": preset.name(),
        "seed": a.seed,
        "conditional": a.conditional,
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "early_stopped": summary.early_stopped,
        "best_val_nll": summary.best_val_nll,
        "num_params": summary.num_params,
        "n_train": summary.n_train,
        "n_val": summary.n_val,
        "rollbacks": summary.rollbacks,
        "ensemble": settings.ensemble,
        "options": options,
    });
    for (class, label, split) in &classes {
        let (evs, outside) = score_class(&model, a, class, *label, split)?;
        let m = &evs[0].metrics;
        let line = result_line(
            &name,
            class,
            &evs,
            &outside,
            m.test_nll,
            m.test_nll_err,
            summary.seconds,
            extra.clone(),
        );
        emit(&line, a.json.as_deref())?;
    }
    Ok(())
}

/// What `train` hands to `train_model`: the events (and labels) of the classes' train and val
/// splits, arranged so that the validation split is exactly the val events.
struct TrainingData {
    features: Matrix<f32>,
    context: Option<Matrix<f32>>,
    val_fraction: f64,
    n_train: usize,
    n_val: usize,
}

fn training_data(classes: &[(String, Option<f32>, ClassSplit)], seed: u64) -> Result<TrainingData> {
    let labelled = |pick: fn(&ClassSplit) -> &Table| {
        let parts: Vec<Matrix<f32>> = classes
            .iter()
            .map(|(_, label, s)| with_label(&pick(s).data, label.unwrap_or(0.0)))
            .collect();
        Matrix::stack_rows(&parts.iter().collect::<Vec<_>>())
    };
    let (train, val) = (labelled(|s| &s.train), labelled(|s| &s.val));
    let (n_train, n_val) = (train.rows(), val.rows());
    let (all, val_fraction) = arrange_for_split(&train, &val, seed)?;
    let d = all.cols() - 1;
    let conditional = classes.iter().any(|c| c.1.is_some());
    Ok(TrainingData {
        features: Matrix::from_fn(all.rows(), d, |i, j| all.get(i, j)),
        context: conditional.then(|| Matrix::from_fn(all.rows(), 1, |i, _| all.get(i, d))),
        val_fraction,
        n_train,
        n_val,
    })
}

/// Scores `model` on one class's test events (given its label when the model is conditional):
/// the evaluations of `repeats` generated samples (written to the model directory) and the
/// outside-range fractions.
fn score_class(
    model: &Model,
    a: &TrainArgs,
    class: &str,
    label: Option<f32>,
    split: &ClassSplit,
) -> Result<(Vec<Evaluation>, Outside)> {
    let test = &split.test;
    let n = test.rows();
    let ctx = match label {
        Some(v) => Some(encode_context(
            &model.config.context,
            &Matrix::from_fn(n, 1, |_, _| v),
        )?),
        None => None,
    };
    let lp = model.log_prob(&test.data, ctx.as_ref())?;
    let mut samples = Vec::new();
    for k in 0..a.repeats.max(1) {
        let seed = a.seed.wrapping_add(100 + k as u64);
        let g = finite_rows(&model.sample_range(0, n, seed, ctx.as_ref())?);
        let file = match label {
            Some(_) => format!("generated_{class}_{k}.csv"),
            None => format!("generated_{k}.csv"),
        };
        write_csv(&a.out.join(file), &test.columns, &g)?;
        samples.push(g);
    }
    let evs = evaluate_repeats(test, &samples, Some(&lp))?;
    let outside = outside_training_range(&split.train.data, &test.data, &samples);
    Ok((evs, outside))
}

/// The options set in the `--config` file (`key = value`, sorted; empty without one), so that a
/// variant's settings are recorded with its results.
fn set_options(file: &TrainOptions) -> Result<String> {
    let v = serde_json::to_value(file)?;
    let set: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    Ok(set.join(" "))
}

/// The rows of `m` whose values are all finite (CSV output refuses NaN/inf).
fn finite_rows(m: &Matrix<f32>) -> Matrix<f32> {
    let keep: Vec<usize> = (0..m.rows())
        .filter(|&i| m.row(i).iter().all(|v| v.is_finite()))
        .collect();
    take_rows(m, &keep)
}

/// Mean and sample standard deviation (`n - 1`; 0 for one value) of the finite values.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = f.len() as f64;
    let m = f.iter().sum::<f64>() / n;
    let var = if f.len() > 1 {
        f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// One result as a JSON object (C2ST, KS and outside-range fractions over the repeats in
/// `evs`); `extra`'s fields are merged in.
#[allow(clippy::too_many_arguments)]
fn result_line(
    name: &str,
    class: &str,
    evs: &[Evaluation],
    outside: &Outside,
    test_nll: f64,
    test_nll_err: f64,
    seconds: f64,
    extra: serde_json::Value,
) -> serde_json::Value {
    let ks: Vec<(f64, String)> = evs
        .iter()
        .map(|ev| {
            ev.metrics
                .features
                .iter()
                .fold((0.0f64, String::new()), |(best, bn), f| {
                    if f.ks > best {
                        (f.ks, f.name.clone())
                    } else {
                        (best, bn)
                    }
                })
        })
        .collect();
    let num = |v: f64| {
        if v.is_finite() {
            serde_json::json!(v)
        } else {
            serde_json::Value::Null
        }
    };
    let aucs: Vec<f64> = evs.iter().map(|e| e.metrics.c2st_auc).collect();
    let (auc, auc_sd) = mean_sd(&aucs);
    let (fold_err, _) = mean_sd(
        &evs.iter()
            .map(|e| e.metrics.c2st_auc_err)
            .collect::<Vec<_>>(),
    );
    let mc: Vec<f64> = evs
        .iter()
        .filter_map(|e| e.metrics.c2st_auc_mc_vs_mc)
        .collect();
    let (ks_max, _) = mean_sd(&ks.iter().map(|k| k.0).collect::<Vec<_>>());
    let (out_gen, out_gen_sd) = mean_sd(&outside.0);
    let m = &evs[0].metrics;
    let mut obj = serde_json::json!({
        "name": name,
        "class": class,
        "test_nll": num(test_nll),
        "test_nll_err": num(test_nll_err),
        "c2st_auc": num(auc),
        "c2st_auc_sd": num(auc_sd),
        "c2st_aucs": aucs.iter().map(|&v| num(v)).collect::<Vec<_>>(),
        "c2st_auc_err": num(fold_err),
        "c2st_auc_mc_vs_mc": (!mc.is_empty()).then(|| num(mean_sd(&mc).0)),
        "repeats": evs.len(),
        "ks_max": num(ks_max),
        "ks_max_feature": ks[0].1,
        "outside_train_range": num(out_gen),
        "outside_train_range_sd": num(out_gen_sd),
        "outside_train_range_mc": num(outside.1),
        "frechet_distance": num(m.frechet_distance),
        "corr_frobenius": num(m.corr_frobenius),
        "train_seconds": num(seconds),
        "n_test": m.n_reference,
        "n_generated": m.n_generated,
        "dropped_generated": evs[0].dropped_generated,
        "nll_skipped": evs[0].nll_skipped,
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
