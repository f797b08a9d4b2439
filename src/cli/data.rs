//! Loading event tables for the commands: thin wrappers over [`hepflow::dataset`], which owns
//! the rules (format choice, the HIGGS layout, `--select` filters, column choice).

use anyhow::Result;
use hepflow::dataset;
use hepflow::engine::Matrix;
use hepflow::io::{self, ReadOptions, Table};
use hepflow::model::Model;
use std::path::Path;

/// Reads `path` (a file, a glob or `file.root:tree`; format from the extension unless `format`
/// is given; `higgs` = the UCI HIGGS layout), printing the reader's notes.
pub fn load_table(path: &Path, format: Option<&str>) -> Result<Table> {
    let (table, notes) = dataset::read_sources(
        &[path.display().to_string()],
        format,
        ReadOptions::default(),
    )?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(table)
}

/// Applies `COLUMN=VALUE` filters.
pub fn apply_select(table: Table, selects: &[String], path: &Path) -> Result<Table> {
    Ok(dataset::apply_select(
        table,
        selects,
        &path.display().to_string(),
    )?)
}

/// The columns `names` of `table` as a matrix; errors name the file and the missing column.
pub fn columns(table: &Table, names: &[String], path: &Path) -> Result<Matrix<f32>> {
    Ok(dataset::columns(table, names, &path.display().to_string())?)
}

/// Lets a nameless table (an `.npy` file, a CSV without a header) with exactly the model's
/// feature (and context) columns be matched by position, with a note.
pub fn match_model_columns(table: &mut Table, model: &Model, path: &Path) {
    let mut wanted = model.config.features.clone();
    if io::has_generated_names(table) && table.cols() != wanted.len() {
        wanted.extend(model.config.context.iter().map(|c| c.name().to_string()));
    }
    if let Some(note) = io::match_by_position(table, &wanted, path) {
        eprintln!("note: {note}");
    }
}
