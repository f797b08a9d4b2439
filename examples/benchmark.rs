//! hepflow side of the benchmark in `bench/` (run it through `bash bench/run.sh`).
//!
//! Models (`--model`, D = 18 HIGGS "higgs18" features, standardised, Adam lr 1e-3):
//! - `realnvp` (the default): the reference model, the `realnvp` preset with 8 affine couplings
//!   (a fixed random permutation between consecutive couplings), conditioner MLP 2 x 128 ReLU,
//!   batch 1024;
//! - `default`: the preset `hepflow train` uses, with its default options, batch 512;
//! - `nsf`: the `rq-spline` preset shaped like nflows' NSF: 10 x [LU linear, rational-quadratic
//!   coupling, 8 bins, linear tails at ±5], residual conditioner 9 -> 128 -> 4 x (128 -> 128, skip)
//!   -> 207 (the layer sizes of nflows' `ResidualNet(hidden 128, 2 blocks)`), no dropout, batch 512;
//! - any preset name (`realnvp` excepted, which names the reference model): `glow`, `pq-spline`,
//!   `rq-spline`, `maf`, `made-mog`, `flow-matching`: that preset with its default options (the options
//!   `hepflow train --model NAME` uses), batch 512. `flow-matching` trains with its own objective
//!   (conditional flow matching, [`hepflow::flow_matching::FlowMatchingObjective`]) and samples by
//!   integrating its ODE with the default Runge-Kutta steps. `made-mog` is its MADE-MoG base
//!   (K = 10 Gaussians per feature, MADE 18 -> 256 -> 256 -> 540) under no flow layer.
//!
//! `--preset NAME` (the same as `--model NAME` for a preset, and the only way to get the `realnvp`
//! preset's defaults), `--batch N`, `--samples N` and `--simd avx512|avx2|portable` (force a kernel
//! path) change the model and protocol.
//!
//! Timing protocol (the same as `bench/torch_flows.py`):
//! - training: 5 warm-up steps, then 3 repeats of 30 steps (loss + gradient, Adam step, parameter
//!   write-back); the step time is the median over the repeats; events/s = batch / step time. This
//!   is done for every `--chunks` value (default 128, 256, 512) and the fastest is the headline number.
//! - sampling: warm-up on 10,000 events, then one timed run of `flow.sample(N)` (`--samples`,
//!   default 1,000,000).
//!
//! Also times sections of a step (loss and gradient, Adam, parameter copies) and of sampling (base
//! draws, the sampling pass alone on pre-drawn base vectors, and that pass split by layer kind) to
//! show where the time goes. Prints one JSON object per line.
//!
//! ```text
//! cargo run --release --example benchmark -- --data data/higgs_35k.csv.gz --threads 2
//! ```

mod common;

use anyhow::{Context, Result, bail};
use common::cpu_seconds;
use flate2::read::GzDecoder;
use hepflow::engine::{Adam, AdamConfig, Matrix, Rng, Tape};
use hepflow::flow::Flow;
use hepflow::flow_matching::FlowMatchingObjective;
use hepflow::presets::{Preset, PresetOptions, build_base, build_specs};
use hepflow::train::{GradientEngine, Objective};
use serde_json::json;
use std::io::Read;
use std::time::Instant;

/// HIGGS feature positions (0-based after the label) of the 6 azimuthal angles.
const PHI: [usize; 6] = [2, 4, 7, 11, 15, 19];
/// HIGGS feature positions of the 4 b-tags.
const BTAG: [usize; 4] = [8, 12, 16, 20];
const DIM: usize = 18;
const WARMUP_STEPS: usize = 5;
const REPEATS: usize = 3;
const STEPS: usize = 30;
const N_SAMPLE_WARMUP: usize = 10_000;
const LR: f64 = 1e-3;

struct Args {
    data: String,
    threads: usize,
    chunks: Vec<usize>,
    seed: u64,
    train: bool,
    sample: bool,
    /// The model timed (see the module documentation).
    model: BenchModel,
    batch: usize,
    samples: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        data: "data/higgs_35k.csv.gz".into(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        chunks: vec![128, 256, 512],
        seed: 1,
        train: true,
        sample: true,
        model: BenchModel::Realnvp,
        batch: 0,
        samples: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--data" => args.data = val()?,
            "--threads" => args.threads = val()?.parse().context("--threads")?,
            "--seed" => args.seed = val()?.parse().context("--seed")?,
            "--chunks" => {
                args.chunks = val()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().context("--chunks"))
                    .collect::<Result<_>>()?
            }
            "--preset" => {
                args.model =
                    BenchModel::Preset(val()?.parse::<Preset>().map_err(anyhow::Error::msg)?)
            }
            "--model" => {
                args.model = match val()?.as_str() {
                    "realnvp" => BenchModel::Realnvp,
                    "default" => BenchModel::Preset(Preset::DEFAULT),
                    "nsf" => BenchModel::Nsf,
                    o => BenchModel::Preset(o.parse::<Preset>().map_err(|e| {
                        anyhow::anyhow!("--model expects realnvp, default, nsf or a preset: {e}")
                    })?),
                }
            }
            "--batch" => args.batch = val()?.parse().context("--batch")?,
            "--samples" => args.samples = val()?.parse().context("--samples")?,
            "--simd" => {
                let path = hepflow::engine::simd::SimdPath::parse(&val()?)?;
                hepflow::engine::simd::force(path)?;
            }
            "--only" => match val()?.as_str() {
                "train" => args.sample = false,
                "sample" => args.train = false,
                o => bail!("--only expects train or sample, not {o}"),
            },
            "-h" | "--help" => {
                println!(
                    "benchmark [--data CSV(.gz)] [--threads N] [--chunks 128,256,512] [--seed S] [--only train|sample] [--model realnvp|default|nsf|glow|pq-spline|rq-spline|maf|made-mog|flow-matching] [--preset NAME] [--batch N] [--samples N] [--simd avx512|avx2|portable]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if args.batch == 0 {
        args.batch = args.model.default_batch();
    }
    if args.threads == 0 || args.chunks.is_empty() || args.chunks.contains(&0) || args.samples == 0
    {
        bail!("--threads, --chunks, --batch and --samples must be positive");
    }
    Ok(args)
}

/// The model timed.
#[derive(Clone, Copy, Debug)]
enum BenchModel {
    /// The RealNVP reference model.
    Realnvp,
    /// A preset with its default options.
    Preset(Preset),
    /// `rq-spline` with nflows NSF's architecture.
    Nsf,
}

impl BenchModel {
    /// Batch size of the protocol when `--batch` is not given.
    fn default_batch(self) -> usize {
        match self {
            BenchModel::Realnvp => 1024,
            BenchModel::Preset(_) | BenchModel::Nsf => 512,
        }
    }

    fn is_flow_matching(self) -> bool {
        matches!(self, BenchModel::Preset(p) if p.is_flow_matching())
    }

    fn name(self) -> String {
        match self {
            BenchModel::Realnvp => "realnvp-reference".into(),
            BenchModel::Preset(p) if p == Preset::DEFAULT => format!("default ({})", p.name()),
            BenchModel::Preset(p) => p.name().into(),
            BenchModel::Nsf => "nsf (rq-spline, nflows NSF architecture)".into(),
        }
    }

    /// The preset and its options.
    fn spec(self) -> (Preset, PresetOptions) {
        match self {
            BenchModel::Realnvp => (
                Preset::Realnvp,
                PresetOptions {
                    blocks: 8,
                    hidden: vec![128, 128],
                    ..PresetOptions::default()
                },
            ),
            BenchModel::Preset(p) => (p, p.default_options()),
            BenchModel::Nsf => (
                Preset::RqSpline,
                PresetOptions {
                    blocks: 10,
                    hidden: vec![128; 5],
                    bins: 8,
                    bound: 5.0,
                    residual: true,
                    dropout: 0.0,
                    ..PresetOptions::default()
                },
            ),
        }
    }
}

/// Reads a label-first HIGGS CSV (gzip or plain) and returns the standardised higgs18 features.
fn load_higgs18(path: &str, batch: usize) -> Result<Matrix<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let mut text = String::new();
    if path.ends_with(".gz") {
        GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .with_context(|| format!("gunzip {path}"))?;
    } else {
        text = String::from_utf8(bytes).context("not UTF-8")?;
    }
    let keep: Vec<usize> = (0..28)
        .filter(|i| !PHI.contains(i) && !BTAG.contains(i))
        .collect();
    let mut rows: Vec<f64> = Vec::new();
    let mut n = 0;
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let vals: Vec<f64> = line
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{path}:{}: not a number", ln + 1))?;
        if vals.len() != 29 {
            bail!("{path}:{}: {} columns, expected 29", ln + 1, vals.len());
        }
        rows.extend(keep.iter().map(|&k| vals[1 + k]));
        n += 1;
    }
    if n < batch {
        bail!("{path}: {n} rows, need at least {batch}");
    }
    // Standardise with the population standard deviation (numpy's default).
    let mut out = vec![0f32; n * DIM];
    for j in 0..DIM {
        let mean = (0..n).map(|i| rows[i * DIM + j]).sum::<f64>() / n as f64;
        let var = (0..n)
            .map(|i| (rows[i * DIM + j] - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for i in 0..n {
            out[i * DIM + j] = ((rows[i * DIM + j] - mean) / sd) as f32;
        }
    }
    Matrix::from_vec(n, DIM, out).context("shape")
}

/// The flow of `model` with every all-zero parameter tensor (the couplings' output layers, which
/// start at zero so that each coupling starts as the identity) set to small random values.
fn build_flow(seed: u64, model: BenchModel) -> Flow<f32> {
    let (preset, opts) = model.spec();
    let specs = build_specs(preset, DIM, &opts, seed);
    // The preset's base: made-mog's MADE-MoG, the standard normal otherwise.
    let base = build_base(preset, DIM, &opts);
    let mut flow = Flow::<f32>::from_parts(DIM, 0, &base, &specs, seed);
    let mut rng = Rng::new(seed ^ 0xbe_4c);
    for layer in flow.layers_mut() {
        for p in layer.params_mut() {
            if p.data.iter().all(|v| *v == 0.0) {
                for v in p.data.iter_mut() {
                    *v = rng.uniform_range(-0.01, 0.01) as f32;
                }
            }
        }
    }
    flow
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Section times (seconds per step, summed over the timed steps then divided).
#[derive(Default)]
struct Sections {
    grad: f64,
    norm: f64,
    adam: f64,
    end_step: f64,
}

/// The training objective of `flow`: flow matching for the flow-matching preset, maximum
/// likelihood through the layers' backward passes (the gradient engine) for every other model,
/// as `hepflow train` chooses it.
fn objective(model: BenchModel, flow: &Flow<f32>, chunk: usize) -> Result<Box<dyn Objective>> {
    Ok(if model.is_flow_matching() {
        Box::new(FlowMatchingObjective::new(flow, chunk)?)
    } else {
        Box::new(GradientEngine::new(flow, chunk))
    })
}

/// One training step as `hepflow::train::fit` does it (without the roll-back and EMA branches):
/// step seed (dropout masks, flow-matching paths), loss and gradient, global gradient norm,
/// Adam on the flow's parameter tensors in place.
fn train_step(
    flow: &mut Flow<f32>,
    objective: &mut dyn Objective,
    adam: &mut Adam,
    (step, xb): (usize, &Matrix<f32>),
    sec: &mut Sections,
) -> f64 {
    let t0 = Instant::now();
    objective.set_seed(Rng::stream(0xD80F, step as u64).next_u64());
    let loss = objective.loss_and_grad(flow, xb, None, None);
    let t1 = Instant::now();
    let grads = objective.grads();
    let norm2 = objective.grad_norm_sq();
    let t2 = Instant::now();
    adam.step_parts(flow.param_slices_mut(), grads, 1.0, LR);
    let t3 = Instant::now();
    objective.end_step(flow, xb.rows());
    let t4 = Instant::now();
    sec.grad += (t1 - t0).as_secs_f64();
    sec.norm += (t2 - t1).as_secs_f64();
    sec.adam += (t3 - t2).as_secs_f64();
    sec.end_step += (t4 - t3).as_secs_f64();
    if !norm2.is_finite() {
        return f64::NAN;
    }
    loss
}

fn main() -> Result<()> {
    let args = parse_args()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .context("building the rayon pool")?;
    let data = load_higgs18(&args.data, args.batch)?;
    let batch = args.batch;
    let n = data.rows();

    // Fixed batches (the same for every chunk size), built before timing.
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(0).shuffle(&mut order);
    let n_batches = n / batch;
    let batches: Vec<Matrix<f32>> = (0..n_batches)
        .map(|b| {
            let mut m = Matrix::zeros(batch, DIM);
            for (r, &i) in order[b * batch..(b + 1) * batch].iter().enumerate() {
                m.row_mut(r).copy_from_slice(data.row(i));
            }
            m
        })
        .collect();

    let probe = build_flow(args.seed, args.model);
    println!(
        "{}",
        json!({"side": "hepflow-info", "rows": n, "dim": DIM, "threads": rayon::current_num_threads(),
               "params": probe.num_params(), "layers": probe.specs().iter().map(|s| s.kind()).collect::<Vec<_>>()})
    );

    let mut summary = json!({"side": "hepflow", "version": env!("CARGO_PKG_VERSION"),
                             "threads": rayon::current_num_threads(), "params": probe.num_params(),
                             "preset": args.model.name(), "samples": args.samples,
                             "batch": batch, "simd": hepflow::engine::simd::active().name(),
                             "preset_options": args.model.spec().1});
    if args.train {
        let r = bench_training(&args, &batches)?;
        summary["chunk_rows"] = json!(r.chunk);
        summary["train_step_s"] = json!(r.step);
        summary["train_events_per_s"] = json!(batch as f64 / r.step);
        if let Some((chunk, cpu)) = r.best_cpu {
            summary["train_cpu_chunk_rows"] = json!(chunk);
            summary["train_step_cpu_s"] = json!(cpu);
            summary["train_events_per_cpu_s"] = json!(batch as f64 / cpu);
        }
    }
    if args.sample {
        let r = bench_sampling(args.seed, args.model, args.samples)?;
        if let Some(c) = r.cpu {
            summary["sample_cpu_s"] = json!(c);
            summary["sample_events_per_cpu_s"] = json!(args.samples as f64 / c);
        }
        summary["sample_s"] = json!(r.seconds);
        summary["sample_repeats_s"] = json!(r.repeats);
        summary["sample_cpu_repeats_s"] = json!(r.cpu_repeats);
        summary["sample_events_per_s"] = json!(args.samples as f64 / r.seconds);
        summary["sample_finite"] = json!(r.finite);
        summary["sample_sections_s"] = json!({"base_draws": r.draw_s, "sampling_pass": r.pass_s});
        summary["sample_pass_by_layer_kind_s"] = kinds_json(r.by_kind);
    }
    if args.train && !args.model.is_flow_matching() {
        // Where a step's time goes by layer kind, in the density direction (evaluation mode, the
        // forward half of a likelihood training step) over every data row. Not for flow
        // matching: its training never runs this pass (its exact log-density costs D + 1
        // network passes per ODE stage).
        let t0 = Instant::now();
        let (z, _) = probe.forward(&data, None);
        summary["density_pass_s"] = json!(t0.elapsed().as_secs_f64());
        summary["density_pass_rows"] = json!(n);
        std::hint::black_box(&z);
        summary["density_pass_by_layer_kind_s"] =
            kinds_json(pass_by_kind(&probe, data, Direction::Density));
    }
    println!("{summary}");
    Ok(())
}

/// Times training for every chunk size.
fn bench_training(args: &Args, batches: &[Matrix<f32>]) -> Result<TrainResult> {
    let n_batches = batches.len();
    let mut best: Option<(usize, f64)> = None;
    let mut best_cpu: Option<(usize, f64)> = None;
    for &chunk in &args.chunks {
        let mut flow = build_flow(args.seed, args.model);
        let mut engine = objective(args.model, &flow, chunk)?;
        let mut adam = Adam::new(flow.num_params(), AdamConfig::default());
        let mut k = 0;
        let mut sec = Sections::default();
        for _ in 0..WARMUP_STEPS {
            train_step(
                &mut flow,
                engine.as_mut(),
                &mut adam,
                (k, &batches[k % n_batches]),
                &mut sec,
            );
            k += 1;
        }
        let mut sec = Sections::default();
        let mut times = Vec::new();
        let mut cpu_times = Vec::new();
        let mut loss = f64::NAN;
        for _ in 0..REPEATS {
            let c0 = cpu_seconds();
            let t0 = Instant::now();
            for _ in 0..STEPS {
                loss = train_step(
                    &mut flow,
                    engine.as_mut(),
                    &mut adam,
                    (k, &batches[k % n_batches]),
                    &mut sec,
                );
                k += 1;
            }
            times.push(t0.elapsed().as_secs_f64() / STEPS as f64);
            if let (Some(a), Some(b)) = (c0, cpu_seconds()) {
                cpu_times.push((b - a) / STEPS as f64);
            }
        }
        let step = median(&times);
        let cpu_step = (!cpu_times.is_empty()).then(|| median(&cpu_times));
        let total = (REPEATS * STEPS) as f64;
        println!(
            "{}",
            json!({"side": "hepflow-chunk", "chunk_rows": chunk, "train_step_s": step,
                   "train_step_repeats_s": times, "train_events_per_s": args.batch as f64 / step, "last_loss": loss,
                   "train_step_cpu_s": cpu_step, "train_step_cpu_repeats_s": cpu_times,
                   "sections_s_per_step": {"loss_and_grad": sec.grad / total, "grad_norm": sec.norm / total,
                                           "adam": sec.adam / total, "end_step": sec.end_step / total}})
        );
        if !loss.is_finite() {
            bail!("non-finite loss with chunk_rows {chunk}");
        }
        if best.is_none_or(|(_, t)| step < t) {
            best = Some((chunk, step));
        }
        if let Some(c) = cpu_step
            && best_cpu.is_none_or(|(_, t)| c < t)
        {
            best_cpu = Some((chunk, c));
        }
    }
    let (chunk, step) = best.context("no chunk size timed")?;
    Ok(TrainResult {
        chunk,
        step,
        best_cpu,
    })
}

/// The fastest chunk size by wall-clock time, and the cheapest by CPU time.
struct TrainResult {
    chunk: usize,
    step: f64,
    best_cpu: Option<(usize, f64)>,
}

/// What `bench_sampling` measured.
struct SampleResult {
    /// Median seconds of the timed `flow.sample(n)` calls.
    seconds: f64,
    /// Seconds of each call.
    repeats: Vec<f64>,
    /// Median CPU seconds of them (Linux).
    cpu: Option<f64>,
    /// CPU seconds of each call (Linux).
    cpu_repeats: Vec<f64>,
    /// Whether every sampled value is finite.
    finite: bool,
    /// Seconds to draw the base vectors alone.
    draw_s: f64,
    /// Seconds of the sampling pass alone on pre-drawn base vectors (`Flow::events_from_base`).
    pass_s: f64,
    /// The sampling pass split by layer kind (each layer's `inverse_sample` over all events in
    /// parallel chunks of `EVAL_CHUNK_ROWS`), in the flow's layer order of first appearance.
    by_kind: Vec<(&'static str, f64)>,
}

/// Times `flow.sample(n_sample)`, then its sections.
fn bench_sampling(seed: u64, model: BenchModel, n_sample: usize) -> Result<SampleResult> {
    let flow = build_flow(seed, model);
    let warm = flow.sample(N_SAMPLE_WARMUP, 7, None);
    if warm.rows() != N_SAMPLE_WARMUP {
        bail!("warm-up sample has {} rows", warm.rows());
    }
    // The median of REPEATS timed draws (the same seed each time, so the same work), as for
    // the peers in bench/torch_flows.py.
    let (mut times, mut cpu_times, mut finite) = (Vec::new(), Vec::new(), true);
    for _ in 0..REPEATS {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let x = flow.sample(n_sample, 11, None);
        times.push(t0.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c0, cpu_seconds()) {
            cpu_times.push(b - a);
        }
        if x.rows() != n_sample || x.cols() != DIM {
            bail!("sample has shape {} x {}", x.rows(), x.cols());
        }
        finite &= x.all_finite();
    }
    let seconds = median(&times);
    let cpu = (!cpu_times.is_empty()).then(|| median(&cpu_times));

    // Sampling sections: base draws alone, and the sampling pass alone on pre-drawn z.
    let t0 = Instant::now();
    let indices: Vec<u64> = (0..n_sample as u64).collect();
    let z = flow.sample_base(11, &indices, None);
    let draw_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let xi = flow.events_from_base(&z, None);
    let pass_s = t0.elapsed().as_secs_f64();
    std::hint::black_box(&xi);
    let by_kind = pass_by_kind(&flow, z, Direction::Sample);
    Ok(SampleResult {
        seconds,
        repeats: times,
        cpu,
        cpu_repeats: cpu_times,
        finite,
        draw_s,
        pass_s,
        by_kind,
    })
}

/// Direction of a pass timed by [`pass_by_kind`].
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// Data -> base (the density direction, `forward_reusing`), layers first to last.
    Density,
    /// Base -> data (`inverse_sample`), layers last to first.
    Sample,
}

/// Seconds of one evaluation pass over `input` per layer kind: each layer runs over all rows
/// (parallel chunks of `EVAL_CHUNK_ROWS` rows, one scratch tape per worker) before the next, so
/// each layer is timed alone. `Flow`'s own passes keep a chunk in cache across layers, so the
/// sum can exceed their time a little.
fn pass_by_kind(
    flow: &Flow<f32>,
    mut input: Matrix<f32>,
    dir: Direction,
) -> Vec<(&'static str, f64)> {
    use hepflow::flow::EVAL_CHUNK_ROWS;
    use rayon::prelude::*;
    let mut by_kind: Vec<(&'static str, f64)> = Vec::new();
    let mut out = Matrix::<f32>::zeros(input.rows(), DIM);
    let layers: Vec<_> = match dir {
        Direction::Density => flow.layers().iter().collect(),
        Direction::Sample => flow.layers().iter().rev().collect(),
    };
    for layer in layers {
        let t0 = Instant::now();
        out.as_mut_slice()
            .par_chunks_mut(EVAL_CHUNK_ROWS * DIM)
            .zip(input.as_slice().par_chunks(EVAL_CHUNK_ROWS * DIM))
            .for_each_init(
                || {
                    (
                        Matrix::zeros(0, 0),
                        Matrix::zeros(0, 0),
                        Vec::new(),
                        Tape::default(),
                    )
                },
                |(a, b, ladj, tape): &mut (Matrix<f32>, Matrix<f32>, Vec<f32>, Tape<f32>),
                 (o, x)| {
                    let rows = x.len() / DIM;
                    a.resize(rows, DIM);
                    a.as_mut_slice().copy_from_slice(x);
                    b.resize(rows, DIM);
                    ladj.clear();
                    ladj.resize(rows, 0.0);
                    match dir {
                        Direction::Density => layer.forward_reusing(a, None, b, ladj, tape),
                        Direction::Sample => layer.inverse_sample(a, None, b, ladj, tape),
                    }
                    o.copy_from_slice(b.as_slice());
                },
            );
        let dt = t0.elapsed().as_secs_f64();
        let kind = layer.spec().kind();
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += dt,
            None => by_kind.push((kind, dt)),
        }
        std::mem::swap(&mut input, &mut out);
    }
    by_kind
}

/// `by_kind` as a JSON object.
fn kinds_json(by_kind: Vec<(&'static str, f64)>) -> serde_json::Value {
    serde_json::Value::Object(
        by_kind
            .into_iter()
            .map(|(k, t)| (k.into(), json!(t)))
            .collect(),
    )
}
