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

use super::{
    Direction, LayerSpec, Param, Transform, gather_input, gather_input_feature_major, split_mask,
};
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

    /// Applies `f` (or `f^{-1}` when `dir` is inverse) to the columns `tr` of `y`, which holds a
    /// copy of the layer's input, with `theta` from `h` (`n x P |tr|`), and adds `log|f'|` (or
    /// its negative at the inverse's output) to `ladj` (which may be left unspecified with
    /// [`Direction::Sample`]). `cache` may keep values for [`Elementwise::backward`] (contents
    /// on entry unspecified).
    fn apply(
        &self,
        h: &Matrix<T>,
        tr: &[usize],
        dir: Direction,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        cache: &mut [Matrix<T>],
    );

    /// Whether the bijection implements [`Elementwise::apply_feature_major`]; evaluation passes
    /// of an `f32` coupling then run the conditioner feature-major (see [`Coupling`]).
    fn feature_major(&self) -> bool {
        false
    }

    /// [`Elementwise::apply`] for an evaluation pass with the conditioner output feature-major:
    /// `h` is `P |tr| x n` (row `q` holds output `q` of every event; the bijection may
    /// overwrite it), `y` the `n` rows (row-major) and `ladj` the `n` log-determinants of those
    /// events, with the same bits in `y` and `ladj` as `apply` on the transposed `h`.
    /// Called only when [`Elementwise::feature_major`] is true, and [`Elementwise::rescale`]
    /// is not applied first (a bijection with a rescaling applies it here itself).
    fn apply_feature_major(
        &self,
        _h: &mut Matrix<T>,
        _tr: &[usize],
        _dir: Direction,
        _y: &mut [T],
        _ladj: &mut [T],
    ) {
        unreachable!("apply_feature_major called on a bijection without it")
    }

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

/// Events per feature-major slab of an evaluation pass ([`Coupling::map_in_place`]): one 64-column
/// panel of the AVX-512 kernel, so the activations `B` of every product have contiguous rows
/// (a `128 x 64` slab is 32 KiB, in L1) and need no packing; wider, their rows would be a
/// multiple of 4 KiB apart and fall into a few L1 sets.
const FEATURE_MAJOR_SLAB: usize = 64;

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

    /// Evaluation pass in direction `dir`, with every buffer from `scratch`: the input copied
    /// to `out`, then [`Coupling::map_in_place`] there.
    fn run(
        &self,
        inp: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        dir: Direction,
        out: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        out.copy_from(inp);
        self.map_in_place(out, None, ctx, dir, ladj, scratch, self.feature_major());
    }

    /// Whether evaluation passes run the conditioner feature-major: when the scalar type has
    /// the fused kernel and the bijection a feature-major form (the same bits, see
    /// [`Coupling::map_in_place`]).
    fn feature_major(&self) -> bool {
        T::HAS_FUSED_PRODUCT && self.bijection.feature_major()
    }

    /// The identity and transformed features' columns in `x` when feature `j` is stored in
    /// column `cols[j]` (`None`: in column `j`), built in `buf` when they are not the layer's own.
    fn columns<'a>(
        &'a self,
        cols: Option<&[usize]>,
        buf: &'a mut Vec<usize>,
    ) -> (&'a [usize], &'a [usize]) {
        let Some(cols) = cols else {
            return (&self.id, &self.tr);
        };
        buf.clear();
        buf.extend(self.id.iter().chain(&self.tr).map(|&j| cols[j]));
        buf.split_at(self.id.len())
    }

    /// The evaluation pass on `x` in place (feature `j` in column `cols[j]`, or `j`): the
    /// conditioner reads the identity features, then the bijection rewrites the transformed
    /// ones, with the conditioner's activations row-major (one row per event) or feature-major
    /// (one row per feature: [`Mlp::forward_feature_major`], whose `f32` output is the
    /// transpose of the row-major one bit for bit). Feature-major, the kernel's vectors run
    /// over the events, so a conditioner output of `2 x 9` affine parameters fills whole
    /// vectors instead of 18 of 32 lanes.
    #[allow(clippy::too_many_arguments)]
    fn map_in_place(
        &self,
        x: &mut Matrix<T>,
        cols: Option<&[usize]>,
        ctx: Option<&Matrix<T>>,
        dir: Direction,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
        feature_major: bool,
    ) {
        let mut net_in = std::mem::take(scratch.mat(NET_IN, 0, 0));
        let mut h = std::mem::take(scratch.mat(H, 0, 0));
        let mut buf = std::mem::take(&mut scratch.cols);
        scratch.mat(CACHE + CACHE_SLOTS - 1, 0, 0);
        let (id, tr) = self.columns(cols, &mut buf);
        if feature_major {
            let (n, d) = (x.rows(), self.dim);
            for r0 in (0..n).step_by(FEATURE_MAJOR_SLAB) {
                let r1 = (r0 + FEATURE_MAJOR_SLAB).min(n);
                gather_input_feature_major(x, r0..r1, id, ctx, &mut net_in);
                self.net
                    .forward_feature_major(&net_in, &mut h, scratch.child(0));
                let y = &mut x.as_mut_slice()[r0 * d..r1 * d];
                self.bijection
                    .apply_feature_major(&mut h, tr, dir, y, &mut ladj[r0..r1]);
            }
        } else {
            gather_input(x, id, ctx, &mut net_in);
            self.net.forward_reusing(&net_in, &mut h, scratch.child(0));
            self.bijection.rescale(&mut h, tr.len());
            let cache = &mut scratch.mats[CACHE..CACHE + CACHE_SLOTS];
            self.bijection.apply(&h, tr, dir, x, ladj, cache);
        }
        scratch.cols = buf;
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
        self.run(x, ctx, Direction::Forward, y, ladj, &mut Tape::default());
    }

    fn inverse(&self, y: &Matrix<T>, ctx: Option<&Matrix<T>>, x: &mut Matrix<T>, ladj: &mut [T]) {
        self.run(y, ctx, Direction::Inverse, x, ladj, &mut Tape::default());
    }

    fn forward_reusing(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        y: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(x, ctx, Direction::Forward, y, ladj, scratch);
    }

    fn inverse_reusing(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(y, ctx, Direction::Inverse, x, ladj, scratch);
    }

    fn inverse_sample(
        &self,
        y: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        x: &mut Matrix<T>,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        self.run(y, ctx, Direction::Sample, x, ladj, scratch);
    }

    fn run_in_place(
        &self,
        x: &mut Matrix<T>,
        cols: &[usize],
        ctx: Option<&Matrix<T>>,
        dir: Direction,
        ladj: &mut [T],
        scratch: &mut Tape<T>,
    ) -> bool {
        self.map_in_place(x, Some(cols), ctx, dir, ladj, scratch, self.feature_major());
        true
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
        self.bijection
            .apply(&h, &self.tr, Direction::Forward, y, ladj, cache);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::affine_coupling::{AffineCoupling, AffineCouplingConfig};
    use crate::transforms::testing::randomize_params;
    use crate::transforms::{alternating_mask, half_mask};

    /// `run_in_place` on a matrix whose columns hold the features in a shuffled order gives the
    /// bits of the layer on the features in order (affine f32 feature-major, affine f64 and a
    /// rational-quadratic spline row-major; with a context and a partial slab).
    #[test]
    fn in_place_with_a_column_order_has_the_bits_of_the_ordered_input() {
        use crate::transforms::permutation::permute_columns;
        use crate::transforms::{SplineCoupling, SplineCouplingConfig, SplineKind};
        fn check<T: Real>(layer: &dyn Transform<T>, rng: &mut Rng) {
            let (n, d) = (150, layer.dim());
            let cols = rng.permutation(d);
            let stored = Matrix::from_fn(n, d, |_, _| T::c(rng.normal()));
            let ctx = Matrix::from_fn(n, layer.context_dim(), |_, _| T::c(rng.normal()));
            let mut x = Matrix::zeros(0, 0);
            permute_columns(&stored, &mut x, &cols);
            for dir in [Direction::Forward, Direction::Inverse, Direction::Sample] {
                let (mut want, mut want_ladj) = (Matrix::zeros(0, 0), vec![T::c(0.5); n]);
                if dir.inverse() {
                    layer.inverse(&x, Some(&ctx), &mut want, &mut want_ladj);
                } else {
                    layer.forward(&x, Some(&ctx), &mut want, &mut want_ladj);
                }
                let (mut y, mut ladj) = (stored.clone(), vec![T::c(0.5); n]);
                let mut tape = Tape::default();
                assert!(layer.run_in_place(&mut y, &cols, Some(&ctx), dir, &mut ladj, &mut tape));
                let mut got = Matrix::zeros(0, 0);
                permute_columns(&y, &mut got, &cols);
                let same = |a: &[T], b: &[T]| {
                    a.iter()
                        .zip(b)
                        .all(|(p, q)| p.to_f64().map(f64::to_bits) == q.to_f64().map(f64::to_bits))
                };
                // Sampling maps to the same bits; its log-determinants are not needed.
                assert!(same(got.as_slice(), want.as_slice()), "{dir:?}");
                if dir.needs_ladj() {
                    assert!(same(&ladj, &want_ladj), "{dir:?}");
                }
                assert!(
                    got.max_abs_diff(&x) > T::c(1e-3),
                    "the layer changed nothing"
                );
            }
        }
        let mut rng = Rng::new(12);
        let affine = AffineCouplingConfig {
            mask: alternating_mask(7, true),
            hidden: vec![16, 16],
            context_dim: 2,
            scale_clamp: 3.0,
            residual: true,
            dropout: 0.0,
        };
        let mut a32 = AffineCoupling::<f32>::new(affine.clone(), &mut rng);
        randomize_params(&mut a32, 0.7, &mut rng);
        assert!(Elementwise::<f32>::feature_major(a32.bijection()));
        check(&a32, &mut rng);
        let mut a64 = AffineCoupling::<f64>::new(affine, &mut rng);
        randomize_params(&mut a64, 0.7, &mut rng);
        check(&a64, &mut rng);
        let spline = SplineCouplingConfig {
            kind: SplineKind::RationalQuadratic,
            mask: half_mask(7, false),
            hidden: vec![16, 16],
            context_dim: 2,
            bins: 5,
            bound: 4.0,
            residual: false,
            dropout: 0.0,
        };
        let mut s32 = SplineCoupling::<f32>::new(spline, &mut rng);
        randomize_params(&mut s32, 0.5, &mut rng);
        check(&s32, &mut rng);
    }

    /// `layer`'s feature-major evaluation gives the row-major one's bits in both directions
    /// (events and log-determinants), and sampling the same events, on a chunk of 150 events
    /// (two full slabs and a partial one, partial vectors); the layer's own evaluation passes
    /// take the feature-major route.
    fn assert_feature_major_has_the_row_major_bits<B: Elementwise<f32>>(
        layer: &Coupling<f32, B>,
        spread: f64,
        rng: &mut Rng,
    ) {
        assert!(layer.bijection().feature_major() && layer.feature_major());
        let n = 150;
        let x = Matrix::from_fn(n, layer.dim, |_, _| (spread * rng.normal()) as f32);
        let c = Matrix::from_fn(n, layer.context_dim, |_, _| rng.normal() as f32);
        let ctx = (layer.context_dim > 0).then_some(&c);
        let bits = |(y, l): &(Matrix<f32>, Vec<f32>)| {
            let mut v: Vec<u32> = y.as_slice().iter().map(|v| v.to_bits()).collect();
            v.extend(l.iter().map(|v| v.to_bits()));
            v
        };
        for inverse in [false, true] {
            let mut outs = Vec::new();
            for fm in [false, true] {
                let mut y = x.clone();
                let mut ladj = vec![0.25f32; n];
                let mut tape = Tape::default();
                let dir = Direction::of(inverse);
                layer.map_in_place(&mut y, None, ctx, dir, &mut ladj, &mut tape, fm);
                outs.push((y, ladj));
            }
            let mut own = Matrix::zeros(0, 0);
            let mut own_ladj = vec![0.25f32; n];
            if inverse {
                layer.inverse(&x, ctx, &mut own, &mut own_ladj);
            } else {
                layer.forward(&x, ctx, &mut own, &mut own_ladj);
            }
            outs.push((own, own_ladj));
            assert_eq!(bits(&outs[0]), bits(&outs[1]), "inverse {inverse}");
            assert_eq!(bits(&outs[0]), bits(&outs[2]), "inverse {inverse}");
            // The layer really transformed something.
            assert!(outs[0].0.max_abs_diff(&x) > 1e-3);
            if inverse {
                let (mut y, mut ladj) = (x.clone(), vec![0.25f32; n]);
                let mut tape = Tape::default();
                layer.map_in_place(
                    &mut y,
                    None,
                    ctx,
                    Direction::Sample,
                    &mut ladj,
                    &mut tape,
                    true,
                );
                assert_eq!(
                    bits(&(y, vec![])),
                    bits(&(outs[0].0.clone(), vec![])),
                    "sampling"
                );
            }
        }
    }

    /// In `f32` the feature-major evaluation of affine couplings and of every spline coupling
    /// (with its logit rescaling) gives the row-major one's bits, with and without a context and
    /// residual blocks.
    #[test]
    fn feature_major_couplings_have_the_row_major_bits() {
        use crate::transforms::{SplineCoupling, SplineCouplingConfig, SplineKind};
        let mut rng = Rng::new(5);
        for (mask, ctx_dim, residual) in [
            (alternating_mask(18, false), 0, false),
            (half_mask(7, true), 3, true),
        ] {
            let mut layer = AffineCoupling::<f32>::new(
                AffineCouplingConfig {
                    mask: mask.clone(),
                    hidden: vec![24, 24],
                    context_dim: ctx_dim,
                    scale_clamp: 3.0,
                    residual,
                    dropout: 0.0,
                },
                &mut rng,
            );
            randomize_params(&mut layer, 0.7, &mut rng);
            assert_feature_major_has_the_row_major_bits(&layer, 1.0, &mut rng);
        }
        for (kind, bins, ctx_dim, residual) in [
            (SplineKind::RationalQuadratic, 8, 3, true),
            (SplineKind::Quadratic, 5, 0, false),
            (SplineKind::Linear, 16, 2, true),
        ] {
            let mut layer = SplineCoupling::<f32>::new(
                SplineCouplingConfig {
                    mask: half_mask(9, false),
                    hidden: vec![20, 20],
                    context_dim: ctx_dim,
                    residual,
                    dropout: 0.0,
                    kind,
                    bins,
                    bound: 3.0,
                },
                &mut rng,
            );
            randomize_params(&mut layer, 0.7, &mut rng);
            // Inputs spread so that some fall in the identity tails beyond the bound.
            assert_feature_major_has_the_row_major_bits(&layer, 2.0, &mut rng);
        }
    }
}
