//! The event data layer: read and write event tables (one row per event, one `f32` column per
//! feature) in CSV (plain or gzip), NPY, Parquet and ROOT, plus the UCI HIGGS preset.
//!
//! Every reader returns a [`Table`] whose values are all finite; every error is an [`IoError`]
//! that names the file and, where there is one, the line/row and the column. Writes are atomic:
//! the data goes to a temporary file in the destination directory, which is renamed over the
//! destination only when everything succeeded (on error nothing is left behind).

pub(crate) mod columnar;
pub mod csv;
pub mod describe;
pub mod error;
pub mod guard;
pub mod higgs;
pub mod npy;
pub mod parquet;
pub mod rntuple;
pub mod root;
pub mod sources;
pub mod table;
pub mod writer;

pub use describe::{ColumnInfo, ColumnKind, describe};
pub use error::IoError;
pub use guard::guard;
pub use higgs::{Preset, bundled_higgs_path, read_higgs, read_higgs_labeled};
pub use sources::{Source, read_sources};
pub use table::{ColumnRef, Table};
pub use writer::TableWriter;

use std::fs::File;
use std::path::Path;

/// A table file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Delimited text (`.csv`, `.tsv`, `.txt`, optionally gzip-compressed with `.gz`).
    Csv,
    /// NumPy `.npy` (2-D C- or Fortran-order numeric array, or 1-D as one column).
    Npy,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// CERN ROOT file (`.root`): read from a TTree or RNTuple, written as a TTree or an RNTuple
    /// of `float` columns ([`RootFormat`]).
    Root,
}

impl Format {
    /// Infers the format from the file name: `.csv`/`.tsv`/`.txt` (with optional `.gz`), `.npy`,
    /// `.parquet`/`.pq`, `.root` (case-insensitive). `None` when the extension is unknown.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let base = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = base.rsplit_once('.')?.1;
        match ext {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "npy" if base.len() == name.len() => Some(Format::Npy),
            "parquet" | "pq" if base.len() == name.len() => Some(Format::Parquet),
            "root" if base.len() == name.len() => Some(Format::Root),
            _ => None,
        }
    }

    /// Parses a format name as given on the command line (`csv`, `npy`, `parquet`/`pq`, `root`).
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" | "tsv" | "txt" | "text" => Some(Format::Csv),
            "npy" | "numpy" => Some(Format::Npy),
            "parquet" | "pq" => Some(Format::Parquet),
            "root" => Some(Format::Root),
            _ => None,
        }
    }

    /// The override if given, else the format inferred from `path`.
    pub fn resolve(path: &Path, over: Option<Format>) -> Result<Format, IoError> {
        over.or_else(|| Format::from_path(path))
            .ok_or_else(|| IoError::UnknownFormat {
                file: path.to_path_buf(),
            })
    }
}

/// How [`Format::Root`] output stores the table: the `--root-format` option of `hepflow
/// sample`, the `root_format` keyword in Python.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RootFormat {
    /// A TTree named `events` with one `float` branch per column: readable by every ROOT
    /// since 6.0 and by uproot.
    #[default]
    TTree,
    /// An RNTuple named `events` with one `float` field per column (binary format 1.0: ROOT
    /// 6.34 or later, uproot 5.6 or later), zstd-compressed, written as the rows arrive.
    RNTuple,
}

impl RootFormat {
    /// The accepted names, for messages.
    pub const CHOICES: &'static str = "ttree or rntuple";
}

impl std::str::FromStr for RootFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ttree" => Ok(RootFormat::TTree),
            "rntuple" => Ok(RootFormat::RNTuple),
            _ => Err(format!(
                "unknown ROOT format '{s}': expected {}",
                RootFormat::CHOICES
            )),
        }
    }
}

impl std::fmt::Display for RootFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootFormat::TTree => "ttree",
            RootFormat::RNTuple => "rntuple",
        })
    }
}

/// Field delimiter of a text table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delimiter {
    /// `,`
    Comma,
    /// A tab character.
    Tab,
    /// Runs of spaces and/or tabs (leading and trailing whitespace ignored).
    Whitespace,
    /// Any other single ASCII byte, e.g. `b';'`.
    Byte(u8),
}

/// Options for [`read_table`]. `Default` means: infer everything, read all columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadOptions {
    /// Format override (else inferred from the extension).
    pub format: Option<Format>,
    /// CSV delimiter override (else: comma if the first line has one, else tab if it has one,
    /// else whitespace).
    pub delimiter: Option<Delimiter>,
    /// CSV header override (else: the first line is a header when any of its fields does not
    /// parse as a number). Headerless columns are named `col0, col1, ...`.
    pub header: Option<bool>,
    /// Columns to keep, in this order (else all). CSV parses only these columns.
    pub columns: Option<Vec<ColumnRef>>,
    /// ROOT: name of the TTree or RNTuple (else the first one in the file).
    pub tree: Option<String>,
    /// ROOT and Parquet: value for `name[k]` columns in events with fewer than `k + 1` elements
    /// (else such events are dropped; [`root::read_root`] reports how many).
    pub fill: Option<f32>,
    /// CSV: require exactly this many fields on every line (else the first line's count).
    pub expect_fields: Option<usize>,
}

/// Reads an event table. The result has at least one row and only finite values.
///
/// Notes a user should see (a skipped index column, a sniffed dialect) are dropped; use
/// [`read_table_noted`] to show them.
pub fn read_table(path: &Path, opts: &ReadOptions) -> Result<Table, IoError> {
    read_table_noted(path, opts).map(|(t, _)| t)
}

/// [`read_table`], also returning notes for the user: complete sentences that name the file,
/// e.g. "x.csv: skipped the first column \"\": a row index as written by pandas' to_csv() ...".
/// Print each on its own line (the CLI prints them as `note: ...` on stderr).
pub fn read_table_noted(path: &Path, opts: &ReadOptions) -> Result<(Table, Vec<String>), IoError> {
    let format = Format::resolve(path, opts.format)?;
    // Every reader runs guarded: a panic inside it (or inside a third-party crate it calls)
    // becomes a "corrupt file" error and its message stays off the terminal.
    let table = match format {
        Format::Csv => return guard(path, "CSV", || csv::read_csv_noted(path, opts)),
        Format::Npy => guard(path, "npy", || npy::read_npy(path))?,
        // The ROOT and Parquet readers read only the selected columns, already in order.
        Format::Parquet | Format::Root => {
            let r = if format == Format::Root {
                root::read_root(path, opts)?
            } else {
                parquet::read_parquet(path, opts)?
            };
            let mut notes = r.notes;
            if r.dropped > 0 {
                notes.push(format!(
                    "{}: dropped {} event(s) without the requested collection element (use --fill VALUE to keep them)",
                    path.display(),
                    r.dropped
                ));
            }
            return Ok((finish_binary(path, r.table, None)?, notes));
        }
    };
    Ok((
        finish_binary(path, table, opts.columns.as_deref())?,
        Vec::new(),
    ))
}

/// Whether `table`'s columns have the generated names `col0, col1, ...`: it came from a file
/// without column names (an `.npy` file, a CSV without a header line).
pub fn has_generated_names(table: &Table) -> bool {
    table.columns == Table::default_names(table.cols())
}

/// Matches a nameless table to the columns a model expects, by position: when `table` has
/// generated names (see [`has_generated_names`]), none of `wanted` is one of them, and it has
/// exactly `wanted.len()` columns, its columns are renamed to `wanted` and a note for the user is
/// returned (naming `file`). Otherwise the table is left as it is (`None`), and selecting
/// `wanted` reports the usual unknown-column error.
///
/// This is how `hepflow log-prob --data g.npy` scores the output of `hepflow sample --out g.npy`.
pub fn match_by_position(table: &mut Table, wanted: &[String], file: &Path) -> Option<String> {
    let applies = has_generated_names(table)
        && table.cols() == wanted.len()
        && !wanted.iter().any(|w| table.columns.contains(w));
    if !applies {
        return None;
    }
    table.columns = wanted.to_vec();
    Some(format!(
        "{}: the file has no column names; its {} columns are taken in the model's order ({})",
        file.display(),
        wanted.len(),
        wanted.join(", ")
    ))
}

/// Column selection, emptiness and finiteness checks shared by the binary formats.
fn finish_binary(
    path: &Path,
    table: Table,
    columns: Option<&[ColumnRef]>,
) -> Result<Table, IoError> {
    let table = match columns {
        Some(refs) => table.select(refs).map_err(|e| e.with_file(path))?,
        None => table,
    };
    if table.rows() == 0 {
        return Err(IoError::Empty {
            file: path.to_path_buf(),
        });
    }
    table.validate_finite(path)?;
    Ok(table)
}

/// Writes `table` to `path` in `format` (CSV gets gzip-compressed when `path` ends in `.gz`).
/// Non-finite values are refused. The write is atomic. Streams with [`TableWriter`].
pub fn write_table(path: &Path, table: &Table, format: Format) -> Result<(), IoError> {
    table.validate_finite(path)?;
    if table.columns.len() != table.cols() {
        return Err(IoError::InvalidTable {
            file: path.to_path_buf(),
            reason: format!(
                "{} column names for {} data columns",
                table.columns.len(),
                table.cols()
            ),
        });
    }
    let mut w = TableWriter::create(path, format, &table.columns, Some(table.rows() as u64))?;
    w.write(&table.data)?;
    w.finish().map(|_| ())
}

/// Atomic write: `body` writes into a fresh temporary file in `path`'s directory (it gets the
/// open file and its path); on success the temporary file is renamed to `path`, on error it is
/// deleted.
pub(crate) fn write_atomic(
    path: &Path,
    body: impl FnOnce(&mut File, &Path) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let mut tmp = writer::temp_next_to(path)?;
    let tmp_path = tmp.path().to_path_buf();
    body(tmp.as_file_mut(), &tmp_path)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| IoError::os(path, "cannot write", e))?;
    tmp.persist(path)
        .map_err(|e| IoError::os(path, "cannot rename the temporary file", e.error))?;
    Ok(())
}

/// Opens `path` for reading, mapping errors (not found, is a directory, ...) to [`IoError`].
pub(crate) fn open(path: &Path) -> Result<File, IoError> {
    let f = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
    match f.metadata() {
        Ok(m) if m.is_dir() => Err(IoError::os(
            path,
            "cannot open",
            std::io::Error::other("is a directory"),
        )),
        _ => Ok(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Matrix;

    #[test]
    fn format_from_extension() {
        let f = |s: &str| Format::from_path(Path::new(s));
        assert_eq!(f("a/b.csv"), Some(Format::Csv));
        assert_eq!(f("b.TSV.gz"), Some(Format::Csv));
        assert_eq!(f("b.txt"), Some(Format::Csv));
        assert_eq!(f("b.npy"), Some(Format::Npy));
        assert_eq!(f("b.pq"), Some(Format::Parquet));
        assert_eq!(f("b.parquet"), Some(Format::Parquet));
        assert_eq!(f("b.root"), Some(Format::Root));
        assert_eq!(f("b.npy.gz"), None);
        assert_eq!(f("b.h5"), None);
        assert_eq!(f("csv"), None);
        assert_eq!(Format::parse("PQ"), Some(Format::Parquet));
        let e = Format::resolve(Path::new("x.dat"), None).unwrap_err();
        assert!(e.to_string().contains("x.dat"));
        assert_eq!(
            Format::resolve(Path::new("x.dat"), Some(Format::Npy)).unwrap(),
            Format::Npy
        );
    }

    #[test]
    fn root_format_names() {
        for f in [RootFormat::TTree, RootFormat::RNTuple] {
            assert_eq!(f.to_string().parse::<RootFormat>(), Ok(f));
        }
        assert_eq!(" RNTuple ".parse::<RootFormat>(), Ok(RootFormat::RNTuple));
        assert_eq!(RootFormat::default(), RootFormat::TTree);
        let e = "tree".parse::<RootFormat>().unwrap_err();
        assert!(
            e.contains("'tree'") && e.contains("ttree or rntuple"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_named_for_every_format() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["no.csv", "no.csv.gz", "no.npy", "no.parquet", "no.root"] {
            let p = dir.path().join(name);
            let e = read_table(&p, &ReadOptions::default()).unwrap_err();
            assert!(matches!(e, IoError::NotFound { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn nameless_tables_match_a_model_by_position() {
        let wanted: Vec<String> = vec!["lepton_pT".into(), "m_bb".into()];
        let data = Matrix::from_vec(1, 2, vec![1.0, 2.0]).unwrap();
        let mut t = Table::new(Table::default_names(2), data.clone()).unwrap();
        assert!(has_generated_names(&t));
        let note = match_by_position(&mut t, &wanted, Path::new("g.npy")).unwrap();
        assert_eq!(t.columns, wanted);
        assert!(
            note.contains("g.npy") && note.contains("lepton_pT, m_bb"),
            "{note}"
        );
        // Named tables, other widths, and tables that do have a wanted name are left alone.
        let mut named = Table::new(vec!["a".into(), "b".into()], data.clone()).unwrap();
        assert!(!has_generated_names(&named));
        assert!(match_by_position(&mut named, &wanted, Path::new("x")).is_none());
        let mut t = Table::new(Table::default_names(2), data.clone()).unwrap();
        assert!(match_by_position(&mut t, &wanted[..1], Path::new("x")).is_none());
        let wants_col1: Vec<String> = vec!["col1".into(), "col0".into()];
        assert!(match_by_position(&mut t, &wants_col1, Path::new("x")).is_none());
        assert_eq!(t.columns, Table::default_names(2));
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Table::new(
            vec!["a".into(), "b".into()],
            Matrix::from_vec(2, 2, vec![1.0, 2.0, 3.0, f32::NAN]).unwrap(),
        )
        .unwrap();
        for (name, fmt) in [
            ("o.csv", Format::Csv),
            ("o.npy", Format::Npy),
            ("o.parquet", Format::Parquet),
            ("o.root", Format::Root),
        ] {
            let p = dir.path().join(name);
            let e = write_table(&p, &t, fmt).unwrap_err().to_string();
            assert!(e.contains("row 1") && e.contains("column b"), "{e}");
        }
        // A CSV header that cannot be written fails inside the atomic writer.
        t.data.set(1, 1, 4.0);
        t.columns[0] = "a,b".into();
        let p = dir.path().join("o.csv");
        assert!(write_table(&p, &t, Format::Csv).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
