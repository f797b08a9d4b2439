//! Invertible transforms (bijections) with exact log-determinants and hand-derived gradients.
//!
//! Convention (as in nflows): `forward` maps data `x` towards the base space `z` and returns
//! `log|det dz/dx|`; `inverse` maps `z` back to `x` and returns `log|det dx/dz|` (the negative
//! of the forward log-determinant at the same point). A flow's density is
//! `log p(x) = log N(f(x); 0, I) + log|det J_f(x)|`.
//!
//! One file per transform; each file holds the math in its doc comment, the forward, inverse and
//! backward passes, and its tests (round trip, log-det vs finite differences, gradients vs finite
//! differences, via [`testing`]).

pub mod act_norm;
pub mod affine;
pub mod affine_coupling;
pub mod batch_norm;
pub mod continuous;
pub mod coupling;
pub mod lu_linear;
pub mod maf;
pub mod permutation;
pub mod spec;
pub mod spline;
pub mod spline_coupling;
#[doc(hidden)]
pub mod testing;

pub use act_norm::{ActNorm, ActNormConfig};
pub use affine::Affine;
pub use affine_coupling::{AffineCoupling, AffineCouplingConfig};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use continuous::{ContinuousFlow, ContinuousFlowConfig};
pub use coupling::{Coupling, Elementwise};
pub use lu_linear::{LuLinear, LuLinearConfig};
pub use maf::{Maf, MafConfig};
pub use permutation::{Permutation, PermutationConfig};
pub use spec::LayerSpec;
pub use spline_coupling::{SplineCoupling, SplineCouplingConfig, SplineKind};

use crate::engine::{Matrix, Real, Tape};

/// The direction of an evaluation pass, and whether it needs its log-determinants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Data -> base, with log-determinants.
    Forward,
    /// Base -> data, with log-determinants.
    Inverse,
    /// Base -> data for sampling: the log-determinants are not needed, and a layer may leave
    /// `ladj` unspecified (the mapped values are those of [`Direction::Inverse`], bit for bit).
    Sample,
}

impl Direction {
    /// Whether the pass maps base -> data.
    pub fn inverse(self) -> bool {
        self != Self::Forward
    }

    /// Whether the pass needs its log-determinants.
    pub fn needs_ladj(self) -> bool {
        self != Self::Sample
    }

    /// [`Direction::Inverse`] when `inverse`, else [`Direction::Forward`].
    pub fn of(inverse: bool) -> Self {
        if inverse {
            Self::Inverse
        } else {
            Self::Forward
        }
    }
}

/// A named parameter (or buffer) tensor, stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Param<T> {
    /// Name inside its layer, e.g. `net.layers.0.weight`.
    pub name: String,
    /// Shape, e.g. `[out, in]`.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<T>,
}

impl<T> Param<T> {
    /// A parameter; `data.len()` must equal the product of `shape`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<T>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            name: name.into(),
            shape,
            data,
        }
    }
}

/// An invertible map of `dim` features, optionally conditioned on a context vector.
///
/// Output matrices (`y`, `x`, `dx`) are resized by the callee. Log-determinants are *added* to
/// `ladj` (one entry per row), and parameter gradients are *added* to `grads`, a flat slice laid out
/// as the concatenation of [`Transform::params`] in order.
pub trait Transform<T: Real>: Send + Sync {
    /// The serialisable description of this layer (its shape, not its trained values).
    fn spec(&self) -> LayerSpec;

    /// Number of features transformed.
    fn dim(&self) -> usize;

    /// Width of the context vector the conditioner reads (0 = unconditional).
    fn context_dim(&self) -> usize {
        0
    }

    /// Trainable parameters, in gradient order.
    fn params(&self) -> Vec<&Param<T>>;

    /// Mutable trainable parameters, in gradient order.
    fn params_mut(&mut self) -> Vec<&mut Param<T>>;

    /// Non-trainable state saved with the model (e.g. batch-norm running statistics).
    fn buffers(&self) -> Vec<&Param<T>> {
        Vec::new()
    }

    /// Mutable non-trainable state.
    fn buffers_mut(&mut self) -> Vec<&mut Param<T>> {
        Vec::new()
    }

    /// Total number of trainable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.data.len()).sum()
    }

    /// Evaluation-mode forward pass `y = f(x)`; adds `log|det df/dx|` to `ladj`.
    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]);

    /// Evaluation-mode inverse pass `x = f^{-1}(y)`; adds `log|det df^{-1}/dy|` to `ladj`.
    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]);

    /// [`Transform::forward`] that may keep intermediate buffers in `scratch` between calls
    /// (evaluation over many chunks reuses one scratch tape per layer and thread).
    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        _scratch: &mut Tape<T>,
    ) {
        self.forward(x, ctx, y, ladj);
    }

    /// For a layer that only reorders the features: the column each output column comes from in
    /// the given direction (`out_j = in_{map[j]}`). An evaluation pass then moves no data for
    /// the layer; it composes the map into the column order that [`Transform::run_in_place`]
    /// reads (see [`crate::flow::Flow`]). `None` (the default) for every other layer.
    fn column_map(&self, _inverse: bool) -> Option<&[usize]> {
        None
    }

    /// Evaluation pass in direction `dir` on `x` in place, where feature `j` of the layer's
    /// input is column `cols[j]` of `x` and the output's feature `j` is written to the same
    /// column: the bits of [`Transform::forward_reusing`] / [`Transform::inverse_reusing`] /
    /// [`Transform::inverse_sample`] on the input with its columns in order, in a different
    /// place. Returns `false`, having touched nothing, for a layer without an in-place form
    /// (the default); coupling layers have one, since they rewrite only their transformed
    /// features.
    fn run_in_place(
        &self,
        _x: &mut Matrix<T>,
        _cols: &[usize],
        _ctx: Option<&Matrix<T>>,
        _dir: Direction,
        _ladj: &mut [T],
        _scratch: &mut Tape<T>,
    ) -> bool {
        false
    }

    /// [`Transform::inverse`] that may keep intermediate buffers in `scratch` between calls.
    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        _scratch: &mut Tape<T>,
    ) {
        self.inverse(y, ctx, x, ladj);
    }

    /// [`Transform::inverse_reusing`] for sampling, where the caller does not need the
    /// log-determinant: `ladj` (one entry per row) may be left unchanged or receive it. Layers
    /// whose log-determinant costs much more than the map itself (the continuous flow: `D` extra
    /// network passes per step) skip it; the output `x` is the same.
    fn inverse_sample(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.inverse_reusing(y, ctx, x, ladj, scratch);
    }

    /// Training-mode forward pass: like [`Transform::forward`] (batch statistics where the layer
    /// has them), saving what [`Transform::backward`] needs in `tape`.
    fn forward_train(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    );

    /// Backward pass of [`Transform::forward_train`]: given `dy = dL/dy` and `dladj = dL/d ladj`
    /// (per row), writes `dx = dL/dx` and adds `dL/d theta` to `grads`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &Matrix<T>,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        tape: &mut Tape<T>,
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        grads: &mut [T],
    );

    /// Called once after each optimizer step with the tapes of every sub-batch of that step
    /// (batch norm updates its running statistics here).
    fn end_step(&mut self, _tapes: &[&Tape<T>]) {}

    /// Data-dependent initialisation on the first training batch (ActNorm).
    fn data_init(&mut self, _x: &Matrix<T>, _ctx: Option<&Matrix<T>>) {}
}

/// Copies the columns `cols` of `x` followed by all columns of `ctx` into `out`
/// (the input of a conditioner network).
pub fn gather_input<T: Real>(
    x: &Matrix<T>,
    cols: &[usize],
    ctx: Option<&Matrix<T>>,
    out: &mut Matrix<T>,
) {
    let c = ctx.map_or(0, |m| m.cols());
    let w = cols.len() + c;
    out.resize(x.rows(), w);
    for i in 0..x.rows() {
        let xr = x.row(i);
        let o = out.row_mut(i);
        for (k, &j) in cols.iter().enumerate() {
            o[k] = xr[j];
        }
        if let Some(ctx) = ctx {
            o[cols.len()..].copy_from_slice(ctx.row(i));
        }
    }
}

/// [`gather_input`] feature-major for the rows `rows` of `x`: `out` becomes
/// `(|cols| + c) x |rows|`, row `k < |cols|` holding feature `cols[k]` of those rows of `x`, then
/// one row per context feature.
pub fn gather_input_feature_major<T: Real>(
    x: &Matrix<T>,
    rows: std::ops::Range<usize>,
    cols: &[usize],
    ctx: Option<&Matrix<T>>,
    out: &mut Matrix<T>,
) {
    let n = rows.len();
    let c = ctx.map_or(0, |m| m.cols());
    out.resize(cols.len() + c, n);
    if n == 0 {
        return;
    }
    let o = out.as_mut_slice();
    let d = x.cols();
    let xs = &x.as_slice()[rows.start * d..rows.end * d];
    for (&j, ok) in cols.iter().zip(o.chunks_exact_mut(n)) {
        for (v, xr) in ok.iter_mut().zip(xs.chunks_exact(d)) {
            *v = xr[j];
        }
    }
    if let Some(ctx) = ctx {
        let cs = &ctx.as_slice()[rows.start * c..rows.end * c];
        for (q, ok) in o[cols.len() * n..].chunks_exact_mut(n).enumerate() {
            for (v, cr) in ok.iter_mut().zip(cs.chunks_exact(c)) {
                *v = cr[q];
            }
        }
    }
}

/// Feature split of a coupling layer: `mask[d] == true` marks a transformed feature,
/// `false` an identity feature read by the conditioner.
pub fn split_mask(mask: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let id = (0..mask.len()).filter(|&d| !mask[d]).collect();
    let tr = (0..mask.len()).filter(|&d| mask[d]).collect();
    (id, tr)
}

/// Alternating mask `b_d = d mod 2` (odd features transformed), flipped when `parity` is true.
pub fn alternating_mask(dim: usize, parity: bool) -> Vec<bool> {
    (0..dim).map(|d| (d % 2 == 1) != parity).collect()
}

/// Half split: the second half of the features is transformed (the first half when flipped).
pub fn half_mask(dim: usize, flip: bool) -> Vec<bool> {
    (0..dim).map(|d| (d >= dim / 2) != flip).collect()
}
