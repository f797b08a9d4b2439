//! MADE: masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle 2015).
//!
//! A dense ReLU network `h_l = relu(h_{l-1} (M_l ⊙ W_l)^T + b_l)`, `out = h_L (M_out ⊙ W_out)^T + b_out`
//! whose binary masks `M` make output block `b` of feature `d` depend only on the features that
//! precede `d` in the autoregressive `order` (plus the unmasked context).
//!
//! Degrees: feature `order[k]` has degree `m(order[k]) = k + 1` (1..D); hidden unit `k` of every
//! layer has degree `m_k = (k mod (D-1)) + 1` (deterministic cycling over 1..D-1; degree 0 when
//! D = 1, so such units read only the context). With a context, hidden degrees cycle over 0..D-1
//! instead (`m_k = k mod D`), so that degree-0 units, which read only the context, make even the
//! first feature's scale and shift depend on it. Masks:
//! hidden `M[k, j] = [m_k >= m_j]`, output `M[(b, d), j] = [m(d) > m_j]`. Context inputs have no
//! degree: every first-layer hidden unit (or every output when there are no hidden layers) sees them.
//!
//! Input layout: the `D` features in their natural column order, followed by the `C` context
//! columns. Output layout: column `b * D + d` is block `b` (0..`out_per_feature`) of feature `d`.
//!
//! Masking strategy: the stored parameters are the *raw* weights `W`; every call multiplies the
//! 0/1 mask into a copy `M ⊙ W` once and uses it in the products. The gradient of the raw weights
//! is `M ⊙ dL/d(M ⊙ W)`, which is exact (masked entries do not influence the output, so their
//! gradient is exactly zero), and the autoregressive property holds whatever values the raw
//! weights take (e.g. after an optimizer step or an arbitrary parameter load).
//!
//! The output layer starts at zero, so a MAF layer starts as the identity, like [`crate::nn::Mlp`].
//!
//! Dropout (off unless [`Made::set_dropout`]): the training pass drops each hidden unit with
//! probability `p` and scales kept ones by `1 / (1 - p)` after the ReLU,
//! `h_l = relu(a_l) ⊙ m_l / (1 - p)` (inverted dropout, masks from the tape's seed,
//! [`crate::nn::dropout`]); the backward pass multiplies the ReLU derivative by the same factor
//! (dropped units have `h = 0`, so `[h > 0]` already zeroes them). Dropping hidden units keeps
//! the autoregressive property: it only removes paths. Evaluation passes apply no dropout.

use crate::engine::dense;
use crate::engine::gemm::{gemm_nn, gemm_tn};
use crate::engine::{Matrix, Real, Rng, Tape};
use crate::nn::dropout::DropMask;
use crate::transforms::Param;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Errors in a [`MadeConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MadeError {
    /// The order is not a permutation of `0..dim`.
    #[error("autoregressive order {order:?} is not a permutation of 0..{dim}")]
    InvalidOrder {
        /// The offending order.
        order: Vec<usize>,
        /// The number of features.
        dim: usize,
    },
    /// `out_per_feature` is zero.
    #[error("out_per_feature must be at least 1")]
    NoOutputs,
}

/// Shape of a [`Made`] network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MadeConfig {
    /// Number of autoregressive features `D`.
    pub dim: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Width `C` of the context vector (0 = unconditional); context inputs are unmasked.
    #[serde(default)]
    pub context_dim: usize,
    /// Number of output values per feature (2 for an affine MAF: log-scale and shift).
    pub out_per_feature: usize,
    /// Autoregressive order: feature `order[k]` is the k-th to be generated.
    pub order: Vec<usize>,
}

impl MadeConfig {
    /// Checks that `order` is a permutation of `0..dim` and that there is at least one output
    /// per feature.
    pub fn validate(&self) -> Result<(), MadeError> {
        if self.out_per_feature == 0 {
            return Err(MadeError::NoOutputs);
        }
        let mut seen = vec![false; self.dim];
        let ok = self.order.len() == self.dim
            && self
                .order
                .iter()
                .all(|&d| d < self.dim && !std::mem::replace(&mut seen[d], true));
        if ok {
            Ok(())
        } else {
            Err(MadeError::InvalidOrder {
                order: self.order.clone(),
                dim: self.dim,
            })
        }
    }
}

/// Degree of hidden unit `k` of a MADE with `d` features and `c` context columns (see the module
/// documentation). With a context, degree-0 units (context only) let the first feature's
/// parameters depend on the context.
fn hidden_degree(d: usize, c: usize, k: usize) -> usize {
    if c > 0 {
        k % d
    } else if d > 1 {
        k % (d - 1) + 1
    } else {
        0
    }
}

/// The hidden units of degree `g` in a layer of `width` units, in increasing index: degrees cycle
/// with period `D` (with a context) or `D - 1`, so they are every period-th unit from the first.
fn units_of_degree(d: usize, c: usize, width: usize, g: usize) -> std::iter::StepBy<Range<usize>> {
    let (first, period) = if g >= d.max(1) {
        (width, 1) // no unit has a degree of D or more
    } else if c > 0 {
        (g, d.max(1))
    } else if d > 1 {
        // No unit has degree 0 (an empty range).
        (if g == 0 { width } else { g - 1 }, d - 1)
    } else {
        (if g == 0 { 0 } else { width }, 1)
    };
    (first.min(width)..width).step_by(period)
}

/// A masked (autoregressive) ReLU network; parameters are `layers.{l}.weight` (`out x in`, raw,
/// unmasked values) and `layers.{l}.bias`.
#[derive(Clone, Debug)]
pub struct Made<T> {
    config: MadeConfig,
    params: Vec<Param<T>>, // weight, bias, weight, bias, ...
    masks: Vec<Vec<T>>,    // one 0/1 mask per layer, same shape as the weight
    dropout: f64,          // of the hidden units in training passes
}

impl<T: Real> Made<T> {
    /// A network with uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) hidden weights and biases and a
    /// zero output layer.
    pub fn new(config: MadeConfig, rng: &mut Rng) -> Result<Self, MadeError> {
        config.validate()?;
        let d = config.dim;
        let c = config.context_dim;
        // Degrees of the input features (context columns get none).
        let mut deg_in = vec![0usize; d];
        for (k, &f) in config.order.iter().enumerate() {
            deg_in[f] = k + 1;
        }
        let hidden_deg =
            |width: usize| -> Vec<usize> { (0..width).map(|k| hidden_degree(d, c, k)).collect() };
        let mut widths = vec![d + c];
        widths.extend_from_slice(&config.hidden);
        widths.push(config.out_per_feature * d);
        let n_layers = widths.len() - 1;
        let mut params = Vec::with_capacity(2 * n_layers);
        let mut masks = Vec::with_capacity(n_layers);
        // Degrees of the current layer's inputs; `None` marks an unmasked context input.
        let mut prev: Vec<Option<usize>> = deg_in
            .iter()
            .map(|&m| Some(m))
            .chain(std::iter::repeat_n(None, c))
            .collect();
        for l in 0..n_layers {
            let (fan_in, fan_out) = (widths[l], widths[l + 1]);
            let last = l + 1 == n_layers;
            let out_deg: Vec<usize> = if last {
                (0..fan_out).map(|o| deg_in[o % d]).collect()
            } else {
                hidden_deg(fan_out)
            };
            let mut mask = vec![T::zero(); fan_out * fan_in];
            for (o, &mo) in out_deg.iter().enumerate() {
                for (j, pj) in prev.iter().enumerate() {
                    let on = match pj {
                        None => true,
                        Some(mj) if last => mo > *mj,
                        Some(mj) => mo >= *mj,
                    };
                    if on {
                        mask[o * fan_in + j] = T::one();
                    }
                }
            }
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let mut draw = |n: usize| -> Vec<T> {
                (0..n)
                    .map(|_| {
                        if last {
                            T::zero()
                        } else {
                            T::c(rng.uniform_range(-bound, bound))
                        }
                    })
                    .collect()
            };
            let w = draw(fan_in * fan_out);
            let b = draw(fan_out);
            params.push(Param::new(
                format!("layers.{l}.weight"),
                vec![fan_out, fan_in],
                w,
            ));
            params.push(Param::new(format!("layers.{l}.bias"), vec![fan_out], b));
            masks.push(mask);
            prev = out_deg.into_iter().map(Some).collect();
        }
        Ok(Self {
            config,
            params,
            masks,
            dropout: 0.0,
        })
    }

    /// Sets the dropout probability of the hidden units in training passes
    /// ([`Made::forward_train`]; `0` = none, the default; clamped to `[0, 0.99]`).
    pub fn set_dropout(&mut self, p: f64) {
        self.dropout = if p.is_finite() {
            p.clamp(0.0, 0.99)
        } else {
            0.0
        };
    }

    /// The dropout probability of the hidden units in training passes.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// The network's shape.
    pub fn config(&self) -> &MadeConfig {
        &self.config
    }

    /// Parameters in gradient order.
    pub fn params(&self) -> Vec<&Param<T>> {
        self.params.iter().collect()
    }

    /// Mutable parameters in gradient order.
    pub fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        self.params.iter_mut().collect()
    }

    /// Total number of scalars in the parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.data.len()).sum()
    }

    /// The 0/1 mask of layer `l` (same shape as `layers.{l}.weight`), if the layer exists.
    pub fn mask(&self, l: usize) -> Option<&[T]> {
        self.masks.get(l).map(|m| m.as_slice())
    }

    fn n_layers(&self) -> usize {
        self.masks.len()
    }

    /// Writes `M_l ⊙ W_l` into `out` (shape `fan_out x fan_in`).
    fn masked_weight(&self, l: usize, out: &mut Matrix<T>) {
        let w = &self.params[2 * l];
        out.resize(w.shape[0], w.shape[1]);
        for ((o, wv), mv) in out
            .as_mut_slice()
            .iter_mut()
            .zip(&w.data)
            .zip(&self.masks[l])
        {
            *o = *wv * *mv;
        }
    }

    /// One layer `out = act(inp Wm^T + b)`, given `wmt = Wm^T` (the masked weight, transposed).
    fn layer(&self, l: usize, wmt: &Matrix<T>, inp: &Matrix<T>, out: &mut Matrix<T>) {
        let b = &self.params[2 * l + 1].data;
        let (fan_in, fan_out) = (wmt.rows(), wmt.cols());
        let n = inp.rows();
        out.resize(n, fan_out);
        gemm_nn(
            n,
            fan_in,
            fan_out,
            T::one(),
            inp.as_slice(),
            wmt.as_slice(),
            T::zero(),
            out.as_mut_slice(),
        );
        let last = l + 1 == self.n_layers();
        for i in 0..n {
            let row = out.row_mut(i);
            if last {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += *bb;
                }
            } else {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v = (*v + *bb).max(T::zero());
                }
            }
        }
    }

    /// Writes the network input `[x, c]` (D + C columns) into `out`. A missing context reads as
    /// zeros; extra or missing columns of `x` or `c` are ignored / read as zeros.
    pub fn fill_input(&self, x: &Matrix<T>, ctx: Option<&Matrix<T>>, out: &mut Matrix<T>) {
        let (d, c) = (self.config.dim, self.config.context_dim);
        let n = x.rows();
        out.resize(n, d + c);
        for i in 0..n {
            let o = out.row_mut(i);
            o.fill(T::zero());
            let xr = x.row(i);
            let k = xr.len().min(d);
            o[..k].copy_from_slice(&xr[..k]);
            if let Some(ctx) = ctx.filter(|m| m.rows() > i) {
                let cr = ctx.row(i);
                let k = cr.len().min(c);
                o[d..d + k].copy_from_slice(&cr[..k]);
            }
        }
    }

    /// Evaluation: `out = made(input)`, `input` = `[x (D columns), context (C columns)]`,
    /// `out` = `out_per_feature * D` columns (resized here).
    pub fn forward(&self, input: &Matrix<T>, out: &mut Matrix<T>) {
        let nl = self.n_layers();
        let (mut wm, mut wmt) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
        let mut a = input.clone();
        let mut b = Matrix::zeros(0, 0);
        for l in 0..nl {
            self.masked_weight(l, &mut wm);
            wm.transpose_into(&mut wmt);
            if l + 1 == nl {
                self.layer(l, &wmt, &a, out);
            } else {
                self.layer(l, &wmt, &a, &mut b);
                std::mem::swap(&mut a, &mut b);
            }
        }
    }

    /// [`Made::forward`] with every buffer kept in `scratch` (allocation-free once warm; the
    /// same computation, without dropout).
    pub fn forward_reusing(&self, input: &Matrix<T>, out: &mut Matrix<T>, scratch: &mut Tape<T>) {
        self.pass(input, out, scratch, 0.0);
    }

    /// Training forward pass: like [`Made::forward`] with the dropout of [`Made::set_dropout`]
    /// (masks from `tape.seed`), saving the hidden activations in `tape.mats[0..L-1]` and the
    /// masked weights in `tape.mats[L-1..2L-1]` (L = number of layers); `tape.mats[2L-1]` is
    /// scratch for the transposed masked weight of the current layer.
    pub fn forward_train(&self, input: &Matrix<T>, out: &mut Matrix<T>, tape: &mut Tape<T>) {
        self.pass(input, out, tape, self.dropout);
    }

    /// [`Made::forward_train`] with dropout `p` of the hidden units.
    fn pass(&self, input: &Matrix<T>, out: &mut Matrix<T>, tape: &mut Tape<T>, p: f64) {
        let nl = self.n_layers();
        let seed = tape.seed;
        let mut wmt = std::mem::take(tape.mat(2 * nl - 1, 0, 0)); // also makes every slot exist
        for l in 0..nl {
            self.masked_weight(l, &mut tape.mats[nl - 1 + l]);
            tape.mats[nl - 1 + l].transpose_into(&mut wmt);
            if l + 1 == nl {
                let inp = if l == 0 { input } else { &tape.mats[l - 1] };
                self.layer(l, &wmt, inp, out);
            } else {
                let (done, rest) = tape.mats.split_at_mut(l);
                let inp = if l == 0 { input } else { &done[l - 1] };
                self.layer(l, &wmt, inp, &mut rest[0]);
                DropMask::apply(rest[0].as_mut_slice(), seed, l, p);
            }
        }
        tape.mats[2 * nl - 1] = wmt;
    }

    /// Backward pass of [`Made::forward_train`]: given `dout = dL/d out`, adds `dL/d theta` into
    /// `grads` (length [`Made::num_params`]; masked weight entries receive exactly zero) and, when
    /// asked, writes `dL/d input` (D + C columns) into `dinput`. `scratch` holds reusable buffers.
    pub fn backward(
        &self,
        input: &Matrix<T>,
        tape: &Tape<T>,
        dout: &Matrix<T>,
        dinput: Option<&mut Matrix<T>>,
        grads: &mut [T],
        scratch: &mut Tape<T>,
    ) {
        let nl = self.n_layers();
        let n = input.rows();
        // Offset of layer l's weight inside `grads`.
        let offset =
            |l: usize| -> usize { self.params[..2 * l].iter().map(|p| p.data.len()).sum() };
        let mut cur = std::mem::take(scratch.mat(0, 0, 0));
        let mut nxt = std::mem::take(scratch.mat(1, 0, 0));
        let mut gtmp = std::mem::take(scratch.mat(2, 0, 0));
        cur.copy_from(dout);
        let mut dinput = dinput;
        for l in (0..nl).rev() {
            let wm = &tape.mats[nl - 1 + l];
            let (fan_out, fan_in) = (wm.rows(), wm.cols());
            let inp = if l == 0 { input } else { &tape.mats[l - 1] };
            // cur = dL/d(pre-activation) of layer l.
            gtmp.resize(fan_out, fan_in);
            gemm_tn(
                fan_out,
                n,
                fan_in,
                T::one(),
                cur.as_slice(),
                inp.as_slice(),
                T::zero(),
                gtmp.as_mut_slice(),
            );
            let (gw, rest) = grads[offset(l)..].split_at_mut(fan_out * fan_in);
            for ((g, v), m) in gw.iter_mut().zip(gtmp.as_slice()).zip(&self.masks[l]) {
                *g += *v * *m;
            }
            let gb = &mut rest[..fan_out];
            for i in 0..n {
                for (g, v) in gb.iter_mut().zip(cur.row(i)) {
                    *g += *v;
                }
            }
            if l == 0 && dinput.is_none() {
                break;
            }
            let target: &mut Matrix<T> = match (l, dinput.as_deref_mut()) {
                (0, Some(di)) => di,
                _ => &mut nxt,
            };
            target.resize(n, fan_in);
            gemm_nn(
                n,
                fan_out,
                fan_in,
                T::one(),
                cur.as_slice(),
                wm.as_slice(),
                T::zero(),
                target.as_mut_slice(),
            );
            if l == 0 {
                break;
            }
            // relu' of layer l-1: its output is positive exactly where the pre-activation is
            // (and the unit was kept, which carries the dropout factor).
            let h = &tape.mats[l - 1];
            let keep = T::c(1.0 / (1.0 - self.dropout));
            for (g, hv) in nxt.as_mut_slice().iter_mut().zip(h.as_slice()) {
                *g = if *hv <= T::zero() {
                    T::zero()
                } else {
                    *g * keep
                };
            }
            std::mem::swap(&mut cur, &mut nxt);
        }
        *scratch.mat(0, 0, 0) = cur;
        *scratch.mat(1, 0, 0) = nxt;
        *scratch.mat(2, 0, 0) = gtmp;
    }
}

/// Incremental autoregressive evaluation (sampling, inversion): step `s` draws feature
/// `order[s]`, which has degree `s + 1` and reads only hidden units of degree `<= s`. Units of
/// degree `< s` are final since earlier steps; the units of degree exactly `s` become final now
/// (their inputs, features `order[..s]` and units of degree `<= s` of the layer below, are). So
/// step `s` computes just the degree-`s` units of every hidden layer, then the outputs of
/// `order[s]`: over the `D` steps every unit is computed once, the work of one network pass
/// instead of the `D` passes of recomputing the whole network per feature.
///
/// Same bits as the full pass ([`Made::forward`]): each unit is the same product over all its
/// inputs in the same order, followed by the same bias and ReLU. Only the values of the inputs
/// its mask zeroes differ (units not computed yet are zero here), and a product with a zero weight
/// is a signed zero, which leaves a sum accumulated from `+0` unchanged (finite inputs assumed).
///
/// Scratch layout (the tape given to [`Made::incremental_begin`] and every step):
/// `mats[l]` (`l < L-1`) hidden activations of layer `l`, in unit order; `mats[L-1+l]` layer `l`'s
/// masked weight, transposed and regrouped: for a hidden layer one `fan_in x n_g` block per degree
/// `g` (the layer's `n_g` units of degree `g`, in increasing index), for the output layer one
/// `fan_in x out_per_feature` block per step; `mats[2L-1]` a step's product before it is
/// scattered into its units; `mats[2L+l]` layer `l`'s bias in the order of its weight's columns.
/// The bias and ReLU are fused into the product where the kernel can ([`dense::forward`]), with the same
/// bits as the separate loop of the full pass.
impl<T: Real> Made<T> {
    /// Prepares `scratch` for [`Made::incremental_step`] on `rows` rows: zeroes the hidden
    /// activations and regroups the masked weights by degree (reusing the buffers).
    pub fn incremental_begin(&self, rows: usize, scratch: &mut Tape<T>) {
        let nl = self.n_layers();
        let (d, c) = (self.config.dim, self.config.context_dim);
        let per = self.config.out_per_feature;
        for l in 0..nl {
            let (w, mask, b) = (
                &self.params[2 * l],
                &self.masks[l],
                &self.params[2 * l + 1].data,
            );
            let (fan_out, fan_in) = (w.shape[0], w.shape[1]);
            let masked = |o: usize, k: usize| w.data[o * fan_in + k] * mask[o * fan_in + k];
            let hidden = l + 1 < nl;
            if hidden {
                scratch.mat(l, rows, fan_out).as_mut_slice().fill(T::zero());
            }
            let mut bias = std::mem::take(scratch.mat(2 * nl + l, 1, fan_out));
            let blocks = scratch.mat(nl - 1 + l, fan_in, fan_out).as_mut_slice();
            let (mut at, mut bat) = (0, 0);
            // One group per degree (hidden layer) or per step (output layer), in step order.
            for g in 0..d.max(1) {
                let units = match self.config.order.get(g) {
                    _ if hidden => units_of_degree(d, c, fan_out, g),
                    // The outputs of feature f: columns f, f + D, ..., f + (per - 1) D.
                    Some(&f) => (f..f + per * d).step_by(d),
                    None => (0..0).step_by(1),
                };
                for k in 0..fan_in {
                    for o in units.clone() {
                        blocks[at] = masked(o, k);
                        at += 1;
                    }
                }
                for o in units {
                    bias.as_mut_slice()[bat] = b[o];
                    bat += 1;
                }
            }
            debug_assert_eq!((at, bat), (fan_in * fan_out, fan_out), "every unit once");
            *scratch.mat(2 * nl + l, 0, 0) = bias;
        }
    }

    /// Step `step` (`< D`) of the incremental evaluation: with `input = [x, c]` whose features
    /// `order[..step]` are final, computes the hidden units of degree `step` and writes the
    /// `out_per_feature` outputs of feature `f = order[step]` into `out` (`rows x out_per_feature`,
    /// column `b` = output `b * D + f` of the full pass, bit for bit). `scratch` must have been
    /// prepared by [`Made::incremental_begin`] for these rows and have seen steps `0..step`.
    pub fn incremental_step(
        &self,
        step: usize,
        input: &Matrix<T>,
        out: &mut Matrix<T>,
        scratch: &mut Tape<T>,
    ) {
        let nl = self.n_layers();
        let (d, c) = (self.config.dim, self.config.context_dim);
        let n = input.rows();
        let mut tmp = std::mem::take(scratch.mat(2 * nl - 1, 0, 0));
        for l in 0..nl - 1 {
            let fan_out = self.params[2 * l].shape[0];
            let units = units_of_degree(d, c, fan_out, step);
            let start: usize = (0..step)
                .map(|g| units_of_degree(d, c, fan_out, g).len())
                .sum();
            let (below, rest) = scratch.mats.split_at_mut(l);
            let inp = if l == 0 { input } else { &below[l - 1] };
            let fan_in = inp.cols();
            let (m, end) = (units.len(), start + units.len());
            tmp.resize(n, m);
            dense::forward(
                n,
                fan_in,
                m,
                inp.as_slice(),
                &rest[nl - 1].as_slice()[fan_in * start..fan_in * end],
                &rest[2 * nl].as_slice()[start..end],
                true,
                None,
                tmp.as_mut_slice(),
            );
            let h = &mut rest[0];
            for i in 0..n {
                let hr = h.row_mut(i);
                for (&v, o) in tmp.row(i).iter().zip(units.clone()) {
                    hr[o] = v;
                }
            }
        }
        *scratch.mat(2 * nl - 1, 0, 0) = tmp;
        let per = self.config.out_per_feature;
        let h = if nl == 1 {
            input
        } else {
            &scratch.mats[nl - 2]
        };
        let fan_in = h.cols();
        out.resize(n, per);
        dense::forward(
            n,
            fan_in,
            per,
            h.as_slice(),
            &scratch.mats[2 * nl - 2].as_slice()[fan_in * per * step..fan_in * per * (step + 1)],
            &scratch.mats[3 * nl - 1].as_slice()[per * step..per * (step + 1)],
            false,
            None,
            out.as_mut_slice(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(d: usize, c: usize, hidden: Vec<usize>, seed: u64) -> (Made<f64>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let order = rng.permutation(d);
        let mut m = Made::new(
            MadeConfig {
                dim: d,
                hidden,
                context_dim: c,
                out_per_feature: 2,
                order: order.clone(),
            },
            &mut rng,
        )
        .expect("valid config");
        // Random raw weights everywhere, masked entries included: the masks must still hold.
        for p in m.params_mut() {
            for v in p.data.iter_mut() {
                *v = rng.normal() * 0.5;
            }
        }
        (m, order)
    }

    /// Jacobian structure by finite differences: output (b, d) depends on input feature j only if
    /// j precedes d in the order; every allowed dependence is actually realised somewhere; the
    /// context reaches every output that has a hidden path. With `dropout > 0` the same holds
    /// for the training pass under one fixed dropout mask.
    fn check_autoregressive(d: usize, c: usize, hidden: Vec<usize>, seed: u64, dropout: f64) {
        let (mut m, order) = made(d, c, hidden, seed);
        m.set_dropout(dropout);
        let run = |m: &Made<f64>, x: &Matrix<f64>, out: &mut Matrix<f64>| {
            let mut tape = Tape {
                seed: 31,
                ..Tape::default()
            };
            m.forward_train(x, out, &mut tape);
        };
        let mut pos = vec![0; d];
        for (k, &f) in order.iter().enumerate() {
            pos[f] = k;
        }
        let mut rng = Rng::new(seed + 100);
        let n = 16;
        let x = Matrix::from_fn(n, d + c, |_, _| rng.normal());
        let mut base = Matrix::zeros(0, 0);
        run(&m, &x, &mut base);
        assert_eq!(base.cols(), 2 * d);
        for j in 0..d + c {
            let mut xp = x.clone();
            for i in 0..n {
                xp.set(i, j, x.get(i, j) + 0.37);
            }
            let mut out = Matrix::zeros(0, 0);
            run(&m, &xp, &mut out);
            for o in 0..2 * d {
                let f = o % d;
                let changed = (0..n).any(|i| out.get(i, o) != base.get(i, o));
                // With a context, degree-0 hidden units (context only) reach every output,
                // including the first feature's.
                let allowed = if j >= d { true } else { pos[j] < pos[f] };
                if !allowed {
                    assert!(!changed, "output {o} (feature {f}) depends on feature {j}");
                } else {
                    assert!(
                        changed,
                        "output {o} (feature {f}) does not see input {j} (order {order:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn autoregressive_structure_holds() {
        check_autoregressive(5, 0, vec![16, 16], 1, 0.0);
        check_autoregressive(5, 3, vec![16, 16], 2, 0.0);
        check_autoregressive(4, 2, vec![], 3, 0.0);
        check_autoregressive(1, 2, vec![8], 4, 0.0);
    }

    /// Dropout removes paths only: the training pass under a fixed mask is still autoregressive.
    #[test]
    fn autoregressive_structure_holds_with_dropout() {
        check_autoregressive(5, 0, vec![32, 32], 1, 0.2);
        check_autoregressive(5, 3, vec![32, 32], 2, 0.2);
        check_autoregressive(1, 2, vec![16], 4, 0.2);
    }

    #[test]
    fn backward_matches_finite_differences() {
        check_backward(0.0);
    }

    /// With dropout, the gradients are those of the training pass under its (fixed) mask; the
    /// evaluation pass applies none, and another step seed draws another mask.
    #[test]
    fn backward_with_dropout_matches_finite_differences_for_a_fixed_mask() {
        check_backward(0.3);
    }

    /// Input and parameter gradients of `sum(w ⊙ out)` of the training pass (dropout `p`, tape
    /// seed fixed, so every evaluation uses the same mask) against central finite differences.
    fn check_backward(p: f64) {
        let (mut m, _) = made(5, 3, vec![16, 16], 5);
        m.set_dropout(p);
        let mut rng = Rng::new(9);
        let n = 7;
        let x = Matrix::from_fn(n, 8, |_, _| rng.normal());
        let w = Matrix::from_fn(n, 10, |_, _| rng.normal());
        let train_pass = |m: &Made<f64>, x: &Matrix<f64>, seed: u64| -> (Matrix<f64>, Tape<f64>) {
            let mut tape = Tape {
                seed,
                ..Tape::default()
            };
            let mut o = Matrix::zeros(0, 0);
            m.forward_train(x, &mut o, &mut tape);
            (o, tape)
        };
        let loss = |m: &Made<f64>, x: &Matrix<f64>| -> f64 {
            let (o, _) = train_pass(m, x, 17);
            o.as_slice()
                .iter()
                .zip(w.as_slice())
                .map(|(a, b)| a * b)
                .sum()
        };
        let (out, tape) = train_pass(&m, &x, 17);
        let mut plain = Matrix::zeros(0, 0);
        m.forward(&x, &mut plain);
        let mut reused = Matrix::zeros(0, 0);
        m.forward_reusing(&x, &mut reused, &mut Tape::default());
        assert_eq!(reused, plain, "evaluation passes apply no dropout");
        if p == 0.0 {
            assert_eq!(out, plain);
        } else {
            assert_ne!(out, plain, "dropout changed nothing");
            assert_ne!(out, train_pass(&m, &x, 18).0, "the mask ignores the seed");
        }
        let mut grads = vec![0.0; m.num_params()];
        let mut dx = Matrix::zeros(0, 0);
        let mut scratch = Tape::default();
        m.backward(&x, &tape, &w, Some(&mut dx), &mut grads, &mut scratch);
        let eps = 1e-6;
        for i in 0..n {
            for j in 0..8 {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp.set(i, j, x.get(i, j) + eps);
                xm.set(i, j, x.get(i, j) - eps);
                let fd = (loss(&m, &xp) - loss(&m, &xm)) / (2.0 * eps);
                assert!((fd - dx.get(i, j)).abs() < 1e-6 * (1.0 + fd.abs()));
            }
        }
        let sizes: Vec<usize> = m.params().iter().map(|p| p.data.len()).collect();
        let mut flat = 0;
        let mut masked_zero = 0;
        for (pi, &sz) in sizes.iter().enumerate() {
            for k in (0..sz).step_by(3) {
                let orig = m.params()[pi].data[k];
                m.params_mut()[pi].data[k] = orig + eps;
                let lp = loss(&m, &x);
                m.params_mut()[pi].data[k] = orig - eps;
                let lm = loss(&m, &x);
                m.params_mut()[pi].data[k] = orig;
                let fd = (lp - lm) / (2.0 * eps);
                let g = grads[flat + k];
                assert!(
                    (fd - g).abs() < 1e-6 * (1.0 + fd.abs()),
                    "param {pi}[{k}]: {g} vs {fd}"
                );
                if pi % 2 == 0 && m.mask(pi / 2).is_some_and(|mk| mk[k] == 0.0) {
                    assert_eq!(g, 0.0);
                    masked_zero += 1;
                }
            }
            flat += sz;
        }
        assert!(masked_zero > 0, "no masked weight was checked");
    }

    /// Runs the incremental evaluation on `x` (features filled in order, one step at a time) and
    /// checks every step's outputs against the full pass on the complete `x`, bit for bit.
    fn check_incremental<T: Real>(d: usize, c: usize, hidden: Vec<usize>, per: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let order = rng.permutation(d);
        let cfg = MadeConfig {
            dim: d,
            hidden: hidden.clone(),
            context_dim: c,
            out_per_feature: per,
            order: order.clone(),
        };
        let mut m = Made::<T>::new(cfg, &mut rng).expect("valid config");
        for p in m.params_mut() {
            for v in p.data.iter_mut() {
                *v = T::c(rng.normal() * 0.5);
            }
        }
        let n = 13;
        let x = Matrix::from_fn(n, d + c, |_, _| T::c(rng.normal()));
        let mut full = Matrix::zeros(0, 0);
        m.forward(&x, &mut full);
        let mut inp = x.clone();
        for i in 0..n {
            inp.row_mut(i)[..d].fill(T::zero());
        }
        let mut scratch = Tape::default();
        let mut out = Matrix::zeros(0, 0);
        // Twice on the same scratch: the second run reuses the buffers of the first.
        for _ in 0..2 {
            m.incremental_begin(n, &mut scratch);
            for (s, &f) in order.iter().enumerate() {
                m.incremental_step(s, &inp, &mut out, &mut scratch);
                assert_eq!((out.rows(), out.cols()), (n, per));
                for i in 0..n {
                    for b in 0..per {
                        let (got, want) = (out.get(i, b), full.get(i, b * d + f));
                        assert!(
                            got.to_f64().map(f64::to_bits) == want.to_f64().map(f64::to_bits),
                            "D={d} C={c} hidden={hidden:?}: step {s}, row {i}, block {b}: \
                             {got:?} vs {want:?}"
                        );
                    }
                }
                for i in 0..n {
                    inp.row_mut(i)[f] = x.get(i, f);
                }
            }
            for i in 0..n {
                inp.row_mut(i)[..d].fill(T::zero());
            }
        }
    }

    #[test]
    fn incremental_steps_equal_the_full_pass_bit_for_bit() {
        // Hidden widths divisible by D - 1 (or D) and not, deeper nets, no hidden layer, D = 1
        // and D = 2, with and without a context; f32 (our kernel) and f64.
        let shapes: [(usize, usize, Vec<usize>, usize); 10] = [
            (5, 0, vec![16, 16], 2),
            (5, 0, vec![13, 7], 3),
            (5, 3, vec![10, 11], 2),
            (7, 2, vec![9], 6),
            (6, 0, vec![5, 17, 3], 2),
            (4, 2, vec![], 3),
            (4, 0, vec![], 2),
            (1, 0, vec![8], 2),
            (1, 2, vec![8, 4], 3),
            (2, 0, vec![3, 3], 30),
        ];
        // f32 on every kernel path this CPU has (switched process-wide; other tests are
        // unaffected because the paths give the same bits).
        let original = crate::engine::simd::active();
        for path in crate::engine::simd::supported_paths() {
            crate::engine::simd::force(path).expect("supported path");
            for (k, (d, c, hidden, per)) in shapes.iter().cloned().enumerate() {
                check_incremental::<f32>(d, c, hidden, per, 40 + k as u64);
            }
            // HIGGS-sized: 18 features, 2 x 256, 3K = 30 outputs per feature.
            check_incremental::<f32>(18, 0, vec![256, 256], 30, 7);
        }
        crate::engine::simd::force(original).expect("original path");
        for (k, (d, c, hidden, per)) in shapes.into_iter().enumerate() {
            check_incremental::<f64>(d, c, hidden, per, 60 + k as u64);
        }
    }

    #[test]
    fn rejects_bad_orders() {
        let mut rng = Rng::new(0);
        for order in [vec![0, 1], vec![0, 0, 1], vec![0, 1, 3]] {
            let cfg = MadeConfig {
                dim: 3,
                hidden: vec![4],
                context_dim: 0,
                out_per_feature: 2,
                order,
            };
            assert!(matches!(
                Made::<f64>::new(cfg, &mut rng),
                Err(MadeError::InvalidOrder { .. })
            ));
        }
    }
}
