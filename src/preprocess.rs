//! The seminar's preprocessing chain as an exact invertible map with a log-determinant, in `f64`.
//!
//! Per continuous feature, from physical units `x` to the flow's input `z`:
//!
//! 1. min-max: `u = (x - lo) / (hi - lo)` onto `(0, 1)`, with `lo = min - m_lo`,
//!    `hi = max + m_hi` (see "Support" below);
//! 2. logit: `y = log(u / (1 - u))`;
//! 3. standardisation: `z = (y - mean) / std` (mean and population std of `y` over the fit data).
//!
//! `log|dz/dx| = -log(hi - lo) - log(u (1 - u)) - log(std)`, summed over features per row.
//!
//! # Support
//!
//! The model's support in physical units is the open box `(lo, hi)`: the inverse
//! `x = lo + sigmoid(z std + mean) (hi - lo)` can never leave it. The margins are chosen per side
//! from the training values `x_(1) <= ... <= x_(n)` (with `w = max - min` and `m` the caller's
//! margin fraction, [`DEFAULT_MARGIN`] = 0.5 by default):
//!
//! - `m_lo = clamp(2 s (x_(k) - x_(1)), MIN_MARGIN w, m w)` with `k =` [`EDGE_ORDER`] = 10 (and
//!   the mirror image at the top). The distance from the sample's extreme to the true end of the
//!   distribution is of the order of the gap between the outermost order statistics, so this
//!   margin (up to `2 (k - 1)` such gaps) covers held-out events beyond the training range where
//!   the distribution has a tail (so that they keep a finite density), and shrinks towards
//!   [`MIN_MARGIN`]` w` where the outermost values are dense.
//! - `s` in `[1/3, 1]` ([`HARD_EDGE_SHARE`], [`TAIL_RATIO`]) reads the shape of the density at
//!   that end from the spacings (`edge_shape`): 1 along a tail (the outermost values spread out
//!   faster than the next ones), 1/3 at a hard edge (a trigger threshold in pT, the end of the eta
//!   acceptance: evenly spaced outermost values), so that a hard edge keeps about 6 spacings of
//!   margin (the true end lies about one spacing beyond the outermost value) instead of 18. A
//!   smooth model continues its density into the margin, so at a hard edge the margin's width
//!   sets how many generated events land beyond the training range (issue 16: 18 spacings gave
//!   0.59 % of generated events outside against 0.48 % for a second MC sample).
//! - A column whose training values are all `>= 0` (momenta, masses, energies) gets
//!   `lo = max(0, min - m_lo)`, so generated values are never negative. If its minimum is
//!   exactly 0, its zeros sit at the end of the support and are evaluated at `u = U_CLAMP`
//!   (finite, but they come back as `U_CLAMP (hi - lo)` and count as pinned); a column with
//!   many exact zeros is better declared discrete or split off.
//!
//! Why: the old fixed 5% margin on both sides put the data's hard edges at `logit(0.045) = -3.0`,
//! about 2 standard deviations from the centre in `z`: the margin was a region the Gaussian base
//! covers with a few percent of its mass, and a smooth flow cannot produce the cliff in density
//! at a hard edge, so 4.5% of generated events landed in the margins. With a margin of `1e-4 w`
//! the edge sits at `logit(1e-4) = -9.2`: the density falls smoothly to zero towards it in `y`
//! (a hard edge becomes an exponential tail `e^y`) and the probability beyond it is tiny.
//!
//! Values inside the support get their exact density, including values between the training
//! range and `(lo, hi)` (no clamping). Values outside `[lo, hi]` (or non-finite) are outside the
//! model's support: [`Preprocessor::outside_support`] flags them and a density user reports
//! `log p = -inf` (see `Model::log_prob`); [`Preprocessor::forward`] itself still maps them to a
//! finite stand-in so that training and validation code always sees finite values: the nearest
//! end of the training range (`data_range`; models saved without it clamp to
//! `u in [U_CLAMP, 1 - U_CLAMP]`). Not to `U_CLAMP`: with thin margins that is `y = +-16`, far
//! beyond any training value in `z`, and a flow with affine couplings (Glow, RealNVP)
//! extrapolates there without bound: one such validation event (a tail value beyond the support)
//! gave a validation NLL of 1e9 and stopped the seminar's Glow at epoch 5 (issue 16). Values in
//! the support are not affected, so every density stays exact.
//!
//! Models saved before these rules keep their stored `lo`, `hi` (5% margins); they load and
//! evaluate unchanged, except that values in their margins now get the model's density instead
//! of the density at the edge of the training range.
//!
//! Discrete features with `K` sorted distinct values `v_0 < ... < v_{K-1}` (`K <= 64`) are
//! uniformly dequantised: value `v_k` becomes `y = k + u` with `u ~ U(0, 1)` (training) or
//! `u = 1/2` (deterministic), then min-max with `lo = 0`, `hi = K` (no margin), logit and
//! standardisation as above. Their log-determinant is taken with respect to the dequantised
//! variable `y` (the map from `x` itself is piecewise constant), so that the flow's density of
//! `y` integrates to the probability of `v_k` over bin `k`. The inverse snaps back to
//! `v_k` with `k = floor(K * sigmoid(...))` clamped to `0..K-1`. A physical value that is not one
//! of the `v_k` is outside the support (it is mapped to the nearest one by `forward`).
//!
//! The whole struct derives `Serialize`/`Deserialize` and is saved with the model.

use crate::engine::{Matrix, Rng};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Lower clamp of the min-max-scaled value `u`; the upper clamp is `1 - U_CLAMP`.
pub const U_CLAMP: f64 = 1e-7;

/// Recommended `margin` for [`Preprocessor::fit`]: the largest margin on each side, as a
/// fraction of the training range (reached along tails only; hard edges get far less).
pub const DEFAULT_MARGIN: f64 = 0.5;

/// Smallest margin on each side of a continuous feature, as a fraction of its training range.
pub const MIN_MARGIN: f64 = 1e-4;

/// Order statistic that sets a side's margin: `x_(k) - x_(1)` with `k = EDGE_ORDER` (1-based).
pub const EDGE_ORDER: usize = 10;

/// A side's margin is `EDGE_SPANS * (x_(k) - x_(1))` (before the edge-shape factor, the floor and
/// the cap).
pub const EDGE_SPANS: f64 = 2.0;

/// Spacing ratio `r` (see [`edge_shape`]) at and above which a side counts as a tail and keeps
/// its whole margin. Under a hard edge `r` follows an F(18, 40) distribution (median 0.98); it
/// exceeds 2 with probability about 3 %.
pub const TAIL_RATIO: f64 = 2.0;

/// Share of the margin that a side with spacing ratio `r <= 1 + (TAIL_RATIO - 1) HARD_EDGE_SHARE`
/// keeps: `EDGE_SPANS (k - 1) HARD_EDGE_SHARE = 6` mean outer spacings.
pub const HARD_EDGE_SHARE: f64 = 1.0 / 3.0;

/// Most distinct values a discrete feature may have.
pub const MAX_DISCRETE_VALUES: usize = 64;

/// Seed of the dequantisation noise used to compute the standardisation of discrete features.
const FIT_SEED: u64 = 0x5EED_DE90_A417;

/// Errors of fitting or applying a [`Preprocessor`].
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PreprocessError {
    /// The data has no rows.
    #[error("cannot fit preprocessing on an empty data set")]
    Empty,
    /// The number of names differs from the number of columns.
    #[error("{names} feature names given for {cols} columns")]
    NameCount {
        /// Number of names.
        names: usize,
        /// Number of columns.
        cols: usize,
    },
    /// A discrete-column index is out of range.
    #[error("discrete column index {index} is out of range (data has {cols} columns)")]
    BadDiscreteIndex {
        /// The index given.
        index: usize,
        /// Number of columns.
        cols: usize,
    },
    /// A continuous column has a single value, so min-max scaling is undefined.
    #[error("column '{column}' is constant; drop it or declare it discrete")]
    ConstantColumn {
        /// Name of the column.
        column: String,
    },
    /// A value is NaN or infinite.
    #[error("column '{column}' has a non-finite value in row {row}")]
    NonFinite {
        /// Name of the column.
        column: String,
        /// Row index (0-based).
        row: usize,
    },
    /// A discrete column has more than [`MAX_DISCRETE_VALUES`] distinct values.
    #[error(
        "discrete column '{column}' has {count} distinct values (at most {MAX_DISCRETE_VALUES} allowed); treat it as continuous"
    )]
    TooManyDiscreteValues {
        /// Name of the column.
        column: String,
        /// Number of distinct values.
        count: usize,
    },
    /// The matrix has the wrong number of columns for this preprocessor.
    #[error("expected {expected} columns, got {got}")]
    ColumnCount {
        /// Number of features of the preprocessor.
        expected: usize,
        /// Number of columns given.
        got: usize,
    },
    /// A stored feature description is inconsistent (e.g. from a corrupted model file).
    #[error("feature '{column}' is invalid: {reason}")]
    Invalid {
        /// Name of the column.
        column: String,
        /// What is wrong.
        reason: String,
    },
}

/// Whether a feature is continuous or takes a few discrete values.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureKind {
    /// Real-valued feature.
    Continuous,
    /// Feature with the sorted distinct `values` (dequantised to `k + u`).
    Discrete {
        /// Sorted, distinct allowed values `v_0 < ... < v_{K-1}`.
        values: Vec<f64>,
    },
}

/// The fitted preprocessing of one feature.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeaturePrep {
    /// Column name.
    pub name: String,
    /// Continuous or discrete.
    pub kind: FeatureKind,
    /// Lower end of the min-max range (`0` for discrete features).
    pub lo: f64,
    /// Upper end of the min-max range (`K` for discrete features).
    pub hi: f64,
    /// Mean of the logit values over the fit data.
    pub mean: f64,
    /// Population standard deviation of the logit values over the fit data.
    pub std: f64,
    /// Continuous features: the fitted data's range `[min, max]`. Values outside it but inside
    /// `(lo, hi)` get the model's (extrapolated) density; [`Preprocessor::out_of_range`] counts
    /// them so that the caller can warn.
    #[serde(default)]
    pub data_range: Option<(f64, f64)>,
}

/// Logit of `u` clamped to `[U_CLAMP, 1 - U_CLAMP]`; returns `(logit, clamped u)`.
#[inline]
fn logit_clamped(u: f64) -> (f64, f64) {
    let u = u.clamp(U_CLAMP, 1.0 - U_CLAMP);
    (u.ln() - (-u).ln_1p(), u)
}

/// Numerically stable logistic sigmoid `1 / (1 + e^{-y})` (no overflow for any finite `y`).
#[inline]
pub fn sigmoid(y: f64) -> f64 {
    if y >= 0.0 {
        1.0 / (1.0 + (-y).exp())
    } else {
        let e = y.exp();
        e / (1.0 + e)
    }
}

/// Index of the allowed value nearest to `x` (`values` sorted; 0 when empty).
fn nearest_index(values: &[f64], x: f64) -> usize {
    let k = values.partition_point(|&v| v < x);
    if k == 0 || values.is_empty() {
        0
    } else if k >= values.len() {
        values.len() - 1
    } else if (x - values[k - 1]).abs() <= (values[k] - x).abs() {
        k - 1
    } else {
        k
    }
}

/// The support `(lo, hi)` of a continuous column from its ascending-sorted, finite values with
/// `max > min`; `margin` caps each side's margin as a fraction of `max - min` (see the module
/// documentation).
fn support(sorted: &[f64], margin: f64) -> (f64, f64) {
    let n = sorted.len();
    let (mn, mx) = (sorted[0], sorted[n - 1]);
    let w = mx - mn;
    let side = |distance_from_extreme: &dyn Fn(usize) -> f64| {
        let k = EDGE_ORDER.min(n) - 1;
        let outer = distance_from_extreme(k);
        let share = edge_shape(n, distance_from_extreme);
        (EDGE_SPANS * outer * share)
            .max(MIN_MARGIN * w)
            .min(margin * w)
    };
    let m_lo = side(&|i| sorted[i] - mn);
    let m_hi = side(&|i| mx - sorted[n - 1 - i]);
    let lo = if mn >= 0.0 {
        (mn - m_lo).max(0.0)
    } else {
        mn - m_lo
    };
    (lo, mx + m_hi)
}

/// The share of a side's margin that it keeps, from the shape of the density at that end:
/// `d(i)` is the distance of the `(i + 1)`-th outermost of `n` training values from the outermost.
///
/// With `k =` [`EDGE_ORDER`], the mean spacing of the `k` outermost values, `d(k - 1) / (k - 1)`,
/// is compared with that of the next `2 k`, `(d(3 k - 1) - d(k - 1)) / (2 k)`: their ratio `r` is
/// about 1 at a hard edge (a locally flat density cut off: a pT threshold, the end of the eta
/// acceptance), where the true end lies about one spacing beyond the outermost value, and well
/// above 1 along a tail (the density falls towards the end: about 4 for an exponential tail),
/// where held-out values reach many spacings further. The share is
/// `clamp((r - 1) / (TAIL_RATIO - 1), HARD_EDGE_SHARE, 1)`; 1 (the whole margin) when there are
/// fewer than `3 k` values or the inner values are tied.
fn edge_shape(n: usize, d: &dyn Fn(usize) -> f64) -> f64 {
    let k = EDGE_ORDER;
    if n < 3 * k {
        return 1.0;
    }
    let outer = d(k - 1) / (k - 1) as f64;
    let inner = (d(3 * k - 1) - d(k - 1)) / (2 * k) as f64;
    if inner <= 0.0 {
        return 1.0;
    }
    ((outer / inner - 1.0) / (TAIL_RATIO - 1.0)).clamp(HARD_EDGE_SHARE, 1.0)
}

/// Mean and population standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

impl FeaturePrep {
    /// Maps one physical value to `(z, log|dz/dx|)`; `noise` is the dequantisation offset in
    /// `[0, 1)` for discrete features (ignored for continuous ones).
    #[inline]
    fn forward_one(&self, x: f64, noise: f64) -> (f64, f64) {
        let raw = match &self.kind {
            FeatureKind::Continuous => {
                // Outside the support (density zero): the stand-in is the nearest end of the
                // training range, where the flow was fitted (see "Support" in the module docs).
                let x = match self.data_range {
                    Some((mn, mx)) if x.is_finite() && !(x >= self.lo && x <= self.hi) => {
                        x.clamp(mn, mx)
                    }
                    _ => x,
                };
                (x - self.lo) / (self.hi - self.lo)
            }
            FeatureKind::Discrete { values } => {
                let k = nearest_index(values, x);
                (k as f64 + noise) / values.len().max(1) as f64
            }
        };
        let (y, u) = logit_clamped(raw);
        let z = (y - self.mean) / self.std;
        let ladj = -(self.hi - self.lo).ln() - u.ln() - (-u).ln_1p() - self.std.ln();
        (z, ladj)
    }

    /// Maps one standardised value back to physical units (snapping discrete features).
    #[inline]
    fn inverse_one(&self, z: f64) -> f64 {
        let u = sigmoid(z * self.std + self.mean);
        match &self.kind {
            // Clamped: `lo + 1 (hi - lo)` can round above `hi`.
            FeatureKind::Continuous => (self.lo + u * (self.hi - self.lo)).clamp(self.lo, self.hi),
            FeatureKind::Discrete { values } => {
                let kf = (u * values.len() as f64).floor();
                let k = if kf.is_finite() && kf > 0.0 {
                    (kf as usize).min(values.len().saturating_sub(1))
                } else {
                    0
                };
                values.get(k).copied().unwrap_or(f64::NAN)
            }
        }
    }

    /// True when `x` lies outside the model's support: not finite, outside `[lo, hi]`
    /// (continuous; the ends themselves are evaluated at `u = U_CLAMP` or `1 - U_CLAMP`) or not
    /// one of the allowed values (discrete).
    pub fn outside_support(&self, x: f64) -> bool {
        if !x.is_finite() {
            return true;
        }
        match &self.kind {
            FeatureKind::Continuous => !(x >= self.lo && x <= self.hi),
            FeatureKind::Discrete { values } => values.get(nearest_index(values, x)) != Some(&x),
        }
    }

    /// True when `x` is a continuous value at an end of the support: within
    /// `1e-6 (hi - lo) + 2^-22 max(|lo|, |hi|)` of `lo` or `hi` (the second term absorbs the
    /// rounding of `lo`/`hi` to `f32`). The inverse only produces such values when the flow's
    /// output saturates the sigmoid (`|y| > 13.8`); a real event lands there with probability
    /// of the order of `1e-6`. Discrete features are never pinned.
    pub fn is_pinned(&self, x: f64) -> bool {
        if !matches!(self.kind, FeatureKind::Continuous) || !x.is_finite() {
            return false;
        }
        let tol = 1e-6 * (self.hi - self.lo) + self.lo.abs().max(self.hi.abs()) * 2f64.powi(-22);
        (x - self.lo).abs() <= tol || (x - self.hi).abs() <= tol
    }

    /// True when `x` is outside the training range (continuous, when known), is not an allowed
    /// value (discrete), or is not finite.
    fn is_out_of_range(&self, x: f64) -> bool {
        if !x.is_finite() {
            return true;
        }
        match &self.kind {
            FeatureKind::Continuous => match self.data_range {
                Some((mn, mx)) => !(x >= mn && x <= mx),
                None => !(x > self.lo && x < self.hi),
            },
            FeatureKind::Discrete { values } => values.get(nearest_index(values, x)) != Some(&x),
        }
    }
}

/// Events pinned at an end of the support, as counted by [`Preprocessor::pinned`]: a value is
/// pinned when it lies within `1e-6 (hi - lo)` of `lo` or `hi` (plus `f32` rounding), which the
/// inverse only produces when the flow's output saturates the logistic function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedEvents {
    /// Number of events examined.
    pub events: usize,
    /// Events with every continuous feature pinned (0 when there is no continuous feature).
    pub all_features: usize,
    /// Events with at least one continuous feature pinned.
    pub any_feature: usize,
    /// Pinned values per feature (0 for discrete features).
    pub per_feature: Vec<usize>,
}

/// The fitted preprocessing chain of all features (saved with the model).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Preprocessor {
    /// One entry per column, in column order.
    pub features: Vec<FeaturePrep>,
}

impl Preprocessor {
    /// Fits the chain on `data` (rows = events) only. `names[j]` names column `j`; the columns
    /// listed in `discrete` are dequantised; `margin` is the largest margin added to each side
    /// of a continuous column's range, as a fraction of `max - min` (the margins themselves and
    /// the non-negative rule are in the module documentation).
    pub fn fit(
        data: &Matrix<f64>,
        names: &[String],
        discrete: &[usize],
        margin: f64,
    ) -> Result<Self, PreprocessError> {
        Self::fit_with(data, names, discrete, margin, false)
    }

    /// The rule of earlier versions, kept for comparisons (`examples/fidelity.rs support`):
    /// a fixed margin of `margin * (max - min)` on both sides of every continuous column, also
    /// below zero.
    pub fn fit_fixed_margin(
        data: &Matrix<f64>,
        names: &[String],
        discrete: &[usize],
        margin: f64,
    ) -> Result<Self, PreprocessError> {
        Self::fit_with(data, names, discrete, margin, true)
    }

    fn fit_with(
        data: &Matrix<f64>,
        names: &[String],
        discrete: &[usize],
        margin: f64,
        fixed: bool,
    ) -> Result<Self, PreprocessError> {
        let (n, d) = (data.rows(), data.cols());
        if names.len() != d {
            return Err(PreprocessError::NameCount {
                names: names.len(),
                cols: d,
            });
        }
        if let Some(&index) = discrete.iter().find(|&&c| c >= d) {
            return Err(PreprocessError::BadDiscreteIndex { index, cols: d });
        }
        if n == 0 {
            return Err(PreprocessError::Empty);
        }
        let margin = if margin.is_finite() {
            margin.max(0.0)
        } else {
            0.0
        };
        let mut rng = Rng::new(FIT_SEED);
        let mut features = Vec::with_capacity(d);
        for (j, name) in names.iter().enumerate() {
            let col: Vec<f64> = (0..n).map(|i| data.get(i, j)).collect();
            if let Some(row) = col.iter().position(|v| !v.is_finite()) {
                return Err(PreprocessError::NonFinite {
                    column: name.clone(),
                    row,
                });
            }
            let mut f = if discrete.contains(&j) {
                let mut values = col.clone();
                values.sort_by(f64::total_cmp);
                values.dedup_by(|a, b| a == b);
                if values.len() > MAX_DISCRETE_VALUES {
                    return Err(PreprocessError::TooManyDiscreteValues {
                        column: name.clone(),
                        count: values.len(),
                    });
                }
                let k = values.len() as f64;
                FeaturePrep {
                    name: name.clone(),
                    kind: FeatureKind::Discrete { values },
                    lo: 0.0,
                    hi: k,
                    mean: 0.0,
                    std: 1.0,
                    data_range: None,
                }
            } else {
                let mut sorted = col.clone();
                sorted.sort_by(f64::total_cmp);
                let (mn, mx) = (sorted[0], sorted[n - 1]);
                let w = mx - mn;
                if w <= 0.0 || !w.is_finite() {
                    return Err(PreprocessError::ConstantColumn {
                        column: name.clone(),
                    });
                }
                let (lo, hi) = if fixed {
                    (mn - margin * w, mx + margin * w)
                } else {
                    support(&sorted, margin)
                };
                FeaturePrep {
                    name: name.clone(),
                    kind: FeatureKind::Continuous,
                    lo,
                    hi,
                    mean: 0.0,
                    std: 1.0,
                    data_range: Some((mn, mx)),
                }
            };
            // Logit values (mean 0, std 1 give z = y).
            let ys: Vec<f64> = col
                .iter()
                .map(|&x| {
                    let noise = match f.kind {
                        FeatureKind::Discrete { .. } => rng.uniform(),
                        FeatureKind::Continuous => 0.0,
                    };
                    f.forward_one(x, noise).0
                })
                .collect();
            let (m, s) = mean_std(&ys);
            if s <= 0.0 || !s.is_finite() {
                if matches!(f.kind, FeatureKind::Continuous) {
                    return Err(PreprocessError::ConstantColumn {
                        column: name.clone(),
                    });
                }
                // A single event of a discrete feature: keep unit scale.
                f.mean = m;
            } else {
                f.mean = m;
                f.std = s;
            }
            features.push(f);
        }
        Ok(Self { features })
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.features.len()
    }

    /// Feature names in column order.
    pub fn names(&self) -> Vec<&str> {
        self.features.iter().map(|f| f.name.as_str()).collect()
    }

    /// Checks a (deserialised) preprocessor: finite `lo < hi`, finite `mean`, finite `std > 0`,
    /// discrete values sorted, distinct, finite, between 1 and [`MAX_DISCRETE_VALUES`], `hi = K`.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        for f in &self.features {
            let bad = |reason: &str| {
                Err(PreprocessError::Invalid {
                    column: f.name.clone(),
                    reason: reason.to_string(),
                })
            };
            if !(f.lo.is_finite() && f.hi.is_finite() && f.lo < f.hi) {
                return bad("needs finite lo < hi");
            }
            if !(f.mean.is_finite() && f.std.is_finite() && f.std > 0.0) {
                return bad("needs finite mean and std > 0");
            }
            if let Some((mn, mx)) = f.data_range
                && !(mn.is_finite() && mx.is_finite() && f.lo <= mn && mn <= mx && mx <= f.hi)
            {
                return bad("data_range must be finite with lo <= min <= max <= hi");
            }
            if let FeatureKind::Discrete { values } = &f.kind {
                if values.is_empty() || values.len() > MAX_DISCRETE_VALUES {
                    return bad("needs 1 to 64 discrete values");
                }
                if !values.iter().all(|v| v.is_finite()) || values.windows(2).any(|w| w[0] >= w[1])
                {
                    return bad("discrete values must be finite, sorted and distinct");
                }
                if f.lo != 0.0 || f.hi != values.len() as f64 {
                    return bad("discrete range must be 0..K");
                }
            }
        }
        Ok(())
    }

    fn check_cols(&self, m: &Matrix<f64>) -> Result<(), PreprocessError> {
        if m.cols() != self.features.len() {
            return Err(PreprocessError::ColumnCount {
                expected: self.features.len(),
                got: m.cols(),
            });
        }
        Ok(())
    }

    /// Physical units -> standardised logit space, with `log|det dz/dx|` per row (see the module
    /// documentation). With `rng = Some`, discrete features are dequantised with `u ~ U(0, 1)`
    /// (training); with `None`, `u = 1/2`. Finite values outside the support are replaced by
    /// the nearest end of the training range (or clamped to `u in [U_CLAMP, 1 - U_CLAMP]` when
    /// it is not known; flag them with [`Preprocessor::outside_support`]), so everything finite
    /// stays finite; non-finite inputs give non-finite outputs.
    pub fn forward(
        &self,
        x: &Matrix<f64>,
        mut rng: Option<&mut Rng>,
    ) -> Result<(Matrix<f64>, Vec<f64>), PreprocessError> {
        self.check_cols(x)?;
        let (n, d) = (x.rows(), x.cols());
        let mut z = Matrix::zeros(n, d);
        let mut ladj = vec![0.0; n];
        for (i, li) in ladj.iter_mut().enumerate() {
            let xr = x.row(i);
            let zr = z.row_mut(i);
            for (j, f) in self.features.iter().enumerate() {
                let noise = match (&f.kind, rng.as_deref_mut()) {
                    (FeatureKind::Discrete { .. }, Some(r)) => r.uniform(),
                    _ => 0.5,
                };
                let (zv, l) = f.forward_one(xr[j], noise);
                zr[j] = zv;
                *li += l;
            }
        }
        Ok((z, ladj))
    }

    /// Standardised logit space -> physical units: `x = lo + sigmoid(z std + mean) (hi - lo)`
    /// (stable sigmoid, finite for any finite `z`), discrete features snapped to their allowed
    /// values.
    pub fn inverse(&self, z: &Matrix<f64>) -> Result<Matrix<f64>, PreprocessError> {
        self.check_cols(z)?;
        let (n, d) = (z.rows(), z.cols());
        let mut x = Matrix::zeros(n, d);
        for i in 0..n {
            let zr = z.row(i);
            let xr = x.row_mut(i);
            for (j, f) in self.features.iter().enumerate() {
                xr[j] = f.inverse_one(zr[j]);
            }
        }
        Ok(x)
    }

    /// Per row of `x` (physical units): true when any feature is outside the model's support
    /// (see [`FeaturePrep::outside_support`]); such an event has density zero under the model.
    /// Columns beyond the preprocessor's width are ignored.
    pub fn outside_support(&self, x: &Matrix<f64>) -> Vec<bool> {
        (0..x.rows())
            .map(|i| {
                self.features
                    .iter()
                    .zip(x.row(i))
                    .any(|(f, &v)| f.outside_support(v))
            })
            .collect()
    }

    /// Counts events of `x` (physical units, typically generated) pinned at an end of the
    /// support (see [`FeaturePrep::is_pinned`]).
    pub fn pinned(&self, x: &Matrix<f64>) -> PinnedEvents {
        let cont: Vec<usize> = (0..self.features.len().min(x.cols()))
            .filter(|&j| matches!(self.features[j].kind, FeatureKind::Continuous))
            .collect();
        let mut out = PinnedEvents {
            events: x.rows(),
            per_feature: vec![0; self.features.len()],
            ..PinnedEvents::default()
        };
        for i in 0..x.rows() {
            let r = x.row(i);
            let mut k = 0;
            for &j in &cont {
                if self.features[j].is_pinned(r[j]) {
                    out.per_feature[j] += 1;
                    k += 1;
                }
            }
            out.any_feature += usize::from(k > 0);
            out.all_features += usize::from(k > 0 && k == cont.len());
        }
        out
    }

    /// For each column with problems, `(column, count)` of values outside the training range
    /// (continuous; they get the model's extrapolated density, or none outside `(lo, hi)`),
    /// that are not allowed values (discrete), or that are not finite. Columns beyond the
    /// preprocessor's width are ignored.
    pub fn out_of_range(&self, x: &Matrix<f64>) -> Vec<(usize, usize)> {
        let d = x.cols().min(self.features.len());
        (0..d)
            .filter_map(|j| {
                let f = &self.features[j];
                let c = (0..x.rows())
                    .filter(|&i| f.is_out_of_range(x.get(i, j)))
                    .count();
                (c > 0).then_some((j, c))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::testing::log_abs_det;

    fn names(d: usize) -> Vec<String> {
        (0..d).map(|j| format!("f{j}")).collect()
    }

    /// Continuous columns with very different scales, plus (optionally) a discrete column.
    fn data(n: usize, seed: u64) -> Matrix<f64> {
        let mut rng = Rng::new(seed);
        Matrix::from_fn(n, 4, |_, j| match j {
            0 => 50.0 + 400.0 * rng.uniform().powi(3), // skewed, GeV-like
            1 => 2.5 * rng.normal(),                   // eta-like
            2 => 1e-3 * rng.normal(),                  // tiny scale
            _ => [0.0, 1.0, 2.0, 4.0][rng.below(4)],   // jet multiplicity-like
        })
    }

    #[test]
    fn continuous_round_trip_is_exact() {
        let x = data(500, 1);
        let p = Preprocessor::fit(&x, &names(4), &[], 0.05).unwrap();
        let (z, l) = p.forward(&x, None).unwrap();
        assert!(z.all_finite() && l.iter().all(|v| v.is_finite()));
        // Standardised on the fit data.
        for j in 0..4 {
            let col: Vec<f64> = (0..500).map(|i| z.get(i, j)).collect();
            let (m, s) = mean_std(&col);
            assert!(
                m.abs() < 1e-10 && (s - 1.0).abs() < 1e-10,
                "col {j}: {m} {s}"
            );
        }
        let xr = p.inverse(&z).unwrap();
        for i in 0..500 {
            for j in 0..4 {
                let (a, b) = (x.get(i, j), xr.get(i, j));
                // Column 3 is non-negative with minimum 0: its zeros sit at lo = 0, the end of
                // the support, evaluated at u = U_CLAMP.
                let f = &p.features[j];
                let end = if a == f.lo {
                    U_CLAMP * (f.hi - f.lo)
                } else {
                    0.0
                };
                assert!(
                    (a - b).abs() <= 1e-9 * a.abs().max(1e-300) + 1e-15 + end,
                    "({i},{j}): {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn ladj_matches_finite_difference_logdet() {
        let fit_data = data(40, 2);
        let p = Preprocessor::fit(&fit_data, &names(4), &[], 0.05).unwrap();
        // Interior points (averages of two data points): away from the ends of the fitted
        // range, where values are clamped.
        let range = |j: usize| {
            (0..40)
                .map(|i| fit_data.get(i, j))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                })
        };
        let x = Matrix::from_fn(40, 4, |i, j| {
            let (mn, mx) = range(j);
            let t = (0.5 * (fit_data.get(i, j) + fit_data.get((i + 7) % 40, j)) - mn) / (mx - mn);
            mn + (0.05 + 0.9 * t) * (mx - mn)
        });
        let (_, l) = p.forward(&x, None).unwrap();
        for (i, li) in l.iter().enumerate().take(10) {
            let mut jac = vec![0.0; 16];
            for j in 0..4 {
                let h = 1e-6 * (p.features[j].hi - p.features[j].lo);
                let mut xp = x.slice_rows(i, i + 1);
                let mut xm = xp.clone();
                xp.set(0, j, x.get(i, j) + h);
                xm.set(0, j, x.get(i, j) - h);
                let (zp, _) = p.forward(&xp, None).unwrap();
                let (zm, _) = p.forward(&xm, None).unwrap();
                for k in 0..4 {
                    jac[k * 4 + j] = (zp.get(0, k) - zm.get(0, k)) / (2.0 * h);
                }
            }
            let want = log_abs_det(&jac, 4);
            assert!(
                (li - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "row {i}: {li} vs {want}"
            );
        }
    }

    #[test]
    fn constant_and_non_finite_columns_are_named() {
        let mut x = data(20, 3);
        for i in 0..20 {
            x.set(i, 1, 7.0);
        }
        let nm: Vec<String> = ["pt", "eta", "phi", "njet"].map(String::from).to_vec();
        let err = Preprocessor::fit(&x, &nm, &[3], 0.05).unwrap_err();
        assert_eq!(
            err,
            PreprocessError::ConstantColumn {
                column: "eta".into()
            }
        );
        assert!(err.to_string().contains("eta"));
        // A constant column is fine when discrete.
        assert!(Preprocessor::fit(&x, &nm, &[1, 3], 0.05).is_ok());
        let mut y = data(20, 3);
        y.set(5, 2, f64::NAN);
        assert_eq!(
            Preprocessor::fit(&y, &nm, &[3], 0.05).unwrap_err(),
            PreprocessError::NonFinite {
                column: "phi".into(),
                row: 5
            }
        );
        assert!(matches!(
            Preprocessor::fit(&y, &nm[..3], &[], 0.05),
            Err(PreprocessError::NameCount { names: 3, cols: 4 })
        ));
        assert!(matches!(
            Preprocessor::fit(&y, &nm, &[9], 0.05),
            Err(PreprocessError::BadDiscreteIndex { index: 9, .. })
        ));
        let many = Matrix::from_fn(100, 1, |i, _| i as f64);
        assert!(matches!(
            Preprocessor::fit(&many, &names(1), &[0], 0.05),
            Err(PreprocessError::TooManyDiscreteValues { count: 100, .. })
        ));
        let p = Preprocessor::fit(&data(20, 3), &names(4), &[3], 0.05).unwrap();
        assert!(matches!(
            p.forward(&Matrix::zeros(2, 3), None),
            Err(PreprocessError::ColumnCount {
                expected: 4,
                got: 3
            })
        ));
    }

    #[test]
    fn outliers_stay_finite_and_are_counted() {
        let x = data(200, 4);
        let p = Preprocessor::fit(&x, &names(4), &[3], 0.05).unwrap();
        assert!(p.out_of_range(&x).is_empty());
        let far = Matrix::from_vec(
            3,
            4,
            vec![
                1e12, -1e9, 5.0, 3.0, // all out of range; 3 is not an allowed njet
                -1e300, 1e300, -5.0, 100.0, //
                100.0, 0.0, 0.0, 1.0, // in range
            ],
        )
        .unwrap();
        let (z, l) = p.forward(&far, None).unwrap();
        assert!(z.all_finite() && l.iter().all(|v| v.is_finite()));
        assert_eq!(p.out_of_range(&far), vec![(0, 2), (1, 2), (2, 2), (3, 2)]);
        // The inverse of huge latent values is finite and inside [lo, hi].
        let big = Matrix::from_fn(4, 4, |i, _| [1e4, -1e4, 700.0, -745.0][i]);
        let xb = p.inverse(&big).unwrap();
        assert!(xb.all_finite());
        for j in 0..3 {
            for i in 0..4 {
                let v = xb.get(i, j);
                assert!(v >= p.features[j].lo && v <= p.features[j].hi);
            }
        }
    }

    #[test]
    fn discrete_features_dequantise_into_their_bins_and_snap_back() {
        let x = data(300, 5);
        let p = Preprocessor::fit(&x, &names(4), &[3], 0.05).unwrap();
        let f = &p.features[3];
        let FeatureKind::Discrete { values } = &f.kind else {
            panic!("column 3 should be discrete");
        };
        assert_eq!(values, &vec![0.0, 1.0, 2.0, 4.0]);
        assert_eq!((f.lo, f.hi), (0.0, 4.0));
        let mut rng = Rng::new(6);
        let (z, _) = p.forward(&x, Some(&mut rng)).unwrap();
        let mut fracs = Vec::new();
        for i in 0..300 {
            // Undo standardisation and logit: y = K * sigmoid(z std + mean) lies in bin k.
            let y = 4.0 * sigmoid(z.get(i, 3) * f.std + f.mean);
            let k = values.iter().position(|&v| v == x.get(i, 3)).unwrap();
            assert!(
                y >= k as f64 - 1e-9 && y <= k as f64 + 1.0 + 1e-9,
                "row {i}: y = {y}, k = {k}"
            );
            fracs.push(y - k as f64);
        }
        // The dequantisation noise is spread over the bin, not a constant.
        let (m, s) = mean_std(&fracs);
        assert!((m - 0.5).abs() < 0.05 && (s - (1.0f64 / 12.0).sqrt()).abs() < 0.03);
        // Inverse snaps to allowed values only, and recovers the data exactly.
        let xr = p.inverse(&z).unwrap();
        for i in 0..300 {
            assert_eq!(xr.get(i, 3), x.get(i, 3));
        }
        let zr = Matrix::from_fn(50, 4, |i, _| (i as f64 - 25.0) * 0.37);
        let xs = p.inverse(&zr).unwrap();
        for i in 0..50 {
            assert!(values.contains(&xs.get(i, 3)));
        }
        // Deterministic mode uses u = 1/2: the bin centre.
        let (z0, _) = p.forward(&x, None).unwrap();
        let y0 = 4.0 * sigmoid(z0.get(0, 3) * f.std + f.mean);
        let k0 = values.iter().position(|&v| v == x.get(0, 3)).unwrap();
        assert!((y0 - (k0 as f64 + 0.5)).abs() < 1e-9);
    }

    #[test]
    fn fit_uses_only_the_data_it_is_given_and_serialises() {
        let all = data(400, 7);
        let train = all.slice_rows(0, 200);
        let p = Preprocessor::fit(&train, &names(4), &[3], 0.05).unwrap();
        let q = Preprocessor::fit(&all, &names(4), &[3], 0.05).unwrap();
        assert_ne!(p, q);
        // Same data (a copy) gives the same fit.
        assert_eq!(
            p,
            Preprocessor::fit(&train.clone(), &names(4), &[3], 0.05).unwrap()
        );
        for j in 0..3 {
            let mut col: Vec<f64> = (0..200).map(|i| train.get(i, j)).collect();
            col.sort_by(f64::total_cmp);
            let (mn, mx) = (col[0], col[199]);
            let w = mx - mn;
            // The edge shape: mean spacing of the 10 outermost values against the next 20's.
            let share = |d9: f64, d29: f64| {
                let r = (d9 / 9.0) / ((d29 - d9) / 20.0);
                ((r - 1.0) / (TAIL_RATIO - 1.0)).clamp(HARD_EDGE_SHARE, 1.0)
            };
            let (d9_lo, d29_lo) = (col[9] - mn, col[29] - mn);
            let (d9_hi, d29_hi) = (mx - col[190], mx - col[170]);
            let m_lo = (EDGE_SPANS * d9_lo * share(d9_lo, d29_lo)).clamp(MIN_MARGIN * w, 0.05 * w);
            let m_hi = (EDGE_SPANS * d9_hi * share(d9_hi, d29_hi)).clamp(MIN_MARGIN * w, 0.05 * w);
            let lo = if mn >= 0.0 {
                (mn - m_lo).max(0.0)
            } else {
                mn - m_lo
            };
            assert_eq!(p.features[j].lo, lo);
            assert_eq!(p.features[j].hi, mx + m_hi);
            assert_eq!(p.features[j].data_range, Some((mn, mx)));
        }
        assert!(p.validate().is_ok());
        let s = serde_json::to_string(&p).unwrap();
        let back: Preprocessor = serde_json::from_str(&s).unwrap();
        // serde_json without its `float_roundtrip` feature may be off by one ulp when parsing.
        assert_eq!(back.names(), p.names());
        for (a, b) in back.features.iter().zip(&p.features) {
            assert_eq!(a.kind, b.kind);
            for (u, v) in [(a.lo, b.lo), (a.hi, b.hi), (a.mean, b.mean), (a.std, b.std)] {
                assert!((u - v).abs() <= 1e-15 * v.abs());
            }
        }
        let mut broken = p.clone();
        broken.features[1].std = 0.0;
        assert!(matches!(
            broken.validate(),
            Err(PreprocessError::Invalid { .. })
        ));
        // A corrupted discrete feature is reported, and applying it anyway does not panic.
        let mut empty = p.clone();
        empty.features[3].kind = FeatureKind::Discrete { values: vec![] };
        assert!(empty.validate().is_err());
        let (z, _) = empty.forward(&train, None).unwrap();
        assert!(empty.inverse(&z).is_ok());
        assert_eq!(empty.out_of_range(&train), vec![(3, 200)]);
    }

    #[test]
    fn margins_follow_the_edges_and_positive_columns_stay_positive() {
        let mut rng = Rng::new(11);
        let n = 20_000;
        // col 0: hard edge at 25 with the density at its maximum there (a pT threshold) and an
        // exponential tail; col 1: a flat distribution on [-2.5, 2.5] (eta); col 2: positive,
        // starting near 0 (a mass), so that the 5% cap would cross zero.
        let x = Matrix::from_fn(n, 3, |_, j| match j {
            0 => 25.0 - 20.0 * (1.0 - rng.uniform()).ln(),
            1 => 5.0 * rng.uniform() - 2.5,
            _ => 0.01 + 3.0 * rng.uniform().powi(2),
        });
        let p = Preprocessor::fit(&x, &names(3), &[], 0.05).unwrap();
        let w = |j: usize| {
            let (a, b) = p.features[j].data_range.unwrap();
            (a, b, b - a)
        };
        // Hard edges: the margin is a few gaps between order statistics, far below 5%.
        let (mn0, mx0, w0) = w(0);
        assert!(mn0 - p.features[0].lo < 2e-3 * w0, "{:?}", p.features[0]);
        assert!(mn0 - p.features[0].lo >= MIN_MARGIN * w0 * (1.0 - 1e-12));
        // The exponential tail gets the full 5% cap (its 10 outermost values span far more).
        assert!((p.features[0].hi - mx0 - 0.05 * w0).abs() < 1e-9 * w0);
        let (mn1, mx1, w1) = w(1);
        assert!(mn1 - p.features[1].lo < 2e-3 * w1 && p.features[1].hi - mx1 < 2e-3 * w1);
        assert!(p.features[1].lo < mn1);
        // Non-negative columns keep lo >= 0 even when the margin would cross zero.
        assert!(p.features[2].lo >= 0.0 && p.features[0].lo >= 0.0);
        // The inverse of any latent value stays in the support: never negative.
        let big = Matrix::from_fn(8, 3, |i, _| {
            [1e4, -1e4, 700.0, -745.0, 40.0, -40.0, 0.0, -8.0][i]
        });
        let xb = p.inverse(&big).unwrap();
        for i in 0..8 {
            assert!(xb.get(i, 2) >= 0.0 && xb.get(i, 0) >= 0.0);
            for j in 0..3 {
                let v = xb.get(i, j);
                assert!(v >= p.features[j].lo && v <= p.features[j].hi);
            }
        }
        // Under the identity flow (z ~ N(0, 1)) the hard edges lie far out in z: the Gaussian
        // mass beyond them is negligible, whereas the old 5% margins put them near z = -2.
        let edge_z = |q: &Preprocessor, j: usize| {
            let f = &q.features[j];
            let u = (f.data_range.unwrap().0 - f.lo) / (f.hi - f.lo);
            ((u / (1.0 - u)).ln() - f.mean) / f.std
        };
        let old = Preprocessor::fit(&x, &names(3), &[], 0.0).unwrap();
        let mut legacy = old.clone();
        for (f, g) in legacy.features.iter_mut().zip(&p.features) {
            let (a, b) = g.data_range.unwrap();
            f.lo = a - 0.05 * (b - a);
            f.hi = b + 0.05 * (b - a);
        }
        let fixed = Preprocessor::fit_fixed_margin(&x, &names(3), &[], 0.05).unwrap();
        assert_eq!(
            (fixed.features[1].lo, fixed.features[1].hi),
            (legacy.features[1].lo, legacy.features[1].hi)
        );
        assert!(edge_z(&p, 0) < -3.5, "new edge at z = {}", edge_z(&p, 0));
        assert!(
            edge_z(&fixed, 0) > -3.0,
            "old edge at z = {}",
            edge_z(&fixed, 0)
        );
        assert!(
            edge_z(&legacy, 0) > -3.0,
            "old edge at z = {}",
            edge_z(&legacy, 0)
        );
    }

    #[test]
    fn hard_edges_keep_a_third_of_the_margin_and_tails_all_of_it() {
        let mut rng = Rng::new(23);
        let (n, cols) = (5_000, 40);
        // Columns 0..20: flat on [-2.5, 2.5] (two hard edges, like eta); 20..40: Laplace (two
        // exponential tails, like a mass or pT spectrum far from its threshold).
        let x = Matrix::from_fn(n, cols, |_, j| {
            let u = rng.uniform();
            if j < 20 {
                5.0 * u - 2.5
            } else if u < 0.5 {
                (2.0 * u).max(1e-300).ln()
            } else {
                -(2.0 * (1.0 - u)).max(1e-300).ln()
            }
        });
        let p = Preprocessor::fit(&x, &names(cols), &[], 0.25).unwrap();
        let mut hard_share = [0usize; 2];
        let mut uncovered_edges = 0;
        for j in 0..cols {
            let mut col: Vec<f64> = (0..n).map(|i| x.get(i, j)).collect();
            col.sort_by(f64::total_cmp);
            let shares = [
                edge_shape(n, &|i| col[i] - col[0]),
                edge_shape(n, &|i| col[n - 1] - col[n - 1 - i]),
            ];
            let flat = j < 20;
            for share in shares {
                assert!((HARD_EDGE_SHARE..=1.0).contains(&share));
                if share == HARD_EDGE_SHARE {
                    hard_share[usize::from(!flat)] += 1;
                }
            }
            let f = &p.features[j];
            if flat {
                // The true ends stay inside the (narrower) support...
                uncovered_edges += usize::from(f.lo > -2.5) + usize::from(f.hi < 2.5);
                // ...and the margin is a few spacings, not the 18 of a tail.
                let spacing = (col[9] - col[0]) / 9.0;
                if shares[0] == HARD_EDGE_SHARE {
                    assert!(col[0] - f.lo <= 6.0 * spacing * (1.0 + 1e-12));
                }
            } else {
                assert!(shares.iter().all(|&s| s > 0.5), "column {j}: {shares:?}");
            }
        }
        // Under a hard edge the spacing ratio is F(18, 40)-distributed: r <= 4/3 (share 1/3)
        // about 80 % of the time; an exponential tail has r near 4.
        assert!(
            hard_share[0] >= 28,
            "hard edges at the floor share: {}",
            hard_share[0]
        );
        assert_eq!(hard_share[1], 0);
        assert!(
            uncovered_edges <= 1,
            "{uncovered_edges} true ends outside the support"
        );
    }

    #[test]
    fn values_beyond_the_training_range_get_exact_density_or_are_outside() {
        let x = data(300, 9);
        let p = Preprocessor::fit(&x, &names(4), &[3], 0.05).unwrap();
        let f = &p.features[1];
        let (mn, _) = f.data_range.unwrap();
        // Inside the margin: not clamped any more, the log-det matches a finite difference.
        let v = 0.5 * (f.lo + mn);
        let row = |v: f64| Matrix::from_vec(1, 4, vec![100.0, v, 0.0, 1.0]).unwrap();
        let h = 1e-7 * (f.hi - f.lo);
        let (zp, _) = p.forward(&row(v + h), None).unwrap();
        let (zm, _) = p.forward(&row(v - h), None).unwrap();
        let (z0, l0) = p.forward(&row(v), None).unwrap();
        let (zmn, _) = p.forward(&row(mn), None).unwrap();
        assert!(z0.get(0, 1) < zmn.get(0, 1));
        let fd = ((zp.get(0, 1) - zm.get(0, 1)) / (2.0 * h)).ln();
        let (_, lmn) = p.forward(&row(mn), None).unwrap();
        let others = lmn[0] - {
            let u = (mn - f.lo) / (f.hi - f.lo);
            -(f.hi - f.lo).ln() - u.ln() - (-u).ln_1p() - f.std.ln()
        };
        assert!((l0[0] - others - fd).abs() < 1e-5 * (1.0 + fd.abs()));
        assert_eq!(p.outside_support(&row(v)), vec![false]);
        assert_eq!(p.out_of_range(&row(v)), vec![(1, 1)]);
        // Beyond lo, non-finite, or a value a discrete feature never takes: outside.
        let far = Matrix::from_vec(
            4,
            4,
            vec![
                100.0,
                f.lo - 1.0,
                0.0,
                1.0, //
                100.0,
                0.0,
                f64::NAN,
                1.0, //
                100.0,
                0.0,
                0.0,
                3.0, //
                100.0,
                0.0,
                0.0,
                4.0,
            ],
        )
        .unwrap();
        assert_eq!(p.outside_support(&far), vec![true, true, true, false]);
    }

    #[test]
    fn values_outside_the_support_stand_in_at_the_training_range() {
        // Issue 16: an outside-support value used to sit at u = U_CLAMP (z far beyond every
        // training value), where Glow's affine couplings blew the validation NLL up to 1e9.
        let x = data(300, 11);
        let p = Preprocessor::fit(&x, &names(4), &[3], 0.05).unwrap();
        let f = &p.features[1];
        let (mn, mx) = f.data_range.unwrap();
        let row = |v: f64| Matrix::from_vec(1, 4, vec![100.0, v, 0.0, 1.0]).unwrap();
        let z1 = |v: f64| p.forward(&row(v), None).unwrap().0.get(0, 1);
        for (out, edge) in [(f.lo - 1.0, mn), (f.hi + 1e6, mx), (f64::MAX, mx)] {
            assert_eq!(p.outside_support(&row(out)), vec![true]);
            assert_eq!(z1(out), z1(edge), "{out}");
        }
        // In the support (margins included) nothing changes: exact densities.
        let inside = 0.5 * (f.lo + mn);
        let u = (inside - f.lo) / (f.hi - f.lo);
        assert_eq!(z1(inside), ((u.ln() - (-u).ln_1p()) - f.mean) / f.std);
        // Without the training range (models saved before it was kept): the old clamp.
        let mut old = p.clone();
        old.features[1].data_range = None;
        let zc = old.forward(&row(f.lo - 1.0), None).unwrap().0.get(0, 1);
        let yc = U_CLAMP.ln() - (-U_CLAMP).ln_1p();
        assert_eq!(zc, (yc - f.mean) / f.std);
        assert!(zc < z1(mn));
    }

    #[test]
    fn pinned_events_are_counted_per_feature_and_per_event() {
        let x = data(300, 10);
        let p = Preprocessor::fit(&x, &names(4), &[3], 0.05).unwrap();
        let f = |j: usize| (p.features[j].lo, p.features[j].hi);
        // Saturated latent values give every continuous feature at an edge.
        let z = Matrix::from_fn(3, 4, |i, _| [1e3, -1e3, 0.1][i]);
        let xs = p.inverse(&z).unwrap();
        // Round to f32 and back, as generated events are stored.
        let xs = xs.cast::<f32>().cast::<f64>();
        let c = p.pinned(&xs);
        assert_eq!(c.events, 3);
        assert_eq!(c.all_features, 2);
        assert_eq!(c.any_feature, 2);
        assert_eq!(c.per_feature, vec![2, 2, 2, 0]);
        // One feature at an edge: counted in `any` only.
        let (lo0, _) = f(0);
        let mixed = Matrix::from_vec(1, 4, vec![lo0, 0.0, 0.0, 1.0]).unwrap();
        let c = p.pinned(&mixed);
        assert_eq!((c.any_feature, c.all_features), (1, 0));
        // The training data itself is never pinned.
        let c = p.pinned(&x);
        assert_eq!((c.any_feature, c.all_features), (0, 0));
    }
}
