//! The seminar's preprocessing chain as an exact invertible map with a log-determinant, in `f64`.
//!
//! Per continuous feature, from physical units `x` to the flow's input `z`:
//!
//! 1. min-max: `u = (x - lo) / (hi - lo)`, with `lo = min - m (max - min)`,
//!    `hi = max + m (max - min)` (margin `m`, 0.05 at the call site, so that values slightly
//!    outside the training range stay inside `(0, 1)`);
//! 2. logit: `y = log(u / (1 - u))`;
//! 3. standardisation: `z = (y - mean) / std` (mean and population std of `y` over the fit data).
//!
//! `log|dz/dx| = -log(hi - lo) - log(u (1 - u)) - log(std)`, summed over features per row.
//! Inputs outside `(lo, hi)` are clamped so that `u` stays in `[1e-7, 1 - 1e-7]`: the output and
//! the log-determinant (evaluated at the clamped `u`) stay finite; [`Preprocessor::out_of_range`]
//! counts such values so that the caller can warn.
//!
//! Discrete features with `K` sorted distinct values `v_0 < ... < v_{K-1}` (`K <= 64`) are
//! uniformly dequantised: value `v_k` becomes `y = k + u` with `u ~ U(0, 1)` (training) or
//! `u = 1/2` (deterministic), then min-max with `lo = 0`, `hi = K` (no margin), logit and
//! standardisation as above. Their log-determinant is taken with respect to the dequantised
//! variable `y` (the map from `x` itself is piecewise constant), so that the flow's density of
//! `y` integrates to the probability of `v_k` over bin `k`. The inverse snaps back to
//! `v_k` with `k = floor(K * sigmoid(...))` clamped to `0..K-1`. A physical value that is not one
//! of the `v_k` is mapped to the nearest one.
//!
//! The whole struct derives `Serialize`/`Deserialize` and is saved with the model.

use crate::engine::{Matrix, Rng};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Lower clamp of the min-max-scaled value `u`; the upper clamp is `1 - U_CLAMP`.
pub const U_CLAMP: f64 = 1e-7;

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
    /// Continuous features: the fitted data's range `[min, max]`. Values outside it are outside
    /// the support the flow was trained on; they are evaluated at the nearest end of the range
    /// (a guarded recovery, counted by [`Preprocessor::out_of_range`]) instead of deep in the
    /// logit's tail, where a flow's extrapolation is meaningless.
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
                let x = match self.data_range {
                    Some((mn, mx)) if x.is_finite() => x.clamp(mn, mx),
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
            FeatureKind::Continuous => self.lo + u * (self.hi - self.lo),
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

    /// True when `x` would be clamped (continuous: outside `(lo, hi)`), is not an allowed value
    /// (discrete), or is not finite.
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

/// The fitted preprocessing chain of all features (saved with the model).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Preprocessor {
    /// One entry per column, in column order.
    pub features: Vec<FeaturePrep>,
}

impl Preprocessor {
    /// Fits the chain on `data` (rows = events) only. `names[j]` names column `j`; the columns
    /// listed in `discrete` are dequantised; `margin` widens the continuous min-max range by
    /// `margin * (max - min)` on both sides.
    pub fn fit(
        data: &Matrix<f64>,
        names: &[String],
        discrete: &[usize],
        margin: f64,
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
                let (mn, mx) = col
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let w = mx - mn;
                if w <= 0.0 || !w.is_finite() {
                    return Err(PreprocessError::ConstantColumn {
                        column: name.clone(),
                    });
                }
                FeaturePrep {
                    name: name.clone(),
                    kind: FeatureKind::Continuous,
                    lo: mn - margin * w,
                    hi: mx + margin * w,
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
    /// (training); with `None`, `u = 1/2`. Non-finite inputs give non-finite outputs (they are
    /// counted by [`Preprocessor::out_of_range`]); everything finite stays finite.
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

    /// For each column with problems, `(column, count)` of values that [`Preprocessor::forward`]
    /// clamps (continuous: outside `(lo, hi)`), that are not allowed values (discrete), or that
    /// are not finite. Columns beyond the preprocessor's width are ignored.
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
                assert!(
                    (a - b).abs() <= 1e-9 * a.abs().max(1e-300) + 1e-15,
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
            let col: Vec<f64> = (0..200).map(|i| train.get(i, j)).collect();
            let mn = col.iter().copied().fold(f64::INFINITY, f64::min);
            let mx = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(p.features[j].lo, mn - 0.05 * (mx - mn));
            assert_eq!(p.features[j].hi, mx + 0.05 * (mx - mn));
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
}
