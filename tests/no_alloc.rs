//! The training step allocates nothing once warm, for every preset: every buffer of the gradient
//! engine, the layers' tapes and the conditioners' scratch is reused from step to step (a counting
//! global allocator checks this, with two worker threads), on every SIMD path (all f32 products run
//! on our own kernel, which allocates nothing).

use hepflow::engine::{Matrix, Rng};
use hepflow::flow::Flow;
use hepflow::presets::{Preset, build_specs};
use hepflow::train::GradientEngine;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
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
        let specs = build_specs(preset, dim, &opts, 7);
        let mut flow = Flow::<f32>::from_specs(dim, 0, &specs, 7);
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
