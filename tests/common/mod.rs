//! Helpers shared by the integration tests that run the `hepflow` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
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
