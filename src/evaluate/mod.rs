//! Evaluation of generated events against a Monte Carlo (MC) reference sample.
//!
//! [`evaluate`] computes per-feature binned chi2, Kolmogorov-Smirnov and Wasserstein-1 metrics,
//! the correlation-matrix difference, the Frechet distance in the reference's standardized
//! feature space, the test NLL and a classifier two-sample test (C2ST, our own boosted trees).
//! [`write_report`] writes `metrics.json`, PNG+SVG plots and a self-contained `report.html`.

pub mod c2st;
pub mod gbdt;
pub mod metrics;
pub mod physics;
pub mod plots;
pub mod report;
pub mod weighted;

use std::path::PathBuf;

use rayon::prelude::*;

use crate::engine::Matrix;
use crate::preprocess::Preprocessor;
pub use c2st::{C2stConfig, C2stResult, c2st_auc, c2st_auc_weighted, c2st_auc_with, c2st_mc_vs_mc};
pub use gbdt::{Gbdt, GbdtConfig};
pub use physics::physics_check;
pub use plots::plot_training_curves;
pub use report::{FeatureMetrics, Metrics, OutsideRange, PhysicsMetrics, write_report};

/// Errors of the evaluation and report code.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Inconsistent shapes of the inputs.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Not enough events for a metric.
    #[error("too few events: {0}")]
    TooFewEvents(String),
    /// File-system error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A plot could not be drawn or saved.
    #[error("plotting failed: {0}")]
    Plot(String),
    /// JSON serialisation failed.
    #[error("JSON serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// Settings of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Number of histogram bins per feature (between the reference's 0.5% and 99.5% quantiles).
    pub nbins: usize,
    /// Classifier two-sample test settings.
    pub c2st: C2stConfig,
    /// Also run the MC-vs-MC C2ST (reference split in halves) as a baseline.
    pub mc_vs_mc: bool,
    /// Seed of the subsampling and fold assignment.
    pub seed: u64,
    /// Physics-level metrics computed by the caller, copied into the report.
    pub physics: Option<PhysicsMetrics>,
    /// The model's preprocessing (its support), to count generated events pinned at an end of
    /// the support ([`Preprocessor::pinned`]); `None` skips that metric.
    pub support: Option<Preprocessor>,
    /// The column the reference weights came from, for the report (`--weight COLUMN`).
    pub weight_column: Option<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            nbins: 40,
            c2st: C2stConfig::default(),
            mc_vs_mc: true,
            seed: 1234,
            physics: None,
            support: None,
            weight_column: None,
        }
    }
}

/// Binned distributions of one feature: `edges.len() = reference.len() + 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureHistogram {
    /// Bin edges (from the reference; under/overflow merged into the edge bins).
    pub edges: Vec<f64>,
    /// Reference (MC) counts per bin.
    pub reference: Vec<f64>,
    /// Generated counts per bin.
    pub generated: Vec<f64>,
}

/// Everything [`evaluate`] computed: the JSON metrics plus the data behind the plots.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The headline and per-feature metrics (serialised to `metrics.json`).
    pub metrics: Metrics,
    /// Feature names.
    pub names: Vec<String>,
    /// Per-feature histograms.
    pub histograms: Vec<FeatureHistogram>,
    /// Correlation matrix of the reference (row-major `d x d`).
    pub corr_reference: Vec<f64>,
    /// Correlation matrix of the generated sample (row-major `d x d`).
    pub corr_generated: Vec<f64>,
    /// The C2ST reference (label 0) vs generated (label 1).
    pub c2st: C2stResult,
    /// The MC-vs-MC C2ST baseline, when run and the reference is large enough.
    pub c2st_mc_vs_mc: Option<C2stResult>,
    /// Reference events dropped for containing non-finite values.
    pub dropped_reference: usize,
    /// Generated events dropped for containing non-finite values.
    pub dropped_generated: usize,
    /// Non-finite log-densities skipped in the test NLL.
    pub nll_skipped: usize,
}

/// Rows of `m` whose values are all finite, as an `f32` matrix and an `f64` row-major vector,
/// plus the number of dropped rows.
fn finite_rows(m: &Matrix<f32>) -> (Matrix<f32>, Vec<f64>, usize) {
    let d = m.cols();
    let mut data32 = Vec::with_capacity(m.rows() * d);
    let mut kept = 0;
    for i in 0..m.rows() {
        let r = m.row(i);
        if r.iter().all(|v| v.is_finite()) {
            data32.extend_from_slice(r);
            kept += 1;
        }
    }
    let data64 = data32.iter().map(|&v| v as f64).collect();
    let mat = Matrix::from_vec(kept, d, data32).unwrap_or_else(|| Matrix::zeros(0, d));
    (mat, data64, m.rows() - kept)
}

/// Generated and MC events outside the range of the reference's even rows (the MC side is
/// the odd rows); `None` with fewer than 4 reference events. Row-major finite `f64` samples.
fn outside_range(ref64: &[f64], gen64: &[f64], names: &[String]) -> Option<OutsideRange> {
    let d = names.len();
    let n = ref64.len() / d.max(1);
    if n < 4 {
        return None;
    }
    let half = |parity: usize| -> Vec<f64> {
        ref64
            .chunks_exact(d)
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .flat_map(|(_, r)| r.iter().copied())
            .collect()
    };
    let (a, b) = (half(0), half(1));
    let ranges = metrics::column_ranges(&a, d);
    let (per_gen, frac_gen) = metrics::outside_fractions(gen64, d, &ranges);
    let (per_mc, mc) = metrics::outside_fractions(&b, d, &ranges);
    Some(OutsideRange {
        generated: frac_gen,
        mc,
        features: names
            .iter()
            .zip(per_gen.iter().zip(&per_mc))
            .map(|(nm, (&g, &m))| (nm.clone(), g, m))
            .collect(),
    })
}

/// Compares `generated` to `reference` (both `events x features`, columns named by `names`).
///
/// Events with a non-finite value are dropped (counted in the result). `log_prob_reference`
/// holds the model's per-event `log p(x)` on held-out reference events; the test NLL is
/// NaN (`null` in JSON) when it is `None`. Errors on inconsistent shapes or when a sample has
/// fewer events than the C2ST needs (2 per fold).
pub fn evaluate(
    reference: &Matrix<f32>,
    generated: &Matrix<f32>,
    names: &[String],
    log_prob_reference: Option<&[f64]>,
    options: &EvalOptions,
) -> Result<Evaluation, EvalError> {
    evaluate_weighted(
        reference,
        None,
        generated,
        names,
        log_prob_reference,
        options,
    )
}

/// [`evaluate`] with optional per-event weights of the reference (one per row; generated events
/// are unweighted). With weights, every reference statistic is weighted ([`weighted`]): the
/// per-feature chi2 (histograms hold `sum w`), KS and `w1_over_std`, the correlation matrix
/// and the Frechet distance (weighted mean and covariance, normalised as
/// [`weighted::mean_std_weighted`]), the test NLL (`sum w nll / sum w`, the weights of the rows
/// of `log_prob_reference`) and the C2ST; the metrics record `weighted`, the weight column
/// ([`EvalOptions::weight_column`]) and the effective reference size. The binning and the
/// range checks stay unweighted. All-one weights give exactly the unweighted metrics.
/// Errors also when the weights do not match the reference rows (or the log-densities) or the
/// weights of the finite reference events do not have a positive finite total.
pub fn evaluate_weighted(
    reference: &Matrix<f32>,
    reference_weights: Option<&[f64]>,
    generated: &Matrix<f32>,
    names: &[String],
    log_prob_reference: Option<&[f64]>,
    options: &EvalOptions,
) -> Result<Evaluation, EvalError> {
    let d = names.len();
    if let Some(w) = reference_weights
        && w.len() != reference.rows()
    {
        return Err(EvalError::Shape(format!(
            "{} reference events but {} weights",
            reference.rows(),
            w.len()
        )));
    }
    if let (Some(w), Some(lp)) = (reference_weights, log_prob_reference)
        && w.len() != lp.len()
    {
        return Err(EvalError::Shape(format!(
            "{} reference log-densities but {} weights",
            lp.len(),
            w.len()
        )));
    }
    if d == 0 || reference.cols() != d || generated.cols() != d {
        return Err(EvalError::Shape(format!(
            "{} names, reference has {} columns, generated has {}",
            d,
            reference.cols(),
            generated.cols()
        )));
    }
    let (ref32, ref64, dropped_reference) = finite_rows(reference);
    let (gen32, gen64, dropped_generated) = finite_rows(generated);
    let (nr, ng) = (ref32.rows(), gen32.rows());
    // weights of the finite reference rows (those `finite_rows` kept)
    let wref: Option<Vec<f64>> = reference_weights.map(|w| {
        (0..reference.rows())
            .filter(|&i| reference.row(i).iter().all(|v| v.is_finite()))
            .map(|i| w[i])
            .collect()
    });
    if let Some(w) = &wref {
        let total: f64 = w.iter().sum();
        if !(total > 0.0 && total.is_finite()) || w.iter().any(|v| !v.is_finite()) {
            return Err(EvalError::TooFewEvents(format!(
                "the weights of the {nr} finite reference events sum to {total}; \
                 they must be finite with a positive total"
            )));
        }
    }
    if nr < 2 || ng < 2 {
        return Err(EvalError::TooFewEvents(format!(
            "{nr} finite reference and {ng} finite generated events"
        )));
    }

    let per_feature: Vec<(FeatureMetrics, FeatureHistogram)> = (0..d)
        .into_par_iter()
        .map(|f| {
            let col: Vec<f64> = ref64.iter().skip(f).step_by(d).copied().collect();
            let gs = metrics::sorted_finite(
                &gen64.iter().skip(f).step_by(d).copied().collect::<Vec<_>>(),
            );
            let (edges, hr, hg, chi, ks, w1) = match &wref {
                None => {
                    let rs = metrics::sorted_finite(&col);
                    let edges = metrics::reference_edges(&rs, options.nbins);
                    let hr = metrics::histogram(&rs, &edges);
                    let hg = metrics::histogram(&gs, &edges);
                    let chi = metrics::chi2_two_sample(&hr, &hg);
                    let ks = metrics::ks_two_sample(&rs, &gs);
                    let w1 = metrics::w1_over_std(&rs, &gs);
                    (edges, hr, hg, chi, ks, w1)
                }
                Some(w) => {
                    let (rs, rw) = weighted::sorted_weighted(&col, w);
                    let edges = metrics::reference_edges(&rs, options.nbins);
                    let (hr, hr2) = weighted::histogram_weighted(&rs, &rw, &edges);
                    let hg = metrics::histogram(&gs, &edges);
                    let chi = weighted::chi2_weighted_unweighted(&hr, &hr2, &hg);
                    let ks = weighted::ks_weighted(&rs, &rw, &gs);
                    let w1 = weighted::w1_over_std_weighted(&rs, &rw, &gs);
                    (edges, hr, hg, chi, ks, w1)
                }
            };
            (
                FeatureMetrics {
                    name: names[f].clone(),
                    chi2_ndf: chi.chi2_ndf(),
                    chi2_p: chi.p_value,
                    ks: ks.d,
                    ks_p: ks.p_value,
                    w1_over_std: w1,
                },
                FeatureHistogram {
                    edges,
                    reference: hr,
                    generated: hg,
                },
            )
        })
        .collect();
    let (features, histograms): (Vec<_>, Vec<_>) = per_feature.into_iter().unzip();

    let corr_reference = match &wref {
        None => metrics::correlation_matrix(&ref64, d),
        Some(w) => weighted::correlation_matrix_weighted(&ref64, d, w),
    };
    let corr_generated = metrics::correlation_matrix(&gen64, d);
    let corr_frobenius = metrics::frobenius_diff(&corr_generated, &corr_reference);
    let frechet_distance = match &wref {
        None => metrics::frechet_distance_standardized(&ref64, &gen64, d),
        Some(w) => weighted::frechet_distance_standardized_weighted(&ref64, w, &gen64, d),
    };

    let (test_nll, test_nll_err, nll_skipped) = match (log_prob_reference, reference_weights) {
        (Some(lp), None) => metrics::mean_nll(lp),
        (Some(lp), Some(w)) => weighted::mean_nll_weighted(lp, w),
        (None, _) => (f64::NAN, f64::NAN, 0),
    };

    let outside_support = log_prob_reference.map_or(0, |lp| {
        lp.iter().filter(|v| **v == f64::NEG_INFINITY).count()
    });
    let outside_range = outside_range(&ref64, &gen64, names);
    // Pinned values are counted on all generated events (a pinned event is finite).
    let pinned = options
        .support
        .as_ref()
        .map(|p| p.pinned(&generated.cast::<f64>()));

    let wr = wref.as_deref();
    let c2st = c2st::c2st_auc_weighted(&ref32, wr, &gen32, None, &options.c2st, options.seed)?;
    let c2st_mc_vs_mc = if options.mc_vs_mc {
        c2st::c2st_mc_vs_mc_weighted(&ref32, wr, &options.c2st, options.seed.wrapping_add(17))?
    } else {
        None
    };

    Ok(Evaluation {
        metrics: Metrics {
            test_nll,
            test_nll_err,
            c2st_auc: c2st.auc,
            c2st_auc_err: c2st.auc_err,
            c2st_auc_mc_vs_mc: c2st_mc_vs_mc.as_ref().map(|r| r.auc),
            frechet_distance,
            corr_frobenius,
            n_generated: ng,
            n_reference: nr,
            features,
            physics: options.physics.clone(),
            outside_range,
            pinned,
            outside_support,
            weighted: wr.is_some(),
            n_reference_effective: wr.map(weighted::effective_size),
            weight_column: wr.and(options.weight_column.clone()),
            weighting: wr.map(|w| {
                report::weighting_note(
                    options.weight_column.as_deref(),
                    weighted::effective_size(w),
                )
            }),
        },
        names: names.to_vec(),
        histograms,
        corr_reference,
        corr_generated,
        c2st,
        c2st_mc_vs_mc,
        dropped_reference,
        dropped_generated,
        nll_skipped,
    })
}
