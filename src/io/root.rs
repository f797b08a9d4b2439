//! CERN ROOT files (via `oxyroot`): a TTree of flat numeric branches is a table.
//!
//! Reading takes the TTree named in [`crate::io::ReadOptions::tree`], else the first TTree
//! key of the file, and keeps every top-level branch holding one `float`, `double`, integer or
//! `bool` per entry (converted to `f32`); other branches (vectors, strings, objects) are skipped.
//! Writing creates a TTree named `events` with one `float` branch per column.
//!
//! `oxyroot` panics on some malformed input instead of returning an error; those panics are
//! caught and reported as [`IoError::Corrupt`] (the panic message may still be printed to
//! stderr by the default panic hook).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use oxyroot::{Branch, Named, RootFile, WriterTree};

use super::{IoError, Table};
use crate::engine::Matrix;

/// Name of the TTree written by [`write_root`].
pub const TREE_NAME: &str = "events";

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format: "ROOT",
        reason: reason.to_string(),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown failure".into())
}

/// Reads one flat numeric branch as `f32`; `Ok(None)` when the branch type is not flat numeric.
fn read_branch(b: &Branch) -> oxyroot::Result<Option<Vec<f32>>> {
    macro_rules! rd {
        ($t:ty) => {
            b.as_iter::<$t>()?.map(|v| v as f32).collect()
        };
    }
    Ok(Some(match b.item_type_name().as_str() {
        "float" => b.as_iter::<f32>()?.collect(),
        "double" => rd!(f64),
        "int8_t" => rd!(i8),
        "uint8_t" => rd!(u8),
        "int16_t" => rd!(i16),
        "uint16_t" => rd!(u16),
        "int32_t" => rd!(i32),
        "uint32_t" => rd!(u32),
        "int64_t" => rd!(i64),
        "uint64_t" => rd!(u64),
        "bool" => b
            .as_iter::<bool>()?
            .map(|v| if v { 1.0 } else { 0.0 })
            .collect(),
        _ => return Ok(None),
    }))
}

fn read_inner(path: &Path, tree: Option<&str>) -> Result<Table, IoError> {
    let mut f = RootFile::open(path).map_err(|e| corrupt(path, e))?;
    let trees: Vec<String> = f
        .keys()
        .iter()
        .filter(|k| k.class_name() == "TTree")
        .map(|k| k.name().to_string())
        .collect();
    let objects = f
        .keys()
        .iter()
        .map(|k| format!("{} ({})", k.name(), k.class_name()))
        .collect::<Vec<_>>()
        .join(", ");
    let name = match tree {
        Some(t) if trees.iter().any(|n| n == t) => t.to_string(),
        Some(t) => {
            return Err(IoError::Unsupported {
                file: path.to_path_buf(),
                reason: format!("no TTree named {t:?}; objects in the file: {objects}"),
            });
        }
        None => trees.first().cloned().ok_or_else(|| IoError::Unsupported {
            file: path.to_path_buf(),
            reason: format!(
                "the file contains no TTree (objects: {objects}; RNTuple is not supported)"
            ),
        })?,
    };
    let t = f.get_tree(&name).map_err(|e| corrupt(path, e))?;
    let entries = usize::try_from(t.entries())
        .map_err(|_| corrupt(path, format!("negative entry count {}", t.entries())))?;
    let mut columns = Vec::new();
    let mut cols: Vec<Vec<f32>> = Vec::new();
    for b in t.branches() {
        if b.branches().next().is_some() {
            continue; // split object with sub-branches: not a flat column
        }
        if let Some(v) = read_branch(b).map_err(|e| corrupt(path, e))? {
            if v.len() != entries {
                return Err(corrupt(
                    path,
                    format!(
                        "branch {} has {} values for {entries} entries",
                        b.name(),
                        v.len()
                    ),
                ));
            }
            columns.push(b.name().to_string());
            cols.push(v);
        }
    }
    if cols.is_empty() {
        return Err(IoError::Unsupported {
            file: path.to_path_buf(),
            reason: format!("TTree {name:?} has no flat numeric branches"),
        });
    }
    let c = cols.len();
    let data = Matrix::from_fn(entries, c, |i, j| cols[j][i]);
    Ok(Table { columns, data })
}

/// Reads a TTree (`tree`, or the first one) into a table (values not yet checked for finiteness).
pub fn read_root(path: &Path, tree: Option<&str>) -> Result<Table, IoError> {
    super::open(path)?; // clear NotFound / permission errors first
    catch_unwind(AssertUnwindSafe(|| read_inner(path, tree))).unwrap_or_else(|p| {
        Err(corrupt(
            path,
            format!("the ROOT reader failed: {}", panic_text(p.as_ref())),
        ))
    })
}

/// Writes `table` as a TTree named [`TREE_NAME`] with one `float` branch per column.
pub fn write_root(path: &Path, table: &Table) -> Result<(), IoError> {
    super::write_atomic(path, |_, tmp| {
        let werr = |e: String| IoError::os(path, "cannot write", std::io::Error::other(e));
        if tmp.to_str().is_none() {
            return Err(werr("the ROOT writer needs a UTF-8 path".into()));
        }
        let cols: Vec<Vec<f32>> = (0..table.cols())
            .map(|j| (0..table.rows()).map(|i| table.data.get(i, j)).collect())
            .collect();
        let res = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let mut f = RootFile::create(tmp).map_err(|e| e.to_string())?;
            let mut tree = WriterTree::new(TREE_NAME);
            for (name, col) in table.columns.iter().zip(cols) {
                tree.new_branch(name, col.into_iter());
            }
            tree.write(&mut f).map_err(|e| e.to_string())?;
            f.close().map_err(|e| e.to_string())?;
            Ok(())
        }));
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(werr(e)),
            Err(p) => Err(werr(format!(
                "the ROOT writer failed: {}",
                panic_text(p.as_ref())
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Format, ReadOptions, read_table, write_table};

    #[test]
    fn round_trip_keeps_names_and_values() {
        let d = tempfile::tempdir().unwrap();
        let data = Matrix::from_fn(3000, 3, |i, j| (i as f32 * 0.01 + j as f32).cos() * 50.0);
        let t = Table::new(
            vec!["jet1_pt".into(), "jet1_eta".into(), "m_jj".into()],
            data,
        )
        .unwrap();
        let p = d.path().join("t.root");
        write_table(&p, &t, Format::Root).unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(back, t);
        let opts = ReadOptions {
            tree: Some("events".into()),
            ..Default::default()
        };
        assert_eq!(read_table(&p, &opts).unwrap(), t);
        let opts = ReadOptions {
            tree: Some("nope".into()),
            ..Default::default()
        };
        let e = read_table(&p, &opts).unwrap_err().to_string();
        assert!(e.contains("t.root") && e.contains("nope"), "{e}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.root");
        std::fs::write(&p, b"root\0\0\0\0 not really a ROOT file").unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("c.root"), "{e}");
        // A real file cut short.
        let t = Table::new(vec!["a".into()], Matrix::from_fn(500, 1, |i, _| i as f32)).unwrap();
        let q = d.path().join("full.root");
        write_table(&q, &t, Format::Root).unwrap();
        let bytes = std::fs::read(&q).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("c.root"), "{e}");
    }
}
