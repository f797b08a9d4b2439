//! STUB: to be implemented.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Rng, Tape};
use serde::{Deserialize, Serialize};

/// Shape of a MAF layer (affine autoregressive transform with a MADE conditioner).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MafConfig {
    /// Number of features.
    pub dim: usize,
    /// Hidden widths of the MADE network.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Autoregressive order: feature `order[k]` is the k-th to be generated.
    pub order: Vec<usize>,
    /// Soft-clamp bound of the log-scale.
    #[serde(default = "default_clamp")]
    pub scale_clamp: f64,
}

fn default_clamp() -> f64 {
    3.0
}

/// STUB
#[derive(Clone, Debug)]
pub struct Maf<T> {
    config: MafConfig,
    _p: Vec<Param<T>>,
}

impl<T: Real> Maf<T> {
    /// STUB
    pub fn new(config: MafConfig, _rng: &mut Rng) -> Self {
        Self {
            config,
            _p: Vec::new(),
        }
    }
}

impl<T: Real> Transform<T> for Maf<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Maf(self.config.clone())
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
