//! Property checks shared by every transform's tests: invertibility, exact log-determinant
//! (against a finite-difference Jacobian) and exact gradients (against finite differences), all in
//! `f64`, plus an `f32` round trip and finiteness on far outliers.

use super::Transform;
use crate::engine::{Matrix, Real, Rng, Tape};

/// Knobs for [`check_transform`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Events in the random batch.
    pub rows: usize,
    /// Standard deviation of the random inputs (tails are added on top).
    pub input_scale: f64,
    /// Standard deviation used to randomise trainable parameters (0 keeps them).
    pub param_scale: f64,
    /// Finite-difference step.
    pub eps: f64,
    /// Allowed relative error of log-dets and gradients.
    pub rel_tol: f64,
    /// Check at most this many parameter coordinates by finite differences.
    pub max_param_checks: usize,
    /// Seed of the random inputs and parameters.
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            rows: 12,
            input_scale: 2.0,
            param_scale: 0.3,
            eps: 1e-5,
            rel_tol: 1e-6,
            max_param_checks: 300,
            seed: 11,
        }
    }
}

/// Random inputs: normal rows scaled by `scale`, with the last rows pushed into the tails (|x| up to 10).
pub fn random_inputs(rows: usize, dim: usize, scale: f64, rng: &mut Rng) -> Matrix<f64> {
    let mut m = Matrix::from_fn(rows, dim, |_, _| rng.normal() * scale);
    let tails = [9.5, -9.7, 6.0, -7.5];
    for (k, t) in tails.iter().enumerate() {
        if rows > 4 + k {
            let i = rows - 1 - k;
            for j in 0..dim {
                if (j + k) % 2 == 0 {
                    m.set(i, j, *t * (1.0 - 0.01 * j as f64));
                }
            }
        }
    }
    m
}

/// Fills every trainable parameter with N(0, scale^2) values.
pub fn randomize_params<T: Real>(t: &mut dyn Transform<T>, scale: f64, rng: &mut Rng) {
    if scale == 0.0 {
        return;
    }
    for p in t.params_mut() {
        for v in p.data.iter_mut() {
            *v = T::c(rng.normal() * scale);
        }
    }
}

/// Fills every trainable parameter of a whole flow (its layers and its base distribution) with
/// N(0, scale^2) values.
pub fn randomize_flow<T: Real>(flow: &mut crate::flow::Flow<T>, scale: f64, rng: &mut Rng) {
    for l in flow.layers_mut() {
        randomize_params(l.as_mut(), scale, rng);
    }
    if scale == 0.0 {
        return;
    }
    for p in flow.base_mut().params_mut() {
        for v in p.data.iter_mut() {
            *v = T::c(rng.normal() * scale);
        }
    }
}

/// `log|det A|` of a square matrix by Gaussian elimination with partial pivoting.
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let mut m = a.to_vec();
    let mut acc = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap_or(c);
        if p != c {
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
            }
        }
        let piv = m[c * n + c];
        acc += piv.abs().ln();
        for r in c + 1..n {
            let f = m[r * n + c] / piv;
            for k in c..n {
                m[r * n + k] -= f * m[c * n + k];
            }
        }
    }
    acc
}

fn eval_forward(
    t: &dyn Transform<f64>,
    x: &Matrix<f64>,
    ctx: Option<&Matrix<f64>>,
    inverse: bool,
) -> (Matrix<f64>, Vec<f64>) {
    let mut y = Matrix::zeros(0, 0);
    let mut l = vec![0.0; x.rows()];
    if inverse {
        t.inverse(x, ctx, &mut y, &mut l);
    } else {
        t.forward(x, ctx, &mut y, &mut l);
    }
    (y, l)
}

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / (1.0 + a.abs().max(b.abs()))
}

/// Checks the log-determinant of one direction row by row against a central-difference Jacobian.
pub fn check_logdet(
    t: &dyn Transform<f64>,
    x: &Matrix<f64>,
    ctx: Option<&Matrix<f64>>,
    inverse: bool,
    opts: &CheckOptions,
) {
    let d = t.dim();
    let (_, ladj) = eval_forward(t, x, ctx, inverse);
    for i in 0..x.rows() {
        let row = x.slice_rows(i, i + 1);
        let c = ctx.map(|c| c.slice_rows(i, i + 1));
        let mut jac = vec![0.0; d * d];
        for j in 0..d {
            let mut xp = row.clone();
            let mut xm = row.clone();
            xp.set(0, j, row.get(0, j) + opts.eps);
            xm.set(0, j, row.get(0, j) - opts.eps);
            let (yp, _) = eval_forward(t, &xp, c.as_ref(), inverse);
            let (ym, _) = eval_forward(t, &xm, c.as_ref(), inverse);
            for k in 0..d {
                jac[k * d + j] = (yp.get(0, k) - ym.get(0, k)) / (2.0 * opts.eps);
            }
        }
        let want = log_abs_det(&jac, d);
        let err = rel_err(ladj[i], want);
        assert!(
            err <= opts.rel_tol.max(1e-6),
            "{} log-det ({}) row {i}: analytic {} vs finite differences {} (rel err {err:e})",
            t.spec().kind(),
            if inverse { "inverse" } else { "forward" },
            ladj[i],
            want
        );
    }
}

/// Loss used for gradient checks: `L = sum_ij w_ij y_ij + sum_i v_i ladj_i`.
fn train_loss(
    t: &dyn Transform<f64>,
    x: &Matrix<f64>,
    ctx: Option<&Matrix<f64>>,
    w: &Matrix<f64>,
    v: &[f64],
) -> f64 {
    let mut y = Matrix::zeros(0, 0);
    let mut l = vec![0.0; x.rows()];
    let mut tape = Tape::default();
    t.forward_train(x, ctx, &mut y, &mut l, &mut tape);
    let a: f64 = y
        .as_slice()
        .iter()
        .zip(w.as_slice())
        .map(|(a, b)| a * b)
        .sum();
    let b: f64 = l.iter().zip(v).map(|(a, b)| a * b).sum();
    a + b
}

/// Checks `backward` against central finite differences of the training-mode forward pass, for
/// the inputs and (a sample of) the parameters.
pub fn check_gradients(
    t: &mut dyn Transform<f64>,
    x: &Matrix<f64>,
    ctx: Option<&Matrix<f64>>,
    opts: &CheckOptions,
    rng: &mut Rng,
) {
    let n = x.rows();
    let d = t.dim();
    let w = Matrix::from_fn(n, d, |_, _| rng.normal());
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mut y = Matrix::zeros(0, 0);
    let mut l = vec![0.0; n];
    let mut tape = Tape::default();
    t.forward_train(x, ctx, &mut y, &mut l, &mut tape);
    let mut dx = Matrix::zeros(0, 0);
    let mut grads = vec![0.0; t.num_params()];
    t.backward(x, &y, ctx, &mut tape, &w, &v, &mut dx, &mut grads);
    // Run backward a second time on the same tape: buffers are reused and must give the same result.
    let mut grads2 = vec![0.0; t.num_params()];
    let mut dx2 = Matrix::zeros(0, 0);
    t.backward(x, &y, ctx, &mut tape, &w, &v, &mut dx2, &mut grads2);
    assert_eq!(grads, grads2, "backward is not repeatable on a reused tape");
    assert_eq!(dx, dx2, "backward is not repeatable on a reused tape");
    let kind = t.spec().kind();
    for i in 0..n {
        for j in 0..d {
            let mut xp = x.clone();
            let mut xm = x.clone();
            xp.set(i, j, x.get(i, j) + opts.eps);
            xm.set(i, j, x.get(i, j) - opts.eps);
            let fd = (train_loss(t, &xp, ctx, &w, &v) - train_loss(t, &xm, ctx, &w, &v))
                / (2.0 * opts.eps);
            let err = rel_err(dx.get(i, j), fd);
            assert!(
                err <= opts.rel_tol * 100.0,
                "{kind} dL/dx[{i},{j}]: analytic {} vs fd {fd} (rel err {err:e})",
                dx.get(i, j)
            );
        }
    }
    // Parameter gradients: map flat index -> (param, offset).
    let sizes: Vec<usize> = t.params().iter().map(|p| p.data.len()).collect();
    let total: usize = sizes.iter().sum();
    let stride = (total / opts.max_param_checks.max(1)).max(1);
    let mut flat = 0;
    for (pi, &sz) in sizes.iter().enumerate() {
        for k in 0..sz {
            if flat % stride == 0 {
                let orig = t.params()[pi].data[k];
                t.params_mut()[pi].data[k] = orig + opts.eps;
                let lp = train_loss(t, x, ctx, &w, &v);
                t.params_mut()[pi].data[k] = orig - opts.eps;
                let lm = train_loss(t, x, ctx, &w, &v);
                t.params_mut()[pi].data[k] = orig;
                let fd = (lp - lm) / (2.0 * opts.eps);
                let err = rel_err(grads[flat], fd);
                let name = t.params()[pi].name.clone();
                assert!(
                    err <= opts.rel_tol * 100.0,
                    "{kind} dL/d{name}[{k}]: analytic {} vs fd {fd} (rel err {err:e})",
                    grads[flat]
                );
            }
            flat += 1;
        }
    }
}

/// Runs every property check on a transform in `f64`: randomised parameters, round trip to
/// 1e-9, log-dets both ways against finite differences, gradients against finite differences,
/// and finite outputs for far outliers (|x| up to 1e4).
pub fn check_transform(mut t: Box<dyn Transform<f64>>, opts: &CheckOptions) {
    let mut rng = Rng::new(opts.seed);
    randomize_params(t.as_mut(), opts.param_scale, &mut rng);
    let d = t.dim();
    let c = t.context_dim();
    let x = random_inputs(opts.rows, d, opts.input_scale, &mut rng);
    let ctx = (c > 0).then(|| Matrix::from_fn(opts.rows, c, |_, _| rng.normal()));
    let ctx = ctx.as_ref();
    let kind = t.spec().kind();
    // Round trip and log-det consistency.
    let (z, lf) = eval_forward(t.as_ref(), &x, ctx, false);
    let (xr, li) = eval_forward(t.as_ref(), &z, ctx, true);
    let err = x.max_abs_diff(&xr);
    assert!(
        err <= 1e-9 * (1.0 + opts.input_scale),
        "{kind}: |f^-1(f(x)) - x| = {err:e}"
    );
    for i in 0..x.rows() {
        assert!(
            (lf[i] + li[i]).abs() <= 1e-8,
            "{kind}: forward and inverse log-dets disagree on row {i}: {} vs {}",
            lf[i],
            li[i]
        );
    }
    // Log-dets against finite differences, both directions.
    check_logdet(t.as_ref(), &x, ctx, false, opts);
    check_logdet(t.as_ref(), &z, ctx, true, opts);
    // Gradients.
    check_gradients(t.as_mut(), &x, ctx, opts, &mut rng);
    // Far outliers never give NaN or inf.
    let far = Matrix::from_fn(6, d, |i, j| {
        let v = [1e4, -1e4, 1e3, -3e3, 50.0, 0.0][i];
        if (i + j) % 3 == 0 { -v } else { v }
    });
    let fctx = (c > 0).then(|| Matrix::from_fn(6, c, |_, _| rng.normal()));
    for inverse in [false, true] {
        let (y, l) = eval_forward(t.as_ref(), &far, fctx.as_ref(), inverse);
        assert!(
            y.all_finite() && l.iter().all(|v| v.is_finite()),
            "{kind}: non-finite output for far outliers (inverse = {inverse})"
        );
    }
}

/// `f32` round trip `max |f^-1(f(x)) - x| <= 1e-4` for `|x| <= 10`, and finite outputs for far
/// outliers, after randomising the parameters like [`check_transform`].
pub fn check_transform_f32(mut t: Box<dyn Transform<f32>>, opts: &CheckOptions) {
    let mut rng = Rng::new(opts.seed);
    randomize_params(t.as_mut(), opts.param_scale, &mut rng);
    let d = t.dim();
    let c = t.context_dim();
    let n = 256;
    let x: Matrix<f32> = random_inputs(n, d, opts.input_scale, &mut rng).cast();
    let x = Matrix::from_fn(n, d, |i, j| x.get(i, j).clamp(-10.0, 10.0));
    let ctx = (c > 0).then(|| Matrix::from_fn(n, c, |_, _| rng.normal() as f32));
    let mut z = Matrix::zeros(0, 0);
    let mut xr = Matrix::zeros(0, 0);
    let mut l = vec![0.0f32; n];
    t.forward(&x, ctx.as_ref(), &mut z, &mut l);
    t.inverse(&z, ctx.as_ref(), &mut xr, &mut l);
    let err = x.max_abs_diff(&xr);
    assert!(
        err <= 1e-4,
        "{}: f32 round trip error {err:e}",
        t.spec().kind()
    );
    let far = Matrix::from_fn(4, d, |i, j| if (i + j) % 2 == 0 { 1e4 } else { -1e4 });
    let fctx = (c > 0).then(|| Matrix::from_fn(4, c, |_, _| 1.0f32));
    let mut y = Matrix::zeros(0, 0);
    let mut l = vec![0.0f32; 4];
    t.forward(&far, fctx.as_ref(), &mut y, &mut l);
    assert!(
        y.all_finite() && l.iter().all(|v| v.is_finite()),
        "{}: f32 non-finite on outliers",
        t.spec().kind()
    );
}
