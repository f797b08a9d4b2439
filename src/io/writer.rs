//! One streaming table writer for every format: [`TableWriter`].
//!
//! `create` opens a temporary file next to the destination (with ordinary permissions: 0666 minus
//! the umask), `write` appends batches of rows, and `finish` flushes, syncs and renames the
//! temporary file over the destination. Dropping a writer without `finish` (an error, a signal
//! handler unwinding, a panic) deletes the temporary file, so a destination is never left half
//! written. [`crate::io::write_table`] is `create` + one `write` + `finish`, so a table written in
//! one piece and the same rows streamed in batches of any size give the same bytes:
//! - CSV: a header line and the shortest round-trip text of every value
//!   ([`crate::io::csv::format_f32`]); gzip-compressed when the name ends in `.gz` (any case).
//! - NPY: a C-order `<f4` array; the header holds the row count, so it must be given to `create`.
//! - Parquet: one non-nullable `Float32` column per table column, Snappy-compressed, written in
//!   record batches of a fixed 65,536 rows whatever the caller's batch size.
//! - ROOT as a TTree ([`RootFormat::TTree`], the default): the rows are buffered and the file is
//!   written at `finish` (the TTree writer needs whole columns).
//! - ROOT as an RNTuple ([`RootFormat::RNTuple`]): streamed, one cluster of rows buffered at a
//!   time (see [`crate::io::rntuple::write`]); zstd-compressed, split floats.
//!
//!   A ROOT file records its creation time and a UUID, so only its values repeat.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::rntuple::write::{Layout, Writer as NTupleWriter, bad_field_name};
use super::root::sink::Codec;
use super::{Format, IoError, RootFormat, Table};
use crate::engine::Matrix;

enum Sink {
    Csv(BufWriter<File>),
    CsvGz(Box<Blocks<flate2::write::GzEncoder<BufWriter<File>>>>),
    Npy(BufWriter<File>),
    Parquet(Box<super::parquet::Stream>),
    Root(Vec<f32>),
    NTuple(Box<NTupleWriter<BufWriter<File>>>),
}

/// Compression of RNTuple output: zstd level 5, ROOT's default setting 505.
const NTUPLE_CODEC: Codec = Codec::Zstd(5);

/// Hands bytes to `inner` in blocks of exactly [`Blocks::SIZE`] bytes (the last one shorter), so
/// that a compressor sees the same calls, and writes the same bytes, however the text was
/// batched.
struct Blocks<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Blocks<W> {
    const SIZE: usize = 1 << 20;

    fn new(inner: W) -> Self {
        Blocks {
            inner,
            buf: Vec::with_capacity(Self::SIZE),
        }
    }

    /// Writes the last block; returns `inner`.
    fn finish(mut self) -> std::io::Result<W> {
        self.inner.write_all(&self.buf)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Blocks<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (Self::SIZE - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == Self::SIZE {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(data.len())
    }

    /// Blocks are handed on only when full or at `finish`.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A table being written (see the module docs).
pub struct TableWriter {
    path: PathBuf,
    columns: Vec<String>,
    /// Rows written so far.
    rows: u64,
    /// Rows announced to `create` (required for NPY).
    expected: Option<u64>,
    sink: Sink,
    /// The temporary file (`None` for a TTree, whose writer is atomic itself).
    tmp: Option<tempfile::NamedTempFile>,
}

/// Creates the temporary file of an atomic write to `path` (see [`crate::io::write_atomic`]).
pub(crate) fn temp_next_to(path: &Path) -> Result<tempfile::NamedTempFile, IoError> {
    crate::fsutil::temp_file_next_to(path, ".tmp")
        .map_err(|e| IoError::os(path, "cannot create a temporary file next to it", e))
}

impl TableWriter {
    /// Starts writing a table with `columns` to `path` in `format` (ROOT as a TTree). `rows` is
    /// the number of rows that will be written (required for NPY, checked at `finish` when
    /// given).
    pub fn create(
        path: &Path,
        format: Format,
        columns: &[String],
        rows: Option<u64>,
    ) -> Result<TableWriter, IoError> {
        Self::create_with(path, format, RootFormat::default(), columns, rows)
    }

    /// [`TableWriter::create`] with the layout of ROOT output (ignored for other formats).
    pub fn create_with(
        path: &Path,
        format: Format,
        root_format: RootFormat,
        columns: &[String],
        rows: Option<u64>,
    ) -> Result<TableWriter, IoError> {
        let layout = Layout::for_columns(columns.len());
        Self::create_layout(path, format, root_format, columns, rows, layout)
    }

    /// [`TableWriter::create_with`] with an explicit RNTuple cluster and page size (tests).
    pub(crate) fn create_layout(
        path: &Path,
        format: Format,
        root_format: RootFormat,
        columns: &[String],
        rows: Option<u64>,
        layout: Layout,
    ) -> Result<TableWriter, IoError> {
        let invalid = |reason: String| IoError::InvalidTable {
            file: path.to_path_buf(),
            reason,
        };
        if columns.is_empty() {
            return Err(invalid("the table has no columns".into()));
        }
        let mut tmp = None;
        let mut open = || -> Result<File, IoError> {
            let t = temp_next_to(path)?;
            let f = t
                .reopen()
                .map_err(|e| IoError::os(path, "cannot open the temporary file", e))?;
            tmp = Some(t);
            Ok(f)
        };
        let werr = |e| IoError::os(path, "cannot write", e);
        let sink = match format {
            Format::Csv => {
                super::csv::check_names(path, columns)?;
                let header = format!("{}\n", columns.join(","));
                let bw = BufWriter::with_capacity(1 << 20, open()?);
                let gz = path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
                if gz {
                    let mut w = flate2::write::GzEncoder::new(bw, flate2::Compression::default());
                    w.write_all(header.as_bytes()).map_err(werr)?;
                    Sink::CsvGz(Box::new(Blocks::new(w)))
                } else {
                    let mut w = bw;
                    w.write_all(header.as_bytes()).map_err(werr)?;
                    Sink::Csv(w)
                }
            }
            Format::Npy => {
                let n = rows.ok_or_else(|| {
                    invalid("an .npy header holds the row count: give it when creating".into())
                })?;
                let mut w = BufWriter::with_capacity(1 << 20, open()?);
                w.write_all(&super::npy::header(n, columns.len()))
                    .map_err(werr)?;
                Sink::Npy(w)
            }
            Format::Parquet => {
                let s = super::parquet::Stream::new(path, open()?, columns)?;
                Sink::Parquet(Box::new(s))
            }
            Format::Root if root_format == RootFormat::RNTuple => {
                if let Some(why) = columns.iter().find_map(|c| bad_field_name(c)) {
                    return Err(invalid(why));
                }
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let w = BufWriter::with_capacity(1 << 20, open()?);
                let nt = NTupleWriter::new(
                    w,
                    &file_name,
                    super::root::TREE_NAME,
                    columns,
                    NTUPLE_CODEC,
                    layout,
                )
                .map_err(werr)?;
                Sink::NTuple(Box::new(nt))
            }
            Format::Root => Sink::Root(Vec::new()),
        };
        Ok(TableWriter {
            path: path.to_path_buf(),
            columns: columns.to_vec(),
            rows: 0,
            expected: rows,
            sink,
            tmp,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends `batch` (one row per event, one column per table column). Non-finite values are
    /// refused (the error names the row, counted from the start of the table, and the column).
    pub fn write(&mut self, batch: &Matrix<f32>) -> Result<(), IoError> {
        let path = self.path.as_path();
        if batch.cols() != self.columns.len() {
            return Err(IoError::InvalidTable {
                file: path.to_path_buf(),
                reason: format!(
                    "a batch of {} columns for a table of {}",
                    batch.cols(),
                    self.columns.len()
                ),
            });
        }
        let c = batch.cols();
        if let Some(k) = batch.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(IoError::NonFiniteValue {
                file: path.to_path_buf(),
                row: self.rows as usize + k / c,
                column: self.columns[k % c].clone(),
                value: batch.as_slice()[k],
            });
        }
        if let Some(n) = self.expected
            && self.rows + batch.rows() as u64 > n
        {
            return Err(self.count_error(self.rows + batch.rows() as u64));
        }
        let werr = |e| IoError::os(path, "cannot write", e);
        match &mut self.sink {
            Sink::Csv(w) => super::csv::write_values(w, batch).map_err(werr)?,
            Sink::CsvGz(w) => super::csv::write_values(w, batch).map_err(werr)?,
            Sink::Npy(w) => {
                let mut bytes = Vec::with_capacity(batch.as_slice().len() * 4);
                for v in batch.as_slice() {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&bytes).map_err(werr)?;
            }
            Sink::Parquet(s) => s.write(batch.as_slice(), c)?,
            Sink::Root(v) => v.extend_from_slice(batch.as_slice()),
            Sink::NTuple(w) => w.write(batch.as_slice()).map_err(werr)?,
        }
        self.rows += batch.rows() as u64;
        Ok(())
    }

    fn count_error(&self, rows: u64) -> IoError {
        IoError::InvalidTable {
            file: self.path.clone(),
            reason: format!(
                "{rows} rows written where {} were announced",
                self.expected.unwrap_or(0)
            ),
        }
    }

    /// Completes the file and moves it into place; returns the number of rows.
    pub fn finish(self) -> Result<u64, IoError> {
        let TableWriter {
            path,
            columns,
            rows,
            expected,
            sink,
            tmp,
        } = self;
        if expected.is_some_and(|n| n != rows) {
            return Err(IoError::InvalidTable {
                file: path.clone(),
                reason: format!(
                    "{rows} rows written where {} were announced",
                    expected.unwrap_or(0)
                ),
            });
        }
        let werr = |e| IoError::os(&path, "cannot write", e);
        let file = match sink {
            Sink::Csv(w) | Sink::Npy(w) => w.into_inner().map_err(|e| werr(e.into_error()))?,
            Sink::CsvGz(w) => w
                .finish()
                .map_err(werr)?
                .finish()
                .map_err(werr)?
                .into_inner()
                .map_err(|e| werr(e.into_error()))?,
            Sink::Parquet(s) => s.finish()?,
            Sink::NTuple(w) => w
                .finish()
                .map_err(werr)?
                .into_inner()
                .map_err(|e| werr(e.into_error()))?,
            Sink::Root(values) => {
                let data =
                    Matrix::from_vec(rows as usize, columns.len(), values).ok_or_else(|| {
                        IoError::InvalidTable {
                            file: path.clone(),
                            reason: "internal size mismatch".into(),
                        }
                    })?;
                let table = Table { columns, data };
                super::root::write_root(&path, &table)?;
                return Ok(rows);
            }
        };
        file.sync_all().map_err(werr)?;
        drop(file);
        let tmp = tmp.ok_or_else(|| IoError::InvalidTable {
            file: path.clone(),
            reason: "internal: no temporary file".into(),
        })?;
        tmp.persist(&path)
            .map_err(|e| IoError::os(&path, "cannot rename the temporary file", e.error))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read_table, write_table};

    fn table(rows: usize) -> Table {
        let data = Matrix::from_fn(rows, 3, |i, j| {
            ((i * 3 + j) as f32 * 0.37).sin() * 10f32.powi(j as i32 * 3 - 2)
        });
        Table::new(vec!["pt".into(), "eta".into(), "m_jj".into()], data).unwrap()
    }

    #[test]
    fn streamed_batches_give_the_bytes_of_write_table() {
        let d = tempfile::tempdir().unwrap();
        let t = table(70_001);
        for (name, fmt) in [
            ("a.csv", Format::Csv),
            ("a.CSV.GZ", Format::Csv),
            ("a.npy", Format::Npy),
            ("a.parquet", Format::Parquet),
            ("a.root", Format::Root),
        ] {
            let whole = d.path().join(name);
            write_table(&whole, &t, fmt).unwrap();
            let streamed = d.path().join(format!("s_{name}"));
            let mut w =
                TableWriter::create(&streamed, fmt, &t.columns, Some(t.rows() as u64)).unwrap();
            let mut i = 0;
            for b in [1, 999, 40_000, 29_001] {
                w.write(&t.data.slice_rows(i, i + b)).unwrap();
                i += b;
            }
            assert!(!streamed.exists(), "{name}: visible before finish");
            assert_eq!(w.finish().unwrap(), t.rows() as u64);
            let (a, b) = (
                std::fs::read(&whole).unwrap(),
                std::fs::read(&streamed).unwrap(),
            );
            // A ROOT file records its creation time and a random UUID: compare its values only.
            assert!(
                a == b || fmt == Format::Root,
                "{name}: streamed bytes differ"
            );
            let back = read_table(&streamed, &ReadOptions::default()).unwrap();
            assert_eq!(back.data, t.data, "{name}");
        }
        // An RNTuple streamed in the same batches: the same values, visible only at finish.
        let p = d.path().join("n.root");
        let mut w = TableWriter::create_with(
            &p,
            Format::Root,
            RootFormat::RNTuple,
            &t.columns,
            Some(t.rows() as u64),
        )
        .unwrap();
        let mut i = 0;
        for b in [1, 999, 40_000, 29_001] {
            w.write(&t.data.slice_rows(i, i + b)).unwrap();
            i += b;
        }
        assert!(!p.exists());
        w.finish().unwrap();
        assert_eq!(read_table(&p, &ReadOptions::default()).unwrap(), t);
        let gz = std::fs::read(d.path().join("a.CSV.GZ")).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "upper-case .GZ is compressed too");
    }

    #[test]
    fn dropped_or_failed_writers_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = table(10);
        for (name, fmt, rf) in [
            ("x.csv", Format::Csv, RootFormat::TTree),
            ("x.npy", Format::Npy, RootFormat::TTree),
            ("x.parquet", Format::Parquet, RootFormat::TTree),
            ("x.root", Format::Root, RootFormat::TTree),
            ("n.root", Format::Root, RootFormat::RNTuple),
        ] {
            let p = d.path().join(name);
            let mut w = TableWriter::create_with(&p, fmt, rf, &t.columns, Some(10)).unwrap();
            w.write(&t.data).unwrap();
            drop(w);
            // A NaN in the second batch names its row counted from the start.
            let mut w = TableWriter::create_with(&p, fmt, rf, &t.columns, Some(20)).unwrap();
            w.write(&t.data).unwrap();
            let mut bad = t.data.clone();
            bad.set(3, 1, f32::NAN);
            let e = w.write(&bad).unwrap_err().to_string();
            assert!(e.contains("row 13") && e.contains("column eta"), "{e}");
            // Fewer rows than announced fails at finish.
            let e = w.finish().unwrap_err().to_string();
            assert!(e.contains("10 rows written where 20"), "{e}");
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        // NPY needs the row count; a batch of the wrong width is refused.
        let p = d.path().join("y.npy");
        assert!(TableWriter::create(&p, Format::Npy, &t.columns, None).is_err());
        let mut w =
            TableWriter::create(&d.path().join("y.csv"), Format::Csv, &t.columns, None).unwrap();
        assert!(w.write(&Matrix::zeros(2, 2)).is_err());
        w.write(&t.data).unwrap();
        w.write(&t.data).unwrap();
        assert_eq!(w.finish().unwrap(), 20);
    }
}
