//! Two-sample comparison metrics: histogram chi2, Kolmogorov-Smirnov, Wasserstein-1,
//! correlation-matrix difference, Frechet distance and the test NLL.
//!
//! All functions are pure and work in `f64`. One-dimensional inputs are plain slices; the
//! multivariate ones take row-major `n x d` slices.

/// Natural log of the gamma function, Lanczos approximation (g = 7, 9 coefficients;
/// relative error below 1e-15 for `x > 0`), with the reflection formula for `x < 0.5`.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Gamma(x) Gamma(1-x) = pi / sin(pi x)
        let s = (std::f64::consts::PI * x).sin().abs();
        return std::f64::consts::PI.ln() - s.ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma function `Q(a, x) = Gamma(a, x) / Gamma(a)
/// = 1/Gamma(a) * int_x^inf t^(a-1) e^(-t) dt` for `a > 0`, `x >= 0`.
///
/// Uses the power series `P(a,x) = x^a e^-x / Gamma(a+1) * sum_n x^n / ((a+1)...(a+n))` when
/// `x < a + 1` and the Legendre continued fraction (modified Lentz) otherwise; both are run
/// to relative precision 1e-15, so the result is accurate to well below 1e-8 absolute.
/// Returns NaN for invalid arguments.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 || a.is_infinite() {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let ln_pre = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // Series for P(a, x).
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * ln_pre.exp()).clamp(0.0, 1.0)
    } else {
        // Continued fraction for Q(a, x).
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (ln_pre.exp() * h).clamp(0.0, 1.0)
    }
}

/// Survival function of the chi-squared distribution with `ndf` degrees of freedom:
/// `P(X > chi2) = Q(ndf/2, chi2/2)`. `ndf = 0` gives 1 (no information, nothing to reject).
pub fn chi2_sf(chi2: f64, ndf: usize) -> f64 {
    if ndf == 0 {
        return 1.0;
    }
    gamma_q(ndf as f64 / 2.0, chi2.max(0.0) / 2.0)
}

/// Linear-interpolation quantile of an ascending-sorted slice: position `q (n-1)`.
/// Returns NaN for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let f = pos - lo as f64;
    sorted[lo] * (1.0 - f) + sorted[hi] * f
}

/// Finite values of `v`, sorted ascending.
pub fn sorted_finite(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    s
}

/// Bin edges from the reference sample: `nbins` equal-width bins between the 0.5% and 99.5%
/// quantiles of the (sorted) reference, which makes the binning robust to far outliers.
/// A degenerate range (constant feature) is widened to `[v - 0.5, v + 0.5]`.
pub fn reference_edges(ref_sorted: &[f64], nbins: usize) -> Vec<f64> {
    let nbins = nbins.max(1);
    let mut lo = quantile_sorted(ref_sorted, 0.005);
    let mut hi = quantile_sorted(ref_sorted, 0.995);
    if !lo.is_finite() || !hi.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    if hi - lo <= 1e-12 * (1.0 + lo.abs()) {
        lo -= 0.5;
        hi += 0.5;
    }
    (0..=nbins)
        .map(|i| lo + (hi - lo) * i as f64 / nbins as f64)
        .collect()
}

/// Counts of finite `values` in the bins given by ascending `edges` (`edges.len() - 1` bins);
/// values below the first edge go into the first bin and values above the last edge into
/// the last bin (under/overflow merged into the edge bins).
pub fn histogram(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let nb = edges.len().saturating_sub(1).max(1);
    let mut counts = vec![0.0; nb];
    if edges.len() < 2 {
        counts[0] = values.iter().filter(|v| v.is_finite()).count() as f64;
        return counts;
    }
    for &v in values.iter().filter(|v| v.is_finite()) {
        // number of inner edges <= v gives the bin index
        let k = edges[1..nb].partition_point(|&e| e <= v);
        counts[k] += 1.0;
    }
    counts
}

/// Result of a binned two-sample chi2 test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chi2Test {
    /// The chi2 statistic.
    pub chi2: f64,
    /// Degrees of freedom: non-empty bins - 1.
    pub ndf: usize,
    /// `P(chi2_ndf > chi2)`.
    pub p_value: f64,
}

impl Chi2Test {
    /// `chi2 / ndf` (0 when `ndf = 0`).
    pub fn chi2_ndf(&self) -> f64 {
        if self.ndf == 0 {
            0.0
        } else {
            self.chi2 / self.ndf as f64
        }
    }
}

/// Two-sample chi2 for unweighted histograms of different total sizes `N_r = sum n_r`,
/// `N_g = sum n_g`, with the statistical errors of both samples:
/// `chi2 = sum_i (N_g n_r,i - N_r n_g,i)^2 / (N_r N_g (n_r,i + n_g,i))`, summed over bins
/// where `n_r,i + n_g,i > 0`; `ndf = (number of such bins) - 1`; p-value from [`chi2_sf`].
/// (The same statistic as ROOT's `TH1::Chi2Test` option "UU".)
pub fn chi2_two_sample(ref_counts: &[f64], gen_counts: &[f64]) -> Chi2Test {
    let nr: f64 = ref_counts.iter().sum();
    let ng: f64 = gen_counts.iter().sum();
    if nr <= 0.0 || ng <= 0.0 {
        return Chi2Test {
            chi2: 0.0,
            ndf: 0,
            p_value: 1.0,
        };
    }
    let mut chi2 = 0.0;
    let mut nonempty = 0usize;
    for (&r, &g) in ref_counts.iter().zip(gen_counts) {
        if r + g > 0.0 {
            nonempty += 1;
            let d = ng * r - nr * g;
            chi2 += d * d / (r + g);
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

/// Kolmogorov distribution survival function
/// `Q_KS(l) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 l^2)`; for `l < 1.18` the equivalent
/// fast-converging form `1 - sqrt(2 pi)/l sum_{j>=1} exp(-(2j-1)^2 pi^2 / (8 l^2))` is used.
pub fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    if lambda < 1.18 {
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let mut s = 0.0;
        for j in 1..=20 {
            let k = (2 * j - 1) as f64;
            let term = (-k * k * pi2 / (8.0 * lambda * lambda)).exp();
            s += term;
            if term < 1e-17 {
                break;
            }
        }
        (1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * s).clamp(0.0, 1.0)
    } else {
        let mut s = 0.0;
        let mut sign = 1.0;
        for j in 1..=100 {
            let jf = j as f64;
            let term = (-2.0 * jf * jf * lambda * lambda).exp();
            s += sign * term;
            sign = -sign;
            if term < 1e-17 {
                break;
            }
        }
        (2.0 * s).clamp(0.0, 1.0)
    }
}

/// Result of a two-sample Kolmogorov-Smirnov test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KsTest {
    /// `D = sup_x |F_a(x) - F_b(x)|` over the empirical CDFs.
    pub d: f64,
    /// Asymptotic p-value with Stephens' correction.
    pub p_value: f64,
}

/// Two-sample Kolmogorov-Smirnov test on ascending-sorted finite samples.
/// `D = sup_x |F_a(x) - F_b(x)|` (ties handled by stepping over equal values in both samples
/// at once); p-value `Q_KS((sqrt(n_e) + 0.12 + 0.11/sqrt(n_e)) D)` with the effective size
/// `n_e = n m / (n + m)` (Stephens' correction, as in Numerical Recipes).
pub fn ks_two_sample(a_sorted: &[f64], b_sorted: &[f64]) -> KsTest {
    let (n, m) = (a_sorted.len(), b_sorted.len());
    if n == 0 || m == 0 {
        return KsTest {
            d: 0.0,
            p_value: 1.0,
        };
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut d: f64 = 0.0;
    while i < n && j < m {
        let x = a_sorted[i].min(b_sorted[j]);
        while i < n && a_sorted[i] <= x {
            i += 1;
        }
        while j < m && b_sorted[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    let ne = (n as f64 * m as f64) / (n + m) as f64;
    let sq = ne.sqrt();
    KsTest {
        d,
        p_value: kolmogorov_q((sq + 0.12 + 0.11 / sq) * d),
    }
}

/// Exact Wasserstein-1 distance between two empirical 1-D distributions given as
/// ascending-sorted samples: `W1 = int |F_a(x) - F_b(x)| dx`, evaluated as a sum over the
/// intervals between consecutive points of the merged sample, on which both CDFs are constant.
pub fn wasserstein1_sorted(a_sorted: &[f64], b_sorted: &[f64]) -> f64 {
    let (n, m) = (a_sorted.len(), b_sorted.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut w = 0.0;
    let mut x_prev = a_sorted[0].min(b_sorted[0]);
    while i < n || j < m {
        let x = match (a_sorted.get(i), b_sorted.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let diff = (i as f64 / n as f64 - j as f64 / m as f64).abs();
        w += diff * (x - x_prev);
        while i < n && a_sorted[i] <= x {
            i += 1;
        }
        while j < m && b_sorted[j] <= x {
            j += 1;
        }
        x_prev = x;
    }
    w
}

/// Mean and standard deviation (`n - 1` denominator; 0 for fewer than two values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// `W1(ref, gen) / std(ref)`: the Wasserstein-1 distance in units of the reference's standard
/// deviation (the raw W1 when that deviation is 0). Inputs ascending-sorted.
pub fn w1_over_std(ref_sorted: &[f64], gen_sorted: &[f64]) -> f64 {
    let w = wasserstein1_sorted(ref_sorted, gen_sorted);
    let (_, s) = mean_std(ref_sorted);
    if s > 0.0 { w / s } else { w }
}

/// Mean vector and covariance matrix (`n - 1` denominator, row-major `d x d`) of a row-major
/// `n x d` sample.
pub fn mean_cov(data: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = data.len().checked_div(d).unwrap_or(0);
    let mut mu = vec![0.0; d];
    for row in data.chunks_exact(d.max(1)).take(n) {
        for (m, x) in mu.iter_mut().zip(row) {
            *m += x;
        }
    }
    for m in &mut mu {
        *m /= n.max(1) as f64;
    }
    let mut cov = vec![0.0; d * d];
    for row in data.chunks_exact(d.max(1)).take(n) {
        for a in 0..d {
            let da = row[a] - mu[a];
            for b in a..d {
                cov[a * d + b] += da * (row[b] - mu[b]);
            }
        }
    }
    let den = (n.max(2) - 1) as f64;
    for a in 0..d {
        for b in a..d {
            let v = cov[a * d + b] / den;
            cov[a * d + b] = v;
            cov[b * d + a] = v;
        }
    }
    (mu, cov)
}

/// Pearson correlation matrix `C_ab = S_ab / sqrt(S_aa S_bb)` of a row-major `n x d` sample
/// (row-major `d x d`). A constant feature gets `C_aa = 1` and zero off-diagonal entries.
pub fn correlation_matrix(data: &[f64], d: usize) -> Vec<f64> {
    let (_, cov) = mean_cov(data, d);
    correlation_from_cov(&cov, d)
}

/// The correlation matrix of a row-major `d x d` covariance matrix, as [`correlation_matrix`]
/// (a feature without positive variance gets zero off-diagonal entries).
pub fn correlation_from_cov(cov: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for a in 0..d {
        for b in 0..d {
            let den = (cov[a * d + a] * cov[b * d + b]).sqrt();
            c[a * d + b] = if a == b {
                1.0
            } else if den > 0.0 {
                (cov[a * d + b] / den).clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
    }
    c
}

/// Frobenius norm `||A - B||_F = sqrt(sum_ij (A_ij - B_ij)^2)`.
pub fn frobenius_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Eigendecomposition of a symmetric row-major `d x d` matrix by cyclic Jacobi rotations:
/// `A = V diag(w) V^T`. Returns `(w, V)` with the eigenvectors in the columns of `V`
/// (row-major). Sweeps until the off-diagonal norm is below `1e-14` of the total norm.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(1e-300);
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..d {
            for q in p + 1..d {
                off += 2.0 * a[p * d + q] * a[p * d + q];
            }
        }
        if off <= 1e-28 * total {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let app = a[p * d + p];
                let aqq = a[q * d + q];
                // Rotation angle that zeroes a[p][q].
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let w = (0..d).map(|i| a[i * d + i]).collect();
    (w, v)
}

/// Square root of a symmetric positive semi-definite matrix, `V diag(sqrt(max(w, 0))) V^T`.
pub fn sqrtm_psd(a: &[f64], d: usize) -> Vec<f64> {
    let (w, v) = symmetric_eigen(a, d);
    let mut out = vec![0.0; d * d];
    for k in 0..d {
        let s = w[k].max(0.0).sqrt();
        for i in 0..d {
            let vik = v[i * d + k] * s;
            for j in 0..d {
                out[i * d + j] += vik * v[j * d + k];
            }
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// Frechet distance between Gaussian fits of two samples:
/// `||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})`, from means and
/// covariances (row-major `d x d`). Matrix square roots by Jacobi eigendecomposition.
pub fn frechet_from_moments(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64], d: usize) -> f64 {
    let dm: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let s1h = sqrtm_psd(s1, d);
    let m = matmul(&matmul(&s1h, s2, d), &s1h, d);
    // symmetrise against round-off before the eigendecomposition
    let mut ms = m.clone();
    for i in 0..d {
        for j in 0..d {
            ms[i * d + j] = 0.5 * (m[i * d + j] + m[j * d + i]);
        }
    }
    let (w, _) = symmetric_eigen(&ms, d);
    let tr_sqrt: f64 = w.iter().map(|x| x.max(0.0).sqrt()).sum();
    let tr1: f64 = (0..d).map(|i| s1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| s2[i * d + i]).sum();
    (dm + tr1 + tr2 - 2.0 * tr_sqrt).max(0.0)
}

/// Frechet distance of two row-major `n x d` samples in the reference's standardized feature
/// space: every feature `x_a -> (x_a - mean_ref,a) / std_ref,a` (std 0 replaced by 1) for both
/// samples, then [`frechet_from_moments`] on their means and covariances.
pub fn frechet_distance_standardized(reference: &[f64], generated: &[f64], d: usize) -> f64 {
    frechet_standardized_with(reference, generated, d, |x| mean_cov(x, d))
}

/// [`frechet_distance_standardized`] with the reference's moments (mean and covariance of a
/// row-major sample with the reference's rows) computed by `ref_moments`: the weighted
/// evaluation passes [`super::weighted::mean_cov_weighted`].
pub fn frechet_standardized_with(
    reference: &[f64],
    generated: &[f64],
    d: usize,
    ref_moments: impl Fn(&[f64]) -> (Vec<f64>, Vec<f64>),
) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let (mu_r, cov_r) = ref_moments(reference);
    let sd: Vec<f64> = (0..d)
        .map(|a| {
            let s = cov_r[a * d + a].sqrt();
            if s > 0.0 { s } else { 1.0 }
        })
        .collect();
    let standardize = |data: &[f64]| -> Vec<f64> {
        data.chunks_exact(d)
            .flat_map(|row| {
                (0..d)
                    .map(|a| (row[a] - mu_r[a]) / sd[a])
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let zr = standardize(reference);
    let zg = standardize(generated);
    let (m1, s1) = ref_moments(&zr);
    let (m2, s2) = mean_cov(&zg, d);
    frechet_from_moments(&m1, &s1, &m2, &s2, d)
}

/// Test negative log-likelihood from per-event log-densities `log p(x_i)`:
/// `NLL = -(1/n) sum_i log p(x_i)` and its standard error `std(log p) / sqrt(n)`
/// (`n - 1` denominator). Non-finite log-densities are skipped; returns
/// `(nll, err, number_skipped)`; `(NaN, NaN, skipped)` when no finite value remains.
pub fn mean_nll(log_probs: &[f64]) -> (f64, f64, usize) {
    let finite: Vec<f64> = log_probs
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let skipped = log_probs.len() - finite.len();
    if finite.is_empty() {
        return (f64::NAN, f64::NAN, skipped);
    }
    let (m, s) = mean_std(&finite);
    (-m, s / (finite.len() as f64).sqrt(), skipped)
}

/// Per-feature `(min, max)` of the finite values of a row-major `n x d` sample
/// (`(inf, -inf)` for a feature without finite values).
pub fn column_ranges(data: &[f64], d: usize) -> Vec<(f64, f64)> {
    let mut r = vec![(f64::INFINITY, f64::NEG_INFINITY); d];
    for row in data.chunks_exact(d.max(1)) {
        for (rj, &v) in r.iter_mut().zip(row) {
            if v.is_finite() {
                *rj = (rj.0.min(v), rj.1.max(v));
            }
        }
    }
    r
}

/// Fractions of the events of a row-major `n x d` sample outside the closed per-feature
/// `ranges`: per feature, and of events with at least one feature outside. `(zeros, 0)` for an
/// empty sample.
pub fn outside_fractions(data: &[f64], d: usize, ranges: &[(f64, f64)]) -> (Vec<f64>, f64) {
    let mut per = vec![0usize; d];
    let mut any = 0usize;
    let mut n = 0usize;
    for row in data.chunks_exact(d.max(1)) {
        n += 1;
        let mut out = false;
        for ((c, &v), &(lo, hi)) in per.iter_mut().zip(row).zip(ranges) {
            if !(v >= lo && v <= hi) {
                *c += 1;
                out = true;
            }
        }
        any += usize::from(out);
    }
    let nf = n.max(1) as f64;
    (
        per.iter().map(|&c| c as f64 / nf).collect(),
        any as f64 / nf,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    fn gauss(rng: &mut Rng, n: usize, mu: f64) -> Vec<f64> {
        (0..n).map(|_| mu + rng.normal()).collect()
    }

    #[test]
    fn outside_fractions_count_per_feature_and_per_event() {
        let a = [0.0, 10.0, 1.0, 20.0, 2.0, 15.0];
        let r = column_ranges(&a, 2);
        assert_eq!(r, vec![(0.0, 2.0), (10.0, 20.0)]);
        let b = [0.5, 12.0, -1.0, 25.0, 3.0, 15.0, 1.0, 9.0, 1.0, 11.0];
        let (per, any) = outside_fractions(&b, 2, &r);
        assert_eq!(per, vec![0.4, 0.4]);
        assert!((any - 0.6).abs() < 1e-15);
        assert_eq!(outside_fractions(&[], 2, &r), (vec![0.0, 0.0], 0.0));
    }

    #[test]
    fn gamma_q_matches_scipy() {
        // reference values from scipy.special.gammaincc / scipy.stats.chi2.sf
        assert!((chi2_sf(3.84, 1) - 0.050_043_521_248_705_19).abs() < 1e-9);
        assert!((chi2_sf(10.0, 5) - 0.075_235_246_146_512_17).abs() < 1e-9);
        assert!((chi2_sf(100.0, 80) - 0.064_570_368_921_133).abs() < 1e-9);
        assert!((chi2_sf(0.5, 3) - 0.918_891_411_654_675_8).abs() < 1e-9);
        assert!((gamma_q(2.5, 3.0) - 0.306_218_918_413_278_75).abs() < 1e-9);
        assert!((gamma_q(0.5, 0.01) - 0.887_537_083_981_715).abs() < 1e-9);
        assert!((gamma_q(50.0, 60.0) - 0.084_406_681_093_691_77).abs() < 1e-9);
        assert!((gamma_q(1e-3, 1e-3) - 0.006_312_353_291_139_709).abs() < 1e-9);
        assert_eq!(chi2_sf(0.0, 7), 1.0);
        assert!(gamma_q(-1.0, 1.0).is_nan());
    }

    #[test]
    fn kolmogorov_matches_scipy() {
        // scipy.special.kolmogorov
        assert!((kolmogorov_q(1.0) - 0.269_999_671_677_354_56).abs() < 1e-9);
        assert!((kolmogorov_q(0.5) - 0.963_945_243_664_875_1).abs() < 1e-9);
        assert!((kolmogorov_q(1.36) - 0.049_485_876_755_377_876).abs() < 1e-9);
        assert!((kolmogorov_q(1.18) - kolmogorov_q(1.18 - 1e-12)).abs() < 1e-9);
    }

    #[test]
    fn ks_p_value_known() {
        // a = i/100, b = i/100 + 0.0995 for i < 100: D = 0.1 exactly.
        let a: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 0.0995).collect();
        let ks = ks_two_sample(&a, &b);
        assert!((ks.d - 0.1).abs() < 1e-12);
        // Stephens-corrected asymptotic value (scipy.special.kolmogorov(0.720662416)).
        assert!((ks.p_value - 0.676_620_149_700_246).abs() < 1e-6);
        // and close to scipy's exact ks_2samp p-value 0.70206.
        assert!((ks.p_value - 0.702_056_98).abs() < 0.03);
    }

    #[test]
    fn identical_samples_give_zero_distances() {
        let mut rng = Rng::new(1);
        let a = sorted_finite(&gauss(&mut rng, 2000, 0.0));
        let ks = ks_two_sample(&a, &a);
        assert_eq!(ks.d, 0.0);
        assert!((ks.p_value - 1.0).abs() < 1e-12);
        assert_eq!(wasserstein1_sorted(&a, &a), 0.0);
        let e = reference_edges(&a, 40);
        let h = histogram(&a, &e);
        assert_eq!(h.iter().sum::<f64>(), 2000.0);
        let c = chi2_two_sample(&h, &h);
        assert_eq!(c.chi2, 0.0);
        assert_eq!(c.p_value, 1.0);
        assert_eq!(c.ndf, 39);
    }

    #[test]
    fn shifted_gaussians_w1_and_ks() {
        let mut rng = Rng::new(7);
        let a = sorted_finite(&gauss(&mut rng, 20_000, 0.0));
        let b = sorted_finite(&gauss(&mut rng, 20_000, 0.5));
        let w = w1_over_std(&a, &b);
        assert!((w - 0.5).abs() < 0.03, "w1/std {w}");
        // D = 2 Phi(0.25) - 1 = 0.19741
        let ks = ks_two_sample(&a, &b);
        assert!((ks.d - 0.197_412_6).abs() < 0.02, "ks {}", ks.d);
        assert!(ks.p_value < 1e-10);
        // W1 on tiny hand example: {0,1} vs {0.5,1.5} -> 0.5
        assert!((wasserstein1_sorted(&[0.0, 1.0], &[0.5, 1.5]) - 0.5).abs() < 1e-12);
        // different sizes: {0} vs {0, 2} -> 0.5 * 2 = 1
        assert!((wasserstein1_sorted(&[0.0], &[0.0, 2.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn chi2_same_vs_shifted() {
        let mut rng = Rng::new(3);
        let a = sorted_finite(&gauss(&mut rng, 20_000, 0.0));
        let b = gauss(&mut rng, 15_000, 0.0);
        let c = gauss(&mut rng, 15_000, 0.1);
        let e = reference_edges(&a, 40);
        let ha = histogram(&a, &e);
        let same = chi2_two_sample(&ha, &histogram(&b, &e));
        let shifted = chi2_two_sample(&ha, &histogram(&c, &e));
        assert!(same.p_value > 1e-3, "same p {}", same.p_value);
        assert!(same.chi2_ndf() < 2.0);
        assert!(shifted.p_value < 1e-6, "shifted p {}", shifted.p_value);
        // under/overflow are merged into the edge bins
        let h = histogram(&[-1e9, 1e9, f64::NAN], &e);
        assert_eq!(h[0], 1.0);
        assert_eq!(h[39], 1.0);
    }

    #[test]
    fn frechet_and_correlations() {
        let mut rng = Rng::new(11);
        let d = 3;
        let n = 20_000;
        // correlated Gaussian: x1 = z1, x2 = 0.6 z1 + 0.8 z2, x3 = 2 z3
        let sample = |rng: &mut Rng, shift: [f64; 3]| -> Vec<f64> {
            (0..n)
                .flat_map(|_| {
                    let (z1, z2, z3) = (rng.normal(), rng.normal(), rng.normal());
                    [
                        z1 + shift[0],
                        0.6 * z1 + 0.8 * z2 + shift[1],
                        2.0 * z3 + shift[2],
                    ]
                })
                .collect()
        };
        let a = sample(&mut rng, [0.0; 3]);
        assert!(frechet_distance_standardized(&a, &a, d) < 1e-9);
        let b = sample(&mut rng, [0.5, 0.0, 1.0]);
        // standardized shift: (0.5, 0, 0.5) -> 0.5
        let f = frechet_distance_standardized(&a, &b, d);
        assert!((f - 0.5).abs() < 0.03, "frechet {f}");
        let ca = correlation_matrix(&a, d);
        assert!((ca[1] - 0.6).abs() < 0.02);
        assert_eq!(frobenius_diff(&ca, &ca), 0.0);
        let cb = correlation_matrix(&b, d);
        assert!(frobenius_diff(&ca, &cb) < 0.05);
        // exact moments: identical Gaussians give 0, scaled covariance gives known trace term
        let eye = [1.0, 0.0, 0.0, 1.0];
        let four = [4.0, 0.0, 0.0, 4.0];
        assert!(frechet_from_moments(&[0.0, 0.0], &eye, &[0.0, 0.0], &eye, 2) < 1e-12);
        // tr(I + 4I - 2*2I) = 2*(1+4-4) = 2
        let v = frechet_from_moments(&[0.0, 0.0], &eye, &[1.0, 0.0], &four, 2);
        assert!((v - 3.0).abs() < 1e-10);
    }

    #[test]
    fn jacobi_reconstructs_matrix() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 2.0];
        let s = sqrtm_psd(&a, 3);
        let s2 = matmul(&s, &s, 3);
        for (x, y) in s2.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10);
        }
        let (w, _) = symmetric_eigen(&a, 3);
        let tr: f64 = w.iter().sum();
        assert!((tr - 9.0).abs() < 1e-10);
    }

    #[test]
    fn nll_mean_and_error() {
        let (m, e, skipped) = mean_nll(&[-1.0, -2.0, -3.0, f64::NEG_INFINITY]);
        assert_eq!(skipped, 1);
        assert!((m - 2.0).abs() < 1e-12);
        assert!((e - 1.0 / 3f64.sqrt()).abs() < 1e-12);
        assert!(mean_nll(&[]).0.is_nan());
    }
}
