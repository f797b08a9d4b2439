//! Many files as one table: paths, shell-style globs and uproot's `file.root:object` syntax.
//!
//! [`read_sources`] expands each source (a `*`, `?` or `[...]` in the path makes it a glob,
//! expanded with the `glob` crate; a glob that matches nothing is an error naming it), reads the
//! files in parallel with rayon and the same [`ReadOptions`], and concatenates them in sorted
//! path order (so the result does not depend on the order of the arguments or the thread count).
//! Every file must have the same columns in the same order; otherwise the error names the file
//! that differs, the first file, and the column.
//!
//! `path:object` picks a ROOT tree (or RNTuple) by name, as uproot does: the text after the last
//! `:` is the object only when the text before it is an existing file, or a glob whose last path
//! component has an extension (`ntuples/*.root:Events`). The object is passed to the reader as
//! [`ReadOptions::tree`]; any format accepts the syntax, but only ROOT uses the name.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{IoError, ReadOptions, Table, read_table_noted};
use crate::engine::Matrix;

/// One input file, with the object (ROOT tree) named after `:`, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Object name from `path:object`.
    pub object: Option<String>,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Splits `spec` into (path, object) the way uproot does (see the module docs).
pub fn split_object(spec: &str) -> (&str, Option<&str>) {
    let Some((path, object)) = spec.rsplit_once(':') else {
        return (spec, None);
    };
    if object.is_empty() || path.is_empty() || Path::new(spec).exists() {
        return (spec, None);
    }
    let has_ext = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| {
            n.rsplit_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        });
    if Path::new(path).is_file() || (is_glob(path) && has_ext) {
        (path, Some(object))
    } else {
        (spec, None)
    }
}

/// Expands `specs` (paths and globs, each with an optional `:object`) into sources sorted by
/// path, without duplicates. A plain path is kept as is (a missing file is reported by the
/// reader); a glob must match at least one file.
pub fn expand<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Source>, IoError> {
    let mut out = Vec::new();
    for spec in specs {
        let (path, object) = split_object(spec.as_ref());
        let object = object.map(str::to_string);
        if !is_glob(path) || Path::new(path).exists() {
            out.push(Source {
                path: PathBuf::from(path),
                object,
            });
            continue;
        }
        let bad = |reason: String| IoError::Glob {
            pattern: path.to_string(),
            reason,
        };
        let matches = glob::glob(path).map_err(|e| bad(e.to_string()))?;
        let before = out.len();
        for m in matches {
            let p = m.map_err(|e| bad(e.to_string()))?;
            if p.is_file() {
                out.push(Source {
                    path: p,
                    object: object.clone(),
                });
            }
        }
        if out.len() == before {
            return Err(bad("no file matches it".into()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Reads every source of `specs` (see [`expand`]) with `opts` and concatenates them in sorted
/// path order. `:object` overrides `opts.tree` for its files. Returns the table and the notes of
/// the readers (at most 3 kept verbatim, then one line counting the rest).
pub fn read_sources<S: AsRef<str>>(
    specs: &[S],
    opts: &ReadOptions,
) -> Result<(Table, Vec<String>), IoError> {
    let sources = expand(specs)?;
    let read_one = |s: &Source| {
        let mut o = opts.clone();
        if let Some(obj) = &s.object {
            o.tree = Some(obj.clone());
        }
        read_table_noted(&s.path, &o)
    };
    let parts: Vec<(Table, Vec<String>)> = match sources.as_slice() {
        [] => {
            return Err(IoError::Glob {
                pattern: String::new(),
                reason: "no input files given".into(),
            });
        }
        [one] => vec![read_one(one)?],
        many => many
            .par_iter()
            .map(read_one)
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<_, _>>()?,
    };
    let mut notes: Vec<String> = Vec::new();
    let mut extra = 0usize;
    for n in parts.iter().flat_map(|(_, n)| n) {
        if notes.len() < 3 {
            notes.push(n.clone());
        } else {
            extra += 1;
        }
    }
    if extra > 0 {
        notes.push(format!("... and {extra} more notes of the same kind"));
    }
    let tables: Vec<Table> = parts.into_iter().map(|(t, _)| t).collect();
    let paths: Vec<&Path> = sources.iter().map(|s| s.path.as_path()).collect();
    Ok((concat(&tables, &paths)?, notes))
}

/// Concatenates tables read from `paths` (same length), checking that their columns agree.
pub fn concat(tables: &[Table], paths: &[&Path]) -> Result<Table, IoError> {
    let (Some(first), Some(&first_path)) = (tables.first(), paths.first()) else {
        return Ok(Table::default());
    };
    if tables.len() == 1 {
        return Ok(first.clone());
    }
    for (t, &p) in tables.iter().zip(paths).skip(1) {
        if let Some(detail) = column_difference(&first.columns, &t.columns) {
            return Err(IoError::ColumnMismatch {
                file: p.to_path_buf(),
                first: first_path.to_path_buf(),
                detail,
            });
        }
    }
    let rows: usize = tables.iter().map(Table::rows).sum();
    let mut values = Vec::with_capacity(rows * first.cols());
    for t in tables {
        values.extend_from_slice(t.data.as_slice());
    }
    let data =
        Matrix::from_vec(rows, first.cols(), values).ok_or_else(|| IoError::InvalidTable {
            file: first_path.to_path_buf(),
            reason: "internal size mismatch while concatenating".into(),
        })?;
    Ok(Table {
        columns: first.columns.clone(),
        data,
    })
}

/// How `other`'s columns differ from `first`'s (`None` when they are equal).
fn column_difference(first: &[String], other: &[String]) -> Option<String> {
    if first == other {
        return None;
    }
    if let Some(c) = first.iter().find(|c| !other.contains(c)) {
        return Some(format!("column {c:?} is missing"));
    }
    if let Some(c) = other.iter().find(|c| !first.contains(c)) {
        return Some(format!("it has the extra column {c:?}"));
    }
    let j = first
        .iter()
        .zip(other)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    Some(format!(
        "the columns are in another order (position {j} is {:?}, expected {:?})",
        other.get(j).map_or("", String::as_str),
        first.get(j).map_or("", String::as_str)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ColumnRef, Format, write_table};

    fn table(cols: &[&str], rows: usize, offset: f32) -> Table {
        let c = cols.len();
        Table::new(
            cols.iter().map(|s| s.to_string()).collect(),
            Matrix::from_fn(rows, c, |i, j| offset + (i * c + j) as f32),
        )
        .unwrap()
    }

    #[test]
    fn globs_read_in_sorted_order_for_every_format() {
        let d = tempfile::tempdir().unwrap();
        for (ext, fmt) in [
            ("csv", Format::Csv),
            ("csv.gz", Format::Csv),
            ("npy", Format::Npy),
            ("parquet", Format::Parquet),
            ("root", Format::Root),
        ] {
            let cols = if fmt == Format::Npy {
                ["col0", "col1"]
            } else {
                ["a", "b"]
            };
            // Written out of order; b_10 sorts before b_2.
            for (name, off) in [("b_2", 200.0), ("b_10", 100.0), ("a_1", 0.0)] {
                let p = d.path().join(format!("{name}.{ext}"));
                write_table(&p, &table(&cols, 3 + off as usize / 100, off), fmt).unwrap();
            }
            let pat = d.path().join(format!("*.{ext}"));
            let (t, notes) = read_sources(&[pat.to_str().unwrap()], &ReadOptions::default())
                .unwrap_or_else(|e| panic!("{ext}: {e}"));
            assert!(notes.is_empty());
            assert_eq!(t.columns, cols, "{ext}");
            assert_eq!(t.rows(), 3 + 4 + 5, "{ext}");
            assert_eq!(t.data.row(0), &[0.0, 1.0]);
            assert_eq!(t.data.row(3), &[100.0, 101.0], "{ext}");
            assert_eq!(t.data.row(7), &[200.0, 201.0], "{ext}");
            // The same files listed explicitly, in another order, give the same table.
            let names: Vec<String> = ["b_2", "a_1", "b_10"]
                .iter()
                .map(|n| d.path().join(format!("{n}.{ext}")).display().to_string())
                .collect();
            assert_eq!(read_sources(&names, &ReadOptions::default()).unwrap().0, t);
            for f in std::fs::read_dir(d.path()).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
    }

    #[test]
    fn selection_applies_to_every_file() {
        let d = tempfile::tempdir().unwrap();
        write_table(
            &d.path().join("1.csv"),
            &table(&["a", "b"], 2, 0.0),
            Format::Csv,
        )
        .unwrap();
        write_table(
            &d.path().join("2.csv"),
            &table(&["b", "a"], 2, 10.0),
            Format::Csv,
        )
        .unwrap();
        let opts = ReadOptions {
            columns: Some(vec![ColumnRef::from("b")]),
            ..Default::default()
        };
        let pat = d.path().join("*.csv").display().to_string();
        let (t, _) = read_sources(&[pat.as_str()], &opts).unwrap();
        assert_eq!(t.data.as_slice(), &[1.0, 3.0, 10.0, 12.0]);
        // Without a selection the column order differs: an error naming both files.
        let e = read_sources(&[pat.as_str()], &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2.csv") && e.contains("1.csv") && e.contains("order"),
            "{e}"
        );
    }

    #[test]
    fn bad_sources_are_named() {
        let d = tempfile::tempdir().unwrap();
        let pat = d.path().join("nothing*.csv").display().to_string();
        let e = read_sources(&[pat.as_str()], &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Glob { .. }));
        assert!(
            e.to_string().contains(&pat) && e.to_string().contains("no file"),
            "{e}"
        );
        write_table(
            &d.path().join("x.csv"),
            &table(&["a", "b"], 2, 0.0),
            Format::Csv,
        )
        .unwrap();
        write_table(
            &d.path().join("y.csv"),
            &table(&["a", "c"], 2, 0.0),
            Format::Csv,
        )
        .unwrap();
        let pat = d.path().join("*.csv").display().to_string();
        let e = read_sources(&[pat.as_str()], &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.csv") && e.contains("\"b\" is missing"), "{e}");
        let missing = d.path().join("no.csv").display().to_string();
        let e = read_sources(&[missing.as_str()], &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::NotFound { .. }), "{e}");
        let e = read_sources::<&str>(&[], &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("no input files"), "{e}");
    }

    #[test]
    fn object_suffix_is_split_like_uproot() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ev.root");
        std::fs::write(&f, b"x").unwrap();
        let fs = f.display().to_string();
        assert_eq!(
            split_object(&format!("{fs}:Events")),
            (fs.as_str(), Some("Events"))
        );
        assert_eq!(
            split_object(&format!("{fs}:dir/t")),
            (fs.as_str(), Some("dir/t"))
        );
        assert_eq!(split_object(&fs), (fs.as_str(), None));
        // A glob with an extension before the colon; not a glob without one.
        assert_eq!(split_object("n/*.root:tree"), ("n/*.root", Some("tree")));
        assert_eq!(split_object("n/*:tree"), ("n/*:tree", None));
        // A missing file: the whole text is the path (so the reader names it).
        assert_eq!(split_object("no.root:t"), ("no.root:t", None));
        assert_eq!(split_object("a.root:"), ("a.root:", None));
        // An existing file whose name contains a colon is taken whole.
        let g = d.path().join("a:b.csv");
        std::fs::write(&g, b"1\n").unwrap();
        let gs = g.display().to_string();
        assert_eq!(split_object(&gs), (gs.as_str(), None));
        // The object reaches the reader as the tree name.
        let t = table(&["a"], 2, 0.0);
        let r = d.path().join("t.root");
        write_table(&r, &t, Format::Root).unwrap();
        let spec = format!("{}:nosuchtree", r.display());
        let e = read_sources(&[spec.as_str()], &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nosuchtree"), "{e}");
    }
}
