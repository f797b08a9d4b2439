//! STUB: to be implemented.

use super::{LayerSpec, Param, Transform};
use crate::engine::{Matrix, Real, Rng, Tape};
use serde::{Deserialize, Serialize};

/// Which monotone spline a [`SplineCoupling`] uses.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SplineKind {
    /// Piecewise-linear CDF (piecewise-constant density), Mueller et al. 2019.
    Linear,
    /// Piecewise-quadratic CDF (piecewise-linear density), Mueller et al. 2019.
    Quadratic,
    /// Rational-quadratic spline, Durkan et al. 2019.
    RationalQuadratic,
}

/// Shape of a spline coupling layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplineCouplingConfig {
    /// `mask[d]` is true for transformed features.
    pub mask: Vec<bool>,
    /// Hidden widths of the conditioner MLP.
    pub hidden: Vec<usize>,
    /// Width of the context vector (0 = unconditional).
    #[serde(default)]
    pub context_dim: usize,
    /// Residual connections in the conditioner.
    #[serde(default)]
    pub residual: bool,
    /// The spline family.
    pub kind: SplineKind,
    /// Number of bins `K`.
    pub bins: usize,
    /// The spline acts on `[-B, B]`; identity (or linear) tails outside.
    pub bound: f64,
}

/// STUB
#[derive(Clone, Debug)]
pub struct SplineCoupling<T> {
    config: SplineCouplingConfig,
    _p: Vec<Param<T>>,
}

impl<T: Real> SplineCoupling<T> {
    /// STUB
    pub fn new(config: SplineCouplingConfig, _rng: &mut Rng) -> Self {
        Self {
            config,
            _p: Vec::new(),
        }
    }
}

impl<T: Real> Transform<T> for SplineCoupling<T> {
    fn spec(&self) -> LayerSpec {
        LayerSpec::SplineCoupling(self.config.clone())
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
