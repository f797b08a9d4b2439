//! Classifier two-sample test (C2ST): train a classifier to tell sample A (label 0) from
//! sample B (label 1) and measure its out-of-fold ROC AUC. AUC = 0.5 means the classifier
//! cannot distinguish the samples; AUC = 1 means perfect separation.

use super::EvalError;
use super::gbdt::{Gbdt, GbdtConfig};
use super::weighted::auc_weighted;
use crate::engine::{Matrix, Rng};

/// Settings of the classifier two-sample test.
#[derive(Clone, Debug, PartialEq)]
pub struct C2stConfig {
    /// Number of cross-validation folds (at least 2).
    pub folds: usize,
    /// Cap on the number of events taken from each sample after balancing.
    pub max_events: usize,
    /// Classifier hyper-parameters.
    pub gbdt: GbdtConfig,
}

impl Default for C2stConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            max_events: 20_000,
            gbdt: GbdtConfig::default(),
        }
    }
}

/// Outcome of a C2ST.
#[derive(Clone, Debug, PartialEq)]
pub struct C2stResult {
    /// Mean AUC over the folds.
    pub auc: f64,
    /// Standard error of the mean AUC: `std(fold AUCs) / sqrt(folds)`.
    pub auc_err: f64,
    /// AUC of each fold.
    pub fold_aucs: Vec<f64>,
    /// Out-of-fold classifier scores `P(B | x)` of the events used from sample A.
    pub scores_a: Vec<f64>,
    /// Out-of-fold classifier scores `P(B | x)` of the events used from sample B.
    pub scores_b: Vec<f64>,
}

/// ROC AUC by the Mann-Whitney statistic: `AUC = (R_1 - n_1 (n_1 + 1)/2) / (n_0 n_1)`, where
/// `R_1` is the rank sum of the class-1 scores in the pooled sample (ties get average ranks).
/// Equals `P(s_1 > s_0) + 0.5 P(s_1 = s_0)`, which is how it is computed: the pair count of
/// [`auc_weighted`] with unit weights (exact, the partial sums being half-integers).
/// Returns 0.5 when a class is empty.
pub fn auc_mann_whitney(scores_0: &[f64], scores_1: &[f64]) -> f64 {
    // one implementation: the weighted sweep with unit weights is this statistic exactly
    auc_weighted(scores_0, None, scores_1, None)
}

fn to_f64_rows(m: &Matrix<f32>, idx: &[usize]) -> Vec<f64> {
    idx.iter()
        .flat_map(|&i| m.row(i).iter().map(|&v| v as f64))
        .collect()
}

/// C2ST with the default settings ([`C2stConfig::default`], but `folds` as given):
/// see [`c2st_auc_with`].
pub fn c2st_auc(
    a: &Matrix<f32>,
    b: &Matrix<f32>,
    folds: usize,
    seed: u64,
) -> Result<C2stResult, EvalError> {
    let cfg = C2stConfig {
        folds,
        ..C2stConfig::default()
    };
    c2st_auc_with(a, b, &cfg, seed)
}

/// Classifier two-sample test between `a` (label 0) and `b` (label 1).
///
/// Both samples are balanced to `n = min(rows(a), rows(b), max_events)` events by random
/// subsampling; the events are split into `k = folds` stratified folds; for each fold a
/// [`Gbdt`] is trained on the other `k - 1` folds and the fold's AUC computed by
/// [`auc_mann_whitney`]. Returns the mean AUC, `std(AUC_fold) / sqrt(k)` (`k - 1`
/// denominator) and the out-of-fold scores.
pub fn c2st_auc_with(
    a: &Matrix<f32>,
    b: &Matrix<f32>,
    cfg: &C2stConfig,
    seed: u64,
) -> Result<C2stResult, EvalError> {
    c2st_auc_weighted(a, None, b, None, cfg, seed)
}

/// [`c2st_auc_with`] with optional per-event weights of `a` (`wa`, one per row) and `b` (`wb`).
///
/// The subsampling and folds are those of the unweighted test. In training, each sample's
/// weights are scaled to sum to its number of training events (balanced classes) and enter the
/// boosted trees' gradients and hessians ([`Gbdt::fit_weighted`]); each fold's AUC is the
/// weighted AUC [`super::weighted::auc_weighted`]. With `None` or all-one weights the result is
/// identical to the unweighted test. Errors when the weights do not match the rows or the
/// subsampled weights of a sample do not have a positive total.
pub fn c2st_auc_weighted(
    a: &Matrix<f32>,
    wa: Option<&[f64]>,
    b: &Matrix<f32>,
    wb: Option<&[f64]>,
    cfg: &C2stConfig,
    seed: u64,
) -> Result<C2stResult, EvalError> {
    let d = a.cols();
    for (w, m, name) in [(wa, a, "first"), (wb, b, "second")] {
        if w.is_some_and(|w| w.len() != m.rows()) {
            return Err(EvalError::Shape(format!(
                "C2ST {name} sample has {} rows but {} weights",
                m.rows(),
                w.map_or(0, <[f64]>::len)
            )));
        }
    }
    if b.cols() != d {
        return Err(EvalError::Shape(format!(
            "C2ST samples have {} and {} columns",
            d,
            b.cols()
        )));
    }
    let k = cfg.folds.max(2);
    let n = a.rows().min(b.rows()).min(cfg.max_events.max(1));
    if n < 2 * k {
        return Err(EvalError::TooFewEvents(format!(
            "C2ST needs at least {} events per sample, got {}",
            2 * k,
            n
        )));
    }
    let mut rng = Rng::new(seed);
    let mut ia = rng.permutation(a.rows());
    ia.truncate(n);
    let mut ib = rng.permutation(b.rows());
    ib.truncate(n);
    let xa = to_f64_rows(a, &ia);
    let xb = to_f64_rows(b, &ib);
    // subsampled weights, scaled to sum to n (1 stays exactly 1 for unit weights)
    let scaled = |w: Option<&[f64]>, idx: &[usize]| -> Result<Option<Vec<f64>>, EvalError> {
        let Some(w) = w else { return Ok(None) };
        let sub: Vec<f64> = idx.iter().map(|&i| w[i]).collect();
        let total: f64 = sub.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err(EvalError::TooFewEvents(format!(
                "the C2ST's {} subsampled weights sum to {total}; a positive total is needed",
                sub.len()
            )));
        }
        let scale = n as f64 / total;
        Ok(Some(sub.into_iter().map(|v| v * scale).collect()))
    };
    let sa = scaled(wa, &ia)?;
    let sb = scaled(wb, &ib)?;
    let weighted = sa.is_some() || sb.is_some();
    let w_at = |s: &Option<Vec<f64>>, i: usize| s.as_ref().map_or(1.0, |s| s[i]);
    // fold of event i (within each sample, already randomly ordered) is i % k
    let mut scores_a = vec![0.0; n];
    let mut scores_b = vec![0.0; n];
    let mut fold_aucs = Vec::with_capacity(k);
    for fold in 0..k {
        let mut x = Vec::with_capacity(2 * n * d);
        let mut y = Vec::with_capacity(2 * n);
        let mut w = Vec::with_capacity(if weighted { 2 * n } else { 0 });
        for i in (0..n).filter(|i| i % k != fold) {
            x.extend_from_slice(&xa[i * d..(i + 1) * d]);
            y.push(0.0);
            x.extend_from_slice(&xb[i * d..(i + 1) * d]);
            y.push(1.0);
            if weighted {
                w.push(w_at(&sa, i));
                w.push(w_at(&sb, i));
            }
        }
        let model = Gbdt::fit_weighted(&x, d, &y, weighted.then_some(&w[..]), &cfg.gbdt)
            .ok_or_else(|| EvalError::TooFewEvents("C2ST training set is empty".into()))?;
        let test: Vec<usize> = (0..n).filter(|i| i % k == fold).collect();
        let ta: Vec<f64> = test
            .iter()
            .flat_map(|&i| xa[i * d..(i + 1) * d].iter().copied())
            .collect();
        let tb: Vec<f64> = test
            .iter()
            .flat_map(|&i| xb[i * d..(i + 1) * d].iter().copied())
            .collect();
        let pa = model.predict_proba(&ta);
        let pb = model.predict_proba(&tb);
        fold_aucs.push(if weighted {
            let ta_w: Vec<f64> = test.iter().map(|&i| w_at(&sa, i)).collect();
            let tb_w: Vec<f64> = test.iter().map(|&i| w_at(&sb, i)).collect();
            auc_weighted(&pa, Some(&ta_w), &pb, Some(&tb_w))
        } else {
            auc_mann_whitney(&pa, &pb)
        });
        for (t, &i) in test.iter().enumerate() {
            scores_a[i] = pa[t];
            scores_b[i] = pb[t];
        }
    }
    let mean = fold_aucs.iter().sum::<f64>() / k as f64;
    let var = fold_aucs
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / (k - 1) as f64;
    Ok(C2stResult {
        auc: mean,
        auc_err: var.sqrt() / (k as f64).sqrt(),
        fold_aucs,
        scores_a,
        scores_b,
    })
}

/// [`c2st_mc_vs_mc_with`] with the default settings ([`C2stConfig::default`]).
pub fn c2st_mc_vs_mc(reference: &Matrix<f32>, seed: u64) -> Result<Option<C2stResult>, EvalError> {
    c2st_mc_vs_mc_with(reference, &C2stConfig::default(), seed)
}

/// Reference-vs-reference C2ST: splits `reference` randomly into two halves and runs
/// [`c2st_auc_with`] between them, giving the AUC a perfect generator would reach with the
/// available statistics. `Ok(None)` when the reference has fewer than 2,000 events.
pub fn c2st_mc_vs_mc_with(
    reference: &Matrix<f32>,
    cfg: &C2stConfig,
    seed: u64,
) -> Result<Option<C2stResult>, EvalError> {
    c2st_mc_vs_mc_weighted(reference, None, cfg, seed)
}

/// [`c2st_mc_vs_mc_with`] for a weighted reference (`weights`: one per row, `None`: all 1):
/// both halves keep their events' weights ([`c2st_auc_weighted`]).
pub fn c2st_mc_vs_mc_weighted(
    reference: &Matrix<f32>,
    weights: Option<&[f64]>,
    cfg: &C2stConfig,
    seed: u64,
) -> Result<Option<C2stResult>, EvalError> {
    let n = reference.rows();
    if n < 2000 {
        return Ok(None);
    }
    let d = reference.cols();
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let perm = rng.permutation(n);
    let half = n / 2;
    let take = |idx: &[usize]| -> Matrix<f32> {
        let data: Vec<f32> = idx
            .iter()
            .flat_map(|&i| reference.row(i).iter().copied())
            .collect();
        Matrix::from_fn(idx.len(), d, |i, j| data[i * d + j])
    };
    let a = take(&perm[..half]);
    let b = take(&perm[half..2 * half]);
    let wsub = |idx: &[usize]| -> Option<Vec<f64>> {
        weights.map(|w| {
            idx.iter()
                .map(|&i| w.get(i).copied().unwrap_or(0.0))
                .collect()
        })
    };
    let (wa, wb) = (wsub(&perm[..half]), wsub(&perm[half..2 * half]));
    c2st_auc_weighted(
        &a,
        wa.as_deref(),
        &b,
        wb.as_deref(),
        cfg,
        seed.wrapping_add(1),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(rng: &mut Rng, n: usize, d: usize, shift: f64) -> Matrix<f32> {
        Matrix::from_fn(n, d, |_, _| (rng.normal() + shift) as f32)
    }

    fn fast_cfg() -> C2stConfig {
        C2stConfig {
            folds: 5,
            max_events: 20_000,
            gbdt: GbdtConfig {
                n_trees: 20,
                ..GbdtConfig::default()
            },
        }
    }

    #[test]
    fn unit_weights_give_the_unweighted_c2st() {
        let mut rng = Rng::new(5);
        let a = gaussian(&mut rng, 300, 2, 0.0);
        let b = gaussian(&mut rng, 250, 2, 0.3);
        let cfg = fast_cfg();
        let plain = c2st_auc_with(&a, &b, &cfg, 9).unwrap();
        let ones = vec![1.0; a.rows()];
        let weighted = c2st_auc_weighted(&a, Some(&ones), &b, None, &cfg, 9).unwrap();
        assert_eq!(plain, weighted);
        // negative weights: finite AUC
        let w: Vec<f64> = (0..a.rows())
            .map(|i| if i % 4 == 0 { -0.5 } else { 1.5 })
            .collect();
        let r = c2st_auc_weighted(&a, Some(&w), &b, None, &cfg, 9).unwrap();
        assert!(r.auc.is_finite() && r.auc_err.is_finite(), "{r:?}");
    }

    /// Importance-weighted draws from q = N(0, 1.4) with weights p/q against draws from
    /// p = N(0.3, 1): the weighted C2ST cannot tell them apart, the unweighted one can.
    #[test]
    fn importance_weighted_reference_gives_half() {
        let mut rng = Rng::new(21);
        let n = 3000;
        let (mu, sq) = (0.3, 1.4);
        let a = Matrix::from_fn(n, 1, |_, _| (sq * rng.normal()) as f32);
        let w: Vec<f64> = (0..n)
            .map(|i| {
                let x = a.get(i, 0) as f64;
                let lp = -0.5 * (x - mu) * (x - mu);
                let lq = -0.5 * (x / sq) * (x / sq) - sq.ln();
                (lp - lq).exp()
            })
            .collect();
        let b = gaussian(&mut rng, n, 1, mu);
        let cfg = fast_cfg();
        let rw = c2st_auc_weighted(&a, Some(&w), &b, None, &cfg, 4).unwrap();
        let ru = c2st_auc_with(&a, &b, &cfg, 4).unwrap();
        assert!((rw.auc - 0.5).abs() < 0.03, "weighted {rw:?}");
        assert!(ru.auc > 0.56, "unweighted {}", ru.auc);
    }

    #[test]
    fn auc_known_values() {
        assert_eq!(auc_mann_whitney(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auc_mann_whitney(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(auc_mann_whitney(&[0.5, 0.5], &[0.5, 0.5]), 0.5);
        // one pair of 4 inverted: 0.75
        assert_eq!(auc_mann_whitney(&[0.1, 0.35], &[0.3, 0.4]), 0.75);
    }

    #[test]
    fn same_distribution_gives_half() {
        let mut rng = Rng::new(21);
        let a = gaussian(&mut rng, 4000, 4, 0.0);
        let b = gaussian(&mut rng, 5000, 4, 0.0);
        let r = c2st_auc_with(&a, &b, &fast_cfg(), 1).unwrap();
        assert!((r.auc - 0.5).abs() < 0.03, "auc {}", r.auc);
        assert_eq!(r.scores_a.len(), 4000);
        assert_eq!(r.scores_b.len(), 4000);
        assert_eq!(r.fold_aucs.len(), 5);
        assert!(r.auc_err > 0.0 && r.auc_err < 0.03);
    }

    #[test]
    fn separated_distributions_give_high_auc() {
        let mut rng = Rng::new(22);
        let a = gaussian(&mut rng, 2000, 4, 0.0);
        let b = gaussian(&mut rng, 2000, 4, 1.5);
        let r = c2st_auc_with(&a, &b, &fast_cfg(), 2).unwrap();
        assert!(r.auc > 0.95, "auc {}", r.auc);
        let mc = c2st_mc_vs_mc_with(&a, &fast_cfg(), 3).unwrap().unwrap();
        assert!((mc.auc - 0.5).abs() < 0.06, "mc auc {}", mc.auc);
        assert!(
            c2st_mc_vs_mc_with(&a.slice_rows(0, 1999), &fast_cfg(), 3)
                .unwrap()
                .is_none()
        );
        assert!(c2st_auc_with(&a, &gaussian(&mut rng, 10, 3, 0.0), &fast_cfg(), 1).is_err());
    }
}
