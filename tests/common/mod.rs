//! Helpers shared by the integration tests that run the `hepflow` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `hepflow` binary built for these tests.
pub fn hepflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hepflow"))
        .args(args)
        .output()
        .expect("run hepflow")
}

/// Runs `hepflow` and asserts success; returns stdout followed by stderr.
pub fn ok(args: &[&str]) -> String {
    let o = hepflow(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "hepflow {args:?} failed:\n{text}");
    text
}

/// Runs `hepflow` and asserts a clean failure (no panic); returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = hepflow(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "hepflow {args:?} should have failed");
    assert!(
        !err.contains("panicked"),
        "hepflow {args:?} panicked:\n{err}"
    );
    err
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `n` correlated 3-feature events `a,b,c` with a `label` column (alternating 0/1) that shifts
/// `a` by `shift`, drawn from a fixed LCG seeded with `seed`; written to `dir/events.csv`.
pub fn labelled_csv(dir: &Path, n: usize, seed: u64, shift: f64) -> PathBuf {
    let mut text = String::from("a,b,c,label\n");
    let mut st = seed;
    let mut u = || {
        st = st
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((st >> 11) as f64) / ((1u64 << 53) as f64)
    };
    for i in 0..n {
        let label = i % 2;
        let g1 = (-2.0 * (1.0 - u()).ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
        let g2 = (-2.0 * (1.0 - u()).ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
        let a = g1 + shift * label as f64;
        let b = 0.5 * a + 0.3 * g2;
        let c = (a * a + 0.1 * u()).sqrt() + 1.0;
        text.push_str(&format!("{a},{b},{c},{label}\n"));
    }
    let p = dir.join("events.csv");
    std::fs::write(&p, text).unwrap();
    p
}

/// A numeric CSV written by `hepflow` (history, samples, log-prob): its header line and its rows.
pub fn read_csv(p: &Path) -> (String, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let rows = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

/// Runs `hepflow log-prob` of `model` on `data`, writing `out`, and returns the rows of `out`
/// (`log_prob, outside_support` per event).
pub fn log_prob_rows(model: &Path, data: &Path, out: &Path) -> Vec<Vec<f64>> {
    ok(&[
        "log-prob",
        "--model",
        s(model),
        "--data",
        s(data),
        "--out",
        s(out),
    ]);
    read_csv(out).1
}

/// Asserts that `model`, trained with `--condition label` on `data` (a `labelled_csv` with shift
/// 2), follows its context: 1500 events sampled (seed `seed`) for label 1 have a first-feature
/// mean more than 1 above those for label 0, and every event of `data` has a finite log-density.
pub fn assert_follows_label_context(dir: &Path, model: &Path, data: &Path, seed: &str) {
    let mean_a = |label: &str| {
        let p = dir.join(format!("gen{label}.csv"));
        let condition = format!("label={label}");
        let args = ["sample", "--model", s(model), "-n", "1500", "--seed", seed];
        ok(&[&args[..], &["--condition", &condition, "--out", s(&p)]].concat());
        let (header, rows) = read_csv(&p);
        assert!(header.starts_with("a,b,c"), "{header}");
        rows.iter().map(|r| r[0]).sum::<f64>() / rows.len() as f64
    };
    // The data's first feature has mean 0 for label 0 and 2 for label 1.
    let (m0, m1) = (mean_a("0"), mean_a("1"));
    assert!(m1 - m0 > 1.0, "context ignored: {m0} vs {m1}");
    let lp = log_prob_rows(model, data, &dir.join("lp.csv"));
    assert!(lp.iter().all(|r| r[0].is_finite()));
}
