//! Linear assignment: the permutation `sigma` minimising `sum_i cost[i, sigma(i)]` of a square
//! cost matrix, by the Hungarian method with potentials (Kuhn 1955, Munkres 1957; the
//! `O(n^3)` shortest-augmenting-path form: one row is added at a time, and Dijkstra-like steps
//! on the reduced costs `cost[i, j] - u[i] - v[j] >= 0` find its augmenting path).
//!
//! Used by the minibatch optimal-transport coupling of flow matching
//! ([`crate::flow_matching`]), which pairs the events of a chunk with its base draws.

/// The assignment `sigma` (row `i` gets column `sigma[i]`) of least total cost for the `n x n`
/// row-major `cost` (finite values). Ties go to the lower column index, so the result is
/// deterministic.
pub fn min_cost_assignment(n: usize, cost: &[f64]) -> Vec<usize> {
    assert_eq!(cost.len(), n * n, "cost must be n x n");
    // 1-based potentials u (rows), v (columns); p[j] = row matched to column j (0 = none).
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=n {
                if !used[j] {
                    let cur = cost[(i0 - 1) * n + j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut sigma = vec![0usize; n];
    for j in 1..=n {
        sigma[p[j] - 1] = j - 1;
    }
    sigma
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    fn total(n: usize, cost: &[f64], sigma: &[usize]) -> f64 {
        (0..n).map(|i| cost[i * n + sigma[i]]).sum()
    }

    /// Every permutation of `0..n` (Heap's algorithm).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if k <= 1 {
                out.push(a.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, a, out);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                a.swap(j, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(n, &mut (0..n).collect(), &mut out);
        out
    }

    #[test]
    fn finds_the_brute_force_optimum() {
        let mut rng = Rng::new(21);
        for n in 1..=7 {
            let all = permutations(n);
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| rng.normal().abs() * 3.0).collect();
                let sigma = min_cost_assignment(n, &cost);
                let mut seen = sigma.clone();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "not a permutation");
                let best = all
                    .iter()
                    .map(|p| total(n, &cost, p))
                    .fold(f64::INFINITY, f64::min);
                assert!((total(n, &cost, &sigma) - best).abs() < 1e-9, "n {n}");
            }
        }
        assert!(min_cost_assignment(0, &[]).is_empty());
    }
}
