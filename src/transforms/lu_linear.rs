//! STUB: to be implemented.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Rng, Tape};
use serde::{Deserialize, Serialize};

/// Shape of an LU linear layer `W = P L (U + diag(s))`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LuLinearConfig {
    /// Number of features.
    pub dim: usize,
    /// The fixed permutation `P` as row indices: `(P v)_i = v_{perm[i]}`.
    pub perm: Vec<usize>,
}

/// STUB
#[derive(Clone, Debug)]
pub struct LuLinear<T> {
    config: LuLinearConfig,
    _p: Vec<Param<T>>,
}

impl<T: Real> LuLinear<T> {
    /// STUB
    pub fn new(config: LuLinearConfig, _rng: &mut Rng) -> Self {
        Self {
            config,
            _p: Vec::new(),
        }
    }
}

impl<T: Real> Transform<T> for LuLinear<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::LuLinear(self.config.clone())
    }
    fn dim(&self) -> usize {
        unimplemented!()
    }
    fn params(&self) -> Vec<&Param<T>> {
        unimplemented!()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        unimplemented!()
    }
    fn forward(
        &self,
        _x: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _y: &mut Matrix<T>,
        _ladj: &mut [T],
    ) {
        unimplemented!()
    }
    fn inverse(
        &self,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _x: &mut Matrix<T>,
        _ladj: &mut [T],
    ) {
        unimplemented!()
    }
    fn forward_train(
        &self,
        _x: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _y: &mut Matrix<T>,
        _ladj: &mut [T],
        _tape: &mut Tape<T>,
    ) {
        unimplemented!()
    }
    fn backward(
        &self,
        _x: &Matrix<T>,
        _y: &Matrix<T>,
        _ctx: Option<&Matrix<T>>,
        _tape: &mut Tape<T>,
        _dy: &Matrix<T>,
        _dladj: &[T],
        _dx: &mut Matrix<T>,
        _grads: &mut [T],
    ) {
        unimplemented!()
    }
}
