//! From event files (or an in-memory table) to the matrices a training run needs: the feature
//! columns, the context columns of a conditional flow and the per-event weights, chosen by the
//! data options of [`TrainOptions`] (`format`, `features`, `columns`, `select`, `condition`,
//! `weight`). The command line, the Rust API and the Python package all go through here, so the
//! rules (default columns, `--select` filters, the HIGGS layout) live in one place.

use crate::config::TrainOptions;
use crate::engine::Matrix;
use crate::io::{self, ColumnRef, Format, IoError, ReadOptions, Table};
use std::path::Path;
use thiserror::Error;

/// Errors of choosing the training data.
#[derive(Debug, Error)]
pub enum DatasetError {
    /// Reading a file failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The options do not fit the data (unknown column, empty selection, bad weights, ...).
    #[error("{0}")]
    Invalid(String),
}

/// The data of a training run.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Feature names (columns of `features`).
    pub feature_names: Vec<String>,
    /// Events x features, physical units.
    pub features: Matrix<f32>,
    /// Context column names (empty = unconditional).
    pub context_names: Vec<String>,
    /// Raw context values, events x context columns.
    pub context: Option<Matrix<f32>>,
    /// Per-event weights (`None` = unweighted).
    pub weights: Option<Vec<f32>>,
    /// A short description of where the data came from (file names, selection).
    pub description: String,
    /// Things the user should know (skipped columns, dropped events).
    pub notes: Vec<String>,
}

/// Reads the event table of `source` in `format` (`None` = from the extension; `higgs` = the UCI
/// HIGGS layout), naming the columns of a headerless 29-column file after the HIGGS layout.
pub fn read_source(source: &Path, format: Option<&str>) -> Result<Table, DatasetError> {
    let (table, _) = read_sources(
        &[source.display().to_string()],
        format,
        ReadOptions::default(),
    )?;
    Ok(table)
}

/// Reads every file of `sources` (paths, shell-style globs, `file.root:tree`; concatenated in
/// sorted path order) with `read` as the base options and `format` as in [`read_source`];
/// returns the table and the notes for the user.
pub fn read_sources(
    sources: &[String],
    format: Option<&str>,
    mut read: ReadOptions,
) -> Result<(Table, Vec<String>), DatasetError> {
    if sources.is_empty() {
        return Err(DatasetError::Invalid("no data file given".into()));
    }
    let higgs = format == Some("higgs");
    match format {
        Some("higgs") => {
            read.format = Some(Format::Csv);
            read.header = Some(false);
            read.expect_fields = Some(29);
            read.columns = None;
        }
        Some(f) => {
            read.format = Some(Format::parse(f).ok_or_else(|| {
                DatasetError::Invalid(format!(
                    "option `format` = {f}: expected csv, npy, parquet, root or higgs"
                ))
            })?);
        }
        None => {}
    }
    let (mut table, notes) = io::read_sources(sources, &read)?;
    if higgs && !io::higgs::is_higgs_layout(&table) {
        return Err(DatasetError::Invalid(format!(
            "{}: not in the UCI HIGGS layout (29 columns: a 0/1 label, then 28 features)",
            sources.join(", ")
        )));
    }
    io::higgs::apply_higgs_names(&mut table);
    Ok((table, notes))
}

/// The columns to read from the files when the user named them: the features, then the
/// condition, weight and `--select` columns (each once). `None` = read every column (no
/// `columns` given, or a HIGGS feature preset whose names only exist after reading).
fn columns_to_read(opts: &TrainOptions) -> Option<Vec<ColumnRef>> {
    let cols = opts.columns.as_ref()?;
    if opts.features.is_some() || opts.format.as_deref() == Some("higgs") {
        return None;
    }
    let mut names: Vec<String> = cols.iter().map(|c| c.trim().to_string()).collect();
    let extra = opts
        .condition
        .iter()
        .chain(opts.weight.iter())
        .map(|c| c.trim().to_string())
        .chain(
            opts.select
                .iter()
                .filter_map(|s| s.split_once('=').map(|(c, _)| c.trim().to_string())),
        );
    for e in extra {
        if !names.contains(&e) {
            names.push(e);
        }
    }
    Some(names.iter().map(|n| ColumnRef::parse(n)).collect())
}

/// Reads the files `sources` (paths, globs, `file.root:tree`) and chooses the training data
/// from them per `opts`. When columns are named, only those (and the condition, weight and
/// selection columns) are read and checked, so a NaN in an unrelated branch does not matter.
pub fn load(sources: &[String], opts: &TrainOptions) -> Result<Dataset, DatasetError> {
    let wanted = columns_to_read(opts);
    let read = ReadOptions {
        columns: wanted.clone(),
        fill: opts.fill,
        ..Default::default()
    };
    let (table, notes) = read_sources(sources, opts.format.as_deref(), read)?;
    let mut o = opts.clone();
    if let (Some(cols), Some(_)) = (&opts.columns, &wanted) {
        // The table holds the requested columns in order: the features are its first columns
        // (by their names as read, so that 0-based indices keep meaning the file's columns).
        o.columns = Some(table.columns[..cols.len()].to_vec());
    }
    let description = match sources {
        [one] => Path::new(one)
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| one.clone()),
        many => format!("{} sources ({})", many.len(), many.join(", ")),
    };
    let mut d = from_table(table, &o, &description)?;
    d.notes = notes;
    Ok(d)
}

/// Applies `--select` filters (`COLUMN=VALUE`, all must hold).
pub fn apply_select(
    mut table: Table,
    selects: &[String],
    source: &str,
) -> Result<Table, DatasetError> {
    for s in selects {
        let (c, v) = s.split_once('=').ok_or_else(|| {
            DatasetError::Invalid(format!("option `select` = {s}: expected COLUMN=VALUE"))
        })?;
        let value: f32 = v.trim().parse().map_err(|_| {
            DatasetError::Invalid(format!("option `select` = {s}: '{v}' is not a number"))
        })?;
        table = table
            .filter_eq(c.trim(), value)
            .map_err(|e| e.with_file(Path::new(source)))?;
        if table.rows() == 0 {
            return Err(DatasetError::Invalid(format!("{source}: no event has {s}")));
        }
    }
    Ok(table)
}

/// Feature column names: the HIGGS preset's, the listed columns (names or 0-based indices), or
/// every column except the context and weight columns and the HIGGS `label`.
pub fn feature_names(
    table: &Table,
    opts: &TrainOptions,
    source: &str,
) -> Result<Vec<String>, DatasetError> {
    if let Some(p) = &opts.features {
        let preset = io::Preset::parse(p).ok_or_else(|| {
            DatasetError::Invalid(format!(
                "option `features` = {p}: expected higgs18 or higgs28"
            ))
        })?;
        return Ok(preset.features().iter().map(|s| s.to_string()).collect());
    }
    if let Some(cols) = &opts.columns {
        let mut names = Vec::new();
        for part in cols.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let i = ColumnRef::parse(part)
                .resolve(&table.columns, Path::new(source))
                .map_err(DatasetError::Io)?;
            let name = table.columns[i].clone();
            if names.contains(&name) {
                return Err(DatasetError::Invalid(format!(
                    "option `columns`: column '{name}' is listed twice"
                )));
            }
            names.push(name);
        }
        if let Some(c) = names.iter().find(|n| opts.condition.contains(n)) {
            return Err(DatasetError::Invalid(format!(
                "option `condition`: column '{c}' is also a feature column"
            )));
        }
        return Ok(names);
    }
    Ok(table
        .columns
        .iter()
        .filter(|c| {
            !opts.condition.contains(c) && opts.weight.as_ref() != Some(*c) && c.as_str() != "label"
        })
        .cloned()
        .collect())
}

/// The columns `names` of `table` as a matrix; errors name the source and the missing column.
pub fn columns(table: &Table, names: &[String], source: &str) -> Result<Matrix<f32>, DatasetError> {
    let refs: Vec<ColumnRef> = names.iter().map(|n| ColumnRef::Name(n.clone())).collect();
    let t = table
        .select(&refs)
        .map_err(|e| e.with_file(Path::new(source)))?;
    Ok(t.data)
}

/// Checks a weight column: finite everywhere and a positive total.
pub fn check_weights(w: &[f32], column: &str, source: &str) -> Result<(), DatasetError> {
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(DatasetError::Invalid(format!(
            "{source}, row {i}, column {column}: non-finite weight {}",
            w[i]
        )));
    }
    let total: f64 = w.iter().map(|v| *v as f64).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(DatasetError::Invalid(format!(
            "{source}, column {column}: the weights sum to {total}; they must have a positive total"
        )));
    }
    Ok(())
}

/// Effective sample size `(sum w)^2 / sum w^2` of a weighted sample.
pub fn effective_sample_size(w: &[f32]) -> f64 {
    let s: f64 = w.iter().map(|v| *v as f64).sum();
    let s2: f64 = w.iter().map(|v| (*v as f64).powi(2)).sum();
    if s2 > 0.0 { s * s / s2 } else { 0.0 }
}

/// Chooses the training data from an in-memory table per `opts` (`source` names the data in
/// errors and in the model's metadata).
pub fn from_table(
    table: Table,
    opts: &TrainOptions,
    source: &str,
) -> Result<Dataset, DatasetError> {
    let table = apply_select(table, &opts.select, source)?;
    let feature_names = feature_names(&table, opts, source)?;
    if feature_names.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "{source}: no feature columns selected"
        )));
    }
    let features = columns(&table, &feature_names, source)?;
    let context_names: Vec<String> = opts
        .condition
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let context = if context_names.is_empty() {
        None
    } else {
        Some(columns(&table, &context_names, source)?)
    };
    let weights = match &opts.weight {
        Some(w) => {
            let m = columns(&table, std::slice::from_ref(w), source)?;
            let v = m.as_slice().to_vec();
            check_weights(&v, w, source)?;
            Some(v)
        }
        None => None,
    };
    let description = if opts.select.is_empty() {
        source.to_string()
    } else {
        format!("{source} [{}]", opts.select.join(", "))
    };
    Ok(Dataset {
        feature_names,
        features,
        context_names,
        context,
        weights,
        description,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let data = Matrix::from_fn(20, 4, |i, j| match j {
            3 => (i % 2) as f32,
            2 => 1.0 + (i % 3) as f32,
            _ => (i * (j + 1)) as f32 * 0.1,
        });
        Table::new(
            vec!["a".into(), "b".into(), "w".into(), "label".into()],
            data,
        )
        .unwrap()
    }

    #[test]
    fn default_columns_skip_label_weight_and_condition() {
        let o = TrainOptions {
            weight: Some("w".into()),
            ..Default::default()
        };
        let d = from_table(table(), &o, "t.csv").unwrap();
        assert_eq!(d.feature_names, vec!["a", "b"]);
        assert_eq!(d.weights.as_ref().map(|w| w.len()), Some(20));
        let o = TrainOptions {
            condition: vec!["label".into()],
            select: vec!["w=2".into()],
            ..Default::default()
        };
        let d = from_table(table(), &o, "t.csv").unwrap();
        assert_eq!(d.feature_names, vec!["a", "b", "w"]);
        assert_eq!(d.features.rows(), 7);
        assert_eq!(d.context.as_ref().map(|c| c.cols()), Some(1));
        assert!(d.description.contains("w=2"));
    }

    #[test]
    fn bad_choices_are_named() {
        let cases: Vec<(TrainOptions, &str)> = vec![
            (
                TrainOptions {
                    columns: Some(vec!["a".into(), "zz".into()]),
                    ..Default::default()
                },
                "zz",
            ),
            (
                TrainOptions {
                    columns: Some(vec!["a".into(), "0".into()]),
                    ..Default::default()
                },
                "listed twice",
            ),
            (
                TrainOptions {
                    columns: Some(vec!["a".into(), "b".into()]),
                    condition: vec!["a".into()],
                    ..Default::default()
                },
                "also a feature",
            ),
            (
                TrainOptions {
                    select: vec!["label=7".into()],
                    ..Default::default()
                },
                "no event has label=7",
            ),
            (
                TrainOptions {
                    select: vec!["label".into()],
                    ..Default::default()
                },
                "COLUMN=VALUE",
            ),
            (
                TrainOptions {
                    weight: Some("nope".into()),
                    ..Default::default()
                },
                "nope",
            ),
        ];
        for (o, want) in cases {
            let e = from_table(table(), &o, "t.csv").unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn weights_must_be_finite_with_a_positive_total() {
        assert!(check_weights(&[1.0, -0.5, 2.0], "w", "f").is_ok());
        let e = check_weights(&[1.0, f32::NAN], "w", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("column w"), "{e}");
        let e = check_weights(&[0.0, 0.0], "w", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive total"), "{e}");
        assert!((effective_sample_size(&[1.0; 10]) - 10.0).abs() < 1e-12);
        assert!((effective_sample_size(&[1.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
