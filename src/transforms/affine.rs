//! The elementwise affine bijection of RealNVP and MAF, with a soft-clamped log-scale.
//!
//! Parameters per feature: a raw log-scale `r` and a shift `t`. With the soft clamp
//! `s = a tanh(r / a)` (`a` = 3 by default, so every scale lies in `[e^-a, e^a]` and gradients stay
//! smooth, and a single bad batch cannot blow up the flow):
//!
//! `z = x exp(s) + t`, `log|dz/dx| = s`; inverse `x = (z - t) exp(-s)`.
//!
//! Gradients: `dz/dx = exp(s)`, `dz/dt = 1`, `dz/ds = x exp(s)`, `d log|dz/dx| / ds = 1`, and
//! `ds/dr = 1 - (s / a)^2`.
//!
//! In a coupling layer ([`super::coupling`]) the conditioner output of a chunk is laid out as all
//! raw log-scales first, then all shifts (`h = [r_1..r_B, t_1..t_B]`), as in the model files.

use super::Direction;
use super::coupling::Elementwise;
use crate::engine::{Matrix, Real};

/// The soft-clamped elementwise affine map (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Soft-clamp bound `a` of the log-scale.
    pub clamp: f64,
}

impl Affine {
    /// The clamped log-scale `s = a tanh(r / a)` of one raw conditioner output (scalar form, for
    /// the autoregressive [`super::Maf`], which evaluates one feature at a time).
    #[inline]
    pub fn log_scale<T: Real>(&self, r: T) -> T {
        let a = T::c(self.clamp);
        a * (r / a).tanh()
    }

    /// `z = x exp(s) + t`.
    #[inline]
    pub fn forward<T: Real>(x: T, s: T, t: T) -> T {
        x * s.exp() + t
    }

    /// `x = (z - t) exp(-s)`.
    #[inline]
    pub fn inverse<T: Real>(z: T, s: T, t: T) -> T {
        (z - t) * (-s).exp()
    }

    /// [`Affine::forward`] (or [`Affine::inverse`] when `inverse`) with `e = exp(s)` (or
    /// `exp(-s)`) already computed: `x e + t`, or `(z - t) e`.
    #[inline]
    fn map_scaled<T: Real>(v: T, e: T, t: T, inverse: bool) -> T {
        if inverse { (v - t) * e } else { v * e + t }
    }

    /// `ds/dr = 1 - (s / a)^2` at the clamped log-scale `s`.
    #[inline]
    pub fn dlog_scale<T: Real>(&self, s: T) -> T {
        T::one() - s * s / T::c(self.clamp * self.clamp)
    }
}

impl<T: Real> Elementwise<T> for Affine {
    fn n_params(&self) -> usize {
        2
    }

    /// Cache: slot 0 the clamped log-scales `s`, slot 1 `exp(+-s)` (`n x |B|`).
    fn apply(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        dir: Direction,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        cache: &mut [Matrix<T>],
    ) {
        let inverse = dir.inverse();
        let (n, ntr) = (h.rows(), tr.len());
        let [s, es] = cache else {
            unreachable!("the coupling layer passes two cache slots")
        };
        s.resize(n, ntr);
        for i in 0..n {
            s.row_mut(i).copy_from_slice(&h.row(i)[..ntr]);
        }
        T::soft_clamp_in_place(s.as_mut_slice(), T::c(self.clamp));
        es.resize(n, ntr);
        let sign = if inverse { -T::one() } else { T::one() };
        for (e, v) in es.as_mut_slice().iter_mut().zip(s.as_slice()) {
            *e = sign * *v;
        }
        T::exp_in_place(es.as_mut_slice());
        for (i, l) in ladj.iter_mut().enumerate().take(n) {
            let t = &h.row(i)[ntr..];
            let (sr, er) = (s.row(i), es.row(i));
            let o = y.row_mut(i);
            let mut acc = T::zero();
            for (j, &d) in tr.iter().enumerate() {
                o[d] = Affine::map_scaled(o[d], er[j], t[j], inverse);
                acc += sr[j];
            }
            if inverse {
                *l -= acc;
            } else {
                *l += acc;
            }
        }
    }

    fn feature_major(&self) -> bool {
        true
    }

    /// `h` rows `0..|B|` are the raw log-scales (clamped and exponentiated in place), rows
    /// `|B|..2|B|` the shifts; every element sees the operations of [`Affine::apply`] in the same
    /// order (each event's log-determinant summed over `j` from zero, then added).
    fn apply_feature_major(
        &self,
        h: &mut Matrix<T>,
        tr: &[usize],
        dir: Direction,
        y: &mut [T],
        ladj: &mut [T],
    ) {
        let inverse = dir.inverse();
        let (n, ntr) = (h.cols(), tr.len());
        if n == 0 {
            return;
        }
        let (s, t) = h.as_mut_slice().split_at_mut(ntr * n);
        T::soft_clamp_in_place(s, T::c(self.clamp));
        // Each event's sum over j from zero, 64 events at a time, then added to its ladj.
        const BLOCK: usize = 64;
        for (b, lb) in ladj[..n].chunks_mut(BLOCK).enumerate() {
            let i0 = b * BLOCK;
            let mut acc = [T::zero(); BLOCK];
            for sj in s.chunks_exact(n) {
                for (a, v) in acc.iter_mut().zip(&sj[i0..i0 + lb.len()]) {
                    *a += *v;
                }
            }
            for (l, a) in lb.iter_mut().zip(acc) {
                if inverse {
                    *l -= a;
                } else {
                    *l += a;
                }
            }
        }
        let sign = if inverse { -T::one() } else { T::one() };
        for v in s.iter_mut() {
            *v = sign * *v;
        }
        T::exp_in_place(s);
        let d = y.len() / n;
        for ((&c, ej), tj) in tr.iter().zip(s.chunks_exact(n)).zip(t.chunks_exact(n)) {
            for ((o, e), t) in y.chunks_exact_mut(d).zip(ej).zip(tj) {
                o[c] = Affine::map_scaled(o[c], *e, *t, inverse);
            }
        }
    }

    fn backward(
        &self,
        x: &Matrix<T>,
        _h: &Matrix<T>,
        tr: &[usize],
        cache: &[Matrix<T>],
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        dh: &mut Matrix<T>,
    ) {
        let ntr = tr.len();
        let inv_a2 = T::one() / T::c(self.clamp * self.clamp);
        let (s, es) = (&cache[0], &cache[1]);
        for i in 0..x.rows() {
            let (sr, er) = (s.row(i), es.row(i));
            let xr = x.row(i);
            let dyr = dy.row(i);
            let dxr = dx.row_mut(i);
            let dhr = dh.row_mut(i);
            for (j, &d) in tr.iter().enumerate() {
                dxr[d] = dyr[d] * er[j];
                let ds = dyr[d] * xr[d] * er[j] + dladj[i];
                dhr[j] = ds * (T::one() - sr[j] * sr[j] * inv_a2);
                dhr[ntr + j] = dyr[d];
            }
        }
    }
}
