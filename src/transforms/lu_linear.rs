//! Glow's invertible linear layer in LU form (Kingma & Dhariwal 2018), for tabular features.
//!
//! `z = W x` with `W = P L (U + diag(s))`, where `P` is a fixed permutation, `L` is unit
//! lower-triangular (trainable strictly-lower part `lower`), `U` is strictly upper-triangular
//! (trainable `upper`) and `s = exp(log_s) > 0` (trainable `log_s`). Then
//!
//! `log|det dz/dx| = sum_i log s_i = sum_i log_s_i`,
//!
//! and the inverse is `x = W^{-1} z = (U + diag(s))^{-1} L^{-1} P^T z`: `w = P^T z`, `L v = w`
//! (forward substitution), `(U + diag(s)) x = v` (back substitution). The evaluation inverse
//! (sampling) forms `W^{-1}` once per parameter state, column by column with these two solves in
//! `f64`, rounds it once to the working precision, caches it in the layer (emptied by
//! `params_mut`, the only mutable access to the parameters), and applies it to a whole chunk as one GEMM `X = Z W^{-T}`. Per event
//! this trades two dependent scalar triangular solves for a vectorised product; the rounding
//! error is that of one product with a correctly rounded `W^{-1}` (bounded against the `f64`
//! solves in the tests, for well- and moderately ill-conditioned factors). The scalar solves in
//! the working precision remain as the fallback when `W^{-1}` is not finite there.
//!
//! Sign convention: the diagonal is kept positive through `s = exp(log_s)`. This loses no
//! generality at initialisation: `W0` is a random orthogonal matrix, and flipping the sign of a
//! column of an orthogonal matrix keeps it orthogonal, so the initial signs are absorbed into the
//! columns (`W0 = Q D` with `D = diag(sign(u_ii))`). The sign of `det W` is then fixed to
//! `det P` for the whole training, exactly as in Glow (which freezes `sign(s)`).
//!
//! Initialisation (`LuLinear::new`): draw a Gaussian matrix, orthonormalise it (`Q`), factor
//! `Q = P' L U` with partial pivoting (so `|L_ij| <= 1` and no pivot is small), and start from
//! `W0 = P L U D = (P P'^T) Q D`, which is orthogonal for *any* configured permutation `P`
//! (a permutation times an orthogonal matrix is orthogonal). If the factorisation ever meets a
//! pivot below `1e-12` (impossible for an orthogonal matrix up to rounding), the layer starts from
//! `L = I`, `U = 0`, `s = 1`, i.e. `W0 = P`.

use super::permutation::{PermutationError, validate_permutation};
use super::{LayerSpec, Param, Transform};
use crate::engine::gemm::{gemm_nn, gemm_tn};
use crate::engine::{Matrix, Real, Rng, Tape};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Shape of an LU linear layer `W = P L (U + diag(s))`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LuLinearConfig {
    /// Number of features.
    pub dim: usize,
    /// The fixed permutation `P` as row indices: `(P v)_i = v_{perm[i]}`.
    pub perm: Vec<usize>,
}

impl LuLinearConfig {
    /// `P = I`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            perm: (0..dim).collect(),
        }
    }

    /// A uniformly random fixed permutation `P` drawn from `rng`. (Any `P` gives an orthogonal
    /// initial `W`; see the module documentation.)
    pub fn random(dim: usize, rng: &mut Rng) -> Self {
        Self {
            dim,
            perm: rng.permutation(dim),
        }
    }

    /// Checks that `perm` is a permutation of `0..dim` (an empty `perm` means `P = I`).
    pub fn validate(&self) -> Result<(), PermutationError> {
        if self.perm.is_empty() && self.dim > 0 {
            return Ok(());
        }
        if self.perm.len() != self.dim {
            return Err(PermutationError::WrongLength {
                expected: self.dim,
                got: self.perm.len(),
            });
        }
        validate_permutation(&self.perm)
    }
}

/// Index of `(i, j)`, `j < i`, in the packed strictly-lower part (row-major).
#[inline]
fn lower_idx(i: usize, j: usize) -> usize {
    i * (i - 1) / 2 + j
}

/// Index of `(i, j)`, `j > i`, in the packed strictly-upper part (row-major) of a `d x d` matrix.
#[inline]
fn upper_idx(d: usize, i: usize, j: usize) -> usize {
    i * (d - 1) - i * (i.saturating_sub(1)) / 2 + (j - i - 1)
}

/// Number of `d x d` scratch matrices the training passes keep in their tape (so that a warm
/// training step allocates nothing): `L`, `U~ = U + diag(s)`, `A = L U~`, `W`, a transpose
/// (`W^T` forward, `U~^T` backward, so that every product reads contiguous rows), and the backward
/// pass's `dW`, `dA`, `dL`, `dU~`.
const SCRATCH: usize = 9;

/// The tape's [`SCRATCH`] matrices, reshaped to `d x d` and zero-filled (like fresh buffers).
fn scratch<T: Real>(tape: &mut Tape<T>, d: usize) -> &mut [Matrix<T>; SCRATCH] {
    for i in 0..SCRATCH {
        tape.mat(i, d, d).as_mut_slice().fill(T::zero());
    }
    (&mut tape.mats[..SCRATCH])
        .try_into()
        .expect("every scratch slot exists")
}

/// Orthonormalises the columns of a square matrix (modified Gram-Schmidt, applied twice).
fn orthonormalize(a: &mut [f64], d: usize) {
    for c in 0..d {
        for _ in 0..2 {
            for p in 0..c {
                let dot: f64 = (0..d).map(|r| a[r * d + c] * a[r * d + p]).sum();
                for r in 0..d {
                    a[r * d + c] -= dot * a[r * d + p];
                }
            }
        }
        let norm: f64 = (0..d).map(|r| a[r * d + c].powi(2)).sum::<f64>().sqrt();
        for r in 0..d {
            a[r * d + c] /= norm;
        }
    }
}

/// LU with partial pivoting in place: afterwards the strictly lower part of `a` holds `L` and the
/// upper part (with diagonal) holds `U`. `None` when a pivot is below `1e-12` or not finite.
fn lu_partial_pivot(a: &mut [f64], d: usize) -> Option<()> {
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))?;
        if p != c {
            for k in 0..d {
                a.swap(c * d + k, p * d + k);
            }
        }
        let piv = a[c * d + c];
        if piv.abs() < 1e-12 || !piv.is_finite() {
            return None;
        }
        for r in c + 1..d {
            let f = a[r * d + c] / piv;
            a[r * d + c] = f;
            for k in c + 1..d {
                a[r * d + k] -= f * a[c * d + k];
            }
        }
    }
    Some(())
}

/// Glow LU linear layer `z = P L (U + diag(exp(log_s))) x`.
#[derive(Clone, Debug)]
pub struct LuLinear<T> {
    config: LuLinearConfig,
    /// Strictly-lower part of `L`, packed row-major, `d (d - 1) / 2` values.
    lower: Param<T>,
    /// Strictly-upper part of `U`, packed row-major, `d (d - 1) / 2` values.
    upper: Param<T>,
    /// `log s`, `d` values.
    log_s: Param<T>,
    /// `W^{-T}` for the evaluation inverse, built lazily (see [`LuLinear::cached_inverse`]) and
    /// emptied by [`Transform::params_mut`].
    inverse_t: OnceLock<Option<Vec<T>>>,
}

impl<T: Real> LuLinear<T> {
    /// A new layer initialised to a random orthogonal `W0` (see the module documentation).
    /// An invalid `perm` (see [`LuLinearConfig::validate`], which loaders should call first) is
    /// replaced by the identity instead of panicking.
    pub fn new(mut config: LuLinearConfig, rng: &mut Rng) -> Self {
        let d = config.dim;
        if config.validate().is_err() || config.perm.is_empty() {
            config.perm = (0..d).collect();
        }
        let m = d * d.saturating_sub(1) / 2;
        let mut lower = vec![0.0; m];
        let mut upper = vec![0.0; m];
        let mut log_s = vec![0.0; d];
        let mut a: Vec<f64> = (0..d * d).map(|_| rng.normal()).collect();
        orthonormalize(&mut a, d);
        if a.iter().all(|v| v.is_finite()) && lu_partial_pivot(&mut a, d).is_some() {
            for i in 0..d {
                for j in 0..i {
                    lower[lower_idx(i, j)] = a[i * d + j];
                }
                // Column signs D = diag(sign(u_jj)) make every diagonal entry positive.
                log_s[i] = a[i * d + i].abs().ln();
                for j in i + 1..d {
                    upper[upper_idx(d, i, j)] = a[i * d + j] * a[j * d + j].signum();
                }
            }
        }
        let cast = |v: Vec<f64>| v.into_iter().map(T::c).collect::<Vec<T>>();
        Self {
            lower: Param::new("lower", vec![m], cast(lower)),
            upper: Param::new("upper", vec![m], cast(upper)),
            log_s: Param::new("log_s", vec![d], cast(log_s)),
            inverse_t: OnceLock::new(),
            config,
        }
    }

    /// Writes `L` and `U + diag(s)` into the zero-filled `d x d` buffers `l` and `u`.
    fn dense_factors_into(&self, l: &mut [T], u: &mut [T]) {
        let d = self.config.dim;
        for i in 0..d {
            l[i * d + i] = T::one();
            for j in 0..i {
                l[i * d + j] = self.lower.data[lower_idx(i, j)];
            }
            u[i * d + i] = self.log_s.data[i].exp();
            for j in i + 1..d {
                u[i * d + j] = self.upper.data[upper_idx(d, i, j)];
            }
        }
    }

    /// The dense weight `W = P L (U + diag(s))`, row-major `d x d`.
    pub fn weight(&self) -> Vec<T> {
        let mut tape = Tape::default();
        let [l, u, a, w, ..] = scratch(&mut tape, self.config.dim);
        self.weight_into(l, u, a, w);
        w.as_slice().to_vec()
    }

    /// Fills `l`, `u` with the dense factors, `a` with `L U~` and `w` with `W = P A`
    /// (all `d x d`, zero-filled on entry).
    fn weight_into(
        &self,
        l: &mut Matrix<T>,
        u: &mut Matrix<T>,
        a: &mut Matrix<T>,
        w: &mut Matrix<T>,
    ) {
        let d = self.config.dim;
        self.dense_factors_into(l.as_mut_slice(), u.as_mut_slice());
        gemm_nn(
            d,
            d,
            d,
            T::one(),
            l.as_slice(),
            u.as_slice(),
            T::zero(),
            a.as_mut_slice(),
        );
        for i in 0..d {
            let p = self.config.perm[i];
            w.row_mut(i).copy_from_slice(a.row(p));
        }
    }

    /// `W^{-T}` (row-major `d x d`) for the current parameters, computed on first use after a
    /// change and kept until the next one; `None` when it is not finite in `T`.
    ///
    /// The parameter fields are private, and the only mutable access to them from outside this
    /// file is [`Transform::params_mut`] (optimizer steps, `set_param_vector`, loading), which
    /// empties this cache: it cannot go stale. It is shared by every thread; building it is the
    /// only allocation, so warm evaluation passes with unchanged parameters allocate nothing.
    ///
    /// `W^{-1}` is computed in `f64` column by column by the module's two triangular solves
    /// (`W x = e_j`) and rounded once to `T`, so the GEMM inverse differs from the scalar solves
    /// only by the rounding of `W^{-1}` and of the product (see the test
    /// `gemm_inverse_matches_f64_solves_on_conditioned_factors`).
    fn cached_inverse(&self) -> Option<&[T]> {
        self.inverse_t
            .get_or_init(|| {
                let d = self.config.dim;
                let mut inv_t = vec![T::zero(); d * d];
                self.inverse_transpose_f64_into(&mut inv_t);
                inv_t.iter().all(|v| v.is_finite()).then_some(inv_t)
            })
            .as_deref()
    }

    /// Writes `W^{-T}` into `out` (`d x d` row-major): row `j` is `W^{-1} e_j`, solved in `f64`.
    fn inverse_transpose_f64_into(&self, out: &mut [T]) {
        let d = self.config.dim;
        let f = |v: T| v.to_f64().unwrap_or(f64::NAN);
        let s: Vec<f64> = self.log_s.data.iter().map(|&v| f(v).exp()).collect();
        let mut v = vec![0.0f64; d];
        for j in 0..d {
            // w = P^T e_j: w_{perm[j]} = 1.
            v.fill(0.0);
            v[self.config.perm[j]] = 1.0;
            // L v = w (unit lower), in place.
            for i in 0..d {
                let mut acc = v[i];
                for k in 0..i {
                    acc -= f(self.lower.data[lower_idx(i, k)]) * v[k];
                }
                v[i] = acc;
            }
            // (U + diag(s)) x = v, in place.
            for i in (0..d).rev() {
                let mut acc = v[i];
                for k in i + 1..d {
                    acc -= f(self.upper.data[upper_idx(d, i, k)]) * v[k];
                }
                v[i] = acc / s[i];
            }
            for (o, &vi) in out[j * d..(j + 1) * d].iter_mut().zip(&v) {
                *o = T::c(vi);
            }
        }
    }

    /// `x = W^{-1} z` per event by two triangular solves in `T` (scratch slots 0 and 1 hold `L`
    /// and `U + diag(s)`, slot 2 one permuted row): the fallback when `W^{-1}` is not finite in
    /// `T`, and the reference of the tests.
    fn inverse_by_solves(&self, y: &Matrix<T>, x: &mut Matrix<T>, scratch: &mut Tape<T>) {
        let d = self.config.dim;
        let n = y.rows();
        let mut lm = std::mem::take(scratch.mat(0, d, d));
        let mut um = std::mem::take(scratch.mat(1, d, d));
        let mut vm = std::mem::take(scratch.mat(2, 1, d));
        lm.as_mut_slice().fill(T::zero());
        um.as_mut_slice().fill(T::zero());
        self.dense_factors_into(lm.as_mut_slice(), um.as_mut_slice());
        let (l, u, v) = (lm.as_slice(), um.as_slice(), vm.as_mut_slice());
        x.resize(n, d);
        for r in 0..n {
            let yr = y.row(r);
            // w = P^T z: w_{perm[i]} = z_i.
            for (i, &p) in self.config.perm.iter().enumerate() {
                v[p] = yr[i];
            }
            // L v = w (unit lower), in place.
            for i in 0..d {
                let mut acc = v[i];
                for j in 0..i {
                    acc -= l[i * d + j] * v[j];
                }
                v[i] = acc;
            }
            // (U + diag(s)) x = v, back substitution.
            let xr = x.row_mut(r);
            for i in (0..d).rev() {
                let mut acc = v[i];
                for j in i + 1..d {
                    acc -= u[i * d + j] * xr[j];
                }
                xr[i] = acc / u[i * d + i];
            }
        }
        *scratch.mat(0, 0, 0) = lm;
        *scratch.mat(1, 0, 0) = um;
        *scratch.mat(2, 0, 0) = vm;
    }

    /// `sum_i log s_i`.
    fn log_det(&self) -> T {
        self.log_s.data.iter().copied().sum()
    }
}

impl<T: Real> Transform<T> for LuLinear<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::LuLinear(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        vec![&self.lower, &self.upper, &self.log_s]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        // The caller may change any value: the cached inverse is rebuilt on next use.
        self.inverse_t = OnceLock::new();
        vec![&mut self.lower, &mut self.upper, &mut self.log_s]
    }

    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]) {
        self.forward_train(x, ctx, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.inverse_reusing(y, ctx, x, ladj, &mut Tape::default());
    }

    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.forward_train(x, ctx, y, ladj, scratch);
    }

    /// `X = Z W^{-T}` as one GEMM over the chunk, with `W^{-1}` cached in the layer (see
    /// [`LuLinear::cached_inverse`]); the triangular solves when that inverse is not finite.
    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let n = y.rows();
        if let Some(inv_t) = self.cached_inverse() {
            x.resize(n, d);
            gemm_nn(
                n,
                d,
                d,
                T::one(),
                y.as_slice(),
                inv_t,
                T::zero(),
                x.as_mut_slice(),
            );
        } else {
            self.inverse_by_solves(y, x, scratch);
        }
        let ld = self.log_det();
        for l in ladj.iter_mut().take(n) {
            *l -= ld;
        }
    }

    fn forward_train(
        &self,
        x: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    ) {
        let d = self.config.dim;
        let n = x.rows();
        let [l, u, a, w, wt, ..] = scratch(tape, d);
        self.weight_into(l, u, a, w);
        w.transpose_into(wt);
        y.resize(n, d);
        // Z = X W^T (one event per row).
        gemm_nn(
            n,
            d,
            d,
            T::one(),
            x.as_slice(),
            wt.as_slice(),
            T::zero(),
            y.as_mut_slice(),
        );
        let ld = self.log_det();
        for li in ladj.iter_mut().take(n) {
            *li += ld;
        }
    }

    fn backward(
        &self,
        x: &Matrix<T>,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        grads: &mut [T],
    ) {
        let d = self.config.dim;
        let n = x.rows();
        let m = d * d.saturating_sub(1) / 2;
        let [l, u, a, w, ut, dw, da, dl, du] = scratch(tape, d);
        self.weight_into(l, u, a, w);
        // dX = dZ W.
        dx.resize(n, d);
        gemm_nn(
            n,
            d,
            d,
            T::one(),
            dy.as_slice(),
            w.as_slice(),
            T::zero(),
            dx.as_mut_slice(),
        );
        // dW = dZ^T X, then dA with A = L U~ and W = P A: dA_{perm[i], :} = dW_{i, :}.
        gemm_tn(
            d,
            n,
            d,
            T::one(),
            dy.as_slice(),
            x.as_slice(),
            T::zero(),
            dw.as_mut_slice(),
        );
        for i in 0..d {
            let p = self.config.perm[i];
            da.row_mut(p).copy_from_slice(dw.row(i));
        }
        // dL = dA U~^T, dU~ = L^T dA.
        u.transpose_into(ut);
        gemm_nn(
            d,
            d,
            d,
            T::one(),
            da.as_slice(),
            ut.as_slice(),
            T::zero(),
            dl.as_mut_slice(),
        );
        gemm_tn(
            d,
            d,
            d,
            T::one(),
            l.as_slice(),
            da.as_slice(),
            T::zero(),
            du.as_mut_slice(),
        );
        let (u, dl, du) = (u.as_slice(), dl.as_slice(), du.as_slice());
        let sum_dladj: T = dladj.iter().copied().sum();
        let (gl, rest) = grads.split_at_mut(m);
        let (gu, gs) = rest.split_at_mut(m);
        for i in 0..d {
            for j in 0..i {
                gl[lower_idx(i, j)] += dl[i * d + j];
            }
            for j in i + 1..d {
                gu[upper_idx(d, i, j)] += du[i * d + j];
            }
            // s_i = exp(log_s_i): d s / d log_s = s; d ladj / d log_s_i = 1 per row.
            gs[i] += du[i * d + i] * u[i * d + i] + sum_dladj;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::testing::{CheckOptions, check_transform, check_transform_f32};

    #[test]
    fn packed_indices_cover_each_slot_once() {
        for d in 1..7 {
            let m = d * (d - 1) / 2;
            let mut lo = vec![0; m];
            let mut up = vec![0; m];
            for i in 0..d {
                for j in 0..i {
                    lo[lower_idx(i, j)] += 1;
                }
                for j in i + 1..d {
                    up[upper_idx(d, i, j)] += 1;
                }
            }
            assert!(lo.iter().all(|&c| c == 1) && up.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn initial_weight_is_orthogonal_for_any_permutation() {
        let mut rng = Rng::new(21);
        for perm_seed in 0..4 {
            let cfg = LuLinearConfig::random(6, &mut Rng::new(perm_seed));
            let t = LuLinear::<f64>::new(cfg, &mut rng);
            let w = t.weight();
            for i in 0..6 {
                for j in 0..6 {
                    let dot: f64 = (0..6).map(|k| w[k * 6 + i] * w[k * 6 + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "W^T W [{i},{j}] = {dot}");
                }
            }
            // |det W| = 1, so sum log s = 0.
            assert!(t.log_det().abs() < 1e-12);
            assert!(t.lower.data.iter().all(|v| v.abs() <= 1.0 + 1e-12));
        }
    }

    #[test]
    fn passes_all_checks() {
        let mut rng = Rng::new(4);
        let cfg = LuLinearConfig::random(5, &mut rng);
        // Keep the initial (orthogonal) weights.
        let keep = CheckOptions {
            param_scale: 0.0,
            ..CheckOptions::default()
        };
        check_transform(Box::new(LuLinear::<f64>::new(cfg.clone(), &mut rng)), &keep);
        // Random L, U, log s.
        check_transform(
            Box::new(LuLinear::<f64>::new(cfg.clone(), &mut rng)),
            &CheckOptions::default(),
        );
        check_transform_f32(
            Box::new(LuLinear::<f32>::new(cfg, &mut rng)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn forward_matches_dense_product_and_logdet() {
        let mut rng = Rng::new(8);
        let cfg = LuLinearConfig {
            dim: 3,
            perm: vec![2, 0, 1],
        };
        let mut t = LuLinear::<f64>::new(cfg, &mut rng);
        t.lower.data = vec![0.5, -0.25, 2.0];
        t.upper.data = vec![1.0, -1.0, 0.5];
        t.log_s.data = vec![0.1, -0.2, 0.3];
        // L U~ by hand.
        let l = [[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [-0.25, 2.0, 1.0]];
        let s = [0.1f64.exp(), (-0.2f64).exp(), 0.3f64.exp()];
        let u = [[s[0], 1.0, -1.0], [0.0, s[1], 0.5], [0.0, 0.0, s[2]]];
        let x = [0.3, -1.2, 2.5];
        let ux: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|k| u[i][k] * x[k]).sum())
            .collect();
        let lux: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|k| l[i][k] * ux[k]).sum())
            .collect();
        let want = [lux[2], lux[0], lux[1]];
        let xm = Matrix::from_vec(1, 3, x.to_vec()).unwrap();
        let mut z = Matrix::zeros(0, 0);
        let mut ld = vec![0.0];
        t.forward(&xm, None, &mut z, &mut ld);
        for (i, w) in want.iter().enumerate() {
            assert!((z.get(0, i) - w).abs() < 1e-12);
        }
        assert!((ld[0] - 0.2).abs() < 1e-12);
    }

    /// A `d`-feature layer in `f32` with random factors: `lower`, `upper` uniform in
    /// `[-spread, spread]`, `log_s` uniform in `[-log_range, log_range]`, and the same values in
    /// `f64`.
    fn random_pair(
        d: usize,
        spread: f64,
        log_range: f64,
        rng: &mut Rng,
    ) -> (LuLinear<f32>, LuLinear<f64>) {
        let cfg = LuLinearConfig::random(d, rng);
        let mut t32 = LuLinear::<f32>::new(cfg.clone(), rng);
        let mut t64 = LuLinear::<f64>::new(cfg, rng);
        let mut draw = |p: &mut Param<f32>, q: &mut Param<f64>, r: f64| {
            for (a, b) in p.data.iter_mut().zip(q.data.iter_mut()) {
                *a = (r * (2.0 * rng.uniform() - 1.0)) as f32;
                *b = f64::from(*a);
            }
        };
        draw(&mut t32.lower, &mut t64.lower, spread);
        draw(&mut t32.upper, &mut t64.upper, spread);
        draw(&mut t32.log_s, &mut t64.log_s, log_range);
        (t32, t64)
    }

    /// `||W||_inf ||W^{-1}||_inf` in `f64`.
    fn condition(t: &LuLinear<f64>) -> f64 {
        let d = t.config.dim;
        let norm = |m: &[f64]| {
            (0..d)
                .map(|i| m[i * d..(i + 1) * d].iter().map(|v| v.abs()).sum::<f64>())
                .fold(0.0, f64::max)
        };
        let mut inv_t = vec![0.0; d * d];
        t.inverse_transpose_f64_into(&mut inv_t);
        let mut inv = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                inv[i * d + j] = inv_t[j * d + i];
            }
        }
        norm(&t.weight()) * norm(&inv)
    }

    /// Largest row-wise `||a - b||_inf / ||b||_inf`.
    fn rel_err(a: &Matrix<f32>, b: &Matrix<f64>) -> f64 {
        (0..b.rows())
            .map(|r| {
                let scale = b.row(r).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let diff = a
                    .row(r)
                    .iter()
                    .zip(b.row(r))
                    .fold(0.0f64, |m, (&x, &y)| m.max((f64::from(x) - y).abs()));
                diff / scale
            })
            .fold(0.0, f64::max)
    }

    /// The GEMM inverse (f32) against the triangular solves in f64, on well-conditioned,
    /// moderately and badly ill-conditioned factors (condition numbers about 1e1 to 1e7), for base samples `z` and for round trips `W^{-1} W x`:
    /// its error stays within a small multiple of the f32 triangular solves' own error and of
    /// `d * cond(W) * eps`.
    #[test]
    fn gemm_inverse_matches_f64_solves_on_conditioned_factors() {
        let mut rng = Rng::new(17);
        let eps = f64::from(f32::EPSILON);
        for &d in &[18, 28] {
            for &(spread, log_range) in &[(0.3, 0.5), (0.6, 2.0), (1.0, 3.0)] {
                let (t32, t64) = random_pair(d, spread, log_range, &mut rng);
                let cond = condition(&t64);
                let n = 64;
                let x0 = Matrix::from_fn(n, d, |_, _| rng.normal() as f32);
                let mut z_fwd = Matrix::zeros(0, 0);
                t32.forward(&x0, None, &mut z_fwd, &mut vec![0.0; n]);
                let z_base = Matrix::from_fn(n, d, |_, _| rng.normal() as f32);
                for z in [&z_base, &z_fwd] {
                    let z64 = Matrix::from_fn(n, d, |r, c| f64::from(z.get(r, c)));
                    let mut want = Matrix::zeros(0, 0);
                    t64.inverse_by_solves(&z64, &mut want, &mut Tape::default());
                    let mut by_gemm = Matrix::zeros(0, 0);
                    let mut ladj = vec![0.0f32; n];
                    let mut tape = Tape::default();
                    t32.inverse_reusing(z, None, &mut by_gemm, &mut ladj, &mut tape);
                    assert!(t32.cached_inverse().is_some(), "the GEMM path ran");
                    let mut by_solves = Matrix::zeros(0, 0);
                    t32.inverse_by_solves(z, &mut by_solves, &mut Tape::default());
                    let (eg, es) = (rel_err(&by_gemm, &want), rel_err(&by_solves, &want));
                    eprintln!("d {d} cond {cond:.3e}: gemm {eg:.3e} solves {es:.3e}");
                    assert!(
                        eg <= (4.0 * es).max(d as f64 * cond * eps),
                        "d {d}, cond {cond:.3e}: GEMM error {eg:.3e}, solves {es:.3e}"
                    );
                    if cond < 1e4 {
                        assert!(eg < 1e-4, "d {d}, cond {cond:.3e}: GEMM error {eg:.3e}");
                    }
                    let ld = -t32.log_det();
                    assert!(ladj.iter().all(|&l| l == ld));
                }
            }
        }
    }

    /// The cached inverse follows every change of the parameters (through `params_mut`, as the
    /// optimizer and the loader write them), with a forward pass on the same tape in between.
    #[test]
    fn cached_inverse_follows_parameter_changes() {
        let mut rng = Rng::new(5);
        let (mut t, _) = random_pair(7, 0.5, 1.0, &mut rng);
        let z = Matrix::from_fn(9, 7, |_, _| rng.normal() as f32);
        let mut tape = Tape::default();
        let mut ladj = vec![0.0f32; 9];
        let (mut x, mut y, mut fresh) = (
            Matrix::zeros(0, 0),
            Matrix::zeros(0, 0),
            Matrix::zeros(0, 0),
        );
        for step in 0..3 {
            t.inverse_reusing(&z, None, &mut x, &mut ladj, &mut tape);
            t.inverse_reusing(&z, None, &mut fresh, &mut ladj, &mut Tape::default());
            assert_eq!(x.as_slice(), fresh.as_slice(), "step {step}");
            // A forward pass on the same tape must not disturb the cache.
            t.forward_reusing(&x, None, &mut y, &mut ladj, &mut tape);
            t.inverse_reusing(&z, None, &mut x, &mut ladj, &mut tape);
            assert_eq!(x.as_slice(), fresh.as_slice(), "step {step} after forward");
            for p in t.params_mut() {
                for v in p.data.iter_mut() {
                    *v += 0.01 * (step as f32 + 1.0);
                }
            }
        }
        // Changing a single value is enough.
        t.inverse_reusing(&z, None, &mut x, &mut ladj, &mut tape);
        t.params_mut()[2].data[3] += 0.125;
        t.inverse_reusing(&z, None, &mut x, &mut ladj, &mut tape);
        t.inverse_reusing(&z, None, &mut fresh, &mut ladj, &mut Tape::default());
        assert_eq!(x.as_slice(), fresh.as_slice());
    }

    #[test]
    fn invalid_config_is_reported_and_replaced() {
        let bad = LuLinearConfig {
            dim: 3,
            perm: vec![0, 1],
        };
        assert!(matches!(
            bad.validate(),
            Err(PermutationError::WrongLength {
                expected: 3,
                got: 2
            })
        ));
        let t = LuLinear::<f64>::new(bad, &mut Rng::new(1));
        match t.spec() {
            LayerSpec::LuLinear(c) => assert_eq!(c.perm, vec![0, 1, 2]),
            other => panic!("unexpected spec {other:?}"),
        }
    }
}
