//! A normalizing flow: a base distribution ([`crate::distributions`]) and a chain of transforms.
//!
//! `log p(x | c) = log p_base(f(x; c) | c) + sum_k log|det J_{f_k}|`, where `f = f_K o ... o f_1`
//! maps data to the base space; sampling draws `z ~ p_base(. | c)` and returns `f^{-1}(z)`. The
//! base is the standard normal `N(0, I)` unless the model says otherwise (MADE-MoG); a flow may
//! have no transforms at all when its base is a density model of its own.
//! Evaluation work is split over the batch into fixed chunks that run in parallel with rayon;
//! the chunking never depends on the thread count, so results are identical for any number of
//! threads.

use crate::distributions::{BaseSpec, Distribution, StdNormal};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::transforms::permutation::permute_columns;
use crate::transforms::{Direction, LayerSpec, Param, Transform};
use rayon::prelude::*;

/// Rows per parallel work item in evaluation passes (log-prob, sampling).
pub const EVAL_CHUNK_ROWS: usize = 1024;

/// `log N(z; 0, I)` of one row.
#[inline]
pub fn std_normal_log_prob<T: Real>(z: &[T]) -> T {
    let half_log_2pi = T::c(0.5 * (2.0 * std::f64::consts::PI).ln());
    let mut acc = T::zero();
    for &v in z {
        acc += v * v;
    }
    -T::c(0.5) * acc - half_log_2pi * T::c(z.len() as f64)
}

/// Draws the base-space vector of event `index` for sample seed `seed` (reproducible per event):
/// `out[d] = Rng::stream(seed, index).normal()` for `d = 0, 1, ...` in turn, computed as the
/// standard-normal base does for a whole chunk ([`crate::distributions::std_normal`]).
pub fn base_sample<T: Real>(seed: u64, index: u64, out: &mut [T]) {
    crate::distributions::std_normal::draw_into(seed, &[index], out.len(), out);
}

/// Reusable buffers of one evaluation worker: ping-pong activations and one scratch tape that
/// every layer uses in turn (one shared set of buffers stays in cache; per-layer sets would not).
struct EvalScratch<T> {
    a: Matrix<T>,
    b: Matrix<T>,
    /// The chunk's rows of the context.
    ctx: Matrix<T>,
    tape: Tape<T>,
    /// Base log-densities of the chunk.
    lp: Vec<T>,
    /// Log-determinants of a sampling pass (not needed, but every layer adds to them).
    ladj: Vec<T>,
    /// Event indices of a sampling chunk.
    indices: Vec<u64>,
    /// Where each feature of `a` is stored while layers run in place: feature `j` in column
    /// `cols[j]` (see [`Flow::run_layers`]).
    cols: Vec<usize>,
    /// The previous `cols` while a permutation is composed into it.
    cols_before: Vec<usize>,
}

impl<T: Real> Default for EvalScratch<T> {
    fn default() -> Self {
        Self {
            a: Matrix::zeros(0, 0),
            b: Matrix::zeros(0, 0),
            ctx: Matrix::zeros(0, 0),
            tape: Tape::default(),
            lp: Vec::new(),
            ladj: Vec::new(),
            indices: Vec::new(),
            cols: Vec::new(),
            cols_before: Vec::new(),
        }
    }
}

impl<T: Real> EvalScratch<T> {
    /// Feature `j` of the pass's current state is now column `cols[map[j]]` (a permutation layer
    /// `out_j = in_{map[j]}`, composed instead of applied).
    fn compose_columns(&mut self, map: &[usize]) {
        std::mem::swap(&mut self.cols, &mut self.cols_before);
        self.cols.clear();
        self.cols.extend(map.iter().map(|&j| self.cols_before[j]));
    }

    /// Every one of `d` features in its own column.
    fn reset_columns(&mut self, d: usize) {
        self.cols.clear();
        self.cols.extend(0..d);
    }

    /// Moves every feature of `a` to its own column (`a_j <- a_{cols[j]}`) unless it is there.
    fn put_columns_in_order(&mut self) {
        if self.cols.iter().enumerate().all(|(j, &c)| c == j) {
            return;
        }
        permute_columns(&self.a, &mut self.b, &self.cols);
        std::mem::swap(&mut self.a, &mut self.b);
        self.reset_columns(self.cols.len());
    }
}

/// Which way an evaluation pass runs the layers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Data -> base with log-determinants.
    Forward,
    /// Data -> base, then the base log-density added to the log-determinants: `log p(x)`.
    LogProb,
    /// Base -> data with log-determinants.
    Inverse,
    /// Base -> data; log-determinants not needed.
    Sample,
}

/// A normalizing flow over `dim` features with an optional context of `context_dim` values.
pub struct Flow<T: Real> {
    dim: usize,
    context_dim: usize,
    layers: Vec<Box<dyn Transform<T>>>,
    base: Box<dyn Distribution<T>>,
}

impl<T: Real> Flow<T> {
    /// A flow from already-built layers (all must have the same `dim`) on a standard-normal base.
    pub fn new(dim: usize, context_dim: usize, layers: Vec<Box<dyn Transform<T>>>) -> Self {
        Self::with_base(dim, context_dim, layers, Box::new(StdNormal::new(dim)))
    }

    /// A flow from already-built layers and base distribution (all of the same `dim`).
    pub fn with_base(
        dim: usize,
        context_dim: usize,
        layers: Vec<Box<dyn Transform<T>>>,
        base: Box<dyn Distribution<T>>,
    ) -> Self {
        debug_assert!(layers.iter().all(|l| l.dim() == dim) && base.dim() == dim);
        Self {
            dim,
            context_dim,
            layers,
            base,
        }
    }

    /// Builds every layer of `specs` with fresh parameters drawn from `Rng::new(seed)`, on a
    /// standard-normal base.
    pub fn from_specs(dim: usize, context_dim: usize, specs: &[LayerSpec], seed: u64) -> Self {
        Self::from_parts(dim, context_dim, &BaseSpec::StdNormal, specs, seed)
    }

    /// Builds every layer of `specs` and then the base `base` with fresh parameters drawn from
    /// one `Rng::new(seed)` (the layers get the values [`Flow::from_specs`] gives them).
    pub fn from_parts(
        dim: usize,
        context_dim: usize,
        base: &BaseSpec,
        specs: &[LayerSpec],
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let layers = specs.iter().map(|s| s.build::<T>(&mut rng)).collect();
        let base = base.build::<T>(dim, &mut rng);
        Self::with_base(dim, context_dim, layers, base)
    }

    /// The layer descriptions.
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec()).collect()
    }

    /// The base distribution's description.
    pub fn base_spec(&self) -> BaseSpec {
        self.base.spec()
    }

    /// The base distribution.
    pub fn base(&self) -> &dyn Distribution<T> {
        self.base.as_ref()
    }

    /// The mutable base distribution.
    pub fn base_mut(&mut self) -> &mut dyn Distribution<T> {
        self.base.as_mut()
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Width of the context vector (0 = unconditional).
    pub fn context_dim(&self) -> usize {
        self.context_dim
    }

    /// The layers, data side first.
    pub fn layers(&self) -> &[Box<dyn Transform<T>>] {
        &self.layers
    }

    /// Mutable layers.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Transform<T>>] {
        &mut self.layers
    }

    /// Total number of trainable scalars (the layers', then the base's).
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.num_params()).sum::<usize>() + self.base.num_params()
    }

    /// Every trainable parameter in gradient order: each layer's, then the base's.
    fn all_params(&self) -> impl Iterator<Item = &Param<T>> {
        self.layers
            .iter()
            .flat_map(|l| l.params())
            .chain(self.base.params())
    }

    /// All trainable parameters concatenated in gradient order.
    pub fn param_vector(&self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.num_params());
        self.copy_params_into(&mut v);
        v
    }

    /// Writes all trainable parameters into `out` (laid out like [`Flow::param_vector`]), reusing
    /// its allocation.
    pub fn copy_params_into(&self, out: &mut Vec<T>) {
        out.clear();
        for p in self.all_params() {
            out.extend_from_slice(&p.data);
        }
    }

    /// Every trainable parameter tensor's values in gradient order (what
    /// [`Flow::param_vector`] concatenates).
    pub fn param_slices(&self) -> impl Iterator<Item = &[T]> {
        self.all_params().map(|p| p.data.as_slice())
    }

    /// Every trainable parameter tensor's values in gradient order, mutable (for an optimizer
    /// step in place: [`crate::engine::Adam::step_parts`]). Taking them marks cached copies of
    /// the weights (transposes) stale, as [`Flow::set_param_vector`] does.
    pub fn param_slices_mut(&mut self) -> Vec<&mut [T]> {
        let layers = self.layers.iter_mut().flat_map(|l| l.params_mut());
        layers
            .chain(self.base.params_mut())
            .map(|p| p.data.as_mut_slice())
            .collect()
    }

    /// Overwrites all trainable parameters from a vector laid out like [`Flow::param_vector`].
    pub fn set_param_vector(&mut self, v: &[T]) {
        let mut off = 0;
        let layers = self.layers.iter_mut().flat_map(|l| l.params_mut());
        for p in layers.chain(self.base.params_mut()) {
            let n = p.data.len();
            p.data.copy_from_slice(&v[off..off + n]);
            off += n;
        }
    }

    /// All buffers (non-trainable state such as running statistics) concatenated.
    pub fn buffer_vector(&self) -> Vec<T> {
        let mut v = Vec::new();
        for l in &self.layers {
            for p in l.buffers() {
                v.extend_from_slice(&p.data);
            }
        }
        v
    }

    /// Overwrites all buffers from a vector laid out like [`Flow::buffer_vector`].
    pub fn set_buffer_vector(&mut self, v: &[T]) {
        let mut off = 0;
        for l in &mut self.layers {
            for p in l.buffers_mut() {
                let n = p.data.len();
                p.data.copy_from_slice(&v[off..off + n]);
                off += n;
            }
        }
    }

    /// Every parameter and buffer with its full name: `layers.{k}.{name}` for layer `k`,
    /// `base.{name}` for the base distribution.
    pub fn named_tensors(&self) -> Vec<(String, &Param<T>)> {
        let mut out = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            for p in l.params().into_iter().chain(l.buffers()) {
                out.push((format!("layers.{k}.{}", p.name), p));
            }
        }
        for p in self.base.params() {
            out.push((format!("base.{}", p.name), p));
        }
        out
    }

    /// Runs every layer (in reverse order and inverted when `inverse`) on `scratch.a`, leaving the
    /// result there and adding the log-determinants to `ladj` (unspecified with `Pass::Sample`).
    ///
    /// No data moves for a permutation layer: its map is composed into the column order
    /// `scratch.cols`, which the next layers read in place ([`Transform::run_in_place`]:
    /// coupling layers, which also skip their copy of the input that way). The columns are put
    /// in order before a layer without an in-place form and at the end. Every value goes
    /// through the same operations as layer by layer, so the bits are the same.
    fn run_layers(
        &self,
        scratch: &mut EvalScratch<T>,
        ctx: Option<&Matrix<T>>,
        pass: Pass,
        ladj: &mut [T],
    ) {
        let nl = self.layers.len();
        let dir = match pass {
            Pass::Forward | Pass::LogProb => Direction::Forward,
            Pass::Inverse => Direction::Inverse,
            Pass::Sample => Direction::Sample,
        };
        let inverse = dir.inverse();
        scratch.reset_columns(self.dim);
        for step in 0..nl {
            let k = if inverse { nl - 1 - step } else { step };
            let layer = &self.layers[k];
            if let Some(map) = layer.column_map(inverse) {
                scratch.compose_columns(map);
                continue;
            }
            let sc = &mut *scratch;
            if layer.run_in_place(&mut sc.a, &sc.cols, ctx, dir, ladj, &mut sc.tape) {
                continue;
            }
            scratch.put_columns_in_order();
            let (a, b, tape) = (&scratch.a, &mut scratch.b, &mut scratch.tape);
            match dir {
                Direction::Forward => layer.forward_reusing(a, ctx, b, ladj, tape),
                Direction::Inverse => layer.inverse_reusing(a, ctx, b, ladj, tape),
                Direction::Sample => layer.inverse_sample(a, ctx, b, ladj, tape),
            }
            std::mem::swap(&mut scratch.a, &mut scratch.b);
        }
        scratch.put_columns_in_order();
    }

    /// Runs the whole chain over fixed chunks of rows in parallel, each worker reusing its own
    /// buffers from chunk to chunk, and writes the results in order.
    fn par_chunks(
        &self,
        x: &Matrix<T>,
        ctx: Option<&Matrix<T>>,
        pass: Pass,
    ) -> (Matrix<T>, Vec<T>) {
        let (n, d) = (x.rows(), self.dim);
        let mut out = Matrix::zeros(n, d);
        let mut ladj = vec![T::zero(); n];
        out.as_mut_slice()
            .par_chunks_mut((EVAL_CHUNK_ROWS * d).max(1))
            .zip(ladj.par_chunks_mut(EVAL_CHUNK_ROWS))
            .enumerate()
            .for_each_init(EvalScratch::default, |scratch, (c, (o, l))| {
                let s = c * EVAL_CHUNK_ROWS;
                let e = s + l.len();
                scratch.a.copy_rows_from(x, s, e);
                let mut cm = std::mem::take(&mut scratch.ctx);
                let cref = ctx.map(|c| cm.copy_rows_from(c, s, e));
                self.run_layers(scratch, cref, pass, l);
                if pass == Pass::LogProb {
                    let sc = &mut *scratch;
                    self.base
                        .log_prob_reusing(&sc.a, cref, &mut sc.lp, &mut sc.tape);
                    for (v, b) in l.iter_mut().zip(&sc.lp) {
                        *v += *b;
                    }
                }
                scratch.ctx = cm;
                o.copy_from_slice(scratch.a.as_slice());
            });
        (out, ladj)
    }

    /// Data -> base space for a whole batch (parallel): `z` and `log|det dz/dx|`.
    pub fn forward(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>) -> (Matrix<T>, Vec<T>) {
        self.par_chunks(x, ctx, Pass::Forward)
    }

    /// Base space -> data for a whole batch (parallel): `x` and `log|det dx/dz|`.
    pub fn inverse(&self, z: &Matrix<T>, ctx: Option<&Matrix<T>>) -> (Matrix<T>, Vec<T>) {
        self.par_chunks(z, ctx, Pass::Inverse)
    }

    /// `log p(x | c)` per row.
    pub fn log_prob(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>) -> Vec<T> {
        self.par_chunks(x, ctx, Pass::LogProb).1
    }

    /// `log p_base(z | c)` per row of base-space vectors `z` (parallel over fixed chunks).
    pub fn base_log_prob(&self, z: &Matrix<T>, ctx: Option<&Matrix<T>>) -> Vec<T> {
        let d = self.dim;
        let mut lp = vec![T::zero(); z.rows()];
        lp.par_chunks_mut(EVAL_CHUNK_ROWS)
            .enumerate()
            .for_each_init(EvalScratch::default, |sc, (c, l)| {
                let s = c * EVAL_CHUNK_ROWS;
                let e = s + l.len();
                sc.a.copy_rows_from(z, s, e);
                let cref = ctx.map(|c| sc.ctx.copy_rows_from(c, s, e));
                self.base
                    .log_prob_reusing(&sc.a, cref, &mut sc.lp, &mut sc.tape);
                l.copy_from_slice(&sc.lp[..e - s]);
                debug_assert_eq!(sc.a.cols(), d);
            });
        lp
    }

    /// Draws the base-space vectors of the events `indices` of the sample with seed `seed`
    /// (row `r` is event `indices[r]`, with context row `r`), parallel over fixed chunks; each
    /// event's vector depends only on `(seed, index)` and its context.
    pub fn sample_base(&self, seed: u64, indices: &[u64], ctx: Option<&Matrix<T>>) -> Matrix<T> {
        let d = self.dim;
        let mut z = Matrix::zeros(indices.len(), d);
        z.as_mut_slice()
            .par_chunks_mut((EVAL_CHUNK_ROWS * d).max(1))
            .zip(indices.par_chunks(EVAL_CHUNK_ROWS))
            .enumerate()
            .for_each_init(EvalScratch::default, |sc, (c, (o, idx))| {
                let s = c * EVAL_CHUNK_ROWS;
                let cref = ctx.map(|m| sc.ctx.copy_rows_from(m, s, s + idx.len()));
                self.base
                    .sample_reusing(seed, idx, cref, &mut sc.a, &mut sc.tape);
                o.copy_from_slice(sc.a.as_slice());
            });
        z
    }

    /// The base-space vectors of events `start..start + n` (see [`Flow::sample_base`]).
    fn sample_base_range(
        &self,
        start: u64,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<T>>,
    ) -> Matrix<T> {
        let indices: Vec<u64> = (start..start + n as u64).collect();
        self.sample_base(seed, &indices, ctx)
    }

    /// Draws events `start..start + n` of the sample with seed `seed` (event `i` depends only on
    /// `(seed, i)`), returning them with their log-densities
    /// `log p(x) = log p_base(z) - log|det dx/dz|`.
    pub fn sample_range(
        &self,
        start: u64,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<T>>,
    ) -> (Matrix<T>, Vec<T>) {
        let z = self.sample_base_range(start, n, seed, ctx);
        let (x, ladj) = self.inverse(&z, ctx);
        let lp = self
            .base_log_prob(&z, ctx)
            .iter()
            .zip(&ladj)
            .map(|(b, l)| *b - *l)
            .collect();
        (x, lp)
    }

    /// Events `start..start + n` of the sample with seed `seed`, without their log-densities
    /// (the same events as [`Flow::sample_range`]; layers may skip their log-determinants, see
    /// [`Transform::inverse_sample`]).
    pub fn sample_events(
        &self,
        start: u64,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<T>>,
    ) -> Matrix<T> {
        // One parallel pass: each chunk draws its base vectors into the worker's buffer and maps
        // them to events there, the same chunks and operations as `sample_base_range` followed
        // by `events_from_base` (so the same bits), without the base sample's own matrix, its
        // copy into the workers and the events' log-determinant vector.
        let d = self.dim;
        let mut out = Matrix::zeros(n, d);
        out.as_mut_slice()
            .par_chunks_mut((EVAL_CHUNK_ROWS * d).max(1))
            .enumerate()
            .for_each_init(EvalScratch::default, |sc, (c, o)| {
                let s = c * EVAL_CHUNK_ROWS;
                let rows = o.len().checked_div(d).unwrap_or(0);
                let first = start + s as u64;
                sc.indices.clear();
                sc.indices.extend(first..first + rows as u64);
                let mut cm = std::mem::take(&mut sc.ctx);
                let cref = ctx.map(|m| cm.copy_rows_from(m, s, s + rows));
                self.base
                    .sample_reusing(seed, &sc.indices, cref, &mut sc.a, &mut sc.tape);
                let mut ladj = std::mem::take(&mut sc.ladj);
                ladj.clear();
                ladj.resize(rows, T::zero());
                self.run_layers(sc, cref, Pass::Sample, &mut ladj);
                sc.ladj = ladj;
                sc.ctx = cm;
                o.copy_from_slice(sc.a.as_slice());
            });
        out
    }

    /// Maps base-space vectors `z` to events, as [`Flow::sample_events`] does for the vectors
    /// it draws (layers may skip their log-determinants, see [`Transform::inverse_sample`]).
    pub fn events_from_base(&self, z: &Matrix<T>, ctx: Option<&Matrix<T>>) -> Matrix<T> {
        self.par_chunks(z, ctx, Pass::Sample).0
    }

    /// Draws `n` events with seed `seed`.
    pub fn sample(&self, n: usize, seed: u64, ctx: Option<&Matrix<T>>) -> Matrix<T> {
        self.sample_events(0, n, seed, ctx)
    }

    /// Draws `n` events with their log-densities.
    pub fn sample_and_log_prob(
        &self,
        n: usize,
        seed: u64,
        ctx: Option<&Matrix<T>>,
    ) -> (Matrix<T>, Vec<T>) {
        self.sample_range(0, n, seed, ctx)
    }
}
