//! Whole-flow properties for every preset: invertibility in f32, exact densities (integrating to
//! one in 1-D and 2-D), gradients of the data-parallel training step against finite differences,
//! determinism across thread counts, training to the right answer, divergence guard, save/load.

use hepflow::engine::{Matrix, Rng};
use hepflow::flow::Flow;
use hepflow::presets::{Preset, PresetOptions, build_base, build_flow, build_specs};
use hepflow::train::{
    GradientEngine, Silent, TrainConfig, TrainError, fit, initial_state, mean_nll,
};
use hepflow::transforms::testing::{randomize_flow, randomize_params};

/// Small versions of the presets; made-mog gets one MAF layer under its mixture (MAF-MoG), so
/// that gradients through a base distribution into the layers below it are checked too.
fn small_opts(preset: Preset) -> PresetOptions {
    PresetOptions {
        blocks: if preset == Preset::MadeMog { 1 } else { 2 },
        hidden: vec![16, 16],
        components: 3,
        ..preset.default_options()
    }
}

fn random_flow<T: hepflow::engine::Real>(
    preset: Preset,
    dim: usize,
    scale: f64,
    seed: u64,
) -> Flow<T> {
    let mut flow = build_flow::<T>(preset, dim, &small_opts(preset), seed);
    let mut rng = Rng::new(seed + 1);
    randomize_flow(&mut flow, scale, &mut rng);
    flow
}

#[test]
fn every_preset_inverts_to_float_precision() {
    for preset in Preset::ALL {
        let flow: Flow<f32> = random_flow(preset, 6, 0.1, 3);
        let mut rng = Rng::new(5);
        let x = Matrix::from_fn(2000, 6, |_, _| (rng.uniform() * 20.0 - 10.0) as f32);
        let (z, l1) = flow.forward(&x, None);
        let (xr, l2) = flow.inverse(&z, None);
        let err = x.max_abs_diff(&xr);
        assert!(err <= 1e-4, "{preset}: round trip error {err:e}");
        for i in 0..x.rows() {
            assert!(
                (l1[i] + l2[i]).abs() < 1e-3 * (1.0 + l1[i].abs()),
                "{preset}: log-dets disagree"
            );
        }
        assert!(z.all_finite());
    }
}

/// `Flow::sample_events` draws and maps each chunk in one pass; its events are, bit for bit, the
/// base vectors of `Flow::sample_base` mapped by `Flow::events_from_base` (the two-pass route),
/// for every preset, from an offset start and over several chunks with a partial last one.
#[test]
fn one_pass_sampling_gives_the_two_pass_events() {
    for preset in Preset::ALL {
        let flow: Flow<f32> = random_flow(preset, 6, 0.3, 4);
        let (start, n, seed) = (7u64, 2100usize, 9u64);
        let one = flow.sample_events(start, n, seed, None);
        let indices: Vec<u64> = (start..start + n as u64).collect();
        let z = flow.sample_base(seed, &indices, None);
        let two = flow.events_from_base(&z, None);
        assert_eq!((one.rows(), one.cols()), (n, 6), "{preset}");
        assert_eq!(one.as_slice(), two.as_slice(), "{preset}");
        assert!(
            one.max_abs_diff(&z) > 1e-3,
            "{preset}: the layers changed nothing"
        );
    }
}

/// Evaluation passes compose permutation layers into a column order and run coupling layers in
/// place (`Flow::run_layers`); the events, base vectors and log-determinants are, bit for bit,
/// those of applying the layers one after another, for every preset with a context, in both
/// directions and over several chunks.
#[test]
fn in_place_evaluation_gives_the_layer_by_layer_bits() {
    use hepflow::transforms::Transform;
    fn layer_by_layer(
        layers: &[Box<dyn Transform<f32>>],
        x: &Matrix<f32>,
        ctx: &Matrix<f32>,
        inverse: bool,
    ) -> (Matrix<f32>, Vec<f32>) {
        let (mut a, mut b) = (x.clone(), Matrix::zeros(0, 0));
        let mut ladj = vec![0.0f32; x.rows()];
        let order: Vec<&Box<dyn Transform<f32>>> = if inverse {
            layers.iter().rev().collect()
        } else {
            layers.iter().collect()
        };
        for layer in order {
            if inverse {
                layer.inverse(&a, Some(ctx), &mut b, &mut ladj);
            } else {
                layer.forward(&a, Some(ctx), &mut b, &mut ladj);
            }
            std::mem::swap(&mut a, &mut b);
        }
        (a, ladj)
    }
    let bits = |m: &Matrix<f32>, l: &[f32]| -> Vec<u32> {
        m.as_slice().iter().chain(l).map(|v| v.to_bits()).collect()
    };
    for preset in Preset::ALL {
        let opts = PresetOptions {
            blocks: 4,
            context_dim: 2,
            ..small_opts(preset)
        };
        let mut flow = build_flow::<f32>(preset, 6, &opts, 8);
        randomize_flow(&mut flow, 0.3, &mut Rng::new(9));
        let mut rng = Rng::new(10);
        let n = 2100;
        let x = Matrix::from_fn(n, 6, |_, _| (rng.uniform() * 6.0 - 3.0) as f32);
        let ctx = Matrix::from_fn(n, 2, |_, _| rng.normal() as f32);
        let (z, lz) = flow.forward(&x, Some(&ctx));
        let (z_ref, lz_ref) = layer_by_layer(flow.layers(), &x, &ctx, false);
        assert_eq!(bits(&z, &lz), bits(&z_ref, &lz_ref), "{preset} forward");
        let (xi, lx) = flow.inverse(&x, Some(&ctx));
        let (xi_ref, lx_ref) = layer_by_layer(flow.layers(), &x, &ctx, true);
        assert_eq!(bits(&xi, &lx), bits(&xi_ref, &lx_ref), "{preset} inverse");
        let events = flow.events_from_base(&x, Some(&ctx));
        assert_eq!(
            events.as_slice(),
            xi_ref.as_slice(),
            "{preset} sampling pass"
        );
        assert!(
            z.max_abs_diff(&x) > 1e-3,
            "{preset}: the layers changed nothing"
        );
    }
}

/// Integrates exp(log p) on a grid with the trapezoid rule.
fn integrate_2d(flow: &Flow<f64>, half_width: f64, n: usize) -> f64 {
    let h = 2.0 * half_width / n as f64;
    let x = Matrix::from_fn((n + 1) * (n + 1), 2, |i, j| {
        let k = if j == 0 { i / (n + 1) } else { i % (n + 1) };
        -half_width + k as f64 * h
    });
    let lp = flow.log_prob(&x, None);
    let mut acc = 0.0;
    for (i, v) in lp.iter().enumerate() {
        let (a, b) = (i / (n + 1), i % (n + 1));
        let w = if a == 0 || a == n { 0.5 } else { 1.0 } * if b == 0 || b == n { 0.5 } else { 1.0 };
        acc += w * v.exp();
    }
    acc * h * h
}

#[test]
fn densities_integrate_to_one_in_2d() {
    for preset in Preset::ALL {
        let flow: Flow<f64> = random_flow(preset, 2, 0.15, 11);
        let total = integrate_2d(&flow, 12.0, 600);
        assert!(
            (total - 1.0).abs() < 1e-3,
            "{preset}: density integrates to {total}"
        );
    }
}

#[test]
fn densities_integrate_to_one_in_1d() {
    // One feature: MAF (context-free affine autoregression) with batch norm and LU in eval mode.
    use hepflow::transforms::{BatchNormConfig, LayerSpec, LuLinearConfig, MafConfig};
    let mut rng = Rng::new(2);
    let specs = vec![
        LayerSpec::BatchNorm(BatchNormConfig {
            dim: 1,
            momentum: 0.9,
            eps: 1e-5,
        }),
        LayerSpec::LuLinear(LuLinearConfig::random(1, &mut rng)),
        LayerSpec::Maf(MafConfig {
            dim: 1,
            hidden: vec![8],
            context_dim: 0,
            order: vec![0],
            scale_clamp: 3.0,
        }),
    ];
    let mut flow = Flow::<f64>::from_specs(1, 0, &specs, 4);
    for l in flow.layers_mut() {
        randomize_params(l.as_mut(), 0.5, &mut rng);
    }
    let n = 20000;
    let (lo, hi) = (-30.0, 30.0);
    let h = (hi - lo) / n as f64;
    let x = Matrix::from_fn(n + 1, 1, |i, _| lo + i as f64 * h);
    let lp = flow.log_prob(&x, None);
    let total: f64 = lp
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 0 || i == n { 0.5 } else { 1.0 } * v.exp())
        .sum::<f64>()
        * h;
    assert!(
        (total - 1.0).abs() < 1e-3,
        "1-D density integrates to {total}"
    );
}

#[test]
fn training_step_gradient_matches_finite_differences() {
    for preset in Preset::ALL {
        let mut flow: Flow<f64> = random_flow(preset, 4, 0.2, 21);
        let mut rng = Rng::new(8);
        let x = Matrix::from_fn(37, 4, |_, _| rng.normal() * 1.5);
        let mut engine = GradientEngine::new(&flow, 8); // several chunks, one partial
        let _ = engine.loss_and_grad(&flow, &x, None);
        let grads = engine.grads().to_vec();
        let mut p = flow.param_vector();
        let stride = (p.len() / 40).max(1);
        let eps = 1e-6;
        for k in (0..p.len()).step_by(stride) {
            let orig = p[k];
            p[k] = orig + eps;
            flow.set_param_vector(&p);
            let lp = engine.loss_and_grad(&flow, &x, None);
            p[k] = orig - eps;
            flow.set_param_vector(&p);
            let lm = engine.loss_and_grad(&flow, &x, None);
            p[k] = orig;
            flow.set_param_vector(&p);
            let fd = (lp - lm) / (2.0 * eps);
            let err = (fd - grads[k]).abs() / (1.0 + fd.abs().max(grads[k].abs()));
            assert!(
                err < 1e-5,
                "{preset}: dL/dp[{k}] analytic {} vs fd {fd}",
                grads[k]
            );
        }
    }
}

#[test]
fn training_step_is_identical_for_any_thread_count() {
    let flow: Flow<f32> = random_flow(Preset::RqSpline, 5, 0.2, 4);
    let mut rng = Rng::new(1);
    let x = Matrix::from_fn(1000, 5, |_, _| rng.normal() as f32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut e = GradientEngine::new(&flow, 64);
            let l = e.loss_and_grad(&flow, &x, None);
            (
                l,
                e.grads().to_vec(),
                flow.sample(300, 5, None),
                flow.log_prob(&x, None),
            )
        })
    };
    let a = run(1);
    let b = run(2);
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert_eq!(a.3, b.3);
}

#[test]
fn training_learns_a_correlated_gaussian() {
    // x = A g, g ~ N(0, I): the true NLL is 0.5 log det(2 pi e A A^T).
    let a = [[1.0, 0.0], [0.8, 0.6]];
    let mut rng = Rng::new(3);
    let draw = |n: usize, rng: &mut Rng| {
        let g = Matrix::from_fn(n, 2, |_, _| rng.normal());
        Matrix::from_fn(n, 2, |i, j| {
            (a[j][0] * g.get(i, 0) + a[j][1] * g.get(i, 1)) as f32
        })
    };
    let train = draw(6000, &mut rng);
    let val = draw(3000, &mut rng);
    let det: f64 = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    let truth = (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + det.abs().ln();
    for preset in [Preset::Realnvp, Preset::RqSpline] {
        let specs = build_specs(preset, 2, &small_opts(preset), 1);
        let mut flow = Flow::<f32>::from_specs(2, 0, &specs, 1);
        let cfg = TrainConfig {
            epochs: 12,
            batch_size: 256,
            lr: 3e-3,
            patience: 12,
            ..TrainConfig::default()
        };
        let before = mean_nll(&flow, &val, None);
        let state = initial_state(&flow, &cfg);
        fit(
            &mut flow,
            &train,
            None,
            &val,
            None,
            &cfg,
            state,
            &mut Silent,
        )
        .unwrap();
        let after = mean_nll(&flow, &val, None);
        assert!(after < before - 0.1, "{preset}: NLL {before} -> {after}");
        assert!(
            (after - truth).abs() < 0.06,
            "{preset}: NLL {after} vs true {truth}"
        );
    }
}

#[test]
fn a_diverging_run_is_stopped_and_never_leaves_bad_parameters() {
    let specs = build_specs(Preset::Realnvp, 3, &small_opts(Preset::Realnvp), 1);
    let mut flow = Flow::<f32>::from_specs(3, 0, &specs, 1);
    let mut rng = Rng::new(9);
    let train = Matrix::from_fn(512, 3, |_, _| rng.normal() as f32);
    let val = train.slice_rows(0, 100);
    let cfg = TrainConfig {
        epochs: 50,
        batch_size: 64,
        lr: 1e30,
        clip_grad_norm: 1e30,
        ..TrainConfig::default()
    };
    let state = initial_state(&flow, &cfg);
    let r = fit(
        &mut flow,
        &train,
        None,
        &val,
        None,
        &cfg,
        state,
        &mut Silent,
    );
    assert!(
        matches!(r, Err(TrainError::Diverged(..))),
        "expected a divergence error"
    );
    assert!(
        flow.param_vector().iter().all(|v| v.is_finite()),
        "non-finite parameters after roll-back"
    );
}

#[test]
fn conditional_flows_invert_and_have_exact_gradients_with_context() {
    for preset in [
        Preset::Realnvp,
        Preset::Glow,
        Preset::RqSpline,
        Preset::PqSpline,
        Preset::Maf,
        Preset::MadeMog,
    ] {
        let opts = PresetOptions {
            context_dim: 2,
            ..small_opts(preset)
        };
        let mut flow = build_flow::<f64>(preset, 4, &opts, 5);
        let mut rng = Rng::new(6);
        randomize_flow(&mut flow, 0.2, &mut rng);
        let x = Matrix::from_fn(29, 4, |_, _| rng.normal() * 2.0);
        let c = Matrix::from_fn(29, 2, |i, j| if (i + j) % 2 == 0 { 1.0 } else { 0.0 });
        let (z, l1) = flow.forward(&x, Some(&c));
        let (xr, l2) = flow.inverse(&z, Some(&c));
        assert!(
            x.max_abs_diff(&xr) < 1e-9,
            "{preset}: conditional round trip"
        );
        assert!(l1.iter().zip(&l2).all(|(a, b)| (a + b).abs() < 1e-9));
        // The context matters: another context gives another density.
        let c2 = Matrix::from_fn(29, 2, |i, j| if (i + j) % 2 == 0 { 0.0 } else { 1.0 });
        let (lp1, lp2) = (flow.log_prob(&x, Some(&c)), flow.log_prob(&x, Some(&c2)));
        assert!(
            lp1.iter().zip(&lp2).any(|(a, b)| (a - b).abs() > 1e-3),
            "{preset}: context ignored"
        );
        // Gradients of the training step with context.
        let mut engine = GradientEngine::new(&flow, 8);
        let _ = engine.loss_and_grad(&flow, &x, Some(&c));
        let grads = engine.grads().to_vec();
        let mut p = flow.param_vector();
        let stride = (p.len() / 25).max(1);
        for k in (0..p.len()).step_by(stride) {
            let orig = p[k];
            p[k] = orig + 1e-6;
            flow.set_param_vector(&p);
            let lp = engine.loss_and_grad(&flow, &x, Some(&c));
            p[k] = orig - 1e-6;
            flow.set_param_vector(&p);
            let lm = engine.loss_and_grad(&flow, &x, Some(&c));
            p[k] = orig;
            flow.set_param_vector(&p);
            let fd = (lp - lm) / 2e-6;
            let err = (fd - grads[k]).abs() / (1.0 + fd.abs().max(grads[k].abs()));
            assert!(
                err < 1e-5,
                "{preset}: conditional dL/dp[{k}] {} vs fd {fd}",
                grads[k]
            );
        }
    }
}

#[test]
fn a_conditional_flow_learns_two_classes() {
    // Class 0: N(-1, 0.5^2) x N(0, 1); class 1: N(+1, 0.5^2) x N(0, 1). True NLL per event:
    // log(2 pi e)/2 * 2 + log 0.5.
    let mut rng = Rng::new(2);
    let draw = |n: usize, rng: &mut Rng| {
        let c = Matrix::from_fn(n, 2, |i, j| {
            if (i % 2 == 0) == (j == 0) {
                1.0f32
            } else {
                0.0
            }
        });
        let x = Matrix::from_fn(n, 2, |i, j| {
            let m = if i % 2 == 0 { -1.0 } else { 1.0 };
            (if j == 0 {
                m + 0.5 * rng.normal()
            } else {
                rng.normal()
            }) as f32
        });
        (x, c)
    };
    let (x, c) = draw(6000, &mut rng);
    let (xv, cv) = draw(2000, &mut rng);
    let opts = PresetOptions {
        context_dim: 2,
        ..small_opts(Preset::Realnvp)
    };
    let specs = build_specs(Preset::Realnvp, 2, &opts, 1);
    let mut flow = Flow::<f32>::from_specs(2, 2, &specs, 1);
    let cfg = TrainConfig {
        epochs: 10,
        batch_size: 256,
        lr: 3e-3,
        ..TrainConfig::default()
    };
    let state = initial_state(&flow, &cfg);
    fit(
        &mut flow,
        &x,
        Some(&c),
        &xv,
        Some(&cv),
        &cfg,
        state,
        &mut Silent,
    )
    .unwrap();
    let truth = (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + 0.5f64.ln();
    let nll = mean_nll(&flow, &xv, Some(&cv));
    assert!(
        (nll - truth).abs() < 0.08,
        "conditional NLL {nll} vs true {truth}"
    );
    // Samples at each context sit at the right mean.
    for (k, want) in [(0usize, -1.0f64), (1, 1.0)] {
        let ctx = Matrix::from_fn(4000, 2, |_, j| if j == k { 1.0f32 } else { 0.0 });
        let s = flow.sample(4000, 3, Some(&ctx));
        let mean = (0..4000).map(|i| s.get(i, 0) as f64).sum::<f64>() / 4000.0;
        assert!((mean - want).abs() < 0.1, "class {k}: sample mean {mean}");
    }
}

#[test]
fn save_then_load_reproduces_outputs_bit_for_bit_and_names_bad_tensors() {
    use hepflow::model::{FORMAT_VERSION, Model, ModelConfig};
    for preset in Preset::ALL {
        let config = ModelConfig {
            format_version: FORMAT_VERSION,
            preset: preset.name().into(),
            features: vec!["a".into(), "b".into(), "c".into()],
            context: Vec::new(),
            preprocessing: None,
            layers: build_specs(preset, 3, &small_opts(preset), 2),
            base: build_base(preset, 3, &small_opts(preset)),
            training: serde_json::Value::Null,
            members: 1,
        };
        let mut model = Model::new(config, 3);
        let mut rng = Rng::new(4);
        randomize_flow(&mut model.flow, 0.2, &mut rng);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let loaded = Model::load(dir.path()).unwrap();
        let x = Matrix::from_fn(300, 3, |_, _| rng.normal() as f32);
        let a = model.log_prob(&x, None).unwrap();
        let b = loaded.log_prob(&x, None).unwrap();
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{preset}: log-prob changed"
        );
        assert_eq!(
            model.sample_range(0, 200, 9, None).unwrap(),
            loaded.sample_range(0, 200, 9, None).unwrap()
        );
        // A tensor of the wrong shape is named in the error.
        let json = std::fs::read_to_string(dir.path().join("model.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let layers = v["layers"].as_array_mut().unwrap();
        let k = layers
            .iter()
            .position(|l| l.get("hidden").is_some())
            .unwrap();
        layers[k]["hidden"] = serde_json::json!([8, 16]);
        std::fs::write(dir.path().join("model.json"), v.to_string()).unwrap();
        let err = Model::load(dir.path())
            .err()
            .expect("mismatched model must not load")
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains(&format!("tensor 'layers.{k}.")),
            "{preset}: {err}"
        );
    }
}

/// Every SIMD path this CPU supports (AVX-512, AVX2 + FMA, portable) trains every preset to the
/// same parameters and samples and scores the same events, bit for bit. The path is switched
/// process-wide; other tests running meanwhile are unaffected because the paths agree.
#[test]
fn every_simd_path_trains_and_samples_the_same_bytes() {
    use hepflow::engine::simd::{self, SimdPath};
    let original = simd::active();
    let mut rng = Rng::new(11);
    let train = Matrix::from_fn(600, 4, |_, j| (rng.normal() * (1.0 + j as f64)) as f32);
    let val = Matrix::from_fn(200, 4, |_, _| rng.normal() as f32);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 128,
        lr: 3e-3,
        ..TrainConfig::default()
    };
    let run = |preset: Preset, path: SimdPath| -> Vec<u32> {
        simd::force(path).unwrap();
        let mut flow = build_flow::<f32>(preset, 4, &small_opts(preset), 2);
        let state = initial_state(&flow, &cfg);
        fit(
            &mut flow,
            &train,
            None,
            &val,
            None,
            &cfg,
            state,
            &mut Silent,
        )
        .unwrap();
        let mut params = Vec::new();
        flow.copy_params_into(&mut params);
        let samples = flow.sample(300, 9, None);
        let lp = flow.log_prob(&val, None);
        params
            .iter()
            .chain(samples.as_slice())
            .chain(&lp)
            .map(|v| v.to_bits())
            .collect()
    };
    let paths = simd::supported_paths();
    for preset in Preset::ALL {
        let reference = run(preset, SimdPath::Portable);
        for &path in &paths {
            let got = run(preset, path);
            let differing = got.iter().zip(&reference).filter(|(a, b)| a != b).count();
            assert!(
                got.len() == reference.len() && differing == 0,
                "{preset}: the {path} path differs from the portable one in {differing} of {} values",
                reference.len()
            );
        }
    }
    simd::force(original).unwrap();
    eprintln!("compared SIMD paths: {paths:?}");
}

/// made-mog (its mixture base, no transforms): the training step, the log-density and the
/// samples are the same bits for any thread count, and an event is the same whatever batch it
/// is drawn in.
#[test]
fn made_mog_is_identical_for_any_thread_count_and_batching() {
    let opts = PresetOptions {
        context_dim: 2,
        hidden: vec![24, 24],
        components: 4,
        ..Preset::MadeMog.default_options()
    };
    let mut flow = build_flow::<f32>(Preset::MadeMog, 5, &opts, 4);
    assert!(flow.layers().is_empty());
    randomize_flow(&mut flow, 0.2, &mut Rng::new(2));
    let mut rng = Rng::new(1);
    let x = Matrix::from_fn(2500, 5, |_, _| rng.normal() as f32);
    let c = Matrix::from_fn(2500, 2, |_, _| rng.normal() as f32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut e = GradientEngine::new(&flow, 64);
            let l = e.loss_and_grad(&flow, &x, Some(&c));
            (
                l,
                e.grads().to_vec(),
                flow.sample(2500, 5, Some(&c)),
                flow.log_prob(&x, Some(&c)),
            )
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert_eq!(a.3, b.3);
    assert!(a.1.iter().any(|g| *g != 0.0));
    // Events 1100..2500 drawn on their own are rows 1100.. of the whole sample.
    let tail = flow.sample_events(1100, 1400, 5, Some(&c.slice_rows(1100, 2500)));
    assert_eq!(tail.as_slice(), &a.2.as_slice()[1100 * 5..]);
    // Sampling with log-densities returns the densities of the events it draws.
    let (s, lp) = flow.sample_range(0, 300, 5, Some(&c.slice_rows(0, 300)));
    let again = flow.log_prob(&s, Some(&c.slice_rows(0, 300)));
    for (p, q) in lp.iter().zip(&again) {
        assert!((p - q).abs() < 1e-4 * p.abs().max(1.0), "{p} vs {q}");
    }
}

/// made-mog learns a bimodal distribution that no Gaussian autoregression can represent:
/// `x0 ~ (N(-2, 0.5^2) + N(2, 0.5^2)) / 2`, `x1 | x0 ~ N(x0 / 2, 0.3^2)`; its validation NLL reaches
/// the true entropy and its samples put half their events in each mode.
#[test]
fn made_mog_learns_a_bimodal_mixture() {
    let draw = |n: usize, rng: &mut Rng| {
        let mut x = Matrix::zeros(n, 2);
        for i in 0..n {
            let m = if rng.uniform() < 0.5 { -2.0 } else { 2.0 };
            let x0 = m + 0.5 * rng.normal();
            x.row_mut(i)[0] = x0 as f32;
            x.row_mut(i)[1] = (0.5 * x0 + 0.3 * rng.normal()) as f32;
        }
        x
    };
    let mut rng = Rng::new(3);
    let (train, val) = (draw(8000, &mut rng), draw(3000, &mut rng));
    let e = |v: f64| 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * v * v).ln();
    let truth = 2f64.ln() + e(0.5) + e(0.3);
    let opts = PresetOptions {
        hidden: vec![32, 32],
        components: 3,
        ..Preset::MadeMog.default_options()
    };
    let mut flow = build_flow::<f32>(Preset::MadeMog, 2, &opts, 1);
    let cfg = TrainConfig {
        epochs: 25,
        batch_size: 256,
        lr: 3e-3,
        ..TrainConfig::default()
    };
    let state = initial_state(&flow, &cfg);
    fit(
        &mut flow,
        &train,
        None,
        &val,
        None,
        &cfg,
        state,
        &mut Silent,
    )
    .unwrap();
    let nll = mean_nll(&flow, &val, None);
    assert!((nll - truth).abs() < 0.05, "NLL {nll} vs true {truth}");
    let s = flow.sample(4000, 9, None);
    let upper = (0..4000).filter(|&i| s.get(i, 0) > 0.0).count() as f64 / 4000.0;
    let gap = (0..4000).filter(|&i| s.get(i, 0).abs() < 0.5).count() as f64 / 4000.0;
    assert!((upper - 0.5).abs() < 0.04, "upper mode holds {upper}");
    // Between the modes (|x0| < 0.5, 3 sigma from both) the true density holds 0.27%, the best
    // single Gaussian 19%.
    assert!(gap < 0.05, "{gap} of the events between the modes");
}
