//! End-to-end tests of the `hepflow` binary on small data: train -> sample -> log-prob ->
//! evaluate, reproducibility across runs, thread counts and shards, resume, and clear errors.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A small correlated 3-feature data set with a label column, as CSV.
fn small_csv(dir: &Path, n: usize) -> PathBuf {
    labelled_csv(dir, n, 12345, 1.0)
}

fn train_small(data: &Path, out: &Path, extra: &[&str]) -> String {
    train_model(data, out, "realnvp", extra)
}

fn train_model(data: &Path, out: &Path, model: &str, extra: &[&str]) -> String {
    ok(&train_args(data, out, model, extra))
}

/// The arguments of [`train_model`]'s `hepflow train`, followed by `extra`.
fn train_args<'a>(
    data: &'a Path,
    out: &'a Path,
    model: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--columns",
        "a,b,c",
        "--model",
        model,
        "--blocks",
        "2",
        "--hidden",
        "16,16",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--seed",
        "7",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn train_sample_logprob_evaluate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 800);
    let model = dir.path().join("model");
    train_small(&data, &model, &[]);
    for f in [
        "model.json",
        "model.safetensors",
        "history.csv",
        "training.png",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    let hist = std::fs::read_to_string(model.join("history.csv")).unwrap();
    assert_eq!(
        hist.lines().next().unwrap(),
        "epoch,train_nll,train_nll_median,spikes,val_nll,lr,seconds"
    );
    assert_eq!(hist.lines().count(), 4);
    let info = ok(&["info", "--model", s(&model)]);
    assert!(info.contains("realnvp") && info.contains("parameters"));
    let out = dir.path().join("gen.csv");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "500",
        "--seed",
        "3",
        "--out",
        s(&out),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "a,b,c");
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 500);
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
    let lp = dir.path().join("lp.csv");
    ok(&[
        "log-prob",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&lp),
    ]);
    let text = std::fs::read_to_string(&lp).unwrap();
    assert_eq!(text.lines().next(), Some("log_prob,outside_support"));
    let rows: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 800);
    assert!(
        rows.iter()
            .all(|(v, f)| v.is_finite() && (*f == 0.0 || *f == 1.0))
    );
    let rep = dir.path().join("report");
    ok(&[
        "evaluate",
        "--model",
        s(&model),
        "--reference",
        s(&data),
        "-n",
        "800",
        "--out",
        s(&rep),
    ]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["features"].as_array().unwrap().len(), 3);
    assert!(metrics["test_nll"].as_f64().unwrap().is_finite());
    assert!(rep.join("report.html").exists());
    assert!(metrics.get("weighted").is_none());

    // --weight: a column of ones reproduces the unweighted metrics exactly; negative weights
    // give finite metrics; non-finite weights are a clear error naming the column.
    let text = std::fs::read_to_string(&data).unwrap();
    let with_weights = |name: &str, w: &dyn Fn(usize) -> String| -> PathBuf {
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let wv = if i == 0 { "w".to_string() } else { w(i) };
            out.push_str(&format!("{line},{wv}\n"));
        }
        let p = dir.path().join(name);
        std::fs::write(&p, out).unwrap();
        p
    };
    let evaluate_weighted = |refdata: &Path, out: &Path| -> Vec<String> {
        vec![
            "evaluate".into(),
            "--model".into(),
            s(&model).into(),
            "--reference".into(),
            s(refdata).into(),
            "--weight".into(),
            "w".into(),
            "-n".into(),
            "800".into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let ones = with_weights("ones.csv", &|_| "1".into());
    let rep1 = dir.path().join("report_w1");
    ok(&args(&evaluate_weighted(&ones, &rep1)));
    let mut m1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep1.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m1["weighted"], true);
    assert_eq!(m1["n_reference_effective"].as_f64(), Some(800.0));
    assert_eq!(m1["weight_column"], "w");
    assert_eq!(m1["weighting"], "weighted reference (column w, ESS 800.0)");
    let obj = m1.as_object_mut().unwrap();
    for k in [
        "weighted",
        "n_reference_effective",
        "weight_column",
        "weighting",
    ] {
        obj.remove(k);
    }
    assert_eq!(m1, metrics);
    let neg = with_weights("neg.csv", &|i| {
        if i % 5 == 0 { "-0.5" } else { "1.5" }.into()
    });
    let rep2 = dir.path().join("report_neg");
    ok(&args(&evaluate_weighted(&neg, &rep2)));
    let m2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep2.join("metrics.json")).unwrap()).unwrap();
    for f in m2["features"].as_array().unwrap() {
        for k in ["chi2_ndf", "chi2_p", "ks", "ks_p", "w1_over_std"] {
            assert!(f[k].as_f64().unwrap().is_finite(), "{k}: {f}");
        }
    }
    assert!(m2["c2st_auc"].as_f64().unwrap().is_finite());
    let bad = with_weights("bad.csv", &|i| if i == 7 { "nan" } else { "1" }.into());
    let err = fails(&args(&evaluate_weighted(
        &bad,
        &dir.path().join("report_bad"),
    )));
    assert!(
        err.contains("column w") && err.contains("non-finite"),
        "{err}"
    );
}

#[test]
fn training_is_reproducible_and_resume_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 600);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    train_small(&data, &a, &["--threads", "2"]);
    train_small(&data, &b, &["--threads", "2"]);
    for f in ["model.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between identical runs"
        );
    }
    // Interrupted after epoch 1 (simulated crash after the checkpoint), then resumed.
    let o = hepflow(&train_args(
        &data,
        &c,
        "realnvp",
        &["--threads", "2", "--stop-after", "1"],
    ));
    assert!(!o.status.success());
    assert!(c.join("checkpoint").join("state.json").exists());
    train_small(&data, &c, &["--threads", "2", "--resume"]);
    for f in ["model.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(c.join(f)).unwrap(),
            "{f}: resumed run differs"
        );
    }
}

#[test]
fn resume_rejects_a_checkpoint_whose_optimizer_state_does_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 300);
    let out = dir.path().join("m");
    let o = hepflow(&train_args(&data, &out, "realnvp", &["--stop-after", "1"]));
    assert!(!o.status.success());
    // One second moment fewer than the model has parameters (a damaged or edited checkpoint whose
    // checksums still match).
    let state = out.join("checkpoint").join("state.json");
    let mut ck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let v = ck["state"]["adam"]["v"].as_array_mut().unwrap();
    v.pop();
    std::fs::write(&state, serde_json::to_vec(&ck).unwrap()).unwrap();
    // `fails` also asserts that hepflow did not panic.
    let err = fails(&train_args(&data, &out, "realnvp", &["--resume"]));
    assert!(
        err.contains("state.json") && err.contains("second moments") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn sampling_is_reproducible_across_threads_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 400);
    let model = dir.path().join("m");
    train_model(&data, &model, "glow", &[]);
    let whole = dir.path().join("whole.csv");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "2500",
        "--seed",
        "9",
        "--threads",
        "1",
        "--batch",
        "700",
        "--out",
        s(&whole),
    ]);
    let again = dir.path().join("again.csv");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "2500",
        "--seed",
        "9",
        "--threads",
        "2",
        "--batch",
        "1000",
        "--out",
        s(&again),
    ]);
    let w = std::fs::read(&whole).unwrap();
    assert_eq!(
        w,
        std::fs::read(&again).unwrap(),
        "output depends on threads or batch size"
    );
    let mut joined = String::new();
    for k in 1..=3 {
        let p = dir.path().join(format!("shard{k}.csv"));
        let shard = format!("{k}/3");
        ok(&[
            "sample",
            "--model",
            s(&model),
            "-n",
            "2500",
            "--seed",
            "9",
            "--shard",
            &shard,
            "--out",
            s(&p),
        ]);
        let t = std::fs::read_to_string(&p).unwrap();
        let body: String = if k == 1 {
            t
        } else {
            t.split_once('\n').unwrap().1.to_string()
        };
        joined.push_str(&body);
    }
    assert_eq!(
        joined.as_bytes(),
        &w[..],
        "shards do not add up to the whole sample"
    );
    // Binary formats: npy of the same sample holds the same numbers.
    let npy = dir.path().join("whole.npy");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "2500",
        "--seed",
        "9",
        "--out",
        s(&npy),
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(bytes.len() % 16, (2500 * 3 * 4) % 16);
    let different = dir.path().join("other.csv");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "2500",
        "--seed",
        "10",
        "--out",
        s(&different),
    ]);
    assert_ne!(std::fs::read(&different).unwrap(), w);
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let e = fails(&[
        "train",
        "--data",
        s(&missing),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert!(e.contains("nope.csv"), "{e}");
    let e = fails(&[
        "sample",
        "--model",
        s(&dir.path().join("no-model")),
        "-n",
        "5",
        "--out",
        s(&dir.path().join("x.csv")),
    ]);
    assert!(e.contains("no-model"), "{e}");
    // A corrupted weights file names the file; no output is left behind.
    let data = small_csv(dir.path(), 300);
    let model = dir.path().join("m");
    train_small(&data, &model, &[]);
    let st = model.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&st, &bytes).unwrap();
    let out = dir.path().join("gen.csv");
    let e = fails(&["sample", "--model", s(&model), "-n", "5", "--out", s(&out)]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(!out.exists());
    // Unknown column.
    let e = fails(&[
        "train",
        "--data",
        s(&data),
        "--columns",
        "a,zz",
        "--out",
        s(&dir.path().join("o2")),
    ]);
    assert!(e.contains("zz"), "{e}");
    // A constant column cannot be min-max scaled.
    let mut csvt = String::from("a,b\n");
    for i in 0..50 {
        csvt.push_str(&format!("{},{}\n", i as f64 * 0.1, 3.0));
    }
    let cp = dir.path().join("const.csv");
    std::fs::write(&cp, csvt).unwrap();
    let e = fails(&[
        "train",
        "--data",
        s(&cp),
        "--epochs",
        "1",
        "--out",
        s(&dir.path().join("o3")),
    ]);
    assert!(
        e.contains('b') && e.to_lowercase().contains("constant"),
        "{e}"
    );
}

#[test]
fn conditional_train_sample_and_physics_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_csv(dir.path(), 1200);
    let model = dir.path().join("cond");
    ok(&[
        "train",
        "--data",
        s(&data),
        "--columns",
        "a,b,c",
        "--condition",
        "label",
        "--model",
        "maf",
        "--blocks",
        "2",
        "--hidden",
        "16,16",
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--out",
        s(&model),
    ]);
    let info = ok(&["info", "--model", s(&model)]);
    assert!(info.contains("context") && info.contains("label"), "{info}");
    // Sampling needs the context.
    let out = dir.path().join("sig.csv");
    let e = fails(&["sample", "--model", s(&model), "-n", "10", "--out", s(&out)]);
    assert!(e.contains("--condition"), "{e}");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "300",
        "--condition",
        "label=1",
        "--out",
        s(&out),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().next().unwrap(), "a,b,c,label");
    assert!(text.lines().skip(1).all(|l| l.ends_with(",1")));
    let e = fails(&[
        "sample",
        "--model",
        s(&model),
        "-n",
        "10",
        "--condition",
        "label=7",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("label") && e.contains('7'), "{e}");
    // One event per row of a file's context columns.
    let per = dir.path().join("per.csv");
    ok(&[
        "sample",
        "--model",
        s(&model),
        "--condition-from",
        s(&data),
        "--out",
        s(&per),
    ]);
    assert_eq!(std::fs::read_to_string(&per).unwrap().lines().count(), 1201);
    // log-prob reads the context from the data; evaluate runs the physics check.
    let lp = dir.path().join("lp.csv");
    ok(&[
        "log-prob",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&lp),
    ]);
    let rep = dir.path().join("rep");
    ok(&[
        "evaluate",
        "--model",
        s(&model),
        "--reference",
        s(&data),
        "--physics",
        "label",
        "--out",
        s(&rep),
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("metrics.json")).unwrap()).unwrap();
    let auc_mc = m["physics"]["auc_trained_on_mc"].as_f64().unwrap();
    let auc_gen = m["physics"]["auc_trained_on_generated"].as_f64().unwrap();
    assert!(
        auc_mc > 0.6 && auc_gen > 0.5,
        "physics AUCs {auc_mc} {auc_gen}"
    );
}

/// `info --data` expands a quoted glob as `train --data` does and describes the first file.
#[test]
fn info_expands_globs() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/subdir_one.root");
    for name in ["b.root", "a.root"] {
        std::fs::copy(&fixture, dir.path().join(name)).unwrap();
    }
    let spec = format!("{}/*.root:dir/sub/events", s(dir.path()));
    let out = ok(&["info", "--data", &spec]);
    assert!(out.contains("2 files match"), "{out}");
    assert!(out.contains("a.root"), "{out}");
    assert!(out.contains("dir/sub/events"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("x ")), "{out}");
    let none = fails(&["info", "--data", &format!("{}/*.csv", s(dir.path()))]);
    assert!(none.contains("no file matches"), "{none}");
}
