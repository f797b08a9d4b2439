//! STUB: to be implemented.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Tape};
use serde::{Deserialize, Serialize};

/// Shape of a batch-norm flow layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchNormConfig {
    /// Number of features.
    pub dim: usize,
    /// Momentum `rho` of the running averages: `running = rho * running + (1 - rho) * batch`.
    pub momentum: f64,
    /// Variance guard `epsilon`.
    pub eps: f64,
}

/// STUB
#[derive(Clone, Debug)]
pub struct BatchNorm<T> {
    config: BatchNormConfig,
    _p: Vec<Param<T>>,
}

impl<T: Real> BatchNorm<T> {
    /// STUB
    pub fn new(config: BatchNormConfig) -> Self {
        Self {
            config,
            _p: Vec::new(),
        }
    }
}

impl<T: Real> Transform<T> for BatchNorm<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::BatchNorm(self.config.clone())
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
