//! The fuzz harness (issue 14): for every file hepflow reads, 2,000 deterministic mutations of
//! valid files (truncation, bit flips, inserted, deleted and duplicated bytes, huge declared
//! sizes in headers and footers, huge numbers written as text; for model.json also structural
//! edits of the JSON document and edited digit runs; for model.safetensors huge header sizes).
//! The corpora: the table readers (CSV, CSV.gz, npy, Parquet, ROOT: a written TTree and an
//! RNTuple inside subdirectories), the model files (model.json, model.safetensors of a RealNVP,
//! a conditional spline and a Glow model, each file mutated while the other stays intact) and
//! the TOML training configuration.
//!
//! Every case must give a clear error (naming the file, except for the TOML configuration, whose
//! errors name the option instead) or a valid result: a table with at least one row and finite values, a
//! model that evaluates log-probabilities and samples a few events, a configuration that
//! resolves. Never a panic (neither one that escapes nor one whose message reaches the
//! terminal), never a case over 2 s, never an allocation over 1 GB; each corpus must refuse some
//! mutations (else they are too weak), and prints how many cases loaded and how many were refused.
//!
//! One counting global allocator records the largest single allocation and the peak of live
//! bytes; a panic hook installed before any case records every panic that is not silenced by
//! `hepflow::io::guard` (the panics a user would see). `cargo test --test fuzz` runs every corpus;
//! `cargo test --release --test fuzz -- --ignored` runs 25,000 cases per table reader.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock, mpsc};
use std::time::{Duration, Instant};

use hepflow::config::TrainOptions;
use hepflow::engine::Matrix;
use hepflow::io::{Format, ReadOptions, Table, read_table, write_table};
use hepflow::model::Model;
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::train::Silent;
use serde_json::Value;

/// Largest allocation any case may make, and largest peak of live bytes.
const LIMIT: usize = 1 << 30;
/// Longest a case may take.
const TIMEOUT: Duration = Duration::from_secs(2);

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn record(size: usize) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::record(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::record(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::record(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Panic messages of the cases that reached the (test's) default hook, i.e. that a user would
/// see. Only the threads that run cases are recorded, so that a failing assertion of one test
/// does not fail the others.
static VISIBLE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();
/// Name of the threads that run cases.
const CASE_THREAD: &str = "fuzz-case";

fn setup() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            if std::thread::current().name() == Some(CASE_THREAD)
                && let Ok(mut v) = VISIBLE_PANICS.lock()
            {
                v.push(info.to_string());
            }
        }));
    });
}

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A position biased to the first and last 64 bytes, where headers and footers live.
fn position(rng: &mut Rng, len: usize) -> usize {
    match rng.below(3) {
        0 => rng.below(len.min(64)),
        1 => len.saturating_sub(1 + rng.below(len.min(64))),
        _ => rng.below(len),
    }
}

/// One byte-level mutation of `base` (one to three rounds; deterministic given `rng`).
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let len = b.len().max(1);
        match rng.below(7) {
            0 => b.truncate(rng.below(len)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let p = position(rng, len);
                    if let Some(x) = b.get_mut(p) {
                        *x ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                let p = position(rng, len).min(b.len());
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(p..p, ins);
            }
            3 => {
                // A huge declared size: a 2-, 4- or 8-byte little- or big-endian integer.
                let huge: [u64; 6] = [
                    u64::MAX,
                    u64::MAX / 2,
                    0xffff_ffff,
                    0x7fff_ffff,
                    1 << 40,
                    0x8000_0000,
                ];
                let v = huge[rng.below(huge.len())];
                let w = [2, 4, 8][rng.below(3)];
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let p = position(rng, len);
                for (k, &x) in bytes.iter().take(w).enumerate() {
                    if let Some(y) = b.get_mut(p + k) {
                        *y = x;
                    }
                }
            }
            4 => {
                let p = position(rng, len).min(b.len());
                let e = (p + 1 + rng.below(32)).min(b.len());
                b.drain(p..e);
            }
            5 => {
                // Huge numbers written as text (CSV cells, npy shapes).
                let p = position(rng, len).min(b.len());
                let t: &[u8] = [
                    &b"99999999999999999999"[..],
                    b"18446744073709551615",
                    b"1e39",
                    b"-nan",
                    b"\"",
                ][rng.below(5)];
                b.splice(p..p, t.iter().copied());
            }
            _ => {
                let p = position(rng, len).min(b.len());
                let e = (p + 1 + rng.below(64)).min(b.len());
                let dup = b[p..e].to_vec();
                b.splice(e..e, dup);
            }
        }
    }
    b
}

/// The valid files a reader's corpus starts from.
fn bases(dir: &Path, name: &str, format: Format) -> Vec<Vec<u8>> {
    let data = Matrix::from_fn(12, 3, |i, j| ((i * 3 + j) as f32 * 0.7).sin() * 50.0);
    let t = Table::new(vec!["pt".into(), "eta".into(), "m".into()], data).unwrap();
    let p = dir.join(format!("base_{name}"));
    write_table(&p, &t, format).unwrap();
    let mut out = vec![std::fs::read(&p).unwrap()];
    if name.ends_with(".csv") {
        out.push(
            b"\xef\xbb\xbf\"\",\"a\",\"b\"\r\n\"0\",\"1,5\",\"2\"\r\n\"1\",\"3\",\"4\"\r\n"
                .to_vec(),
        );
        out.push(b"a;b;c\n1,5;2;3\n4;5,25;6\n".to_vec());
        out.push(b"1 2 3\n4 5 6\n".to_vec());
    }
    if name.ends_with(".root") {
        // An RNTuple inside subdirectories (`dir/sub/events`): the directory walk.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/subdir_one.root");
        out.push(std::fs::read(p).unwrap());
    }
    out
}

/// What a case produced.
enum Outcome {
    /// A valid result (a table with rows and finite values, a usable model or configuration).
    Valid,
    /// A result that is not valid (why).
    Invalid(String),
    /// A clear error (its message).
    Error(String),
    /// A panic escaped.
    Panic,
}

/// Reads a table and judges it.
fn read_case(p: &Path) -> Outcome {
    match read_table(p, &ReadOptions::default()) {
        Ok(t) => {
            let ok = t.rows() > 0
                && t.columns.len() == t.cols()
                && t.data.as_slice().iter().all(|v| v.is_finite());
            if ok {
                Outcome::Valid
            } else {
                Outcome::Invalid(format!("invalid table {}x{}", t.rows(), t.cols()))
            }
        }
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// A format-aware mutation.
type Structural = fn(&[u8], &mut Rng) -> Vec<u8>;

/// A corpus: valid files, each with the path its mutations are written to, and how a case is
/// judged.
struct Corpus {
    /// File name, for messages.
    name: &'static str,
    /// (where mutations of the base are written, the base's bytes); cases take them in turn.
    bases: Vec<(PathBuf, Vec<u8>)>,
    /// Judges the file written at the path.
    check: fn(&Path) -> Outcome,
    /// The mutation of odd cases (the byte mutations of [`mutate`] for the others).
    structural: Option<Structural>,
    /// An error must contain one of these file names (none: any non-empty message).
    names: Vec<&'static str>,
}

/// Runs `cases` mutations of `c`: each written in turn to its base's path and judged by
/// `c.check` on its own thread, with a time limit.
fn run_cases(c: &Corpus, cases: u64) {
    setup();
    let name = c.name;
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let (mut valid, mut errors) = (0, 0);
    for case in 0..cases {
        let (path, base) = &c.bases[case as usize % c.bases.len()];
        let seed = case ^ ((name.len() as u64) << 32);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let bytes = match c.structural {
            Some(f) if case % 2 == 1 => f(base, &mut rng),
            _ => mutate(base, &mut rng),
        };
        std::fs::write(path, &bytes).unwrap();
        LARGEST.store(0, Ordering::Relaxed);
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let start = Instant::now();
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let check = c.check;
        std::thread::Builder::new()
            .name(CASE_THREAD.into())
            .spawn(move || {
                let r = std::panic::catch_unwind(|| check(&p));
                let _ = tx.send(r.unwrap_or(Outcome::Panic));
            })
            .unwrap();
        let outcome = match rx.recv_timeout(TIMEOUT) {
            Ok(o) => o,
            Err(_) => panic!("{name} case {case}: no answer within {TIMEOUT:?}"),
        };
        let took = start.elapsed();
        slowest = slowest.max(took);
        let (largest, peak) = (
            LARGEST.load(Ordering::Relaxed),
            PEAK.load(Ordering::Relaxed),
        );
        let mut fail = |why: String| failures.push(format!("{name} case {case}: {why}"));
        if took > TIMEOUT {
            fail(format!("took {took:?}"));
        }
        if largest > LIMIT || peak > LIMIT {
            fail(format!("allocated {largest} bytes at once, peak {peak}"));
        }
        match outcome {
            Outcome::Panic => fail("panicked".into()),
            Outcome::Invalid(why) => fail(why),
            Outcome::Error(e) => {
                errors += 1;
                let named = c.names.is_empty() || c.names.iter().any(|n| e.contains(n));
                if e.is_empty() || !named {
                    fail(format!("error does not name the file: {e:?}"));
                }
            }
            Outcome::Valid => valid += 1,
        }
        if failures.len() > 20 {
            break;
        }
    }
    let visible = VISIBLE_PANICS.lock().map(|v| v.clone()).unwrap_or_default();
    println!(
        "{name}: {cases} cases, {valid} loaded, {errors} refused with an error, slowest \
         {slowest:?}, {} visible panics",
        visible.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        visible.is_empty(),
        "panic messages reached the terminal:\n{}",
        visible.join("\n")
    );
    assert!(
        errors > 0,
        "{name}: no mutation was refused; the mutations are too weak"
    );
}

/// Runs `cases` mutations of the files named `name` that `format` writes.
fn run_corpus(name: &'static str, format: Format, cases: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let bases = bases(dir.path(), name, format)
        .into_iter()
        .map(|b| (path.clone(), b))
        .collect();
    let corpus = Corpus {
        name,
        bases,
        check: read_case,
        structural: None,
        names: vec![name],
    };
    run_cases(&corpus, cases);
}

/// A saved model: its directory name and its files (name, bytes).
type ModelFiles = (String, Vec<(String, Vec<u8>)>);

/// The files of three small saved models, trained once per process: an unconditional RealNVP
/// with min-max/logit preprocessing, a conditional spline flow, a Glow (batch norm, LU, affine).
fn model_files() -> &'static [ModelFiles] {
    static FILES: OnceLock<Vec<ModelFiles>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = hepflow::engine::Rng::new(3);
        let x = Matrix::from_fn(300, 4, |i, j| match j {
            3 => (i % 2) as f32,
            2 => rng.uniform() as f32 * 10.0,
            _ => rng.normal() as f32,
        });
        let names = vec!["a".into(), "b".into(), "pt".into(), "label".into()];
        let table = Table::new(names, x).unwrap();
        let mut out = Vec::new();
        for (name, model, condition) in [
            ("realnvp", "realnvp", vec![]),
            ("spline", "pq-spline", vec!["label".to_string()]),
            ("glow", "glow", vec![]),
        ] {
            let opts = TrainOptions {
                model: Some(model.into()),
                blocks: Some(2),
                hidden: Some(vec![4]),
                bins: Some(3),
                epochs: Some(1),
                batch_size: Some(64),
                condition,
                ..Default::default()
            };
            let settings = opts.resolve().unwrap();
            let data = hepflow::dataset::from_table(table.clone(), &opts, name).unwrap();
            let job = TrainJob::new(&settings, data, dir.path().join(name), false).unwrap();
            train_model(&job, &mut Silent).unwrap();
            let files = ["model.json", "model.safetensors"]
                .iter()
                .map(|f| {
                    let bytes = std::fs::read(dir.path().join(name).join(f)).unwrap();
                    (f.to_string(), bytes)
                })
                .collect();
            out.push((name.to_string(), files));
        }
        out
    })
}

/// Loads the model directory of `p` and uses it: a model that loads must evaluate the
/// log-probability of a few events and sample a few (with a context when it has one).
fn model_case(p: &Path) -> Outcome {
    let dir = p.parent().unwrap_or(Path::new("."));
    match Model::load(dir) {
        Err(e) => Outcome::Error(e.to_string()),
        Ok(m) => {
            let d = m.dim();
            let ctx_w = m.flow.context_dim();
            let ctx = (ctx_w > 0).then(|| Matrix::from_fn(5, ctx_w, |i, j| ((i + j) % 2) as f32));
            let x = Matrix::from_fn(5, d, |i, j| (i * d + j) as f32 * 0.1);
            let lp = m.log_prob(&x, ctx.as_ref());
            let s = m.sample_range(0, 5, 1, ctx.as_ref());
            match (lp, s) {
                (Ok(_), Ok(_)) => Outcome::Valid,
                (Err(e), _) | (_, Err(e)) => Outcome::Invalid(format!("loaded, then: {e}")),
            }
        }
    }
}

/// Mutations of `file` of every saved model (the model's other file stays intact); afterwards
/// each restored model must be valid again.
fn run_model_corpus(file: &'static str, structural: Structural, cases: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut bases = Vec::new();
    for (name, files) in model_files() {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, bytes) in files {
            std::fs::write(d.join(f), bytes).unwrap();
            if f == file {
                bases.push((d.join(f), bytes.clone()));
            }
        }
    }
    let corpus = Corpus {
        name: file,
        bases,
        check: model_case,
        structural: Some(structural),
        // A declared size in model.json may disagree with model.safetensors: either may be named.
        names: vec!["model.json", "model.safetensors"],
    };
    run_cases(&corpus, cases);
    for (path, bytes) in &corpus.bases {
        std::fs::write(path, bytes).unwrap();
        assert!(
            matches!(model_case(path), Outcome::Valid),
            "{} no longer loads",
            path.display()
        );
    }
}

/// model.json: a structural edit of the JSON document (a number replaced by an extreme value,
/// an array entry removed or duplicated, a key removed), or a run of digits replaced by a huge,
/// zero or negative number.
fn mutate_model_json(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    if rng.below(2) == 0 {
        return replace_digits(base, rng);
    }
    match serde_json::from_slice::<Value>(base) {
        Ok(v) => serde_json::to_vec(&mutate_json(&v, rng)).unwrap_or_default(),
        Err(_) => mutate(base, rng),
    }
}

/// model.safetensors: byte mutations, then a huge declared header size.
fn mutate_safetensors(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = mutate(base, rng);
    if b.len() >= 8 {
        let huge = u64::MAX / (1 + rng.below(1000) as u64);
        b[..8].copy_from_slice(&huge.to_le_bytes());
    }
    b
}

/// One run of digits replaced by a huge, zero or negative number.
fn replace_digits(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let starts: Vec<usize> = (0..b.len())
        .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
        .collect();
    if let Some(&i) = starts.get(rng.below(starts.len())) {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let big = [
            "99999999999999999999",
            "4294967296",
            "0",
            "-1",
            "65536",
            "1e308",
        ][rng.below(6)];
        b.splice(i..j, big.bytes());
    }
    b
}

/// One structural mutation of a JSON document: a number replaced by an extreme value, an
/// array entry removed or duplicated, a key removed.
fn mutate_json(v: &Value, rng: &mut Rng) -> Value {
    let mut v = v.clone();
    let mut paths = Vec::new();
    collect_paths(&v, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return v;
    }
    let path = &paths[rng.below(paths.len())];
    let Some((last, parent_path)) = path.split_last() else {
        return v;
    };
    let parent = parent_path.iter().fold(&mut v, |node, k| match k {
        Key::I(i) => &mut node[*i],
        Key::S(s) => &mut node[s.as_str()],
    });
    let extreme = [
        Value::from(0),
        Value::from(-1),
        Value::from(1e30),
        Value::from(u64::MAX),
        Value::from(65536),
        Value::from("x"),
        Value::Null,
        Value::from(Vec::<Value>::new()),
    ][rng.below(8)]
    .clone();
    match (parent, last) {
        (Value::Array(a), Key::I(i)) => match rng.below(3) {
            0 => a[*i] = extreme,
            1 => {
                a.remove(*i);
            }
            _ => {
                let x = a[*i].clone();
                a.insert(*i, x);
            }
        },
        (Value::Object(o), Key::S(s)) => {
            if rng.below(3) == 0 {
                o.remove(s);
            } else {
                o.insert(s.clone(), extreme);
            }
        }
        _ => {}
    }
    v
}

#[derive(Clone)]
enum Key {
    I(usize),
    S(String),
}

fn collect_paths(v: &Value, prefix: &mut Vec<Key>, out: &mut Vec<Vec<Key>>) {
    match v {
        Value::Array(a) => {
            // Long arrays (weights, permutations) contribute a few entries only.
            for i in (0..a.len()).step_by((a.len() / 4).max(1)) {
                prefix.push(Key::I(i));
                out.push(prefix.clone());
                collect_paths(&a[i], prefix, out);
                prefix.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                prefix.push(Key::S(k.clone()));
                out.push(prefix.clone());
                collect_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Reads a TOML training configuration and resolves it for a small data set.
fn toml_case(p: &Path) -> Outcome {
    let check = || -> Result<(), String> {
        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        let o = TrainOptions::from_toml(&text, "flow.toml").map_err(|e| e.to_string())?;
        let s = o.resolve().map_err(|e| e.to_string())?;
        s.check_data(1000, 4, 2).map_err(|e| e.to_string())
    };
    match check() {
        Ok(()) => Outcome::Valid,
        Err(e) => Outcome::Error(e),
    }
}

const CASES: u64 = 2_000;
const LONG: u64 = 25_000;

#[test]
fn fuzz_csv() {
    run_corpus("f.csv", Format::Csv, CASES);
}

#[test]
fn fuzz_csv_gz() {
    run_corpus("f.csv.gz", Format::Csv, CASES);
}

#[test]
fn fuzz_npy() {
    run_corpus("f.npy", Format::Npy, CASES);
}

#[test]
fn fuzz_parquet() {
    run_corpus("f.parquet", Format::Parquet, CASES);
}

/// The ROOT reader is our own (src/io/root/) and checks every declared size against the file,
/// so damaged headers give errors, not huge allocations.
#[test]
fn fuzz_root() {
    run_corpus("f.root", Format::Root, CASES);
}

#[test]
fn fuzz_model_json() {
    run_model_corpus("model.json", mutate_model_json, CASES);
}

#[test]
fn fuzz_model_safetensors() {
    run_model_corpus("model.safetensors", mutate_safetensors, CASES);
}

#[test]
fn fuzz_toml_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let original = b"model = \"rq-spline\"\nblocks = 10\nhidden = [128, 128]\nbins = 8\nepochs = 200\nlr = 1e-3\nweight_decay = 1e-5\nmargin = 0.05\ncolumns = [\"a\", \"b\"]\ncondition = [\"label\"]\n";
    let path = dir.path().join("flow.toml");
    let corpus = Corpus {
        name: "flow.toml",
        bases: vec![(path.clone(), original.to_vec())],
        check: toml_case,
        structural: Some(replace_digits),
        names: Vec::new(),
    };
    run_cases(&corpus, CASES);
    std::fs::write(&path, original).unwrap();
    assert!(matches!(toml_case(&path), Outcome::Valid));
}

#[test]
#[ignore]
fn fuzz_long() {
    for (name, f) in [
        ("g.csv", Format::Csv),
        ("g.csv.gz", Format::Csv),
        ("g.npy", Format::Npy),
        ("g.parquet", Format::Parquet),
        ("g.root", Format::Root),
    ] {
        run_corpus(name, f, LONG);
    }
}
