//! Loading event tables for the commands: format choice, the HIGGS layout, `--select` filters and
//! feature/context column choice.

use anyhow::{Context, Result, bail};
use hepflow::engine::Matrix;
use hepflow::io::{self, Format, ReadOptions, Table};
use std::path::Path;

/// Reads `path` (format from the extension unless `format` is given; `higgs` = the UCI HIGGS
/// layout) and names the columns of a headerless 29-column file after the HIGGS layout.
pub fn load_table(path: &Path, format: Option<&str>) -> Result<Table> {
    let mut table = match format {
        Some("higgs") => {
            let opts = ReadOptions {
                format: Some(Format::Csv),
                header: Some(false),
                expect_fields: Some(29),
                ..Default::default()
            };
            let t = io::read_table(path, &opts)?;
            if !io::higgs::is_higgs_layout(&t) {
                bail!(
                    "{}: not in the UCI HIGGS layout (29 columns: a 0/1 label, then 28 features)",
                    path.display()
                );
            }
            t
        }
        Some(f) => {
            let fmt = Format::parse(f).with_context(|| {
                format!("--format '{f}': expected csv, npy, parquet, root or higgs")
            })?;
            io::read_table(
                path,
                &ReadOptions {
                    format: Some(fmt),
                    ..Default::default()
                },
            )?
        }
        None => io::read_table(path, &ReadOptions::default())?,
    };
    io::higgs::apply_higgs_names(&mut table);
    Ok(table)
}

/// Applies `COLUMN=VALUE` filters.
pub fn apply_select(mut table: Table, selects: &[String], path: &Path) -> Result<Table> {
    for s in selects {
        let (c, v) = s
            .split_once('=')
            .with_context(|| format!("--select '{s}': expected COLUMN=VALUE"))?;
        let value: f32 = v
            .trim()
            .parse()
            .with_context(|| format!("--select '{s}': '{v}' is not a number"))?;
        table = table.filter_eq(c.trim(), value)?;
        if table.data.rows() == 0 {
            bail!("{}: no event has {}", path.display(), s);
        }
    }
    Ok(table)
}

/// Feature column names from `--preset` or `--columns` (default: every column except the context
/// columns and the HIGGS label).
pub fn feature_names(
    table: &Table,
    preset: Option<&str>,
    columns: Option<&str>,
    exclude: &[String],
) -> Result<Vec<String>> {
    if let Some(p) = preset {
        let preset = io::Preset::parse(p)
            .with_context(|| format!("--preset '{p}': expected higgs18 or higgs28"))?;
        return Ok(preset.features().iter().map(|s| s.to_string()).collect());
    }
    if let Some(c) = columns {
        let mut names = Vec::new();
        for part in c.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let name = match part.parse::<usize>() {
                Ok(i) => table.columns.get(i).cloned().with_context(|| {
                    format!(
                        "column index {i} is out of range ({} columns)",
                        table.columns.len()
                    )
                })?,
                Err(_) => part.to_string(),
            };
            names.push(name);
        }
        return Ok(names);
    }
    Ok(table
        .columns
        .iter()
        .filter(|c| !exclude.contains(c) && c.as_str() != "label")
        .cloned()
        .collect())
}

/// The columns `names` of `table` as a matrix; errors name the file and the missing column.
pub fn columns(table: &Table, names: &[String], path: &Path) -> Result<Matrix<f32>> {
    let refs: Vec<io::ColumnRef> = names
        .iter()
        .map(|n| io::ColumnRef::Name(n.clone()))
        .collect();
    let t = table.select(&refs).map_err(|e| e.with_file(path))?;
    Ok(t.data)
}
