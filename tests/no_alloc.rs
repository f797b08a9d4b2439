//! The training step, and every layer's evaluation passes (log-density and sampling directions),
//! allocate nothing once warm, for every preset: every buffer of the gradient
//! engine, the layers' tapes and the conditioners' scratch is reused from step to step (a counting
//! global allocator checks this, with two worker threads), on every SIMD path (all f32 products run
//! on our own kernel, which allocates nothing).

use hepflow::engine::{Matrix, Rng};
use hepflow::presets::{Preset, build_flow};
use hepflow::train::GradientEngine;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread (the evaluation check runs on one thread, so stray
    /// allocations of other threads, e.g. the test harness's, cannot make it flaky).
    static THREAD_ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn thread_allocations() -> usize {
    THREAD_ALLOCATIONS.with(|c| c.get())
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One test for both checks: the allocation counter is global, and the test harness allocates
/// when another test of this binary starts or finishes, so they must not run side by side. The
/// evaluation check runs first: the training check's thread pool frees memory as its workers
/// shut down.
#[test]
fn warm_training_and_evaluation_passes_do_not_allocate() {
    warm_evaluation_passes_do_not_allocate();
    every_spline_family_evaluates_without_allocating();
    warm_training_step_does_not_allocate();
}

fn warm_training_step_does_not_allocate() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    // Count only once every worker has started (a thread's start-up allocates).
    pool.broadcast(|_| ());
    let dim = 6;
    let mut rng = Rng::new(1);
    let x = Matrix::from_fn(300, dim, |_, _| rng.normal() as f32);
    let mut failures = Vec::new();
    for preset in Preset::ALL {
        let mut opts = preset.default_options();
        opts.blocks = 3;
        opts.hidden = vec![32, 32];
        let mut flow = build_flow::<f32>(preset, dim, &opts, 7);
        let mut engine = GradientEngine::new(&flow, 64);
        let mut params = Vec::new();
        pool.install(|| {
            for step in 0..4 {
                engine.set_seed(step);
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                let loss = engine.loss_and_grad(&flow, &x, None);
                let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
                assert!(loss.is_finite());
                // A parameter update between steps, as in training (not counted: `Transform::params`
                // returns a fresh Vec).
                flow.copy_params_into(&mut params);
                for (p, g) in params.iter_mut().zip(engine.grads()) {
                    *p -= 1e-3 * g;
                }
                flow.set_param_vector(&params);
                engine.end_step(&mut flow, x.rows());
                if step >= 2 && during > 0 {
                    failures.push(format!("{preset:?}: step {step} allocated {during} times"));
                }
            }
        });
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every layer of every preset (conditional, so the context path is covered too) evaluates a
/// chunk in both directions without allocating once its scratch tape is warm: the log-density and
/// sampling passes of `Flow` run exactly these calls per chunk.
fn warm_evaluation_passes_do_not_allocate() {
    let (dim, ctx_dim, rows) = (6, 2, 200);
    let mut rng = Rng::new(2);
    let x = Matrix::from_fn(rows, dim, |_, _| rng.normal() as f32);
    let ctx = Matrix::from_fn(rows, ctx_dim, |_, _| rng.normal() as f32);
    let mut failures = Vec::new();
    for preset in Preset::ALL {
        let mut opts = preset.default_options();
        opts.blocks = 2;
        opts.hidden = vec![32, 32];
        opts.context_dim = ctx_dim;
        let flow = build_flow::<f32>(preset, dim, &opts, 3);
        let mut tape = hepflow::engine::Tape::default();
        let (mut a, mut b) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
        let mut ladj = vec![0.0f32; rows];
        // The base distribution's passes: its log-density and its draws (event indices given).
        let (mut lp, mut drawn) = (Vec::new(), Matrix::zeros(0, 0));
        let indices: Vec<u64> = (0..rows as u64).collect();
        for round in 0..3 {
            let before = thread_allocations();
            for inverse in [false, true] {
                a.copy_from(&x);
                for layer in flow.layers() {
                    let c = (layer.context_dim() > 0).then_some(&ctx);
                    if inverse {
                        layer.inverse_reusing(&a, c, &mut b, &mut ladj, &mut tape);
                    } else {
                        layer.forward_reusing(&a, c, &mut b, &mut ladj, &mut tape);
                    }
                    std::mem::swap(&mut a, &mut b);
                }
            }
            flow.base()
                .log_prob_reusing(&x, Some(&ctx), &mut lp, &mut tape);
            flow.base()
                .sample_reusing(7, &indices, Some(&ctx), &mut drawn, &mut tape);
            let during = thread_allocations() - before;
            if round >= 1 && during > 0 {
                failures.push(format!(
                    "{preset:?}: evaluation round {round} allocated {during} times"
                ));
            }
        }
        assert!(a.all_finite() && drawn.all_finite() && lp.iter().all(|v| v.is_finite()));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every spline family (the piecewise-linear one is in no preset), at a bin count the lane
/// kernels take and one they do not (the scalar code), evaluates a chunk in both directions
/// without allocating once warm, with a row count that is not a multiple of the lane width.
fn every_spline_family_evaluates_without_allocating() {
    use hepflow::transforms::{SplineCoupling, SplineCouplingConfig, SplineKind, Transform};
    let (dim, rows) = (5, 37);
    let mut rng = Rng::new(4);
    let x = Matrix::from_fn(rows, dim, |_, _| 3.0 * rng.normal() as f32);
    let mut failures = Vec::new();
    for kind in [
        SplineKind::Linear,
        SplineKind::Quadratic,
        SplineKind::RationalQuadratic,
    ] {
        for bins in [8, 24] {
            let layer = SplineCoupling::<f32>::new(
                SplineCouplingConfig {
                    mask: (0..dim).map(|d| d % 2 == 1).collect(),
                    hidden: vec![16],
                    context_dim: 0,
                    residual: false,
                    dropout: 0.0,
                    kind,
                    bins,
                    bound: 5.0,
                },
                &mut Rng::new(5),
            );
            let mut tape = hepflow::engine::Tape::default();
            let (mut y, mut back) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
            let mut ladj = vec![0.0f32; rows];
            for round in 0..3 {
                let before = thread_allocations();
                layer.forward_reusing(&x, None, &mut y, &mut ladj, &mut tape);
                layer.inverse_reusing(&y, None, &mut back, &mut ladj, &mut tape);
                let during = thread_allocations() - before;
                if round >= 1 && during > 0 {
                    failures.push(format!("{kind:?}, {bins} bins: allocated {during} times"));
                }
            }
            assert!(back.max_abs_diff(&x) < 1e-4, "{kind:?} round trip");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
