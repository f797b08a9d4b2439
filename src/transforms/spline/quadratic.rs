//! PLACEHOLDER, replaced by the other helper: piecewise-quadratic spline (identity for now).

use super::Spline1d;
use crate::engine::Real;

/// PLACEHOLDER, replaced by the other helper: identity map implementing [`Spline1d`].
pub struct Quadratic;

// PLACEHOLDER, replaced by the other helper
impl Spline1d for Quadratic {
    fn n_params(bins: usize) -> usize {
        bins
    }
    fn forward<T: Real>(x: T, _theta: &[T], _bins: usize, _bound: T) -> (T, T) {
        (x, T::zero())
    }
    fn inverse<T: Real>(y: T, _theta: &[T], _bins: usize, _bound: T) -> (T, T) {
        (y, T::zero())
    }
    fn backward<T: Real>(
        _x: T,
        _theta: &[T],
        _bins: usize,
        _bound: T,
        gy: T,
        _gl: T,
        _gtheta: &mut [T],
    ) -> T {
        gy
    }
}
