//! docs/SCALE.md: the shard command of its Slurm script, run as local processes in parallel (one
//! per array index), gives shards whose glob read equals one unsharded run.

use hepflow::engine::{Matrix, Rng};
use hepflow::io::{ReadOptions, Table, read_sources};
use hepflow::pipeline::{TrainJob, train_model};
use std::path::Path;
use std::process::Command;

/// The `hepflow sample` line of the Slurm script in docs/SCALE.md.
fn slurm_sample_line() -> String {
    let doc = include_str!("../docs/SCALE.md");
    let script = doc
        .split("```bash\n")
        .find(|b| b.contains("#SBATCH"))
        .expect("docs/SCALE.md has a Slurm script");
    script
        .lines()
        .find(|l| l.starts_with("hepflow sample"))
        .expect("the Slurm script runs hepflow sample")
        .to_string()
}

fn model(dir: &Path) -> std::path::PathBuf {
    let mut rng = Rng::new(4);
    let x = Matrix::from_fn(500, 3, |_, j| (rng.normal() * (j + 1) as f64) as f32);
    let table = Table::new(vec!["a".into(), "b".into(), "c".into()], x).unwrap();
    let opts = hepflow::config::TrainOptions {
        model: Some("realnvp".into()),
        blocks: Some(2),
        hidden: Some(vec![8]),
        epochs: Some(1),
        ..Default::default()
    };
    let settings = opts.resolve().unwrap();
    let data = hepflow::dataset::from_table(table, &opts, "toy").unwrap();
    let out = dir.join("model");
    let job = TrainJob::new(&settings, data, out.clone(), false).unwrap();
    train_model(&job, &mut hepflow::train::Silent).unwrap();
    out
}

#[cfg(unix)]
#[test]
fn slurm_array_shards_read_back_with_a_glob_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hepflow")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let line = slurm_sample_line();
    let (n, m) = (10_001, 4);
    let shards = dir.path().join("gen");
    std::fs::create_dir(&shards).unwrap();
    // One process per array index, all at once, as the scheduler would start them.
    let children: Vec<_> = (1..=m)
        .map(|k| {
            Command::new("bash")
                .args(["-c", &line])
                .env("PATH", &path)
                .env("MODEL", &model)
                .env("OUTDIR", &shards)
                .env("N", n.to_string())
                .env("M", m.to_string())
                .env("SEED", "1")
                .env("K", k.to_string())
                .env("SLURM_CPUS_PER_TASK", "1")
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success());
    }
    let whole = dir.path().join("whole.parquet");
    let o = Command::new(env!("CARGO_BIN_EXE_hepflow"))
        .args([
            "sample",
            "--model",
            model.to_str().unwrap(),
            "-n",
            &n.to_string(),
        ])
        .args(["--seed", "1", "--out", whole.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let glob = format!("{}/shard_*.parquet", shards.display());
    let (sharded, _) = read_sources(&[glob], &ReadOptions::default()).unwrap();
    let (one, _) = read_sources(&[whole.display().to_string()], &ReadOptions::default()).unwrap();
    assert_eq!(sharded.rows(), n);
    assert_eq!(sharded.columns, one.columns);
    let bits = |t: &Table| -> Vec<u32> { t.data.as_slice().iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&sharded), bits(&one));
}
