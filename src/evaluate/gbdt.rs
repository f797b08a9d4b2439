//! A compact histogram-based gradient-boosted decision tree classifier (binary logistic loss).
//!
//! Features are quantised into at most `max_bins` quantile bins; trees grow level by level to
//! `max_depth`; each split maximises the second-order gain
//! `G_L^2/(H_L+l) + G_R^2/(H_R+l) - G^2/(H+l)` with `g = p - y`, `h = p (1 - p)` and
//! `p = sigmoid(F)`; leaves get the Newton step `-G/(H+l)` scaled by the learning rate.
//! Histograms of the split search are built in parallel over features (rayon).

use rayon::prelude::*;

/// Hyper-parameters of [`Gbdt`].
#[derive(Clone, Debug, PartialEq)]
pub struct GbdtConfig {
    /// Number of boosting rounds (trees).
    pub n_trees: usize,
    /// Maximum tree depth (a tree has at most `2^max_depth` leaves).
    pub max_depth: usize,
    /// Shrinkage applied to every leaf value.
    pub learning_rate: f64,
    /// Maximum number of quantile bins per feature (2..=256).
    pub max_bins: usize,
    /// L2 regularisation `l` of the leaf values.
    pub lambda: f64,
    /// Minimum number of training events in each child of a split.
    pub min_samples_leaf: usize,
}

impl Default for GbdtConfig {
    fn default() -> Self {
        Self {
            n_trees: 150,
            max_depth: 3,
            learning_rate: 0.1,
            max_bins: 32,
            lambda: 1.0,
            min_samples_leaf: 20,
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(f64),
    /// go left when `x[feature] <= threshold` (NaN goes left)
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
}

/// A trained boosted-tree binary classifier. `predict_logit(x) = F0 + sum_t tree_t(x)`.
#[derive(Clone, Debug)]
pub struct Gbdt {
    base: f64,
    trees: Vec<Vec<Node>>,
    n_features: usize,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Quantile thresholds per feature: `bin(x) = #{t_k < x}` so that `bin(x) <= k <=> x <= t_k`.
fn quantile_thresholds(col: &[f64], max_bins: usize) -> Vec<f64> {
    let mut s: Vec<f64> = col.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    s.dedup();
    if s.len() <= 1 {
        return Vec::new();
    }
    if s.len() <= max_bins {
        // midpoints between distinct values
        return s.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    }
    let mut t: Vec<f64> = (1..max_bins)
        .map(|k| {
            let pos = k as f64 / max_bins as f64 * (s.len() - 1) as f64;
            let i = pos.floor() as usize;
            0.5 * (s[i] + s[(i + 1).min(s.len() - 1)])
        })
        .collect();
    t.dedup();
    t
}

fn bin_of(thresholds: &[f64], x: f64) -> u8 {
    if x.is_nan() {
        0
    } else {
        thresholds.partition_point(|&t| t < x) as u8
    }
}

impl Gbdt {
    /// Trains on `n` row-major events of `d` features (`x.len() == n d`) with labels `y` in {0, 1}.
    /// Returns `None` when the shapes disagree or there are no events.
    pub fn fit(x: &[f64], d: usize, y: &[f64], cfg: &GbdtConfig) -> Option<Gbdt> {
        Self::fit_weighted(x, d, y, None, cfg)
    }

    /// [`Gbdt::fit`] with per-event sample weights `w` (`None`: all 1). The weighted logistic
    /// loss `sum_i w_i l(y_i, F_i)` has gradients `g_i = w_i (p_i - y_i)`; the hessians use
    /// `|w_i| p_i (1 - p_i)` so that negative (NLO) weights keep every Newton denominator
    /// positive. The initial logit is `ln(sum w y / sum w (1 - y))`. Unit weights give exactly
    /// the unweighted model. Returns `None` also when `w` has the wrong length.
    pub fn fit_weighted(
        x: &[f64],
        d: usize,
        y: &[f64],
        w: Option<&[f64]>,
        cfg: &GbdtConfig,
    ) -> Option<Gbdt> {
        let n = y.len();
        if n == 0 || d == 0 || x.len() != n * d || w.is_some_and(|w| w.len() != n) {
            return None;
        }
        let wi = |i: usize| w.map_or(1.0, |w| w[i]);
        let max_bins = cfg.max_bins.clamp(2, 256);
        // feature-major binned data
        let thresholds: Vec<Vec<f64>> = (0..d)
            .into_par_iter()
            .map(|f| {
                let col: Vec<f64> = (0..n).map(|i| x[i * d + f]).collect();
                quantile_thresholds(&col, max_bins)
            })
            .collect();
        let binned: Vec<Vec<u8>> = (0..d)
            .into_par_iter()
            .map(|f| {
                (0..n)
                    .map(|i| bin_of(&thresholds[f], x[i * d + f]))
                    .collect()
            })
            .collect();
        let nbins: Vec<usize> = thresholds.iter().map(|t| t.len() + 1).collect();

        let (pos, total) = match w {
            None => (y.iter().sum::<f64>(), n as f64),
            Some(w) => (
                y.iter().zip(w).map(|(y, w)| w * y).sum::<f64>(),
                w.iter().sum::<f64>(),
            ),
        };
        let pos = pos.clamp(0.5, (total - 0.5).max(0.5));
        let base = (pos / (total - pos).max(0.5)).ln();
        let mut f_val = vec![base; n];
        let mut grad = vec![0.0; n];
        let mut hess = vec![0.0; n];
        let mut trees = Vec::with_capacity(cfg.n_trees);
        let lambda = cfg.lambda.max(0.0);
        let min_leaf = cfg.min_samples_leaf.max(1);

        for _ in 0..cfg.n_trees {
            for i in 0..n {
                let p = sigmoid(f_val[i]);
                let wt = wi(i);
                grad[i] = wt * (p - y[i]);
                hess[i] = (wt.abs() * (p * (1.0 - p))).max(1e-12);
            }
            let mut nodes: Vec<Node> = Vec::new();
            // (node index, rows) for the current level
            let mut level: Vec<(usize, Vec<u32>)> = vec![(0, (0..n as u32).collect())];
            nodes.push(Node::Leaf(0.0));
            for depth in 0..=cfg.max_depth {
                let mut next = Vec::new();
                for (node, rows) in level {
                    let (g, h): (f64, f64) = rows.iter().fold((0.0, 0.0), |(a, b), &r| {
                        (a + grad[r as usize], b + hess[r as usize])
                    });
                    let leaf = -g / (h + lambda) * cfg.learning_rate;
                    let split = if depth < cfg.max_depth && rows.len() >= 2 * min_leaf {
                        best_split(&rows, &binned, &nbins, &grad, &hess, g, h, lambda, min_leaf)
                    } else {
                        None
                    };
                    match split {
                        Some((feat, bin)) => {
                            let (lrows, rrows): (Vec<u32>, Vec<u32>) = rows
                                .iter()
                                .partition(|&&r| binned[feat][r as usize] as usize <= bin);
                            let left = nodes.len();
                            nodes.push(Node::Leaf(0.0));
                            nodes.push(Node::Leaf(0.0));
                            nodes[node] = Node::Split {
                                feature: feat,
                                threshold: thresholds[feat][bin],
                                left,
                                right: left + 1,
                            };
                            next.push((left, lrows));
                            next.push((left + 1, rrows));
                        }
                        None => {
                            nodes[node] = Node::Leaf(leaf);
                            for &r in &rows {
                                f_val[r as usize] += leaf;
                            }
                        }
                    }
                }
                if next.is_empty() {
                    break;
                }
                level = next;
            }
            trees.push(nodes);
        }
        Some(Gbdt {
            base,
            trees,
            n_features: d,
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Raw score `F(x) = F0 + sum_t tree_t(x)` of one event.
    pub fn predict_logit(&self, row: &[f64]) -> f64 {
        let mut s = self.base;
        for tree in &self.trees {
            let mut k = 0;
            loop {
                match &tree[k] {
                    Node::Leaf(v) => {
                        s += v;
                        break;
                    }
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        let x = row.get(*feature).copied().unwrap_or(f64::NAN);
                        k = if x > *threshold { *right } else { *left };
                    }
                }
            }
        }
        s
    }

    /// Probability `sigmoid(F(x))` of class 1 for each row of a row-major `n x d` slice.
    pub fn predict_proba(&self, x: &[f64]) -> Vec<f64> {
        x.par_chunks(self.n_features.max(1))
            .map(|row| sigmoid(self.predict_logit(row)))
            .collect()
    }
}

/// Best `(feature, bin)` split of a node by second-order gain, or `None` without positive gain.
#[allow(clippy::too_many_arguments)]
fn best_split(
    rows: &[u32],
    binned: &[Vec<u8>],
    nbins: &[usize],
    grad: &[f64],
    hess: &[f64],
    g: f64,
    h: f64,
    lambda: f64,
    min_leaf: usize,
) -> Option<(usize, usize)> {
    let parent = g * g / (h + lambda);
    let best = (0..binned.len())
        .into_par_iter()
        .filter_map(|f| {
            let nb = nbins[f];
            if nb < 2 {
                return None;
            }
            let mut hg = vec![0.0; nb];
            let mut hh = vec![0.0; nb];
            let mut hc = vec![0usize; nb];
            let col = &binned[f];
            for &r in rows {
                let r = r as usize;
                let b = col[r] as usize;
                hg[b] += grad[r];
                hh[b] += hess[r];
                hc[b] += 1;
            }
            let (mut gl, mut hl, mut cl) = (0.0, 0.0, 0usize);
            let mut best: Option<(f64, usize)> = None;
            for b in 0..nb - 1 {
                gl += hg[b];
                hl += hh[b];
                cl += hc[b];
                let cr = rows.len() - cl;
                if cl < min_leaf || cr < min_leaf {
                    continue;
                }
                let (gr, hr) = (g - gl, h - hl);
                let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                if best.is_none_or(|(bg, _)| gain > bg) {
                    best = Some((gain, b));
                }
            }
            best.map(|(gain, b)| (gain, f, b))
        })
        .reduce_with(|a, b| {
            if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                b
            } else {
                a
            }
        });
    match best {
        Some((gain, f, b)) if gain > 1e-12 => Some((f, b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    #[test]
    fn learns_xor_like_boundary() {
        let mut rng = Rng::new(5);
        let n = 2000;
        let mut x = Vec::with_capacity(2 * n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a = rng.uniform_range(-1.0, 1.0);
            let b = rng.uniform_range(-1.0, 1.0);
            x.push(a);
            x.push(b);
            y.push(if a * b > 0.0 { 1.0 } else { 0.0 });
        }
        let cfg = GbdtConfig {
            n_trees: 30,
            ..GbdtConfig::default()
        };
        let m = Gbdt::fit(&x, 2, &y, &cfg).unwrap();
        let p = m.predict_proba(&x);
        let acc = p
            .iter()
            .zip(&y)
            .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
            .count() as f64
            / n as f64;
        assert!(acc > 0.95, "accuracy {acc}");
        assert!(Gbdt::fit(&x, 3, &y, &cfg).is_none());
        // unit sample weights give exactly the unweighted model
        let ones = vec![1.0; n];
        let mw = Gbdt::fit_weighted(&x, 2, &y, Some(&ones), &cfg).unwrap();
        let pw = mw.predict_proba(&x);
        assert!(p.iter().zip(&pw).all(|(a, b)| a.to_bits() == b.to_bits()));
        // negative weights keep the model finite; a wrong length is rejected
        let w: Vec<f64> = (0..n)
            .map(|i| if i % 3 == 0 { -0.7 } else { 1.4 })
            .collect();
        let mneg = Gbdt::fit_weighted(&x, 2, &y, Some(&w), &cfg).unwrap();
        assert!(mneg.predict_proba(&x).iter().all(|v| v.is_finite()));
        assert!(Gbdt::fit_weighted(&x, 2, &y, Some(&w[1..]), &cfg).is_none());
    }
}
