//! Fixed feature permutation: `y_j = x_{perm[j]}`.
//!
//! A permutation matrix has `|det| = 1`, so `log|det dy/dx| = 0`; the inverse is
//! `x_{perm[j]} = y_j`. There are no trainable parameters. Used between coupling layers so that
//! every feature is eventually transformed (the seminar's "reverse the ordering" trick, or a
//! seeded random shuffle).

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Rng, Tape};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a permutation vector is not a permutation of `0..n`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PermutationError {
    /// An entry is `>= n`.
    #[error("permutation entry {value} at position {position} is out of range 0..{len}")]
    OutOfRange {
        /// Position in the vector.
        position: usize,
        /// The offending value.
        value: usize,
        /// Length of the vector.
        len: usize,
    },
    /// An index appears twice.
    #[error("permutation entry {value} appears more than once")]
    Duplicate {
        /// The repeated value.
        value: usize,
    },
    /// The vector does not have the layer's number of features.
    #[error("permutation has {got} entries but the layer has {expected} features")]
    WrongLength {
        /// The layer's number of features.
        expected: usize,
        /// Length of the vector.
        got: usize,
    },
}

/// Checks that `perm` is a permutation of `0..perm.len()`.
pub fn validate_permutation(perm: &[usize]) -> Result<(), PermutationError> {
    let n = perm.len();
    let mut seen = vec![false; n];
    for (position, &value) in perm.iter().enumerate() {
        if value >= n {
            return Err(PermutationError::OutOfRange {
                position,
                value,
                len: n,
            });
        }
        if seen[value] {
            return Err(PermutationError::Duplicate { value });
        }
        seen[value] = true;
    }
    Ok(())
}

/// Fixed permutation: `y_j = x_{perm[j]}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PermutationConfig {
    /// `y_j = x_{perm[j]}`.
    pub perm: Vec<usize>,
}

impl PermutationConfig {
    /// The reversal `perm = [dim-1, ..., 1, 0]` (`y_j = x_{D-1-j}`).
    pub fn reverse(dim: usize) -> Self {
        Self {
            perm: (0..dim).rev().collect(),
        }
    }

    /// A uniformly random permutation of `0..dim` drawn from `rng` (Fisher-Yates).
    pub fn random(dim: usize, rng: &mut Rng) -> Self {
        Self {
            perm: rng.permutation(dim),
        }
    }

    /// Checks that `perm` is a permutation of `0..perm.len()`.
    pub fn validate(&self) -> Result<(), PermutationError> {
        validate_permutation(&self.perm)
    }
}

/// Fixed permutation layer `y_j = x_{perm[j]}`, `log|det| = 0`.
#[derive(Clone, Debug)]
pub struct Permutation<T> {
    config: PermutationConfig,
    /// `inv[perm[j]] = j`.
    inv: Vec<usize>,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Real> Permutation<T> {
    /// The layer for `config.perm`. An invalid vector (not a permutation of `0..n`; see
    /// [`PermutationConfig::validate`], which loaders should call first) is replaced by the
    /// identity of the same length instead of panicking.
    pub fn new(mut config: PermutationConfig) -> Self {
        if config.validate().is_err() {
            config.perm = (0..config.perm.len()).collect();
        }
        let mut inv = vec![0; config.perm.len()];
        for (j, &p) in config.perm.iter().enumerate() {
            inv[p] = j;
        }
        Self {
            config,
            inv,
            _marker: std::marker::PhantomData,
        }
    }
}

/// `y_j = x_{idx[j]}` for every row (`y` resized to `x.rows() x idx.len()`): the permutation
/// layer's map, and how an evaluation pass puts columns back in order after running layers in
/// place ([`Transform::run_in_place`]).
pub fn permute_columns<T: Real>(x: &Matrix<T>, y: &mut Matrix<T>, idx: &[usize]) {
    y.resize(x.rows(), idx.len());
    for i in 0..x.rows() {
        let xr = x.row(i);
        let yr = y.row_mut(i);
        for (o, &p) in yr.iter_mut().zip(idx) {
            *o = xr[p];
        }
    }
}

impl<T: Real> Transform<T> for Permutation<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Permutation(self.config.clone())
    }

    fn dim(&self) -> usize {
        self.config.perm.len()
    }

    fn params(&self) -> Vec<&Param<T>> {
        Vec::new()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        Vec::new()
    }

    fn column_map(&self, inverse: bool) -> Option<&[usize]> {
        Some(if inverse {
            &self.inv
        } else {
            &self.config.perm
        })
    }

    fn forward(&self, x: &Matrix<T>, _ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, _ladj: &mut [T]) {
        permute_columns(x, y, &self.config.perm);
    }

    fn inverse(&self, y: &Matrix<T>, _ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, _ladj: &mut [T]) {
        // x_k = y_{inv[k]} since x_{perm[j]} = y_j.
        permute_columns(y, x, &self.inv);
    }

    fn forward_train(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        _tape: &mut Tape<T>,
    ) {
        self.forward(x, ctx, y, ladj);
    }

    fn backward(
        &self,
        _x: &Matrix<T>,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _tape: &mut Tape<T>,
        dy: &Matrix<T>,
        _dladj: &[T],
        dx: &mut Matrix<T>,
        _grads: &mut [T],
    ) {
        // dL/dx_{perm[j]} = dL/dy_j, i.e. dx_k = dy_{inv[k]}.
        permute_columns(dy, dx, &self.inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::testing::{CheckOptions, check_transform, check_transform_f32};

    #[test]
    fn random_permutation_passes_all_checks() {
        let mut rng = Rng::new(5);
        let cfg = PermutationConfig::random(7, &mut rng);
        assert!(cfg.validate().is_ok());
        check_transform(
            Box::new(Permutation::<f64>::new(cfg.clone())),
            &CheckOptions::default(),
        );
        check_transform_f32(
            Box::new(Permutation::<f32>::new(cfg)),
            &CheckOptions::default(),
        );
    }

    #[test]
    fn reverse_maps_features_as_documented() {
        let p = Permutation::<f64>::new(PermutationConfig::reverse(4));
        let x = Matrix::from_vec(2, 4, vec![0., 1., 2., 3., 4., 5., 6., 7.]).unwrap();
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; 2];
        p.forward(&x, None, &mut y, &mut l);
        assert_eq!(y.as_slice(), &[3., 2., 1., 0., 7., 6., 5., 4.]);
        assert_eq!(l, vec![0.0, 0.0]);
        // y_j = x_{perm[j]} for a non-symmetric permutation.
        let p = Permutation::<f64>::new(PermutationConfig {
            perm: vec![2, 0, 3, 1],
        });
        p.forward(&x, None, &mut y, &mut l);
        assert_eq!(y.row(0), &[2., 0., 3., 1.]);
        let mut xr = Matrix::zeros(0, 0);
        p.inverse(&y, None, &mut xr, &mut l);
        assert_eq!(xr, x);
        check_transform(Box::new(p), &CheckOptions::default());
    }

    #[test]
    fn invalid_permutations_are_rejected_without_panicking() {
        let bad = PermutationConfig {
            perm: vec![0, 0, 1],
        };
        assert_eq!(
            bad.validate(),
            Err(PermutationError::Duplicate { value: 0 })
        );
        let oob = PermutationConfig { perm: vec![0, 3] };
        assert!(matches!(
            oob.validate(),
            Err(PermutationError::OutOfRange { value: 3, .. })
        ));
        let p = Permutation::<f64>::new(bad);
        assert_eq!(p.dim(), 3);
        match p.spec() {
            LayerSpec::Permutation(c) => assert_eq!(c.perm, vec![0, 1, 2]),
            other => panic!("unexpected spec {other:?}"),
        }
    }
}
