//! `hepflow info`.

use anyhow::Result;
use clap::Args;
use hepflow::model::Model;
use std::path::PathBuf;

/// Arguments of `hepflow info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
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
            "parameters".to_string(),
            model.flow.num_params().to_string(),
        ),
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
    let model = Model::load(&a.model)?;
    for (k, v) in summary(&model) {
        println!("{k:>22}: {v}");
    }
    Ok(())
}
