//! Column selection of the columnar readers (ROOT TTrees and RNTuples, Parquet): one set of
//! rules for which columns a read keeps and what `name[k]` means.
//!
//! A reader describes its columns as [`FieldInfo`]s (flat, fixed-size array, variable-length
//! array, or unreadable) and decodes the columns [`select`] asks for as [`Col`]s. Without a
//! column selection every flat numeric column is kept and the others are skipped with a note;
//! with one, only the selected columns are decoded. A numeric index counts the flat columns.
//! `name[k]` selects element `k` (0-based) of an array column: events with fewer elements are
//! dropped (counted in [`RootRead::dropped`]) unless [`ReadOptions::fill`] gives a value for them;
//! an index beyond every event is an error naming the file and the column.

use std::collections::HashMap;
use std::path::Path;

use super::root::{Col, FieldInfo, RootRead, Shape};
use super::{ColumnRef, IoError, ReadOptions, Table};
use crate::engine::Matrix;

fn corrupt(path: &Path, format: &'static str, reason: impl std::fmt::Display) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format,
        reason: reason.to_string(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Unsupported {
        file: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Selects `opts.columns` (else every flat numeric column) from a source of `entries` events
/// whose columns are `fields`; `read` decodes the named columns (each name once, in the order
/// given). `format` names the file format in corrupt-file errors, `what` the table in the file
/// (`"Events"` for a TTree, `the file` for Parquet). Values are not checked for finiteness
/// ([`crate::io::read_table`] does that).
pub(crate) fn select(
    path: &Path,
    format: &'static str,
    what: &str,
    fields: &[FieldInfo],
    entries: usize,
    opts: &ReadOptions,
    read: impl FnOnce(&[&str]) -> Result<Vec<Col>, IoError>,
) -> Result<RootRead, IoError> {
    let flat: Vec<&FieldInfo> = fields
        .iter()
        .filter(|x| x.shape == Some(Shape::Flat))
        .collect();
    let mut notes = Vec::new();
    let refs: Vec<ColumnRef> = match &opts.columns {
        Some(r) => r.clone(),
        None => {
            for x in fields {
                match x.shape {
                    Some(Shape::Flat) => {}
                    Some(_) => notes.push(format!(
                        "skipped array column {} ({}); select elements as {}[0], {}[1], ...",
                        x.name, x.type_name, x.name, x.name
                    )),
                    None => notes.push(format!("skipped column {} ({})", x.name, x.type_name)),
                }
            }
            if flat.is_empty() {
                return Err(unsupported(
                    path,
                    format!("{what} has no flat numeric columns ({})", notes.join("; ")),
                ));
            }
            flat.iter()
                .map(|x| ColumnRef::Name(x.name.clone()))
                .collect()
        }
    };
    let available = || {
        fields
            .iter()
            .map(|x| match x.shape {
                Some(Shape::Flat) => x.name.clone(),
                Some(_) => format!("{}[k]", x.name),
                None => format!("{} ({})", x.name, x.type_name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let find = |n: &str| -> Result<&FieldInfo, IoError> {
        fields
            .iter()
            .find(|x| x.name == n)
            .ok_or_else(|| IoError::UnknownColumn {
                file: path.to_path_buf(),
                name: n.to_string(),
                available: available(),
            })
    };
    // (field name, element, output column name) per output column.
    let mut plan: Vec<(String, Option<usize>, String)> = Vec::new();
    for r in &refs {
        match r {
            ColumnRef::Index(i) => match flat.get(*i) {
                Some(x) => plan.push((x.name.clone(), None, x.name.clone())),
                None => {
                    return Err(IoError::ColumnIndex {
                        file: path.to_path_buf(),
                        index: *i,
                        count: flat.len(),
                    });
                }
            },
            ColumnRef::Name(n) => {
                let x = find(n)?;
                match x.shape {
                    Some(Shape::Flat) => plan.push((n.clone(), None, n.clone())),
                    Some(_) => {
                        return Err(unsupported(
                            path,
                            format!(
                                "column {n} is an array ({}) with several values per event; \
                                 select one element as {n}[0], {n}[1], ...",
                                x.type_name
                            ),
                        ));
                    }
                    None => {
                        return Err(unsupported(
                            path,
                            format!("column {n} is {}, not a numeric column", x.type_name),
                        ));
                    }
                }
            }
            ColumnRef::Element { name, index } => {
                let x = find(name)?;
                match x.shape {
                    Some(Shape::Fixed(_) | Shape::Jagged) => {
                        plan.push((name.clone(), Some(*index), r.to_string()))
                    }
                    Some(Shape::Flat) => {
                        return Err(unsupported(
                            path,
                            format!(
                                "column {r}: {name} has one value per event, not an array; \
                                 select it as {name}"
                            ),
                        ));
                    }
                    None => {
                        return Err(unsupported(
                            path,
                            format!("column {r}: {name} is {}, not a numeric array", x.type_name),
                        ));
                    }
                }
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _, _) in &plan {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let decoded = read(&names)?;
    if decoded.len() != names.len() {
        return Err(corrupt(path, format, "internal column count mismatch"));
    }
    let mut cols: HashMap<&str, Col> = HashMap::new();
    for (name, c) in names.iter().zip(decoded) {
        let n = match &c {
            Col::Flat(v) => v.len(),
            Col::Jagged { offsets, values } => {
                let ok = offsets.windows(2).all(|w| w[0] <= w[1])
                    && offsets.last().is_none_or(|&e| e <= values.len());
                if !ok {
                    return Err(corrupt(path, format, format!("column {name}: bad offsets")));
                }
                offsets.len().saturating_sub(1)
            }
        };
        if n != entries {
            return Err(corrupt(
                path,
                format,
                format!("column {name} has {n} values for {entries} entries"),
            ));
        }
        cols.insert(name, c);
    }
    // Which events keep all their selected elements.
    let mut keep = vec![true; entries];
    for (name, k, label) in &plan {
        let (Some(k), Some(Col::Jagged { offsets, .. })) = (k, cols.get(name.as_str())) else {
            continue;
        };
        let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        if *k >= longest {
            return Err(unsupported(
                path,
                format!(
                    "column {label}: no event has more than {longest} elements in {name} \
                     (indices start at 0)"
                ),
            ));
        }
        if opts.fill.is_none() {
            for (i, w) in offsets.windows(2).enumerate() {
                keep[i] &= w[1] - w[0] > *k;
            }
        }
    }
    let rows: Vec<usize> = (0..entries).filter(|&i| keep[i]).collect();
    let fill = opts.fill.unwrap_or(f32::NAN);
    let c = plan.len();
    let mut data = Vec::with_capacity(rows.len() * c);
    for &i in &rows {
        for (name, k, _) in &plan {
            let v = match (cols.get(name.as_str()), k) {
                (Some(Col::Flat(v)), _) => v[i],
                (Some(Col::Jagged { offsets, values }), Some(k)) => {
                    let (a, b) = (offsets[i], offsets[i + 1]);
                    if a + k < b { values[a + k] } else { fill }
                }
                _ => fill,
            };
            data.push(v);
        }
    }
    let data = Matrix::from_vec(rows.len(), c, data)
        .ok_or_else(|| corrupt(path, format, "internal size mismatch"))?;
    Ok(RootRead {
        table: Table {
            columns: plan.into_iter().map(|(_, _, l)| l).collect(),
            data,
        },
        dropped: entries - rows.len(),
        notes,
    })
}
