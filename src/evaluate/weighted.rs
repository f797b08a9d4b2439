//! Statistics for a *weighted* reference sample (MC events with per-event weights, possibly
//! negative at NLO) against an *unweighted* generated sample.
//!
//! Every function here reduces to its unweighted counterpart in [`super::metrics`] **bit for
//! bit** when all weights are 1 ([`auc_weighted`] *is* [`super::c2st::auc_mann_whitney`]): the arithmetic is
//! ordered so that a weight of 1 multiplies exactly and sums of ones are exact integers.
//! Negative weights never produce NaN: variances are clamped at 0 and denominators checked.

use super::metrics::{Chi2Test, KsTest, chi2_sf, kolmogorov_q};

/// Finite `values` with their weights, sorted ascending by value (stable, so equal values
/// keep their order). `weights.len()` must equal `values.len()`; extra entries are ignored.
pub fn sorted_weighted(values: &[f64], weights: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut pairs: Vec<(f64, f64)> = values
        .iter()
        .zip(weights)
        .filter(|(v, _)| v.is_finite())
        .map(|(&v, &w)| (v, w))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs.into_iter().unzip()
}

/// Effective sample size `(sum w)^2 / sum w^2` (Kish); 0 when `sum w^2 = 0`.
pub fn effective_size(weights: &[f64]) -> f64 {
    let (w, w2) = weights
        .iter()
        .fold((0.0, 0.0), |(a, b), &x| (a + x, b + x * x));
    if w2 > 0.0 { w * w / w2 } else { 0.0 }
}

/// Weighted histogram of finite `values` in the bins given by ascending `edges`, with the same
/// binning rule as [`super::metrics::histogram`] (under/overflow merged into the edge bins).
/// Returns `(sum w, sum w^2)` per bin; the error of bin `i` is `sqrt(sum w^2)_i`.
pub fn histogram_weighted(values: &[f64], weights: &[f64], edges: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let nb = edges.len().saturating_sub(1).max(1);
    let mut sw = vec![0.0; nb];
    let mut sw2 = vec![0.0; nb];
    for (&v, &w) in values.iter().zip(weights).filter(|(v, _)| v.is_finite()) {
        let k = if edges.len() < 2 {
            0
        } else {
            edges[1..nb].partition_point(|&e| e <= v)
        };
        sw[k] += w;
        sw2[k] += w * w;
    }
    (sw, sw2)
}

/// Two-sample chi2 of a weighted histogram (`W_i = sum w`, `S_i = sum w^2` per bin, total `W`)
/// against an unweighted one (`n_i`, total `N`).
///
/// Each weighted bin is approximated by a *scaled Poisson* variable (Bohm & Zech, "Statistics
/// of weighted Poisson events and its applications", NIM A 748 (2014) 1): `W_i / k_i` is
/// Poisson-like with the scale `k_i = S_i / W_i`, so `Var(W_i) = k_i E[W_i]`. Under the null
/// hypothesis both histograms share bin probabilities `pi_i`; with the pooled estimate
/// `pi_i = (W_i/k_i + n_i) / (W/k_i + N)` the statistic
/// `(W_i/W - n_i/N)^2 / (pi_i (k_i/W + 1/N))` simplifies to
///
/// `chi2 = sum_i (N W_i - W n_i)^2 / (W_i + k_i n_i) / (W N)`,
///
/// summed over bins with a positive denominator, `ndf = (number of such bins) - 1`, p-value
/// from [`chi2_sf`]. With unit weights `k_i = 1` and this is exactly the unweighted-unweighted
/// test [`super::metrics::chi2_two_sample`] (ROOT's `TH1::Chi2Test` "UU", Gagunashvili,
/// NIM A 614 (2010) 287), evaluated in the same order, so the result is bit-identical.
/// A bin with `W_i <= 0` (possible with negative weights) uses the global scale `K = S / W`
/// and the non-negative variance term `S_i / K` in place of `W_i`.
pub fn chi2_weighted_unweighted(ref_w: &[f64], ref_w2: &[f64], gen_counts: &[f64]) -> Chi2Test {
    let nr: f64 = ref_w.iter().sum();
    let s2: f64 = ref_w2.iter().sum();
    let ng: f64 = gen_counts.iter().sum();
    if nr <= 0.0 || ng <= 0.0 || s2 <= 0.0 {
        return Chi2Test {
            chi2: 0.0,
            ndf: 0,
            p_value: 1.0,
        };
    }
    let k_global = s2 / nr;
    let mut chi2 = 0.0;
    let mut nonempty = 0usize;
    for ((&r, &r2), &g) in ref_w.iter().zip(ref_w2).zip(gen_counts) {
        let denom = if r > 0.0 {
            r + (r2 / r) * g
        } else {
            r2 / k_global + k_global * g
        };
        if denom > 0.0 && denom.is_finite() {
            nonempty += 1;
            let d = ng * r - nr * g;
            chi2 += d * d / denom;
        }
    }
    chi2 /= nr * ng;
    let ndf = nonempty.saturating_sub(1);
    Chi2Test {
        chi2,
        ndf,
        p_value: chi2_sf(chi2, ndf),
    }
}

/// Weighted two-sample Kolmogorov-Smirnov test: `a` weighted (ascending-sorted values with
/// their weights, see [`sorted_weighted`]), `b` unweighted ascending-sorted.
/// `D = sup_x |F_w(x) - G(x)|` with the weighted empirical CDF `F_w(x) = sum_{a_i <= x} w_i / W`;
/// the p-value is that of [`super::metrics::ks_two_sample`] with `n` replaced by the effective
/// size `n_eff = W^2 / sum w^2`. With unit weights the result is bit-identical to the
/// unweighted test. Returns `D = 0, p = 1` for an empty sample or `W <= 0`.
pub fn ks_weighted(a_sorted: &[f64], a_weights: &[f64], b_sorted: &[f64]) -> KsTest {
    let (n, m) = (a_sorted.len().min(a_weights.len()), b_sorted.len());
    let wt: f64 = a_weights[..n].iter().sum();
    let w2: f64 = a_weights[..n].iter().map(|w| w * w).sum();
    if n == 0 || m == 0 || wt <= 0.0 || w2 <= 0.0 {
        return KsTest {
            d: 0.0,
            p_value: 1.0,
        };
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut cum = 0.0;
    let mut d: f64 = 0.0;
    while i < n && j < m {
        let x = a_sorted[i].min(b_sorted[j]);
        while i < n && a_sorted[i] <= x {
            cum += a_weights[i];
            i += 1;
        }
        while j < m && b_sorted[j] <= x {
            j += 1;
        }
        d = d.max((cum / wt - j as f64 / m as f64).abs());
    }
    let n_eff = wt * wt / w2;
    let ne = (n_eff * m as f64) / (n_eff + m as f64);
    let sq = ne.sqrt();
    KsTest {
        d,
        p_value: kolmogorov_q((sq + 0.12 + 0.11 / sq) * d),
    }
}

/// Weighted Wasserstein-1 distance `W1 = int |F_w(x) - G(x)| dx` between the weighted
/// empirical distribution of `a` (ascending-sorted with weights, CDF as in [`ks_weighted`]) and
/// the unweighted `b` (ascending-sorted), summed exactly over the intervals between consecutive
/// points of the merged sample. Bit-identical to [`super::metrics::wasserstein1_sorted`] with
/// unit weights; 0 for an empty sample or `W <= 0`.
pub fn wasserstein1_weighted(a_sorted: &[f64], a_weights: &[f64], b_sorted: &[f64]) -> f64 {
    let (n, m) = (a_sorted.len().min(a_weights.len()), b_sorted.len());
    let wt: f64 = a_weights[..n].iter().sum();
    if n == 0 || m == 0 || wt <= 0.0 {
        return 0.0;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut cum = 0.0;
    let mut w = 0.0;
    let mut x_prev = a_sorted[0].min(b_sorted[0]);
    while i < n || j < m {
        let x = match (a_sorted.get(i).filter(|_| i < n), b_sorted.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let diff = (cum / wt - j as f64 / m as f64).abs();
        w += diff * (x - x_prev);
        while i < n && a_sorted[i] <= x {
            cum += a_weights[i];
            i += 1;
        }
        while j < m && b_sorted[j] <= x {
            j += 1;
        }
        x_prev = x;
    }
    w
}

/// Weighted mean and standard deviation with the reliability-weight denominator
/// `W - sum w^2 / W` (equal to `n - 1` for unit weights, where the result is bit-identical to
/// [`super::metrics::mean_std`]). The variance is clamped at 0 (negative weights); the
/// deviation is 0 when the denominator is not positive.
pub fn mean_std_weighted(v: &[f64], w: &[f64]) -> (f64, f64) {
    let wt: f64 = w.iter().sum();
    if v.is_empty() || wt <= 0.0 {
        return (f64::NAN, 0.0);
    }
    let mean = v.iter().zip(w).map(|(x, w)| w * x).sum::<f64>() / wt;
    let w2: f64 = w.iter().map(|w| w * w).sum();
    let denom = wt - w2 / wt;
    if denom <= 0.0 {
        return (mean, 0.0);
    }
    let var = v
        .iter()
        .zip(w)
        .map(|(x, w)| w * ((x - mean) * (x - mean)))
        .sum::<f64>()
        / denom;
    (mean, var.max(0.0).sqrt())
}

/// Weighted mean vector and covariance matrix (row-major `d x d`) of a row-major `n x d`
/// sample with one weight per row: `mu = sum w x / W`,
/// `S_ab = sum w (x_a - mu_a)(x_b - mu_b) / (W - sum w^2 / W)`, the normalisation of
/// [`mean_std_weighted`]. With unit weights the result is bit-identical to
/// [`super::metrics::mean_cov`] (same summation order, `W = n` and the denominator `n - 1`
/// exactly). The covariance is all zeros when the denominator is not positive (negative
/// weights, a single event); the mean is NaN when `W <= 0`. Extra rows or weights are ignored.
pub fn mean_cov_weighted(data: &[f64], d: usize, w: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = data.len().checked_div(d).unwrap_or(0).min(w.len());
    let rows = || data.chunks_exact(d.max(1)).zip(w).take(n);
    let wt: f64 = w[..n].iter().sum();
    let w2: f64 = w[..n].iter().map(|w| w * w).sum();
    let mut mu = vec![0.0; d];
    for (row, &wi) in rows() {
        for (m, x) in mu.iter_mut().zip(row) {
            *m += wi * x;
        }
    }
    for m in &mut mu {
        *m = if wt > 0.0 { *m / wt } else { f64::NAN };
    }
    let mut cov = vec![0.0; d * d];
    let den = if wt > 0.0 { wt - w2 / wt } else { 0.0 };
    if den <= 0.0 || !den.is_finite() {
        return (mu, cov);
    }
    for (row, &wi) in rows() {
        for a in 0..d {
            let da = row[a] - mu[a];
            for b in a..d {
                cov[a * d + b] += wi * (da * (row[b] - mu[b]));
            }
        }
    }
    for a in 0..d {
        for b in a..d {
            let v = cov[a * d + b] / den;
            cov[a * d + b] = v;
            cov[b * d + a] = v;
        }
    }
    (mu, cov)
}

/// Weighted Pearson correlation matrix: [`super::metrics::correlation_from_cov`] of
/// [`mean_cov_weighted`]; bit-identical to [`super::metrics::correlation_matrix`] with unit
/// weights.
pub fn correlation_matrix_weighted(data: &[f64], d: usize, w: &[f64]) -> Vec<f64> {
    let (_, cov) = mean_cov_weighted(data, d, w);
    super::metrics::correlation_from_cov(&cov, d)
}

/// [`super::metrics::frechet_distance_standardized`] for a weighted reference: the
/// standardisation and the reference's Gaussian fit use [`mean_cov_weighted`]; the generated
/// sample is unweighted. Bit-identical to the unweighted distance with unit weights.
pub fn frechet_distance_standardized_weighted(
    reference: &[f64],
    weights: &[f64],
    generated: &[f64],
    d: usize,
) -> f64 {
    super::metrics::frechet_standardized_with(reference, generated, d, |x| {
        mean_cov_weighted(x, d, weights)
    })
}

/// Weighted test NLL from per-event log-densities and their weights:
/// `NLL = -sum w log p / sum w` over the finite log-densities, with the standard error
/// `std_w(log p) / sqrt(n_eff)` ([`mean_std_weighted`], [`effective_size`] of the weights
/// kept). Returns `(nll, err, number_skipped)` as [`super::metrics::mean_nll`], to which it
/// is bit-identical with unit weights; `(NaN, NaN, skipped)` when nothing finite remains or
/// the kept weights do not have a positive total.
pub fn mean_nll_weighted(log_probs: &[f64], weights: &[f64]) -> (f64, f64, usize) {
    let (lp, w): (Vec<f64>, Vec<f64>) = log_probs
        .iter()
        .zip(weights)
        .filter(|(x, _)| x.is_finite())
        .map(|(&x, &w)| (x, w))
        .unzip();
    let skipped = log_probs.len() - lp.len();
    let wt: f64 = w.iter().sum();
    if lp.is_empty() || wt.is_nan() || wt <= 0.0 {
        return (f64::NAN, f64::NAN, skipped);
    }
    let (m, s) = mean_std_weighted(&lp, &w);
    let n_eff = effective_size(&w);
    let err = if n_eff > 0.0 {
        s / n_eff.sqrt()
    } else {
        f64::NAN
    };
    (-m, err, skipped)
}

/// `W1 / std` for a weighted reference, as [`super::metrics::w1_over_std`] (the raw W1 when the
/// weighted deviation is 0).
pub fn w1_over_std_weighted(ref_sorted: &[f64], ref_weights: &[f64], gen_sorted: &[f64]) -> f64 {
    let w = wasserstein1_weighted(ref_sorted, ref_weights, gen_sorted);
    let (_, s) = mean_std_weighted(ref_sorted, ref_weights);
    if s > 0.0 { w / s } else { w }
}

/// Weighted ROC AUC: `sum_{i in 1, j in 0} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_1 W_0)`,
/// computed in one sweep over the pooled sorted scores. `None` weights mean 1 for that class;
/// with unit weights this is the Mann-Whitney AUC ([`super::c2st::auc_mann_whitney`] calls it),
/// all partial sums being exact half-integers. Returns 0.5 when a class is empty or `W_0 W_1` is not positive.
pub fn auc_weighted(
    scores_0: &[f64],
    weights_0: Option<&[f64]>,
    scores_1: &[f64],
    weights_1: Option<&[f64]>,
) -> f64 {
    let w_of = |w: Option<&[f64]>, i: usize| w.and_then(|w| w.get(i).copied()).unwrap_or(1.0);
    let mut all: Vec<(f64, f64, bool)> = scores_0
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, w_of(weights_0, i), false))
        .chain(
            scores_1
                .iter()
                .enumerate()
                .map(|(i, &s)| (s, w_of(weights_1, i), true)),
        )
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (w0, w1) = all.iter().fold(
        (0.0, 0.0),
        |(a, b), e| {
            if e.2 { (a, b + e.1) } else { (a + e.1, b) }
        },
    );
    let norm = w0 * w1;
    if scores_0.is_empty() || scores_1.is_empty() || norm <= 0.0 || !norm.is_finite() {
        return 0.5;
    }
    let mut below0 = 0.0;
    let mut num = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let (g0, g1) =
            all[i..=j].iter().fold(
                (0.0, 0.0),
                |(a, b), e| {
                    if e.2 { (a, b + e.1) } else { (a + e.1, b) }
                },
            );
        num += g1 * (below0 + 0.5 * g0);
        below0 += g0;
        i = j + 1;
    }
    num / norm
}

#[cfg(test)]
mod tests {
    use super::super::c2st::auc_mann_whitney;
    use super::super::metrics;
    use super::*;
    use crate::engine::Rng;

    fn gauss(rng: &mut Rng, n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        (0..n).map(|_| mu + sigma * rng.normal()).collect()
    }

    /// Values rounded to a grid so that ties occur.
    fn rounded(v: &[f64]) -> Vec<f64> {
        v.iter().map(|x| (x * 4.0).round() / 4.0).collect()
    }

    #[test]
    fn unit_weights_are_bit_identical_to_unweighted() {
        let mut rng = Rng::new(7);
        for (na, nb, shift) in [(500, 800, 0.0), (1000, 300, 0.3), (64, 64, 1.0)] {
            let a = rounded(&gauss(&mut rng, na, 0.0, 1.0));
            let b = rounded(&gauss(&mut rng, nb, shift, 1.2));
            let ones = vec![1.0; na];
            let (as_, aw) = sorted_weighted(&a, &ones);
            let bs = metrics::sorted_finite(&b);
            assert_eq!(as_, metrics::sorted_finite(&a));

            let edges = metrics::reference_edges(&as_, 20);
            let (hw, hw2) = histogram_weighted(&as_, &aw, &edges);
            let hr = metrics::histogram(&as_, &edges);
            let hg = metrics::histogram(&bs, &edges);
            assert_eq!(hw, hr);
            assert_eq!(hw2, hr);
            assert_eq!(
                chi2_weighted_unweighted(&hw, &hw2, &hg),
                metrics::chi2_two_sample(&hr, &hg)
            );
            assert_eq!(
                ks_weighted(&as_, &aw, &bs),
                metrics::ks_two_sample(&as_, &bs)
            );
            assert_eq!(
                wasserstein1_weighted(&as_, &aw, &bs).to_bits(),
                metrics::wasserstein1_sorted(&as_, &bs).to_bits()
            );
            assert_eq!(
                w1_over_std_weighted(&as_, &aw, &bs).to_bits(),
                metrics::w1_over_std(&as_, &bs).to_bits()
            );
            assert_eq!(effective_size(&aw), na as f64);
            // AUC: the sweep against the brute-force pair count (exact half-integer sums)
            let sb: Vec<f64> = b.iter().map(|x| (x * 0.5).round()).collect();
            let sa: Vec<f64> = a.iter().map(|x| x.round()).collect();
            let pairs: f64 = sb
                .iter()
                .map(|&s1| {
                    sa.iter()
                        .map(|&s0| match s1.partial_cmp(&s0) {
                            Some(std::cmp::Ordering::Greater) => 1.0,
                            Some(std::cmp::Ordering::Equal) => 0.5,
                            _ => 0.0,
                        })
                        .sum::<f64>()
                })
                .sum();
            let brute = pairs / (na as f64 * nb as f64);
            assert_eq!(auc_weighted(&sa, Some(&ones), &sb, None), brute);
            assert_eq!(auc_mann_whitney(&sa, &sb), brute);
        }
    }

    #[test]
    fn unit_weights_give_the_unweighted_moments_bit_for_bit() {
        let mut rng = Rng::new(5);
        let d = 3;
        for n in [2usize, 7, 500] {
            let x: Vec<f64> = (0..n * d)
                .map(|k| rng.normal() * (1.0 + (k % d) as f64) + 0.3 * (k % 2) as f64)
                .collect();
            let g: Vec<f64> = (0..n * d).map(|_| 0.5 + 1.2 * rng.normal()).collect();
            let ones = vec![1.0; n];
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (m, c) = metrics::mean_cov(&x, d);
            let (mw, cw) = mean_cov_weighted(&x, d, &ones);
            assert_eq!(bits(&m), bits(&mw), "n {n}");
            assert_eq!(bits(&c), bits(&cw), "n {n}");
            assert_eq!(
                bits(&metrics::correlation_matrix(&x, d)),
                bits(&correlation_matrix_weighted(&x, d, &ones))
            );
            assert_eq!(
                metrics::frechet_distance_standardized(&x, &g, d).to_bits(),
                frechet_distance_standardized_weighted(&x, &ones, &g, d).to_bits()
            );
            let mut lp: Vec<f64> = x.iter().take(n).map(|v| -0.5 * v * v - 0.9).collect();
            lp[0] = f64::NEG_INFINITY;
            let (a, b) = (metrics::mean_nll(&lp), mean_nll_weighted(&lp, &ones));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits(), a.2),
                (b.0.to_bits(), b.1.to_bits(), b.2)
            );
        }
    }

    /// Importance weights p/q on draws from q = N(0, 1.5^2 I) against draws from the correlated
    /// p = N((0.2, -0.1), [[1, 0.6], [0.6, 1]]): the weighted correlation matrix, Frechet
    /// distance and test NLL (under the exact log p) move to the p-vs-p values; the same draws
    /// unweighted are far off.
    #[test]
    fn importance_weights_move_moments_and_nll_to_target() {
        let mut rng = Rng::new(21);
        let (n, d, rho, s_q) = (20_000, 2, 0.6f64, 1.5f64);
        let mu = [0.2, -0.1];
        let two_pi = 2.0 * std::f64::consts::PI;
        let log_p = |x: &[f64]| {
            let (u1, u2) = (x[0] - mu[0], x[1] - mu[1]);
            let q = (u1 * u1 - 2.0 * rho * u1 * u2 + u2 * u2) / (1.0 - rho * rho);
            -0.5 * q - two_pi.ln() - 0.5 * (1.0 - rho * rho).ln()
        };
        let log_q = |x: &[f64]| {
            -0.5 * (x[0] * x[0] + x[1] * x[1]) / (s_q * s_q) - two_pi.ln() - 2.0 * s_q.ln()
        };
        let draw_p = |rng: &mut Rng| -> Vec<f64> {
            (0..n)
                .flat_map(|_| {
                    let (z1, z2) = (rng.normal(), rng.normal());
                    [mu[0] + z1, mu[1] + rho * z1 + (1.0 - rho * rho).sqrt() * z2]
                })
                .collect()
        };
        let xp = draw_p(&mut rng);
        let xp2 = draw_p(&mut rng);
        let xq: Vec<f64> = (0..n * d).map(|_| s_q * rng.normal()).collect();
        let w: Vec<f64> = xq.chunks(d).map(|x| (log_p(x) - log_q(x)).exp()).collect();
        assert!(
            effective_size(&w) > 0.2 * n as f64,
            "{}",
            effective_size(&w)
        );

        let c_p = metrics::correlation_matrix(&xp, d);
        let c_w = correlation_matrix_weighted(&xq, d, &w);
        let c_u = metrics::correlation_matrix(&xq, d);
        assert!((c_p[1] - rho).abs() < 0.02, "{c_p:?}");
        let (dw, du) = (
            metrics::frobenius_diff(&c_w, &c_p),
            metrics::frobenius_diff(&c_u, &c_p),
        );
        assert!(dw < 0.05 && du > 0.7, "weighted {dw}, unweighted {du}");

        let f_pp = metrics::frechet_distance_standardized(&xp2, &xp, d);
        let f_w = frechet_distance_standardized_weighted(&xq, &w, &xp, d);
        let f_u = metrics::frechet_distance_standardized(&xq, &xp, d);
        assert!(
            f_pp < 2e-3 && f_w < 0.02 && f_u > 0.3,
            "p-p {f_pp}, weighted {f_w}, unweighted {f_u}"
        );

        let lp_q: Vec<f64> = xq.chunks(d).map(log_p).collect();
        let lp_p: Vec<f64> = xp.chunks(d).map(log_p).collect();
        let (nll_pp, e_pp, _) = metrics::mean_nll(&lp_p);
        let (nll_w, e_w, _) = mean_nll_weighted(&lp_q, &w);
        let (nll_u, e_u, _) = metrics::mean_nll(&lp_q);
        // the entropy of p: ln(2 pi e) + ln(1 - rho^2) / 2
        let h = (two_pi * std::f64::consts::E).ln() + 0.5 * (1.0 - rho * rho).ln();
        let sigma = (e_w * e_w + e_pp * e_pp).sqrt();
        assert!(
            (nll_w - nll_pp).abs() < 4.0 * sigma,
            "{nll_w} ± {e_w} vs {nll_pp} ± {e_pp}"
        );
        assert!(
            (nll_w - h).abs() < 4.0 * e_w,
            "{nll_w} ± {e_w} vs entropy {h}"
        );
        assert!(
            nll_u - nll_pp > 20.0 * e_u.max(e_pp),
            "unweighted {nll_u} vs {nll_pp}"
        );
    }

    #[test]
    fn weighted_auc_known_values() {
        // one pair each way: class 1 above with weight 3, below with weight 1
        let auc = auc_weighted(&[0.5], Some(&[2.0]), &[0.9, 0.1], Some(&[3.0, 1.0]));
        assert_eq!(auc, 0.75);
        // ties count half
        assert_eq!(auc_weighted(&[0.5], None, &[0.5], Some(&[5.0])), 0.5);
    }

    /// Importance-weighted draws from q = N(0, 1.5) with weights p/q, p = N(0.2, 1), against
    /// unweighted draws from p: the metrics agree with the p-vs-p values within errors, while
    /// the same draws unweighted are clearly incompatible.
    #[test]
    fn importance_weighted_sample_matches_target() {
        let mut rng = Rng::new(11);
        let (mu_p, s_q) = (0.2, 1.5);
        let n = 20_000;
        let xq = gauss(&mut rng, n, 0.0, s_q);
        let wq: Vec<f64> = xq
            .iter()
            .map(|x| {
                let lp = -0.5 * (x - mu_p) * (x - mu_p);
                let lq = -0.5 * (x / s_q) * (x / s_q) - s_q.ln();
                (lp - lq).exp()
            })
            .collect();
        let xp = gauss(&mut rng, n, mu_p, 1.0);
        let xp2 = gauss(&mut rng, n, mu_p, 1.0);
        let (qs, qw) = sorted_weighted(&xq, &wq);
        let ps = metrics::sorted_finite(&xp);
        let ps2 = metrics::sorted_finite(&xp2);
        let n_eff = effective_size(&qw);
        assert!(n_eff > 0.3 * n as f64 && n_eff < n as f64, "n_eff {n_eff}");

        let ks = ks_weighted(&qs, &qw, &ps);
        let ks_unw = metrics::ks_two_sample(&qs, &ps);
        assert!(ks.p_value > 1e-3, "weighted KS {ks:?}");
        assert!(ks_unw.p_value < 1e-6, "unweighted KS {ks_unw:?}");
        // D scales as 1/sqrt(n_e): a few times the p-vs-p value at most
        let ks_pp = metrics::ks_two_sample(&ps2, &ps);
        assert!(
            ks.d < 5.0 * ks_pp.d.max(1.0 / (n as f64).sqrt()),
            "{ks:?} vs {ks_pp:?}"
        );

        let edges = metrics::reference_edges(&qs, 30);
        let (hw, hw2) = histogram_weighted(&qs, &qw, &edges);
        let hg = metrics::histogram(&ps, &edges);
        let chi = chi2_weighted_unweighted(&hw, &hw2, &hg);
        assert!(chi.p_value > 1e-3, "weighted chi2 {chi:?}");
        let chi_unw = metrics::chi2_two_sample(&metrics::histogram(&qs, &edges), &hg);
        assert!(chi_unw.p_value < 1e-6, "unweighted chi2 {chi_unw:?}");

        let w1 = wasserstein1_weighted(&qs, &qw, &ps);
        let w1_pp = metrics::wasserstein1_sorted(&ps2, &ps);
        assert!(w1 < 0.05, "weighted W1 {w1} (p vs p {w1_pp})");
        assert!(metrics::wasserstein1_sorted(&qs, &ps) > 0.1);
        let (m, s) = mean_std_weighted(&qs, &qw);
        assert!((m - mu_p).abs() < 0.05 && (s - 1.0).abs() < 0.05, "{m} {s}");
    }

    #[test]
    fn negative_weights_give_no_nan() {
        let mut rng = Rng::new(3);
        let a = gauss(&mut rng, 400, 0.0, 1.0);
        let w: Vec<f64> = (0..400)
            .map(|i| if i % 5 == 0 { -0.8 } else { 1.3 })
            .collect();
        let b = gauss(&mut rng, 300, 0.1, 1.0);
        let (as_, aw) = sorted_weighted(&a, &w);
        let bs = metrics::sorted_finite(&b);
        let edges = metrics::reference_edges(&as_, 40);
        let (hw, hw2) = histogram_weighted(&as_, &aw, &edges);
        let hg = metrics::histogram(&bs, &edges);
        let chi = chi2_weighted_unweighted(&hw, &hw2, &hg);
        let ks = ks_weighted(&as_, &aw, &bs);
        let vals = [
            chi.chi2,
            chi.p_value,
            ks.d,
            ks.p_value,
            wasserstein1_weighted(&as_, &aw, &bs),
            w1_over_std_weighted(&as_, &aw, &bs),
            auc_weighted(&a, Some(&w), &b, None),
        ];
        assert!(vals.iter().all(|v| v.is_finite()), "{vals:?}");
        // a sample whose only event in a bin is negative still gives a finite chi2
        let chi = chi2_weighted_unweighted(&[-1.0, 5.0], &[1.0, 5.0], &[0.0, 4.0]);
        assert!(chi.chi2.is_finite() && chi.p_value.is_finite(), "{chi:?}");
    }
}
