//! The coupling layer, generic over its elementwise bijection (Dinh et al. 2016; Durkan et al.
//! 2019).
//!
//! With identity features `x_A` and transformed features `x_B` (chosen by a mask), a conditioner
//! MLP reads `[x_A, c]` (`c` the optional context) and outputs `P` parameters per transformed
//! feature, `theta = NN([x_A, c])`. Then
//!
//! `z_A = x_A`, `z_{B,j} = f(x_{B,j}; theta_j)`, `log|det dz/dx| = sum_j log f'(x_{B,j}; theta_j)`,
//!
//! where `f` is a monotone elementwise bijection ([`Elementwise`]: the soft-clamped affine map of
//! RealNVP, or a piecewise-linear, piecewise-quadratic or rational-quadratic spline). The inverse
//! applies `f^{-1}` with the same `theta`, which depends only on `x_A = z_A`.
//!
//! This file owns the plumbing every coupling shares: gathering `[x_A, c]`, running the
//! conditioner (reusing scratch memory in evaluation passes, so they allocate nothing once warm),
//! copying `x_A` through, and the backward pass, where `dL/dx_A` is the direct gradient plus the
//! conditioner's input gradient for `dL/dtheta`:
//!
//! `dL/dx_A = dL/dz_A + (dNN/dx_A)^T dL/dtheta`, `dL/dx_B = dL/dz_B f'(x_B) + dL/dladj d log f'/dx_B`.
//!
//! The bijection computes `dL/dtheta` and `dL/dx_B` from `dL/dz_B` and `dL/dladj`.

use super::{LayerSpec, Param, Transform, gather_input, split_mask};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::nn::{Activation, Mlp, MlpConfig};

/// Number of per-chunk matrices a bijection may keep from its training forward pass for its
/// backward pass (see [`Elementwise::apply`]).
pub const CACHE_SLOTS: usize = 2;

/// A monotone elementwise bijection `z = f(x; theta)` whose parameters `theta` (`P` per event and
/// transformed feature) come from a coupling layer's conditioner.
pub trait Elementwise<T: Real>: Clone + std::fmt::Debug + Send + Sync {
    /// Conditioner outputs per transformed feature (`P`).
    fn n_params(&self) -> usize;

    /// A fixed (parameter-free) linear rescaling of the conditioner output `h` (`n x P ntr`),
    /// applied after the conditioner and, by the chain rule, to the gradient `dL/dh`; none by
    /// default.
    fn rescale(&self, _h: &mut Matrix<T>, _ntr: usize) {}

    /// Applies `f` (or `f^{-1}` when `inverse`) to the columns `tr` of `y`, which holds a copy of
    /// the layer's input, with `theta` from `h` (`n x P |tr|`), and adds `log|f'|` (or its
    /// negative at the inverse's output) to `ladj`. `cache` may keep values for
    /// [`Elementwise::backward`] (contents on entry unspecified).
    fn apply(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        inverse: bool,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        cache: &mut [Matrix<T>],
    );

    /// The backward pass of a forward [`Elementwise::apply`] on input `x`: overwrites `dh`
    /// (`n x P |tr|`) with `dL/dtheta` and the columns `tr` of `dx` with `dL/dx_B`, from
    /// `dL/dz_B` (the columns `tr` of `dy`) and `dL/dladj`. `cache` is what `apply` left.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &Matrix<T>,
        h: &Matrix<T>,
        tr: &[usize],
        cache: &[Matrix<T>],
        dy: &Matrix<T>,
        dladj: &[T],
        dx: &mut Matrix<T>,
        dh: &mut Matrix<T>,
    );
}

/// The conditioner's shape, shared by every coupling's configuration.
#[derive(Clone, Debug)]
pub struct ConditionerShape<'a> {
    /// `mask[d]` is true for transformed features.
    pub mask: &'a [bool],
    /// Hidden widths of the conditioner MLP.
    pub hidden: &'a [usize],
    /// Width of the context vector (0 = unconditional).
    pub context_dim: usize,
    /// Residual connections in the conditioner.
    pub residual: bool,
    /// Dropout probability of the conditioner's hidden units in training.
    pub dropout: f64,
}

/// A coupling layer with the elementwise bijection `B` (see the module documentation).
#[derive(Clone, Debug)]
pub struct Coupling<T, B> {
    spec: LayerSpec,
    dim: usize,
    context_dim: usize,
    id: Vec<usize>,
    tr: Vec<usize>,
    net: Mlp<T>,
    bijection: B,
}

// Tape slots: 0 conditioner input, 1 conditioner output `h` (rescaled), 2 `dL/dh`,
// 3 the conditioner's input gradient, 4.. the bijection's cache. Child 0 is the conditioner's
// tape, child 1 its backward scratch.
const NET_IN: usize = 0;
const H: usize = 1;
const DH: usize = 2;
const DINP: usize = 3;
const CACHE: usize = 4;

impl<T: Real, B: Elementwise<T>> Coupling<T, B> {
    /// A layer described by `spec` with conditioner `shape`; the conditioner's output layer starts
    /// at zero (as the MLP initialises it).
    pub fn build(spec: LayerSpec, shape: ConditionerShape, bijection: B, rng: &mut Rng) -> Self {
        let (id, tr) = split_mask(shape.mask);
        let net = Mlp::new(
            MlpConfig {
                in_dim: id.len() + shape.context_dim,
                hidden: shape.hidden.to_vec(),
                out_dim: bijection.n_params() * tr.len(),
                residual: shape.residual,
                dropout: shape.dropout,
                activation: Activation::Relu,
            },
            rng,
        );
        Self {
            spec,
            dim: shape.mask.len(),
            context_dim: shape.context_dim,
            id,
            tr,
            net,
            bijection,
        }
    }

    /// The elementwise bijection.
    pub fn bijection(&self) -> &B {
        &self.bijection
    }

    /// Evaluation pass in either direction, with every buffer from `scratch`.
    fn run(
        &self,
        inp: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        inverse: bool,
        out: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let mut net_in = std::mem::take(scratch.mat(NET_IN, 0, 0));
        let mut h = std::mem::take(scratch.mat(H, 0, 0));
        scratch.mat(CACHE + CACHE_SLOTS - 1, 0, 0);
        gather_input(inp, &self.id, ctx, &mut net_in);
        self.net.forward_reusing(&net_in, &mut h, scratch.child(0));
        self.bijection.rescale(&mut h, self.tr.len());
        out.copy_from(inp);
        let cache = &mut scratch.mats[CACHE..CACHE + CACHE_SLOTS];
        self.bijection
            .apply(&h, &self.tr, inverse, out, ladj, cache);
        *scratch.mat(NET_IN, 0, 0) = net_in;
        *scratch.mat(H, 0, 0) = h;
    }
}

impl<T: Real, B: Elementwise<T>> Transform<T> for Coupling<T, B> {
    fn spec(&self) -> LayerSpec {
        self.spec.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn context_dim(&self) -> usize {
        self.context_dim
    }

    fn params(&self) -> Vec<&Param<T>> {
        self.net.params()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        self.net.params_mut()
    }

    fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, y: &mut Matrix<T>, ladj: &mut [T]) {
        self.run(x, ctx, false, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.run(y, ctx, true, x, ladj, &mut Tape::default());
    }

    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(x, ctx, false, y, ladj, scratch);
    }

    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(y, ctx, true, x, ladj, scratch);
    }

    fn forward_train(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        tape: &mut Tape<T>,
    ) {
        let n = x.rows();
        gather_input(x, &self.id, ctx, tape.mat(NET_IN, n, 0));
        let mut h = std::mem::take(tape.mat(H, 0, 0));
        tape.mat(CACHE + CACHE_SLOTS - 1, 0, 0);
        {
            let tape_seed = tape.seed;
            let (mats, children) = (&tape.mats, &mut tape.children);
            while children.is_empty() {
                children.push(Tape::default());
            }
            children[0].seed = tape_seed;
            self.net
                .forward_train(&mats[NET_IN], &mut h, &mut children[0]);
        }
        self.bijection.rescale(&mut h, self.tr.len());
        y.copy_from(x);
        let cache = &mut tape.mats[CACHE..CACHE + CACHE_SLOTS];
        self.bijection.apply(&h, &self.tr, false, y, ladj, cache);
        *tape.mat(H, 0, 0) = h;
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
        let n = x.rows();
        dx.copy_from(dy);
        let mut dh = std::mem::take(tape.mat(DH, n, self.bijection.n_params() * self.tr.len()));
        self.bijection.backward(
            x,
            &tape.mats[H],
            &self.tr,
            &tape.mats[CACHE..CACHE + CACHE_SLOTS],
            dy,
            dladj,
            dx,
            &mut dh,
        );
        // Chain rule through the fixed rescaling of the conditioner output.
        self.bijection.rescale(&mut dh, self.tr.len());
        let mut dinp = std::mem::take(tape.mat(DINP, 0, 0));
        {
            while tape.children.len() < 2 {
                tape.children.push(Tape::default());
            }
            let (c0, c1) = tape.children.split_at_mut(1);
            self.net.backward(
                &tape.mats[NET_IN],
                &c0[0],
                &dh,
                Some(&mut dinp),
                grads,
                &mut c1[0],
            );
        }
        for i in 0..n {
            let di = dinp.row(i);
            let dxr = dx.row_mut(i);
            for (k, &d) in self.id.iter().enumerate() {
                dxr[d] += di[k];
            }
        }
        *tape.mat(DH, 0, 0) = dh;
        *tape.mat(DINP, 0, 0) = dinp;
    }
}
