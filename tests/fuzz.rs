//! Fuzz corpus for the table readers (issue 14): for each reader (CSV, CSV.gz, npy, Parquet,
//! ROOT), at least 2,000 deterministic mutations of valid files (truncation, bit flips, inserted
//! and deleted bytes, huge declared sizes in headers and footers). Every case must give a clear
//! error that names the file, or a valid table (at least one row, finite values); never a panic
//! (neither one that escapes nor one whose message reaches the terminal), never a case over 2 s,
//! never an allocation over 1 GB.
//!
//! A counting global allocator records the largest single allocation and the peak of live bytes;
//! a panic hook installed before any read records every panic that is not silenced by
//! `hepflow::io::guard` (the panics a user would see). `cargo test --test fuzz` runs the corpus
//! (about 2,000 cases per reader, small files); `cargo test --release --test fuzz -- --ignored`
//! runs 25,000 per reader. The same harness fuzzes `Model::load` (model.json, model.safetensors
//! of a saved model directory), followed by a log-prob and a sample of a few events.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, mpsc};
use std::time::{Duration, Instant};

use hepflow::engine::Matrix;
use hepflow::io::{Format, ReadOptions, Table, read_table, write_table};

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

/// Panic messages that reached the (test's) default hook, i.e. that a user would see.
static VISIBLE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn setup() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            if let Ok(mut v) = VISIBLE_PANICS.lock() {
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

/// Mutation `case` of `base` (deterministic).
fn mutate(base: &[u8], case: u64) -> Vec<u8> {
    let mut rng = Rng(case.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut b = base.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let len = b.len().max(1);
        match rng.below(7) {
            0 => b.truncate(rng.below(len)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let p = position(&mut rng, len);
                    if let Some(x) = b.get_mut(p) {
                        *x ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                let p = position(&mut rng, len).min(b.len());
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
                let p = position(&mut rng, len);
                for (k, &x) in bytes.iter().take(w).enumerate() {
                    if let Some(y) = b.get_mut(p + k) {
                        *y = x;
                    }
                }
            }
            4 => {
                let p = position(&mut rng, len).min(b.len());
                let e = (p + 1 + rng.below(32)).min(b.len());
                b.drain(p..e);
            }
            5 => {
                // Huge numbers written as text (CSV cells, npy shapes).
                let p = position(&mut rng, len).min(b.len());
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
                let p = position(&mut rng, len).min(b.len());
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
    out
}

/// What a case produced.
enum Outcome {
    /// A valid result (a table with rows and finite values, a usable model).
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

/// Runs the corpus of `cases` mutations for files named `name` in `format`.
fn run_corpus(name: &str, format: Format, cases: u64) {
    let dir = tempfile::tempdir().unwrap();
    let bases = bases(dir.path(), name, format);
    run_cases(name, &bases, &dir.path().join(name), cases, read_case);
}

/// Writes `cases` mutations of `bases` to `path` in turn and judges each with `check` (on its
/// own thread, with a time limit).
fn run_cases(name: &str, bases: &[Vec<u8>], path: &Path, cases: u64, check: fn(&Path) -> Outcome) {
    setup();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let (mut valid, mut errors) = (0, 0);
    for case in 0..cases {
        let base = &bases[case as usize % bases.len()];
        let bytes = mutate(base, case ^ ((name.len() as u64) << 32));
        std::fs::write(path, &bytes).unwrap();
        LARGEST.store(0, Ordering::Relaxed);
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let start = Instant::now();
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| check(&p));
            let _ = tx.send(r.unwrap_or(Outcome::Panic));
        });
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
                if !e.contains(name) {
                    fail(format!("error does not name the file: {e}"));
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
        "{name}: {cases} cases, {valid} valid, {errors} errors, slowest {slowest:?}, \
         {} visible panics",
        visible.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        visible.is_empty(),
        "panic messages reached the terminal:\n{}",
        visible.join("\n")
    );
}

/// Saves a small RealNVP model (2 features, min-max/logit preprocessing) into `dir`.
fn save_model(dir: &Path) {
    use hepflow::model::{FORMAT_VERSION, Model, ModelConfig};
    use hepflow::preprocess::Preprocessor;
    use hepflow::presets::{Preset, build_specs};
    let names: Vec<String> = vec!["pt".into(), "eta".into()];
    let data = Matrix::from_fn(64, 2, |i, j| ((i * 2 + j) as f64 * 0.37).sin() + j as f64);
    let pre = Preprocessor::fit(&data, &names, &[], 0.05).unwrap();
    let mut opts = Preset::Realnvp.default_options();
    opts.blocks = 2;
    opts.hidden = vec![4];
    let config = ModelConfig {
        format_version: FORMAT_VERSION,
        preset: Preset::Realnvp.name().into(),
        features: names.clone(),
        context: Vec::new(),
        preprocessing: Some(pre),
        layers: build_specs(Preset::Realnvp, 2, &opts, 0),
        training: serde_json::Value::Null,
    };
    Model::new(config, 0).save(dir).unwrap();
}

/// Loads the model directory of `p` and uses it (log-prob and sampling of a few events).
fn model_case(p: &Path) -> Outcome {
    let dir = p.parent().unwrap_or(Path::new("."));
    match hepflow::model::Model::load(dir) {
        Err(e) => Outcome::Error(e.to_string()),
        Ok(m) => {
            let x = Matrix::from_fn(4, m.dim(), |i, j| (i + j) as f32 * 0.1);
            let lp = m.log_prob(&x, None);
            let s = m.sample_range(0, 4, 1, None);
            match (lp, s) {
                (Ok(_), Ok(_)) => Outcome::Valid,
                // A model that loads must be usable.
                (Err(e), _) | (_, Err(e)) => Outcome::Invalid(format!("loaded, then: {e}")),
            }
        }
    }
}

/// Mutations of one file of a saved model directory; the other file stays intact.
fn run_model_corpus(file: &str, cases: u64) {
    let dir = tempfile::tempdir().unwrap();
    save_model(dir.path());
    let base = std::fs::read(dir.path().join(file)).unwrap();
    run_cases(file, &[base], &dir.path().join(file), cases, model_case);
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
    run_model_corpus("model.json", CASES);
}

#[test]
fn fuzz_model_safetensors() {
    run_model_corpus("model.safetensors", CASES);
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
