//! [`describe`]: what columns a data file holds, so that a user can find what to select.

use std::path::Path;

use super::root::{FieldInfo, Shape};
use super::{Format, IoError, ReadOptions, parquet, read_table, root};

/// How many values a column holds per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// One value per event.
    Flat,
    /// Exactly this many values per event (select one as `name[k]`).
    Fixed(usize),
    /// A variable number of values per event (select one as `name[k]`).
    Jagged,
    /// Not a numeric column; hepflow cannot read it.
    Unsupported,
}

/// One column of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Stored type (`float32`, `int32`, ...), or what the column is when it is not numeric.
    pub type_name: String,
    /// Values per event.
    pub kind: ColumnKind,
    /// Number of events (entries).
    pub entries: usize,
    /// Fewest and most values per event of an array column, where known (Parquet list columns,
    /// whose offsets `describe` reads; `None` for ROOT, described without reading values).
    pub lengths: Option<(usize, usize)>,
}

impl From<FieldInfo> for ColumnInfo {
    fn from(f: FieldInfo) -> Self {
        ColumnInfo {
            name: f.name,
            type_name: f.type_name,
            kind: match f.shape {
                Some(Shape::Flat) => ColumnKind::Flat,
                Some(Shape::Fixed(n)) => ColumnKind::Fixed(n),
                Some(Shape::Jagged) => ColumnKind::Jagged,
                None => ColumnKind::Unsupported,
            },
            entries: f.entries,
            lengths: None,
        }
    }
}

/// The columns of `path`. ROOT files are described from their metadata (no values are read),
/// Parquet files from their schema (with the element counts of list columns); the other
/// formats are read with `opts` and report every column as `float32` (the type they are
/// converted to).
pub fn describe(path: &Path, opts: &ReadOptions) -> Result<Vec<ColumnInfo>, IoError> {
    match Format::resolve(path, opts.format)? {
        Format::Root => return root::describe_root(path, opts.tree.as_deref()),
        Format::Parquet => return parquet::describe_parquet(path),
        _ => {}
    }
    let t = read_table(path, opts)?;
    Ok(t.columns
        .iter()
        .map(|c| ColumnInfo {
            name: c.clone(),
            type_name: "float32".into(),
            kind: ColumnKind::Flat,
            entries: t.rows(),
            lengths: None,
        })
        .collect())
}

/// The objects of a ROOT file as `(path, class)`, directories included (`dir/sub/events`
/// for a tree inside subdirectories, as `FILE:PATH` selects it); empty for other formats.
pub fn objects(path: &Path, opts: &ReadOptions) -> Result<Vec<(String, String)>, IoError> {
    if Format::resolve(path, opts.format)? == Format::Root {
        return root::root_objects(path);
    }
    Ok(Vec::new())
}
