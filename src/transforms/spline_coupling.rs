//! Spline coupling layer (Durkan et al. 2019; Mueller et al. 2019).
//!
//! With identity features `x_A` and transformed features `x_B` (chosen by a mask), a conditioner
//! MLP reads `[x_A, c]` and outputs `P = n_params(K)` unnormalised spline parameters per
//! transformed feature, `theta_j = NN([x_A, c])[j P .. (j + 1) P]`. Then
//!
//! `z_A = x_A`, `z_{B,j} = f(x_{B,j}; theta_j)`, `log|det dz/dx| = sum_j log f'(x_{B,j}; theta_j)`,
//!
//! where `f` is a monotone elementwise spline on `[-B, B]` (see [`crate::transforms::spline`]),
//! the identity outside. The inverse applies `f^{-1}` with the same `theta` (which depends only on
//! `x_A = z_A`). The spline family is chosen by [`SplineKind`] and dispatched statically. The
//! layer is the generic [`super::coupling::Coupling`] with a [`SplineBijection`]; this file holds
//! the configuration (the `spline_coupling` entry of a model file), the bijection's dispatch to
//! the spline families of [`super::spline`], and the tests.

use super::coupling::{ConditionerShape, Coupling, Elementwise};
use super::spline::lanes::{self, ChunkShape, LANE_MAX_BINS, LaneSpline, Params};
use super::spline::{Linear, MAX_BINS, Quadratic, RationalQuadratic, Spline1d};
use super::{Direction, LayerSpec};
use crate::engine::{Matrix, Real, Rng, simd};
use serde::{Deserialize, Serialize};
use std::any::TypeId;

/// Evaluates `$body` with the type `$S` naming the spline family of `$kind` (a [`SplineKind`]).
macro_rules! with_spline {
    ($kind:expr, $S:ident => $body:expr) => {
        match $kind {
            SplineKind::Linear => {
                type $S = Linear;
                $body
            }
            SplineKind::Quadratic => {
                type $S = Quadratic;
                $body
            }
            SplineKind::RationalQuadratic => {
                type $S = RationalQuadratic;
                $body
            }
        }
    };
}

/// `s` as `&[f32]` when `T` is `f32`.
fn as_f32<T: Real>(s: &[T]) -> Option<&[f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked above), so this is the same slice with its own type.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
    } else {
        None
    }
}

/// `s` as `&mut [f32]` when `T` is `f32`.
fn as_f32_mut<T: Real>(s: &mut [T]) -> Option<&mut [f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked above), so this is the same slice with its own type.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
    } else {
        None
    }
}

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

impl SplineKind {
    /// Number of unnormalised conditioner outputs per transformed feature for `bins` bins.
    pub fn n_params(self, bins: usize) -> usize {
        match self {
            SplineKind::Linear => Linear::n_params(bins),
            SplineKind::Quadratic => Quadratic::n_params(bins),
            SplineKind::RationalQuadratic => RationalQuadratic::n_params(bins),
        }
    }
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
    /// Dropout probability of the conditioner's hidden units in training.
    #[serde(default)]
    pub dropout: f64,
    /// The spline family.
    pub kind: SplineKind,
    /// Number of bins `K`.
    pub bins: usize,
    /// The spline acts on `[-B, B]`; identity (or linear) tails outside.
    pub bound: f64,
}

/// The elementwise spline bijection of a [`SplineCoupling`]: family, bins, bound, and the
/// `1/sqrt(H)` scaling of the bin logits (`H` the conditioner's last hidden width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplineBijection {
    /// The spline family.
    pub kind: SplineKind,
    /// Number of bins `K`.
    pub bins: usize,
    /// The spline acts on `[-B, B]`.
    pub bound: f64,
    /// Factor of the bin-width and bin-height logits.
    pub logit_scale: f64,
}

impl SplineBijection {
    /// The lane kernels' chunk shape, when they take this bijection in `T` (`f32`, at most
    /// [`LANE_MAX_BINS`] bins, a finite positive bound).
    fn lane_shape<'a, T: Real>(&self, tr: &'a [usize], cols: usize) -> Option<ChunkShape<'a>> {
        let bound = self.bound as f32;
        (TypeId::of::<T>() == TypeId::of::<f32>()
            && (1..=LANE_MAX_BINS).contains(&self.bins)
            && bound.is_finite()
            && bound > 0.0)
            .then_some(ChunkShape {
                tr,
                cols,
                bins: self.bins,
                bound,
            })
    }

    /// [`Self::apply_with`] on the lane kernels ([`lanes`]); false (and nothing done) when they
    /// do not take this case.
    fn apply_lanes<T: Real, S: LaneSpline>(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        y: &mut Matrix<T>,
        ladj: &mut [T],
        dir: Direction,
    ) -> bool {
        let n = y.rows();
        if let Some(shape) = self.lane_shape::<T>(tr, y.cols())
            && let (Some(hf), Some(yf), Some(lf)) = (
                as_f32(h.as_slice()),
                as_f32_mut(y.as_mut_slice()),
                as_f32_mut(&mut ladj[..n]),
            )
        {
            lanes::apply::<S>(&shape, hf, dir, yf, lf);
            return true;
        }
        false
    }

    /// The leading parameters of each feature that [`Elementwise::rescale`] multiplies: the
    /// bin-width and bin-height (vertex) logits.
    fn rescaled_params(&self) -> usize {
        let k = self.bins;
        match self.kind {
            SplineKind::Linear => k,
            SplineKind::Quadratic => 2 * k + 1,
            SplineKind::RationalQuadratic => 2 * k,
        }
    }

    /// The scalar evaluation, one event and feature at a time.
    fn apply_with<T: Real, S: Spline1d>(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        y: &mut Matrix<T>,
        ladj: &mut [T],
        inverse: bool,
    ) {
        let p = self.kind.n_params(self.bins);
        let bins = self.bins;
        let bound = T::c(self.bound);
        let n = y.rows();
        for (i, li) in ladj.iter_mut().enumerate().take(n) {
            let hr = h.row(i);
            let yr = y.row_mut(i);
            let mut acc = T::zero();
            for (j, &d) in tr.iter().enumerate() {
                let theta = &hr[j * p..(j + 1) * p];
                let (v, l) = if inverse {
                    S::inverse(yr[d], theta, bins, bound)
                } else {
                    S::forward(yr[d], theta, bins, bound)
                };
                yr[d] = v;
                acc += l;
            }
            *li += acc;
        }
    }

    /// [`Self::backward_with`] on the lane kernels; false (and nothing done) when they do not take
    /// this case.
    #[allow(clippy::too_many_arguments)]
    fn backward_lanes<T: Real, S: LaneSpline>(
        &self,
        x: &Matrix<T>,
        h: &Matrix<T>,
        tr: &[usize],
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        dh: &mut Matrix<T>,
    ) -> bool {
        let n = x.rows();
        if let Some(shape) = self.lane_shape::<T>(tr, x.cols())
            && let (Some(xf), Some(hf), Some(dyf), Some(glf), Some(dxf), Some(dhf)) = (
                as_f32(x.as_slice()),
                as_f32(h.as_slice()),
                as_f32(dy.as_slice()),
                as_f32(&dladj[..n]),
                as_f32_mut(dx.as_mut_slice()),
                as_f32_mut(dh.as_mut_slice()),
            )
        {
            lanes::backward::<S>(&shape, xf, hf, dyf, glf, dxf, dhf);
            return true;
        }
        false
    }

    /// The scalar backward pass, one event and feature at a time.
    #[allow(clippy::too_many_arguments)]
    fn backward_with<T: Real, S: Spline1d>(
        &self,
        x: &Matrix<T>,
        h: &Matrix<T>,
        tr: &[usize],
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        dh: &mut Matrix<T>,
    ) {
        let p = self.kind.n_params(self.bins);
        let bins = self.bins;
        let bound = T::c(self.bound);
        dh.as_mut_slice().fill(T::zero());
        let n = x.rows();
        for (i, &gl) in dladj.iter().enumerate().take(n) {
            let hr = h.row(i);
            let xr = x.row(i);
            let dyr = dy.row(i);
            let dxr = dx.row_mut(i);
            let dhr = dh.row_mut(i);
            for (j, &d) in tr.iter().enumerate() {
                let r = j * p..(j + 1) * p;
                dxr[d] = S::backward(xr[d], &hr[r.clone()], bins, bound, dyr[d], gl, &mut dhr[r]);
            }
        }
    }
}

impl<T: Real> Elementwise<T> for SplineBijection {
    fn n_params(&self) -> usize {
        self.kind.n_params(self.bins)
    }

    /// Multiplies the bin-width and bin-height (vertex) logits of every transformed feature by
    /// `1/sqrt(H)` (`H` = width of the conditioner's last hidden layer), as nflows does: the
    /// bins then move more slowly than the derivatives during training, which regularises the
    /// spline.
    fn rescale(&self, h: &mut Matrix<T>, ntr: usize) {
        let c = T::c(self.logit_scale);
        let n_bin = self.rescaled_params();
        let p = self.kind.n_params(self.bins);
        for i in 0..h.rows() {
            let row = h.row_mut(i);
            for j in 0..ntr {
                for v in &mut row[j * p..j * p + n_bin] {
                    *v *= c;
                }
            }
        }
    }

    fn apply(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        dir: Direction,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        _cache: &mut [Matrix<T>],
    ) {
        with_spline!(self.kind, S => {
            if !self.apply_lanes::<T, S>(h, tr, y, ladj, dir) {
                self.apply_with::<T, S>(h, tr, y, ladj, dir.inverse());
            }
        });
    }

    fn feature_major(&self) -> bool {
        self.lane_shape::<T>(&[], 1).is_some()
    }

    /// The lane kernels read the feature-major `h` in place (one contiguous load per parameter
    /// and group of events instead of a strided gather), multiplying the bin logits by the
    /// rescaling factor as they read them: the bits of [`Elementwise::apply`] after
    /// [`Elementwise::rescale`].
    fn apply_feature_major(
        &self,
        h: &mut Matrix<T>,
        tr: &[usize],
        dir: Direction,
        y: &mut [T],
        ladj: &mut [T],
    ) {
        let n = h.cols();
        if n == 0 {
            return;
        }
        let (Some(shape), Some(hf), Some(yf), Some(lf)) = (
            self.lane_shape::<T>(tr, y.len() / n),
            as_f32(h.as_slice()),
            as_f32_mut(y),
            as_f32_mut(&mut ladj[..n]),
        ) else {
            unreachable!("feature-major evaluation of a spline the lane kernels do not take")
        };
        let params = Params::FeatureMajor {
            h: hf,
            n,
            scaled: self.rescaled_params(),
            scale: self.logit_scale as f32,
        };
        let path = simd::active();
        with_spline!(self.kind, S => lanes::apply_on::<S>(path, &shape, params, dir, yf, lf));
    }

    fn backward(
        &self,
        x: &Matrix<T>,
        h: &Matrix<T>,
        tr: &[usize],
        _cache: &[Matrix<T>],
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        dh: &mut Matrix<T>,
    ) {
        with_spline!(self.kind, S => {
            if !self.backward_lanes::<T, S>(x, h, tr, dy, dladj, dx, dh) {
                self.backward_with::<T, S>(x, h, tr, dy, dladj, dx, dh);
            }
        });
    }
}

/// Coupling layer with an elementwise monotone spline on the transformed features: the generic
/// [`Coupling`] with a [`SplineBijection`].
pub type SplineCoupling<T> = Coupling<T, SplineBijection>;

impl<T: Real> Coupling<T, SplineBijection> {
    /// A new layer; the conditioner's output layer starts at zero (uniform bins).
    ///
    /// # Panics
    /// If `bins` is not in `1..=64` or `bound` is not finite and positive (validate user
    /// configurations before building).
    pub fn new(config: SplineCouplingConfig, rng: &mut Rng) -> Self {
        assert!(
            (1..=MAX_BINS).contains(&config.bins),
            "spline coupling: bins must be in 1..={MAX_BINS}, got {}",
            config.bins
        );
        assert!(
            config.bound.is_finite() && config.bound > 0.0,
            "spline coupling: bound must be finite and positive, got {}",
            config.bound
        );
        let hidden = config.hidden.last().copied().unwrap_or(1).max(1);
        let bijection = SplineBijection {
            kind: config.kind,
            bins: config.bins,
            bound: config.bound,
            logit_scale: 1.0 / (hidden as f64).sqrt(),
        };
        let shape = ConditionerShape {
            mask: &config.mask,
            hidden: &config.hidden,
            context_dim: config.context_dim,
            residual: config.residual,
            dropout: config.dropout,
        };
        Coupling::build(
            LayerSpec::SplineCoupling(config.clone()),
            shape,
            bijection,
            rng,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::Transform;
    use crate::transforms::testing::{CheckOptions, check_transform, check_transform_f32};
    use crate::transforms::{alternating_mask, half_mask};

    fn config(mask: Vec<bool>, ctx: usize, residual: bool, bins: usize) -> SplineCouplingConfig {
        SplineCouplingConfig {
            mask,
            hidden: vec![16, 16],
            context_dim: ctx,
            residual,
            dropout: 0.0,
            kind: SplineKind::RationalQuadratic,
            bins,
            bound: 5.0,
        }
    }

    fn layer<T: Real>(cfg: SplineCouplingConfig) -> SplineCoupling<T> {
        SplineCoupling::new(cfg, &mut Rng::new(7))
    }

    /// Inputs of scale 4 against B = 5: a sizeable fraction (and the harness's tail rows at
    /// |x| up to 9.7) fall outside [-B, B], exercising the identity tails. Randomised conditioner
    /// weights of scale 0.3 give very uneven splines (per-row log-dets down to about -12), whose
    /// large f''/f' needs a smaller finite-difference step than the default 1e-5.
    fn opts() -> CheckOptions {
        CheckOptions {
            input_scale: 4.0,
            eps: 1e-7,
            ..CheckOptions::default()
        }
    }

    /// The f32 round trip is limited by conditioning, |dx| ~ 3e-7 / f'(x): with weights of scale
    /// 0.3, f' reaches e^-6 and the round trip error 3e-2 (measured), so the f32 check uses milder
    /// (still far from identity) splines, where the measured worst error is 7e-7.
    fn opts_f32() -> CheckOptions {
        CheckOptions {
            param_scale: 0.1,
            ..opts()
        }
    }

    #[test]
    fn rq_alternating_mask_passes_all_checks() {
        let cfg = config(alternating_mask(5, false), 0, false, 8);
        check_transform(Box::new(layer::<f64>(cfg.clone())), &opts());
        check_transform_f32(Box::new(layer::<f32>(cfg)), &opts_f32());
    }

    #[test]
    fn rq_residual_conditioner_with_context_passes_all_checks() {
        let cfg = config(half_mask(4, true), 3, true, 5);
        check_transform(Box::new(layer::<f64>(cfg.clone())), &opts());
        check_transform_f32(Box::new(layer::<f32>(cfg)), &opts_f32());
    }

    #[test]
    fn rq_inputs_really_cover_both_regions() {
        // Guards the premise of the checks above: with these options some transformed inputs are
        // inside and some outside [-B, B], and the spline is not the identity inside.
        let o = opts();
        let mut rng = Rng::new(o.seed);
        let mut t = layer::<f64>(config(alternating_mask(5, false), 0, false, 8));
        crate::transforms::testing::randomize_params(&mut t, o.param_scale, &mut rng);
        let x = crate::transforms::testing::random_inputs(o.rows, 5, o.input_scale, &mut rng);
        let (mut inside, mut outside) = (0, 0);
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; o.rows];
        t.forward(&x, None, &mut y, &mut l);
        for i in 0..o.rows {
            for d in [1, 3] {
                if x.get(i, d).abs() <= 5.0 {
                    inside += 1;
                    assert!((y.get(i, d) - x.get(i, d)).abs() > 1e-6);
                } else {
                    outside += 1;
                    assert_eq!(y.get(i, d), x.get(i, d));
                }
            }
            for d in [0, 2, 4] {
                assert_eq!(y.get(i, d), x.get(i, d));
            }
        }
        assert!(
            inside >= 5 && outside >= 3,
            "inside {inside}, outside {outside}"
        );
    }

    #[test]
    fn fresh_layer_has_uniform_bins() {
        // Zero conditioner output: uniform bins, so every knot -B + 2Bk/K is a fixed point.
        let t = layer::<f64>(config(alternating_mask(2, false), 0, false, 4));
        assert_eq!(t.num_params(), (1 + 1) * 16 + 16 * 17 + 17 * 11);
        let x = Matrix::from_fn(5, 2, |i, _| -5.0 + 2.5 * i as f64);
        let mut y = Matrix::zeros(0, 0);
        let mut l = vec![0.0; 5];
        t.forward(&x, None, &mut y, &mut l);
        assert!(y.max_abs_diff(&x) < 1e-12);
    }

    #[test]
    fn n_params_per_kind() {
        assert_eq!(SplineKind::RationalQuadratic.n_params(8), 23);
    }

    #[test]
    #[should_panic(expected = "bins must be in")]
    fn too_many_bins_is_rejected_at_construction() {
        layer::<f64>(config(alternating_mask(2, false), 0, false, 65));
    }
}
