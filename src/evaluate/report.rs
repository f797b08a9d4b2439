//! `metrics.json` (fixed shape, serde) and the self-contained `report.html` with all plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::plots::{self, write_atomic};
use super::{EvalError, Evaluation};
use crate::preprocess::PinnedEvents;

/// Physics-level comparison supplied by the caller: the AUC on MC test events of a physics
/// classifier (e.g. signal vs background) trained on MC and of the same classifier trained on
/// generated events. Close values mean generated events can replace MC for training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhysicsMetrics {
    /// AUC of the physics classifier trained on MC.
    pub auc_trained_on_mc: f64,
    /// AUC of the physics classifier trained on generated events.
    pub auc_trained_on_generated: f64,
}

/// Per-feature metrics row of `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureMetrics {
    /// Feature name.
    pub name: String,
    /// Two-sample binned chi2 divided by its degrees of freedom.
    pub chi2_ndf: f64,
    /// p-value of the chi2.
    pub chi2_p: f64,
    /// Kolmogorov-Smirnov statistic `D`.
    pub ks: f64,
    /// Asymptotic KS p-value.
    pub ks_p: f64,
    /// Wasserstein-1 distance over the reference's standard deviation.
    pub w1_over_std: f64,
}

/// Events outside the reference's range, generated vs MC (`metrics.json` key `outside_range`).
///
/// The range is that of one half of the reference (its even rows); the MC fraction is that of
/// the other half (its odd rows), the generated fraction that of all generated events. Two MC
/// samples of the same size differ by about `2 / (n/2)` per feature at the ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutsideRange {
    /// Fraction of generated events with at least one feature outside the range.
    pub generated: f64,
    /// The same for the other half of the MC.
    pub mc: f64,
    /// Per feature: `(name, generated fraction, MC fraction)`.
    pub features: Vec<(String, f64, f64)>,
}

/// The content of `metrics.json`. NaN values (e.g. `test_nll` without log-densities) are
/// written as `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean negative log-likelihood of held-out reference events.
    pub test_nll: f64,
    /// Standard error of `test_nll`.
    pub test_nll_err: f64,
    /// C2ST AUC, reference vs generated (0.5 = indistinguishable).
    pub c2st_auc: f64,
    /// Standard error of `c2st_auc` over the folds.
    pub c2st_auc_err: f64,
    /// C2ST AUC between two halves of the reference, when computed.
    pub c2st_auc_mc_vs_mc: Option<f64>,
    /// Frechet distance in the reference's standardized feature space.
    pub frechet_distance: f64,
    /// `||corr(gen) - corr(ref)||_F`.
    pub corr_frobenius: f64,
    /// Number of generated events evaluated.
    pub n_generated: usize,
    /// Number of reference events evaluated.
    pub n_reference: usize,
    /// Per-feature metrics.
    pub features: Vec<FeatureMetrics>,
    /// Optional physics-level metrics (omitted from JSON when absent).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub physics: Option<PhysicsMetrics>,
    /// Generated and MC events outside the reference's range (absent for a reference of
    /// fewer than 4 events).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outside_range: Option<OutsideRange>,
    /// Generated events pinned at an end of the model's support (needs the model's
    /// preprocessing, [`crate::evaluate::EvalOptions::support`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pinned: Option<PinnedEvents>,
    /// Reference events outside the model's support (their log-density is `-inf`; they are
    /// left out of `test_nll`).
    #[serde(default)]
    pub outside_support: usize,
    /// Whether the reference events carry weights (written only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub weighted: bool,
    /// Effective size `(sum w)^2 / sum w^2` of a weighted reference (absent when unweighted).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n_reference_effective: Option<f64>,
    /// The reference's weight column (absent when unweighted or not known).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub weight_column: Option<String>,
    /// "weighted reference (column X, ESS N)" ([`weighting_note`]; absent when unweighted).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub weighting: Option<String>,
}

/// The sentence that says a reference was weighted: "weighted reference (column genWeight,
/// ESS 1234.5)", or without the column when it is not known.
pub fn weighting_note(column: Option<&str>, ess: f64) -> String {
    match column {
        Some(c) => format!("weighted reference (column {c}, ESS {ess:.1})"),
        None => format!("weighted reference (ESS {ess:.1})"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// File-name-safe version of a feature name.
fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if t.is_empty() { "feature".into() } else { t }
}

fn fmt(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.*e}", digits.saturating_sub(1).max(1))
    } else {
        format!("{v:.digits$}")
    }
}

fn img_tag(path: &Path, alt: &str) -> Result<String, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        esc(alt),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Short annotation of one feature's metrics for its plot.
fn feature_annotation(f: &FeatureMetrics) -> String {
    format!(
        "χ²/ndf = {}  (p = {})    KS = {}    W1/σ = {}",
        fmt(f.chi2_ndf, 2),
        fmt(f.chi2_p, 3),
        fmt(f.ks, 4),
        fmt(f.w1_over_std, 4)
    )
}

const CSS: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1300px;color:#222;padding:0 1em}\
h1{border-bottom:2px solid #1f5aa0;padding-bottom:.3em}h2{color:#1f5aa0;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}\
th{background:#eef3f9}td.l,th.l{text-align:left}td.bad{background:#fbe3e3}td.ok{background:#e5f4e5}\
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:.6em}\
.note{color:#666;font-size:.9em}";

/// Writes `metrics.json`, the plots (`plots/*.png` and `plots/*.svg`) and a self-contained
/// `report.html` (images embedded as base64 PNG data URIs, inline CSS, no external resources)
/// into `dir` (created if missing). Every file is written atomically (temporary + rename).
/// `model_summary` is shown as a key/value table at the top of the report.
pub fn write_report(
    dir: &Path,
    eval: &Evaluation,
    model_summary: &[(String, String)],
) -> Result<(), EvalError> {
    let plot_dir = dir.join("plots");
    std::fs::create_dir_all(&plot_dir).map_err(|source| EvalError::Io {
        path: plot_dir.clone(),
        source,
    })?;
    let m = &eval.metrics;
    let json = serde_json::to_string_pretty(m)?;
    write_atomic(&dir.join("metrics.json"), json.as_bytes())?;

    let p = |name: &str, ext: &str| -> PathBuf { plot_dir.join(format!("{name}.{ext}")) };
    // plots
    plots::plot_feature_grid(
        &eval.names,
        &eval.histograms,
        &p("features", "png"),
        Some(&p("features", "svg")),
    )?;
    let mut feature_pngs = Vec::new();
    for (i, ((name, hist), fm)) in eval
        .names
        .iter()
        .zip(&eval.histograms)
        .zip(&m.features)
        .enumerate()
    {
        let stem = format!("feature_{i:02}_{}", sanitize(name));
        let ann = feature_annotation(fm);
        plots::plot_feature(
            name,
            hist,
            Some(&ann),
            &p(&stem, "png"),
            Some(&p(&stem, "svg")),
        )?;
        feature_pngs.push((name.clone(), p(&stem, "png")));
    }
    let diff: Vec<f64> = eval
        .corr_generated
        .iter()
        .zip(&eval.corr_reference)
        .map(|(g, r)| g - r)
        .collect();
    plots::plot_corr_diff(
        &eval.names,
        &diff,
        &p("corr_diff", "png"),
        Some(&p("corr_diff", "svg")),
    )?;
    plots::plot_scores(
        &eval.c2st.scores_a,
        &eval.c2st.scores_b,
        eval.c2st.auc,
        eval.c2st.auc_err,
        &p("c2st_scores", "png"),
        Some(&p("c2st_scores", "svg")),
    )?;

    // HTML
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hepflow evaluation report</title><style>{CSS}</style></head><body>\n<h1>hepflow evaluation report</h1>\n"
    );
    h.push_str("<h2>Model summary</h2>\n<table>");
    for (k, v) in model_summary {
        let _ = write!(
            h,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    let _ = writeln!(
        h,
        "<tr><th class=\"l\">events</th><td class=\"l\">{} MC, {} generated</td></tr></table>",
        m.n_reference, m.n_generated
    );
    if let Some(w) = &m.weighting {
        let _ = writeln!(
            h,
            "<p class=\"note\"><b>{}</b>: every MC statistic below (histograms, χ², KS, W1, correlations, Fréchet distance, test NLL, C2ST) weights the MC events; the effective sample size (Σw)²/Σw² sets their statistical precision. Generated events are unweighted.</p>",
            esc(w)
        );
    }
    if eval.dropped_reference + eval.dropped_generated + eval.nll_skipped > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">Dropped for non-finite values: {} MC events, {} generated events, {} log-densities.</p>",
            eval.dropped_reference, eval.dropped_generated, eval.nll_skipped
        );
    }

    h.push_str("<h2>Headline numbers</h2>\n<table><tr><th class=\"l\">metric</th><th>value</th><th class=\"l\">meaning</th></tr>\n");
    let mut row = |name: &str, value: String, meaning: &str| {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(name),
            esc(&value),
            esc(meaning)
        );
    };
    row(
        "test NLL",
        format!("{} ± {}", fmt(m.test_nll, 4), fmt(m.test_nll_err, 4)),
        "mean −log p(x) of held-out MC events under the model (lower is better)",
    );
    row(
        "C2ST AUC (MC vs generated)",
        format!("{} ± {}", fmt(m.c2st_auc, 4), fmt(m.c2st_auc_err, 4)),
        "boosted-tree classifier AUC: 0.5 = indistinguishable from MC, 1.0 = perfectly separable",
    );
    row(
        "C2ST AUC (MC vs MC)",
        m.c2st_auc_mc_vs_mc.map_or("n/a".into(), |v| fmt(v, 4)),
        "same test between two halves of the MC: the best value reachable with these statistics",
    );
    row(
        "Fréchet distance",
        fmt(m.frechet_distance, 5),
        "distance of the Gaussian moments in standardized MC units: 0 = same means and covariances",
    );
    row(
        "‖Δcorr‖_F",
        fmt(m.corr_frobenius, 4),
        "Frobenius norm of corr(generated) − corr(MC): 0 = identical linear correlations",
    );
    if let Some(ph) = &m.physics {
        row(
            "physics AUC trained on MC",
            fmt(ph.auc_trained_on_mc, 4),
            "AUC on MC test events of a physics classifier trained on MC",
        );
        row(
            "physics AUC trained on generated",
            fmt(ph.auc_trained_on_generated, 4),
            "the same classifier trained on generated events: close to the MC-trained value = drop-in replacement",
        );
    }
    if let Some(o) = &m.outside_range {
        row(
            "events outside the MC range",
            format!(
                "{} % (MC {} %)",
                fmt(100.0 * o.generated, 3),
                fmt(100.0 * o.mc, 3)
            ),
            "generated events with a feature outside the range of one half of the MC, next to the other half's own fraction",
        );
    }
    if let Some(p) = &m.pinned {
        row(
            "pinned events",
            format!(
                "{} with every feature, {} with any (of {})",
                p.all_features, p.any_feature, p.events
            ),
            "generated events at the very end of the model's support (a saturated flow output); 0 expected",
        );
    }
    if m.outside_support > 0 {
        row(
            "MC events outside the model's support",
            m.outside_support.to_string(),
            "held-out events the model gives zero density (log p = -inf); left out of the test NLL",
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Per-feature metrics</h2>\n<p class=\"note\">χ²/ndf: binned two-sample test (1 = statistically compatible); KS: largest CDF difference; W1/σ: Wasserstein-1 distance in units of the MC standard deviation (0 = identical). p-values below 0.001 are highlighted.</p>\n");
    h.push_str("<table><tr><th class=\"l\">feature</th><th>χ²/ndf</th><th>χ² p-value</th><th>KS</th><th>KS p-value</th><th>W1/σ</th><th>outside MC range: generated / MC (%)</th></tr>\n");
    for (j, f) in m.features.iter().enumerate() {
        let cls = |p: f64| if p < 1e-3 { "bad" } else { "ok" };
        let outside = m
            .outside_range
            .as_ref()
            .and_then(|o| o.features.get(j))
            .map_or("n/a".to_string(), |(_, g, mc)| {
                format!("{} / {}", fmt(100.0 * g, 3), fmt(100.0 * mc, 3))
            });
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            fmt(f.chi2_ndf, 3),
            cls(f.chi2_p),
            fmt(f.chi2_p, 3),
            fmt(f.ks, 4),
            cls(f.ks_p),
            fmt(f.ks_p, 3),
            fmt(f.w1_over_std, 4),
            esc(&outside)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>All features</h2>\n");
    h.push_str(&img_tag(&p("features", "png"), "all features")?);
    h.push_str("\n<h2>Correlations</h2>\n");
    h.push_str(&img_tag(&p("corr_diff", "png"), "correlation difference")?);
    h.push_str("\n<h2>Classifier scores</h2>\n");
    h.push_str(&img_tag(&p("c2st_scores", "png"), "C2ST scores")?);
    h.push_str("\n<h2>Individual features</h2>\n<div class=\"grid\">");
    for (name, path) in &feature_pngs {
        h.push_str(&img_tag(path, name)?);
    }
    h.push_str("</div>\n</body></html>\n");
    write_atomic(&dir.join("report.html"), h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::{EvalOptions, evaluate, evaluate_weighted};
    use super::*;
    use crate::engine::{Matrix, Rng};
    use crate::evaluate::C2stConfig;
    use crate::evaluate::gbdt::GbdtConfig;

    #[test]
    fn report_files_have_the_contracted_shape() {
        let mut rng = Rng::new(9);
        let n = 2400;
        let reference = Matrix::from_fn(n, 3, |_, j| (rng.normal() * (j + 1) as f64) as f32);
        let mut generated =
            Matrix::from_fn(n, 3, |_, j| (rng.normal() * (j + 1) as f64 + 0.1) as f32);
        generated.set(0, 1, f32::NAN);
        let names: Vec<String> = ["pt<1>", "eta", "m_jj"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut logp: Vec<f64> = (0..n).map(|i| -1.0 - (i % 7) as f64).collect();
        logp[3] = f64::NEG_INFINITY;
        let support =
            crate::preprocess::Preprocessor::fit(&reference.cast::<f64>(), &names, &[], 0.05)
                .unwrap();
        // Generated event 1 sits at the upper end of the support in every feature.
        for (j, f) in support.features.iter().enumerate() {
            generated.set(1, j, f.hi as f32);
        }
        let opts = EvalOptions {
            support: Some(support),
            c2st: C2stConfig {
                folds: 3,
                max_events: 1500,
                gbdt: GbdtConfig {
                    n_trees: 10,
                    ..GbdtConfig::default()
                },
            },
            physics: Some(PhysicsMetrics {
                auc_trained_on_mc: 0.8,
                auc_trained_on_generated: 0.79,
            }),
            ..EvalOptions::default()
        };
        let ev = evaluate(&reference, &generated, &names, Some(&logp), &opts).unwrap();
        assert_eq!(ev.dropped_generated, 1);
        assert_eq!(ev.metrics.n_generated, n - 1);
        assert!(ev.metrics.c2st_auc_mc_vs_mc.is_some());
        let dir = tempfile::tempdir().unwrap();
        let summary = vec![("transform".to_string(), "affine <coupling> x 8".to_string())];
        write_report(dir.path(), &ev, &summary).unwrap();

        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(|s| s.as_str()).collect();
        keys.sort_unstable();
        let mut want = vec![
            "test_nll",
            "test_nll_err",
            "c2st_auc",
            "c2st_auc_err",
            "c2st_auc_mc_vs_mc",
            "frechet_distance",
            "corr_frobenius",
            "n_generated",
            "n_reference",
            "features",
            "physics",
            "outside_range",
            "pinned",
            "outside_support",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        let f0 = obj["features"][0].as_object().unwrap();
        let mut fk: Vec<&str> = f0.keys().map(|s| s.as_str()).collect();
        fk.sort_unstable();
        assert_eq!(
            fk,
            ["chi2_ndf", "chi2_p", "ks", "ks_p", "name", "w1_over_std"]
        );
        assert_eq!(obj["features"][0]["name"], "pt<1>");
        assert!(obj["test_nll"].as_f64().unwrap() > 0.0);
        let ph = obj["physics"].as_object().unwrap();
        assert_eq!(ph.len(), 2);
        assert_eq!(obj["outside_support"], 1);
        assert_eq!(obj["pinned"]["all_features"], 1);
        assert_eq!(obj["pinned"]["any_feature"], 1);
        // Event 1 is outside the MC range in every feature; Gaussians of the same width
        // (shifted by 0.1) give a small fraction, like the MC's own.
        let o = ev.metrics.outside_range.as_ref().unwrap();
        assert_eq!(o.features.len(), 3);
        assert!(o.generated >= 1.0 / n as f64 && o.generated < 0.05, "{o:?}");
        assert!(o.mc > 0.0 && o.mc < 0.05, "{o:?}");

        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("data:image/png;base64,"));
        assert!(html.contains("affine &lt;coupling&gt; x 8"));
        assert!(html.contains("pinned events") && html.contains("outside the MC range"));
        for attr in ["src=\"", "href=\"", "src='", "href='"] {
            for (i, _) in html.match_indices(attr) {
                let rest = &html[i + attr.len()..];
                assert!(!rest.starts_with("http"), "external reference in report");
            }
        }
        assert!(!html.contains("<link") && !html.contains("<script"));
        for f in [
            "features",
            "corr_diff",
            "c2st_scores",
            "feature_00_pt_1_",
            "feature_02_m_jj",
        ] {
            assert!(
                dir.path().join(format!("plots/{f}.png")).is_file(),
                "{f}.png"
            );
            assert!(
                dir.path().join(format!("plots/{f}.svg")).is_file(),
                "{f}.svg"
            );
        }
        // no temporary files left behind
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.starts_with(".tmp-"), "{name}");
        }

        // without physics and log-densities: no "physics" key, NLL is null
        let opts2 = EvalOptions {
            physics: None,
            mc_vs_mc: false,
            ..opts
        };
        let ev2 = evaluate(&reference, &generated, &names, None, &opts2).unwrap();
        let j2 = serde_json::to_value(&ev2.metrics).unwrap();
        assert!(j2.get("physics").is_none());
        assert!(j2["test_nll"].is_null());
        assert!(j2["c2st_auc_mc_vs_mc"].is_null());
        assert!(evaluate(&reference, &generated, &names[..2], None, &opts2).is_err());

        // unit reference weights reproduce every metric exactly; only the flags are added
        let ones = vec![1.0; reference.rows()];
        let evw =
            evaluate_weighted(&reference, Some(&ones), &generated, &names, None, &opts2).unwrap();
        let mut mw = evw.metrics.clone();
        assert!(mw.weighted);
        assert_eq!(
            mw.n_reference_effective,
            Some(ev2.metrics.n_reference as f64)
        );
        let jw = serde_json::to_value(&mw).unwrap();
        assert_eq!(jw["weighted"], true);
        assert!(j2.get("weighted").is_none() && j2.get("n_reference_effective").is_none());
        assert_eq!(jw["weighting"], format!("weighted reference (ESS {n}.0)"));
        mw.weighted = false;
        mw.n_reference_effective = None;
        mw.weighting = None;
        assert_eq!(
            serde_json::to_string(&mw).unwrap(),
            serde_json::to_string(&ev2.metrics).unwrap()
        );
        assert_eq!(evw.histograms, ev2.histograms);
        assert_eq!(evw.c2st, ev2.c2st);
        // ... also the correlations, the Frechet distance and the test NLL (with log-densities,
        // one of them -inf); the report and metrics.json name the weight column and the ESS.
        let ev3 = evaluate(&reference, &generated, &names, Some(&logp), &opts2).unwrap();
        let opts_w = EvalOptions {
            weight_column: Some("genWeight".into()),
            ..opts2.clone()
        };
        let ev3w = evaluate_weighted(
            &reference,
            Some(&ones),
            &generated,
            &names,
            Some(&logp),
            &opts_w,
        )
        .unwrap();
        assert_eq!(ev3w.corr_reference, ev3.corr_reference);
        assert_eq!(ev3w.nll_skipped, 1);
        let mut m3 = ev3w.metrics.clone();
        let note = format!("weighted reference (column genWeight, ESS {n}.0)");
        assert_eq!(m3.weighting.as_deref(), Some(note.as_str()));
        assert_eq!(m3.weight_column.as_deref(), Some("genWeight"));
        assert!(m3.test_nll.is_finite() && m3.frechet_distance > 0.0);
        (m3.weighted, m3.n_reference_effective) = (false, None);
        (m3.weight_column, m3.weighting) = (None, None);
        assert_eq!(
            serde_json::to_string(&m3).unwrap(),
            serde_json::to_string(&ev3.metrics).unwrap()
        );
        let wdir = tempfile::tempdir().unwrap();
        write_report(wdir.path(), &ev3w, &summary).unwrap();
        let html = std::fs::read_to_string(wdir.path().join("report.html")).unwrap();
        assert!(html.contains(&note), "no weighting note in the report");
        let json = std::fs::read_to_string(wdir.path().join("metrics.json")).unwrap();
        assert!(json.contains(&note) && json.contains("\"weight_column\": \"genWeight\""));
        // Log-densities and weights of different lengths are an error.
        assert!(
            evaluate_weighted(
                &reference,
                Some(&ones),
                &generated,
                &names,
                Some(&logp[1..]),
                &opts_w
            )
            .is_err()
        );
        // negative weights: finite metrics; wrong length or non-positive total: errors
        let w: Vec<f64> = (0..reference.rows())
            .map(|i| if i % 6 == 0 { -0.5 } else { 1.2 })
            .collect();
        let evn =
            evaluate_weighted(&reference, Some(&w), &generated, &names, None, &opts2).unwrap();
        assert!(evn.metrics.c2st_auc.is_finite());
        assert!(evn.metrics.features.iter().all(|f| {
            [f.chi2_ndf, f.chi2_p, f.ks, f.ks_p, f.w1_over_std]
                .iter()
                .all(|v| v.is_finite())
        }));
        assert!(
            evaluate_weighted(&reference, Some(&w[1..]), &generated, &names, None, &opts2).is_err()
        );
        let neg = vec![-1.0; reference.rows()];
        assert!(
            evaluate_weighted(&reference, Some(&neg), &generated, &names, None, &opts2).is_err()
        );
    }

    #[test]
    fn training_curve_png() {
        let dir = tempfile::tempdir().unwrap();
        let hist: Vec<(usize, f64, f64)> = (1..=20)
            .map(|e| (e, 3.0 / e as f64 + 1.0, 3.2 / e as f64 + 1.05))
            .collect();
        let path = dir.path().join("training.png");
        plots::plot_training_curves(&hist, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(plots::plot_training_curves(&[], &path).is_err());
    }
}
