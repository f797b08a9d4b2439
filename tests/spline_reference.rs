//! hepflow's 1-D splines against nflows' spline functions (reference values written by
//! `bench/spline_reference.py` into `tests/fixtures/spline_reference/`).
//!
//! Same raw parameters on both sides, float64, tolerance 1e-5 (absolute on outputs, inverses and
//! log-derivatives). The parameter mappings (hepflow's derivative shift; hepflow's free end
//! vertices and absent height floor in the quadratic spline) are described in the script and
//! in the README ("Splines and nflows").

use hepflow::transforms::spline::{Quadratic, RationalQuadratic, Spline1d};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    bins: usize,
    bound: f64,
    theta: Vec<f64>,
    x: Vec<f64>,
    y: Vec<f64>,
    logdet: Vec<f64>,
    inv_in: Vec<f64>,
    inv_out: Vec<f64>,
    inv_logdet: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn load(name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/spline_reference/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const TOL: f64 = 1e-5;

fn check<S: Spline1d>(name: &str) {
    let f = load(name);
    assert!(f.cases.len() >= 4, "{name}: too few cases");
    let mut compared = 0;
    let mut worst = 0.0f64;
    for (c, case) in f.cases.iter().enumerate() {
        assert_eq!(case.theta.len(), S::n_params(case.bins), "{name} case {c}");
        for (i, &x) in case.x.iter().enumerate() {
            let (y, l) = S::forward(x, &case.theta, case.bins, case.bound);
            worst = worst
                .max((y - case.y[i]).abs())
                .max((l - case.logdet[i]).abs());
            assert!(
                (y - case.y[i]).abs() < TOL && (l - case.logdet[i]).abs() < TOL,
                "{name} case {c} forward x = {x}: hepflow ({y}, {l}), nflows ({}, {})",
                case.y[i],
                case.logdet[i]
            );
            compared += 1;
        }
        for (i, &y) in case.inv_in.iter().enumerate() {
            let (x, l) = S::inverse(y, &case.theta, case.bins, case.bound);
            worst = worst
                .max((x - case.inv_out[i]).abs())
                .max((l - case.inv_logdet[i]).abs());
            assert!(
                (x - case.inv_out[i]).abs() < TOL && (l - case.inv_logdet[i]).abs() < TOL,
                "{name} case {c} inverse y = {y}: hepflow ({x}, {l}), nflows ({}, {})",
                case.inv_out[i],
                case.inv_logdet[i]
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "{name}: only {compared} values compared");
    eprintln!("{name}: {compared} values, largest difference from nflows {worst:.2e}");
}

#[test]
fn rational_quadratic_matches_nflows() {
    check::<RationalQuadratic>("rational_quadratic");
}

#[test]
fn quadratic_matches_nflows_quadratic_spline() {
    check::<Quadratic>("quadratic");
}

/// nflows' piecewise-quadratic spline with linear tails (`unconstrained_quadratic_spline`) takes
/// `K - 1` vertex parameters and sets both end vertices so that the density is 1 at `±B`: its
/// log-derivative is continuous (0) where it joins the identity tails. hepflow's [`Quadratic`]
/// keeps all `K + 1` vertices free, so its log-derivative jumps at `±B` (and its inverse's at
/// the image of `±B`). Deliberate for now (the pq-spline default measured best with it); the
/// fix to match nflows is in the README ("Splines and nflows"). Ignored: it documents the
/// difference and fails today.
#[test]
#[ignore = "documents a deliberate difference from nflows: free end vertices (see README)"]
fn quadratic_joins_its_identity_tails_with_slope_one_as_in_nflows() {
    let f = load("quadratic");
    for case in &f.cases {
        let b = case.bound;
        for x in [-b + 1e-9, b - 1e-9] {
            let (_, l) = Quadratic::forward(x, &case.theta, case.bins, b);
            assert!(
                l.abs() < 1e-6,
                "log f'({x}) = {l} inside the bound, 0 outside"
            );
        }
    }
}
