//! `hepflow info`.

use anyhow::Result;
use clap::Args;
use hepflow::io::{self, ColumnKind, ReadOptions};
use hepflow::model::Model;
use std::path::PathBuf;

/// Arguments of `hepflow info`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct InfoArgs {
    /// Model directory.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// An event file (`file.root:tree` for one TTree/RNTuple): list its columns with their types
    /// and lengths, to find what to pass to --columns (`Jet_pt[0]` for a collection element).
    #[arg(long)]
    pub data: Option<String>,
}

/// Human-readable description of a model (also used in reports).
pub fn summary(model: &Model) -> Vec<(String, String)> {
    let c = &model.config;
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for l in &c.layers {
        match kinds.iter_mut().find(|(k, _)| k == l.kind()) {
            Some((_, n)) => *n += 1,
            None => kinds.push((l.kind().to_string(), 1)),
        }
    }
    let mut out = vec![
        ("architecture".to_string(), c.preset.clone()),
        (
            "layers".to_string(),
            kinds
                .iter()
                .map(|(k, n)| format!("{n} x {k}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "base".to_string(),
            match &c.base {
                hepflow::distributions::BaseSpec::StdNormal => "standard normal".to_string(),
                hepflow::distributions::BaseSpec::MadeMog(m) => format!(
                    "MADE-MoG ({} Gaussians per feature, hidden {:?})",
                    m.components, m.hidden
                ),
            },
        ),
        ("parameters".to_string(), model.num_params().to_string()),
        (
            "features".to_string(),
            format!("{} ({})", c.features.len(), c.features.join(", ")),
        ),
        (
            "preprocessing".to_string(),
            if c.preprocessing.is_some() {
                "min-max (with margin) -> logit -> standardize".into()
            } else {
                "none".into()
            },
        ),
    ];
    if !c.context.is_empty() {
        out.push((
            "context".into(),
            c.context
                .iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    if let Some(t) = c.training.as_object() {
        for k in [
            "data",
            "n_train",
            "n_val",
            "best_epoch",
            "epochs_run",
            "best_val_nll",
            "data_checksum",
        ] {
            if let Some(v) = t.get(k) {
                out.push((
                    format!("training.{k}"),
                    v.to_string().trim_matches('"').to_string(),
                ));
            }
        }
    }
    out
}

/// Runs `hepflow info`.
pub fn run(a: InfoArgs) -> Result<()> {
    if let Some(spec) = &a.data {
        return describe_data(spec);
    }
    let Some(dir) = &a.model else {
        anyhow::bail!("give --model DIR or --data FILE");
    };
    let model = Model::load(dir)?;
    for (k, v) in summary(&model) {
        println!("{k:>22}: {v}");
    }
    Ok(())
}

/// Prints the columns of an event file: name, type, values per event, entries.
/// A glob (`'nano/*.root:Events'`) is expanded as `train --data` expands it, and the first file
/// in sorted order is described (the files of one `--data` must have the same columns).
fn describe_data(spec: &str) -> Result<()> {
    let sources = io::sources::expand(&[spec])?;
    let Some(first) = sources.first() else {
        anyhow::bail!("--data '{spec}' names no file");
    };
    if sources.len() > 1 {
        println!(
            "{} files match '{spec}'; the first one is described: {}\n",
            sources.len(),
            first.path.display()
        );
    }
    let path = first.path.as_path();
    let opts = ReadOptions {
        tree: first.object.clone(),
        ..Default::default()
    };
    let objects = io::describe::objects(path, &opts)?;
    if !objects.is_empty() {
        println!("{:<32} class", "object");
        for (p, class) in &objects {
            println!("{p:<32} {class}");
        }
        println!();
    }
    let cols = io::describe(path, &opts)?;
    let rows: Vec<[String; 4]> = cols
        .iter()
        .map(|c| {
            let per = match c.kind {
                ColumnKind::Flat => "1".to_string(),
                ColumnKind::Fixed(n) => format!("{n} (use name[k])"),
                ColumnKind::Jagged => match c.lengths {
                    Some((lo, hi)) => format!("{lo} to {hi} (use name[k])"),
                    None => "variable (use name[k])".to_string(),
                },
                ColumnKind::Unsupported => "not readable".to_string(),
            };
            [
                c.name.clone(),
                c.type_name.clone(),
                per,
                c.entries.to_string(),
            ]
        })
        .collect();
    let head = ["column", "type", "per event", "entries"].map(String::from);
    let width = |k: usize| {
        std::iter::once(&head)
            .chain(&rows)
            .map(|r| r[k].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    for r in std::iter::once(&head).chain(&rows) {
        println!("{:<w0$} {:<w1$} {:<w2$} {:>w3$}", r[0], r[1], r[2], r[3]);
    }
    Ok(())
}
