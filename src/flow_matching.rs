//! Conditional flow matching (Lipman et al. 2023; Liu et al. 2023): the training objective of the
//! continuous flow ([`crate::transforms::continuous`]).
//!
//! For a data event `x_1` (in the preprocessed space), a base draw `z ~ N(0, I)` and a time
//! `t ~ U[0, 1]` (or, with [`TimeSampling::LogitNormal`], `t = sigmoid(n)`, `n ~ N(0, 1)`, which
//! puts more weight on the middle of the paths, where the marginal velocity is hardest to learn;
//! Esser et al. 2024), the straight path `x_t = (1 - t) z + t x_1` moves at the constant velocity
//! `u = x_1 - z`. The loss regresses the velocity field on it:
//!
//! `L = (1/n) sum_i w_i ||v(x_{t_i}, t_i, c_i) - (x_{1,i} - z_i)||^2`,
//!
//! whose minimiser is the marginal velocity `E[x_1 - z | x_t, c]`, the field that carries the
//! base distribution to the data distribution along the ODE. The gradient with respect to the
//! network output is `dL/dv_i = 2 w_i (v_i - u_i) / n`, carried to the parameters by the MLP's
//! backward pass ([`crate::nn::Mlp::backward`]).
//!
//! `z_i` and `t_i` of batch row `i` come from `Rng::stream(step_seed, i)`, and a batch is cut into
//! fixed chunks whose gradients are summed in chunk order, so training is bit-for-bit the same for
//! any thread count. The validation loss uses `VAL_DRAWS` fixed draws per event (the same in
//! every epoch), so epochs are compared on the same paths.

use crate::engine::{Matrix, Real, Rng, Tape};
use crate::flow::Flow;
use crate::train::{Events, Objective};
use crate::transforms::continuous::{ContinuousFlow, Times};
use crate::transforms::{LayerSpec, Transform};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Fixed draws of `(z, t)` per validation event.
pub const VAL_DRAWS: usize = 4;
/// Seed of the validation draws.
const VAL_SEED: u64 = 0xF10_3A7C;

/// Distribution of the path time `t` in training (and in the validation loss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampling {
    /// `t ~ U[0, 1)`.
    #[default]
    Uniform,
    /// `t = 1 / (1 + e^{-n})`, `n ~ N(0, 1)`.
    LogitNormal,
}

impl std::str::FromStr for TimeSampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(TimeSampling::Uniform),
            "logit-normal" => Ok(TimeSampling::LogitNormal),
            _ => Err(format!(
                "unknown time sampling '{s}': expected uniform or logit-normal"
            )),
        }
    }
}

/// Writes `z ~ N(0, I)` into `z` and returns `t` drawn by `sampling`, both from
/// `Rng::stream(seed, index)` (`t` first).
pub fn draw_path<T: Real>(seed: u64, index: u64, sampling: TimeSampling, z: &mut [T]) -> T {
    let mut rng = Rng::stream(seed, index);
    let t = match sampling {
        TimeSampling::Uniform => rng.uniform(),
        TimeSampling::LogitNormal => 1.0 / (1.0 + (-rng.normal()).exp()),
    };
    for v in z.iter_mut() {
        *v = T::c(rng.normal());
    }
    T::c(t)
}

/// Reusable memory of one chunk.
#[derive(Default)]
pub struct CfmWorkspace<T> {
    z: Matrix<T>,
    t: Vec<T>,
    xt: Matrix<T>,
    input: Matrix<T>,
    out: Matrix<T>,
    dout: Matrix<T>,
    tape: Tape<T>,
    scratch: Tape<T>,
    grads: Vec<T>,
    loss: f64,
}

impl<T: Real> CfmWorkspace<T> {
    /// An empty workspace.
    pub fn new() -> Self {
        Self {
            z: Matrix::zeros(0, 0),
            xt: Matrix::zeros(0, 0),
            input: Matrix::zeros(0, 0),
            out: Matrix::zeros(0, 0),
            dout: Matrix::zeros(0, 0),
            t: Vec::new(),
            tape: Tape::default(),
            scratch: Tape::default(),
            grads: Vec::new(),
            loss: 0.0,
        }
    }
}

/// `sum_i w_i ||v(x_t, t, c) - (x_1 - z)||^2` over the rows of `x1` with the path draws
/// `(z_i, t_i)` taken from `draw(i, z_i)`; with `grad_scale = Some(s)`, also writes `s` times its
/// gradient with respect to the network's parameters into `ws.grads` (overwritten).
pub fn cfm_chunk<T: Real>(
    field: &ContinuousFlow<T>,
    x1: &Matrix<T>,
    ctx: Option<&Matrix<T>>,
    weights: Option<&[T]>,
    draw: impl Fn(usize, &mut [T]) -> T,
    grad_scale: Option<T>,
    ws: &mut CfmWorkspace<T>,
) -> f64 {
    let (m, d) = (x1.rows(), x1.cols());
    ws.z.resize(m, d);
    ws.xt.resize(m, d);
    ws.t.clear();
    for i in 0..m {
        let t = draw(i, ws.z.row_mut(i));
        ws.t.push(t);
        let (z, x, xt) = (ws.z.row(i), x1.row(i), ws.xt.row_mut(i));
        for j in 0..d {
            xt[j] = (T::one() - t) * z[j] + t * x[j];
        }
    }
    field.fill_input(&ws.xt, Times::PerRow(&ws.t), ctx, &mut ws.input);
    let net = field.net();
    net.forward_train(&ws.input, &mut ws.out, &mut ws.tape);
    ws.dout.resize(m, d);
    let mut loss = 0.0f64;
    for i in 0..m {
        let w = weights.map_or(T::one(), |w| w[i]);
        let (v, z, x, g) = (ws.out.row(i), ws.z.row(i), x1.row(i), ws.dout.row_mut(i));
        let mut sq = T::zero();
        for j in 0..d {
            let r = v[j] - (x[j] - z[j]);
            sq += r * r;
            g[j] = T::c(2.0) * w * r;
        }
        loss += (w * sq).to_f64().unwrap_or(f64::NAN);
    }
    if let Some(s) = grad_scale {
        for g in ws.dout.as_mut_slice() {
            *g *= s;
        }
        ws.grads.clear();
        ws.grads.resize(net.num_params(), T::zero());
        net.backward(
            &ws.input,
            &ws.tape,
            &ws.dout,
            None,
            &mut ws.grads,
            &mut ws.scratch,
        );
    }
    ws.loss = loss;
    loss
}

/// The flow-matching [`Objective`] of a flow whose only layer is a continuous flow.
pub struct FlowMatchingObjective {
    field: ContinuousFlow<f32>,
    params: Vec<f32>,
    workspaces: Vec<CfmWorkspace<f32>>,
    grads: Vec<f32>,
    chunk_rows: usize,
    seed: u64,
    time_sampling: TimeSampling,
}

/// Why a flow cannot be trained by flow matching.
#[derive(Debug, thiserror::Error)]
#[error("flow matching trains a model whose only layer is a continuous flow; this one has {0}")]
pub struct NotContinuous(String);

impl FlowMatchingObjective {
    /// The objective for `flow` (exactly one [`LayerSpec::Continuous`] layer), cutting batches
    /// into chunks of `chunk_rows` events.
    pub fn new(flow: &Flow<f32>, chunk_rows: usize) -> Result<Self, NotContinuous> {
        let specs = flow.specs();
        let config = match specs.as_slice() {
            [LayerSpec::Continuous(c)] => c.clone(),
            other => {
                return Err(NotContinuous(
                    other
                        .iter()
                        .map(|s| s.kind())
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        };
        let field = ContinuousFlow::new(config, &mut Rng::new(0));
        Ok(Self {
            params: Vec::with_capacity(field.num_params()),
            grads: vec![0.0; field.num_params()],
            field,
            workspaces: Vec::new(),
            chunk_rows: chunk_rows.max(1),
            seed: 0,
            time_sampling: TimeSampling::Uniform,
        })
    }

    /// Draws the path times of training and validation from `sampling`.
    pub fn with_time_sampling(mut self, sampling: TimeSampling) -> Self {
        self.time_sampling = sampling;
        self
    }

    fn sync(&mut self, flow: &Flow<f32>) {
        flow.copy_params_into(&mut self.params);
        self.field.set_param_slice(&self.params);
    }
}

impl Objective for FlowMatchingObjective {
    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    fn loss_and_grad(
        &mut self,
        flow: &Flow<f32>,
        x: &Matrix<f32>,
        ctx: Option<&Matrix<f32>>,
        weights: Option<&[f32]>,
    ) -> f64 {
        self.sync(flow);
        let n = x.rows();
        let n_chunks = n.div_ceil(self.chunk_rows);
        while self.workspaces.len() < n_chunks {
            self.workspaces.push(CfmWorkspace::new());
        }
        let (cr, seed, field, ts) = (self.chunk_rows, self.seed, &self.field, self.time_sampling);
        let scale = 1.0 / n.max(1) as f32;
        self.workspaces[..n_chunks]
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, ws)| {
                let (s, e) = (c * cr, ((c + 1) * cr).min(n));
                let xs = x.slice_rows(s, e);
                let cs = ctx.map(|m| m.slice_rows(s, e));
                cfm_chunk(
                    field,
                    &xs,
                    cs.as_ref(),
                    weights.map(|w| &w[s..e]),
                    |i, z| draw_path(seed, (s + i) as u64, ts, z),
                    Some(scale),
                    ws,
                );
            });
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for ws in &self.workspaces[..n_chunks] {
            for (g, v) in self.grads.iter_mut().zip(&ws.grads) {
                *g += *v;
            }
            loss += ws.loss;
        }
        loss / n.max(1) as f64
    }

    fn grads(&self) -> &[f32] {
        &self.grads
    }

    fn grad_norm_sq(&self) -> f64 {
        crate::train::grad_norm_sq(&self.grads)
    }

    fn validation_loss(&self, flow: &Flow<f32>, val: Events<'_>) -> f64 {
        let mut field = self.field.clone();
        field.set_param_slice(&flow.param_vector());
        validation_cfm(&field, val, self.chunk_rows.max(256), self.time_sampling)
    }
}

/// The weighted mean CFM loss of `val` over [`VAL_DRAWS`] fixed path draws per event, times
/// drawn by `sampling`.
pub fn validation_cfm(
    field: &ContinuousFlow<f32>,
    val: Events<'_>,
    chunk_rows: usize,
    sampling: TimeSampling,
) -> f64 {
    let n = val.x.rows();
    let n_chunks = n.div_ceil(chunk_rows);
    let partial: Vec<f64> = (0..n_chunks)
        .into_par_iter()
        .map_init(CfmWorkspace::new, |ws, c| {
            let (s, e) = (c * chunk_rows, ((c + 1) * chunk_rows).min(n));
            let xs = val.x.slice_rows(s, e);
            let cs = val.ctx.map(|m| m.slice_rows(s, e));
            (0..VAL_DRAWS)
                .map(|r| {
                    cfm_chunk(
                        field,
                        &xs,
                        cs.as_ref(),
                        val.weights.map(|w| &w[s..e]),
                        |i, z| draw_path(VAL_SEED, ((s + i) * VAL_DRAWS + r) as u64, sampling, z),
                        None,
                        ws,
                    )
                })
                .sum()
        })
        .collect();
    let total_w = val
        .weights
        .map_or(n as f64, |w| w.iter().map(|v| *v as f64).sum());
    partial.iter().sum::<f64>() / (total_w * VAL_DRAWS as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Activation;
    use crate::transforms::ContinuousFlowConfig;
    use crate::transforms::testing::randomize_params;

    fn field(ctx: usize, residual: bool, activation: Activation) -> ContinuousFlow<f64> {
        let mut rng = Rng::new(4);
        let mut f = ContinuousFlow::new(
            ContinuousFlowConfig {
                dim: 3,
                hidden: vec![12, 12],
                context_dim: ctx,
                residual,
                time_frequencies: 2,
                ode_steps: 4,
                activation,
            },
            &mut rng,
        );
        randomize_params(&mut f, 0.4, &mut rng);
        f
    }

    #[test]
    fn cfm_gradient_matches_finite_differences() {
        for (ctx, residual, act) in [
            (0, false, Activation::Relu),
            (2, true, Activation::Relu),
            (0, false, Activation::Silu),
            (2, true, Activation::Silu),
            (1, true, Activation::Tanh),
        ] {
            let mut f = field(ctx, residual, act);
            let mut rng = Rng::new(9);
            let x = Matrix::from_fn(9, 3, |_, _| rng.normal());
            let c = (ctx > 0).then(|| Matrix::from_fn(9, ctx, |_, _| rng.normal()));
            let w: Vec<f64> = (0..9).map(|i| 0.5 + 0.1 * i as f64).collect();
            let draw = |i: usize, z: &mut [f64]| draw_path(5, i as u64, TimeSampling::Uniform, z);
            let mut ws = CfmWorkspace::new();
            let loss = |f: &ContinuousFlow<f64>, ws: &mut CfmWorkspace<f64>| {
                cfm_chunk(f, &x, c.as_ref(), Some(&w), draw, None, ws)
            };
            cfm_chunk(&f, &x, c.as_ref(), Some(&w), draw, Some(1.0), &mut ws);
            let grads = ws.grads.clone();
            let mut p = f
                .params()
                .iter()
                .flat_map(|p| p.data.clone())
                .collect::<Vec<_>>();
            let eps = 1e-6;
            let mut checked = 0;
            for k in (0..p.len()).step_by(3) {
                let orig = p[k];
                p[k] = orig + eps;
                f.set_param_slice(&p);
                let up = loss(&f, &mut ws);
                p[k] = orig - eps;
                f.set_param_slice(&p);
                let down = loss(&f, &mut ws);
                p[k] = orig;
                f.set_param_slice(&p);
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (fd - grads[k]).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "{act} param {k}: fd {fd} vs {}",
                    grads[k]
                );
                checked += 1;
            }
            assert!(checked > 50);
            // The loss is not trivially zero and depends on the draws.
            assert!(loss(&f, &mut ws) > 0.1);
        }
    }

    #[test]
    fn logit_normal_times_concentrate_in_the_middle() {
        let n = 20_000u64;
        let mut z = [0.0f64; 2];
        let mut middle = |ts| {
            (0..n)
                .filter(|&i| (0.25..0.75).contains(&draw_path(3, i, ts, &mut z)))
                .count() as f64
                / n as f64
        };
        // P(0.25 < t < 0.75) = 0.5 (uniform), P(|n| < ln 3) = 0.7279 (logit-normal).
        assert!((middle(TimeSampling::Uniform) - 0.5).abs() < 0.02);
        assert!((middle(TimeSampling::LogitNormal) - 0.7279).abs() < 0.02);
    }

    #[test]
    fn objective_is_independent_of_the_thread_count_and_chunking_of_draws() {
        let mut rng = Rng::new(1);
        let config = ContinuousFlowConfig {
            dim: 4,
            hidden: vec![16, 16],
            context_dim: 0,
            residual: false,
            time_frequencies: 2,
            ode_steps: 4,
            activation: Activation::Silu,
        };
        let mut flow = Flow::<f32>::from_specs(4, 0, &[LayerSpec::Continuous(config)], 3);
        for l in flow.layers_mut() {
            randomize_params(l.as_mut(), 0.3, &mut rng);
        }
        let x = Matrix::from_fn(300, 4, |_, _| rng.normal() as f32);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut o = FlowMatchingObjective::new(&flow, 64).unwrap();
                o.set_seed(7);
                let l = o.loss_and_grad(&flow, &x, None, None);
                let v = o.validation_loss(&flow, Events::new(&x, None));
                (l, v, o.grads().to_vec())
            })
        };
        let (a, b) = (run(1), run(3));
        assert_eq!(a.0.to_bits(), b.0.to_bits());
        assert_eq!(a.1.to_bits(), b.1.to_bits());
        assert_eq!(a.2, b.2);
        assert!(a.2.iter().any(|g| *g != 0.0));
    }
}
