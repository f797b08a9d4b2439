//! Loading event tables for the commands: thin wrappers over [`hepflow::dataset`], which owns
//! the rules (format choice, the HIGGS layout, `--select` filters, column choice).

use anyhow::Result;
use hepflow::dataset;
use hepflow::engine::Matrix;
use hepflow::io::Table;
use std::path::Path;

/// Reads `path` (format from the extension unless `format` is given; `higgs` = the UCI HIGGS
/// layout).
pub fn load_table(path: &Path, format: Option<&str>) -> Result<Table> {
    Ok(dataset::read_source(path, format)?)
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
