//! End-to-end tests of the MADE-MoG model (`hepflow train --model made-mog`): train, model file,
//! sample, log-prob, reload, the conditional variant, an ensemble, thread-count independence and
//! the options that do not apply.

mod common;
use common::*;
use hepflow::model::Model;
use std::path::{Path, PathBuf};

fn small_csv(dir: &Path, n: usize) -> PathBuf {
    labelled_csv(dir, n, 17, 2.0)
}

fn train(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--columns",
        "a,b,c",
        "--model",
        "made-mog",
        "--hidden",
        "32,32",
        "--components",
        "4",
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--lr",
        "0.003",
        "--seed",
        "3",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

fn sample(model: &Path, out: &Path, n: &str, extra: &[&str]) -> Vec<Vec<f64>> {
    let mut args = vec!["sample", "--model", s(model), "-n", n, "--seed", "5"];
    args.extend_from_slice(&["--out", s(out)]);
    args.extend_from_slice(extra);
    ok(&args);
    read_csv(out).1
}

#[test]
fn train_sample_logprob_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 800);
    let model = dir.path().join("mog");
    let out = train(&data, &model, "6", &["--threads", "2"]);
    assert!(out.contains("best validation NLL"), "{out}");
    let (_, hist) = read_csv(&model.join("history.csv"));
    assert_eq!(hist.len(), 6);
    assert!(hist[5][4] < hist[0][4], "validation NLL did not improve");
    // model.json: no layers, the mixture base with its shape.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(json["preset"], "made-mog");
    assert_eq!(json["layers"], serde_json::json!([]));
    assert_eq!(json["base"]["type"], "made_mog");
    assert_eq!(json["base"]["components"], 4);
    let loaded = Model::load(&model).unwrap();
    assert!(loaded.flow.layers().is_empty() && loaded.num_params() > 0);

    // Samples: finite, reproducible for any thread count.
    let a = sample(&model, &dir.path().join("a.csv"), "500", &[]);
    let b = sample(
        &model,
        &dir.path().join("b.csv"),
        "500",
        &["--threads", "1"],
    );
    assert_eq!(a.len(), 500);
    assert_eq!(a, b, "sampling depends on the thread count");
    assert!(a.iter().flatten().all(|v| v.is_finite()));
    // The first feature's mean (0 for label 0, 2 for label 1: 1 over both) and b ~ a / 2.
    let mean = |j: usize| a.iter().map(|r| r[j]).sum::<f64>() / a.len() as f64;
    assert!((mean(0) - 1.0).abs() < 0.3, "mean of a: {}", mean(0));
    assert!((mean(1) - 0.5).abs() < 0.3, "mean of b: {}", mean(1));

    // Log-density of the training events: finite, and the library agrees with the CLI.
    let lp = log_prob_rows(&model, &data, &dir.path().join("lp.csv"));
    assert_eq!(lp.len(), 800);
    assert!(lp.iter().all(|r| r[0].is_finite()));
    let mean_lp = lp.iter().map(|r| r[0]).sum::<f64>() / 800.0;
    let best = loaded.config.training["best_val_nll"].as_f64().unwrap();
    assert!(
        (-mean_lp - best).abs() < 0.5,
        "training events {mean_lp} vs validation NLL {best}"
    );

    // A damaged base is refused with a message, never a panic.
    let path = model.join("model.json");
    for (field, value, needle) in [
        ("components", serde_json::json!(0), "components"),
        ("order", serde_json::json!([0, 0, 1]), "permutation"),
        (
            "hidden",
            serde_json::json!([16, 32]),
            "base.layers.0.weight",
        ),
    ] {
        let mut v = json.clone();
        v["base"][field] = value;
        std::fs::write(&path, v.to_string()).unwrap();
        let err = Model::load(&model)
            .err()
            .expect("must not load")
            .to_string();
        assert!(err.contains(needle), "{field}: {err}");
    }
}

#[test]
fn conditional_made_mog_and_ensembles_follow_their_context() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 1000);
    let model = dir.path().join("mog");
    train(
        &data,
        &model,
        "30",
        &["--condition", "label", "--ensemble", "2"],
    );
    let json = std::fs::read_to_string(model.join("model.json")).unwrap();
    assert!(json.contains("\"members\": 2") && json.contains("\"context_dim\": 2"));
    // A small model after a short training run: the conditional mixture is on its way there.
    assert_follows_label_context(dir.path(), &model, &data, "5");
}

#[test]
fn options_that_do_not_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 100);
    let out = dir.path().join("m");
    let run = |args: &[&str]| {
        let mut all = vec!["train", "--data", s(&data), "--out", s(&out)];
        all.extend_from_slice(args);
        fails(&all)
    };
    let err = run(&["--model", "made-mog", "--bins", "4"]);
    assert!(err.contains("bins") && err.contains("made-mog"), "{err}");
    let err = run(&["--model", "pq-spline", "--components", "4"]);
    assert!(
        err.contains("components") && err.contains("made-mog"),
        "{err}"
    );
    let err = run(&["--model", "made-mog", "--components", "65"]);
    assert!(err.contains("components"), "{err}");
}

/// MADE dropout (the preset's 0.2, `dropout` in the config file): training stays reproducible and
/// independent of the thread count (masks from the step's seed), changes the trained model, and
/// is recorded in the model file (left out when 0).
#[test]
fn dropout_trains_reproducibly_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 400);
    let cfg = dir.path().join("no-dropout.toml");
    std::fs::write(&cfg, "dropout = 0.0\n").unwrap();
    let params = |name: &str, extra: &[&str]| {
        let model = dir.path().join(name);
        train(&data, &model, "3", extra);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model.join("model.json")).unwrap()).unwrap();
        (
            std::fs::read(model.join("model.safetensors")).unwrap(),
            json,
        )
    };
    let (a, ja) = params("a", &["--threads", "1"]);
    let (b, _) = params("b", &["--threads", "2"]);
    let (c, jc) = params("c", &["--config", s(&cfg), "--threads", "2"]);
    assert_eq!(a, b, "dropout training depends on the thread count");
    assert_ne!(a, c, "dropout changed nothing");
    assert_eq!(ja["base"]["dropout"], 0.2);
    assert!(jc["base"].get("dropout").is_none(), "{}", jc["base"]);
}
