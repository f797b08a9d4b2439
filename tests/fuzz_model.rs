//! Fuzzing the model files and the TOML configuration: thousands of deterministic mutations of
//! valid files (truncation, bit flips, inserted bytes, edited numbers and lists). Each must load
//! to a usable model (or configuration) or give a clear error: never a panic, never an
//! allocation over 1 GB, never a case slower than 2 s.

use hepflow::config::TrainOptions;
use hepflow::engine::{Matrix, Rng};
use hepflow::io::Table;
use hepflow::model::Model;
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::train::Silent;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Records the largest single allocation of the process.
struct Largest;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

const CASES: usize = 2000;
const GB: usize = 1 << 30;

/// One byte-level mutation of `bytes`: truncation, bit flips, inserted or deleted bytes, a
/// digit run replaced by a huge number.
fn mutate_bytes(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return b;
    }
    match rng.below(5) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let i = rng.below(b.len());
            let junk: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| rng.below(256) as u8)
                .collect();
            b.splice(i..i, junk);
        }
        3 => {
            let i = rng.below(b.len());
            let j = (i + 1 + rng.below(32)).min(b.len());
            b.drain(i..j);
        }
        _ => {
            // Replace one run of digits by a huge or negative number.
            let starts: Vec<usize> = (0..b.len())
                .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
                .collect();
            if let Some(&i) = starts.get(rng.below(starts.len().max(1))) {
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
        }
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

/// A small conditional spline model and an unconditional Glow (batch norm, LU, affine), saved.
fn models(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut rng = Rng::new(3);
    let x = Matrix::from_fn(300, 4, |i, j| match j {
        3 => (i % 2) as f32,
        2 => rng.uniform() as f32 * 10.0,
        _ => rng.normal() as f32,
    });
    let table = Table::new(vec!["a".into(), "b".into(), "pt".into(), "label".into()], x).unwrap();
    let mut out = Vec::new();
    for (name, model, condition) in [
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
        let job = TrainJob::new(&settings, data, dir.join(name), false).unwrap();
        train_model(&job, &mut Silent).unwrap();
        out.push(dir.join(name));
    }
    out
}

/// Loads the model at `dir` and, when it loads, evaluates and samples a few events; panics are
/// failures of the test, errors are fine.
fn exercise(dir: &Path) -> Result<(), String> {
    let m = Model::load(dir).map_err(|e| e.to_string())?;
    let d = m.dim();
    let ctx_w = m.flow.context_dim();
    let ctx = (ctx_w > 0).then(|| Matrix::from_fn(5, ctx_w, |i, j| ((i + j) % 2) as f32));
    let x = Matrix::from_fn(5, d, |i, j| (i * d + j) as f32 * 0.1);
    m.log_prob(&x, ctx.as_ref()).map_err(|e| e.to_string())?;
    m.sample_range(0, 5, 1, ctx.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs `case` on `CASES` mutations, checking no panic, time and allocation size.
fn fuzz(what: &str, mut case: impl FnMut(usize, &mut Rng) -> Result<(), String>) {
    let mut rng = Rng::new(0xF022);
    let (mut ok, mut err) = (0, 0);
    for k in 0..CASES {
        LARGEST.store(0, Ordering::Relaxed);
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| case(k, &mut rng)));
        let dt = t0.elapsed();
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.is_empty(), "{what} case {k}: empty error message");
                err += 1;
            }
            Err(_) => panic!("{what} case {k}: panicked"),
        }
        assert!(dt < Duration::from_secs(2), "{what} case {k}: took {dt:?}");
        let big = LARGEST.load(Ordering::Relaxed);
        assert!(big <= GB, "{what} case {k}: allocated {big} bytes at once");
    }
    eprintln!("{what}: {ok} loaded, {err} refused with an error");
    assert!(
        err > 0,
        "{what}: no mutation was refused; the mutations are too weak"
    );
}

#[test]
fn mutated_model_json_loads_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    for m in models(dir.path()) {
        let path = m.join("model.json");
        let original = std::fs::read(&path).unwrap();
        let value: Value = serde_json::from_slice(&original).unwrap();
        fuzz("model.json", |k, rng| {
            let bytes = if k % 2 == 0 {
                mutate_bytes(&original, rng)
            } else {
                serde_json::to_vec(&mutate_json(&value, rng)).unwrap()
            };
            std::fs::write(&path, &bytes).unwrap();
            exercise(&m)
        });
        std::fs::write(&path, &original).unwrap();
        exercise(&m).unwrap();
    }
}

#[test]
fn mutated_safetensors_loads_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    for m in models(dir.path()) {
        let path = m.join("model.safetensors");
        let original = std::fs::read(&path).unwrap();
        fuzz("model.safetensors", |_, rng| {
            let mut bytes = mutate_bytes(&original, rng);
            if rng.below(4) == 0 && bytes.len() >= 8 {
                // A huge declared header size.
                bytes[..8]
                    .copy_from_slice(&(u64::MAX / (1 + rng.below(1000) as u64)).to_le_bytes());
            }
            std::fs::write(&path, &bytes).unwrap();
            exercise(&m)
        });
    }
}

#[test]
fn mutated_toml_configurations_parse_or_error() {
    let original = b"model = \"rq-spline\"\nblocks = 10\nhidden = [128, 128]\nbins = 8\nepochs = 200\nlr = 1e-3\nweight_decay = 1e-5\nmargin = 0.05\ncolumns = [\"a\", \"b\"]\ncondition = [\"label\"]\n";
    fuzz("TOML", |_, rng| {
        let bytes = mutate_bytes(original, rng);
        let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        let o = TrainOptions::from_toml(&text, "flow.toml").map_err(|e| e.to_string())?;
        let s = o.resolve().map_err(|e| e.to_string())?;
        s.check_data(1000, 4, 2).map_err(|e| e.to_string())
    });
}
