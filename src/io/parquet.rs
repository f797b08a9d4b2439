//! Apache Parquet tables (via the `parquet` crate's Arrow reader and writer).
//!
//! Reading keeps every top-level numeric column (`f32`, `f64`, signed and unsigned integers of
//! 8..64 bits, and `bool` as 0/1), converted to `f32`, with its name; other columns (strings,
//! timestamps, nested types) are skipped. A null cell is an error naming the row and column.
//! Writing (behind [`crate::io::TableWriter`]) produces one non-nullable `Float32`
//! column per table column, Snappy-compressed, readable by pyarrow and pandas.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{IoError, Table};
use crate::engine::Matrix;

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format: "parquet",
        reason: reason.to_string(),
    }
}

fn is_numeric(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
    )
}

/// Converts a numeric arrow column to `f32` values (`None` for an unsupported type).
fn to_f32(a: &dyn Array) -> Option<Vec<f32>> {
    macro_rules! prim {
        ($t:ty) => {
            a.as_primitive_opt::<$t>()
                .map(|p| p.values().iter().map(|&v| v as f32).collect())
        };
    }
    match a.data_type() {
        DataType::Float32 => a
            .as_primitive_opt::<Float32Type>()
            .map(|p| p.values().to_vec()),
        DataType::Float64 => prim!(Float64Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Boolean => a.as_boolean_opt().map(|b| {
            b.values()
                .iter()
                .map(|v| if v { 1.0 } else { 0.0 })
                .collect()
        }),
        _ => None,
    }
}

/// Reads the numeric columns of a Parquet file (values are not yet checked for finiteness).
/// Every codec pyarrow, polars and awkward write is read (uncompressed, Snappy, gzip, Brotli,
/// LZ4, LZ4_RAW, ZSTD); a panic inside the `parquet` crate is reported as a corrupt file.
pub fn read_parquet(path: &Path) -> Result<Table, IoError> {
    super::guard(path, "parquet", || read_inner(path))
}

fn read_inner(path: &Path) -> Result<Table, IoError> {
    let f = super::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| corrupt(path, e))?;
    let schema = builder.schema().clone();
    let keep: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, fl)| is_numeric(fl.data_type()))
        .map(|(i, _)| i)
        .collect();
    if keep.is_empty() {
        return Err(IoError::Unsupported {
            file: path.to_path_buf(),
            reason: "no numeric columns".into(),
        });
    }
    let columns: Vec<String> = keep
        .iter()
        .map(|&i| schema.field(i).name().clone())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), keep.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65536)
        .build()
        .map_err(|e| corrupt(path, e))?;
    let c = columns.len();
    let mut values: Vec<f32> = Vec::new();
    let mut rows = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(path, e))?;
        if batch.num_columns() != c {
            return Err(corrupt(path, "column count changed between batches"));
        }
        let n = batch.num_rows();
        let mut cols: Vec<Vec<f32>> = Vec::with_capacity(c);
        for (j, a) in batch.columns().iter().enumerate() {
            if let Some(k) = (0..n).find(|&k| a.is_null(k)) {
                return Err(IoError::Unsupported {
                    file: path.to_path_buf(),
                    reason: format!(
                        "row {}, column {}: null value (missing values are not supported)",
                        rows + k,
                        columns[j]
                    ),
                });
            }
            let v = to_f32(a.as_ref()).ok_or_else(|| {
                corrupt(
                    path,
                    format!(
                        "column {} has unexpected type {}",
                        columns[j],
                        a.data_type()
                    ),
                )
            })?;
            cols.push(v);
        }
        values.reserve(n * c);
        for i in 0..n {
            values.extend(cols.iter().map(|col| col[i]));
        }
        rows += n;
    }
    let data = Matrix::from_vec(rows, c, values)
        .ok_or_else(|| corrupt(path, "internal row count mismatch"))?;
    Ok(Table { columns, data })
}

/// Rows per record batch written.
const WRITE_BATCH: usize = 65536;

/// A Parquet file being written: one non-nullable `Float32` column per table column,
/// Snappy-compressed, in record batches of exactly [`WRITE_BATCH`] rows (the last one shorter),
/// whatever the sizes of the batches given to [`Stream::write`]; see [`crate::io::writer`].
pub(crate) struct Stream {
    path: PathBuf,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    /// Rows not yet written, row-major.
    pending: Vec<f32>,
    cols: usize,
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> IoError {
    IoError::os(path, "cannot write", std::io::Error::other(e.to_string()))
}

impl Stream {
    pub(crate) fn new(path: &Path, file: File, columns: &[String]) -> Result<Stream, IoError> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|n| Field::new(n, DataType::Float32, false))
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| write_error(path, e))?;
        Ok(Stream {
            path: path.to_path_buf(),
            writer,
            schema,
            pending: Vec::new(),
            cols: columns.len(),
        })
    }

    /// Appends row-major `values` of `cols` columns.
    pub(crate) fn write(&mut self, values: &[f32], cols: usize) -> Result<(), IoError> {
        if cols != self.cols {
            return Err(write_error(
                &self.path,
                "batch width differs from the schema",
            ));
        }
        self.pending.extend_from_slice(values);
        while self.pending.len() >= WRITE_BATCH * self.cols {
            self.flush(WRITE_BATCH)?;
        }
        Ok(())
    }

    /// Writes the first `n` pending rows as one record batch.
    fn flush(&mut self, n: usize) -> Result<(), IoError> {
        let c = self.cols;
        let rows = &self.pending[..n * c];
        let arrays: Vec<ArrayRef> = (0..c)
            .map(|j| {
                let col: Vec<f32> = rows.iter().skip(j).step_by(c).copied().collect();
                Arc::new(Float32Array::from(col)) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| {
            IoError::InvalidTable {
                file: self.path.clone(),
                reason: e.to_string(),
            }
        })?;
        self.writer
            .write(&batch)
            .map_err(|e| write_error(&self.path, e))?;
        self.pending.drain(..n * c);
        Ok(())
    }

    /// Writes the remaining rows and the footer; returns the file.
    pub(crate) fn finish(mut self) -> Result<File, IoError> {
        let n = self.pending.len() / self.cols.max(1);
        if n > 0 {
            self.flush(n)?;
        }
        let path = self.path.clone();
        self.writer.into_inner().map_err(|e| write_error(&path, e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_codec_of_pyarrow_polars_and_awkward_reads() {
        // Written by tests/fixtures/parquet/make_fixtures.py (pyarrow).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
        for stem in ["none", "snappy", "gzip", "brotli", "lz4", "zstd", "zstd_v2"] {
            let p = dir.join(format!("{stem}.parquet"));
            let t = read_table(&p, &ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.columns, ["f64", "f32", "i64", "i32", "flag"], "{stem}");
            assert_eq!(t.rows(), 64, "{stem}");
            for i in 0..64 {
                let x = i as f32;
                let flag = if i % 3 == 0 { 1.0 } else { 0.0 };
                let want = [x * 0.5 - 7.0, x * 0.125, x * x - 100.0, -x, flag];
                assert_eq!(t.data.row(i), &want, "{stem}, row {i}");
            }
        }
    }

    use super::*;
    use crate::io::{Format, ReadOptions, read_table, write_table};
    use arrow_array::{BooleanArray, Int64Array, StringArray};

    #[test]
    fn round_trip_keeps_names_and_values() {
        let d = tempfile::tempdir().unwrap();
        let data = Matrix::from_fn(70_000, 2, |i, j| {
            (i as f32).sqrt() * if j == 0 { 1.0 } else { -1e-3 }
        });
        let t = Table::new(vec!["lepton_pT".into(), "m_bb".into()], data).unwrap();
        let p = d.path().join("t.parquet");
        write_table(&p, &t, Format::Parquet).unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn reads_mixed_types_and_skips_strings() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.pq");
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
            Field::new("b", DataType::Boolean, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![3, -4])),
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(BooleanArray::from(vec![true, false])),
            ],
        )
        .unwrap();
        let f = File::create(&p).unwrap();
        let mut w = ArrowWriter::try_new(f, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let t = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(t.columns, vec!["i", "b"]);
        assert_eq!(t.data.as_slice(), &[3.0, 1.0, -4.0, 0.0]);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.parquet");
        std::fs::write(&p, b"PAR1 this is definitely not parquet PAR1").unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("c.parquet"), "{e}");
        // A real file cut in half.
        let t = Table::new(vec!["a".into()], Matrix::from_fn(1000, 1, |i, _| i as f32)).unwrap();
        let q = d.path().join("full.parquet");
        write_table(&q, &t, Format::Parquet).unwrap();
        let bytes = std::fs::read(&q).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("c.parquet"), "{e}");
    }
}
