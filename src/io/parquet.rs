//! Apache Parquet tables (via the `parquet` crate's Arrow reader and writer).
//!
//! Reading keeps every top-level numeric column (`f32`, `f64`, signed and unsigned integers of
//! 8..64 bits, and `bool` as 0/1), converted to `f32`, with its name; other columns are skipped
//! with a note. List columns (`list`, `large_list`, `fixed_size_list` of numbers, as pyarrow,
//! polars and awkward write them) are read by element: `Jet_pt[0]` is the first element of
//! `Jet_pt` in each event, with the same rules as ROOT's jagged branches (events without the
//! element dropped, or filled with [`crate::io::ReadOptions::fill`]; see
//! `io::columnar`). Fields of records are addressed with a dot, as awkward writes
//! and names them: `Jet.pt[0]` is the first jet's `pt` both for a list of records
//! (`Jet: list<struct<pt, eta>>`, `ak.zip`'s default) and for a record of lists
//! (`Jet: struct<pt: list<..>, eta: list<..>>`); `Jet.pt` is a flat field of a record column.
//! A null cell is an error naming the row and column.
//!
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

use super::describe::{ColumnInfo, ColumnKind};
use super::root::{Col, FieldInfo, RootRead, Shape};
use super::{IoError, ReadOptions, columnar};

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format: "parquet",
        reason: reason.to_string(),
    }
}

/// The name of a numeric type hepflow reads (`None` for any other type).
fn numeric_name(t: &DataType) -> Option<&'static str> {
    use DataType::*;
    Some(match t {
        Boolean => "bool",
        Int8 => "int8",
        Int16 => "int16",
        Int32 => "int32",
        Int64 => "int64",
        UInt8 => "uint8",
        UInt16 => "uint16",
        UInt32 => "uint32",
        UInt64 => "uint64",
        Float32 => "float32",
        Float64 => "float64",
        _ => return None,
    })
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

/// One step from a top-level column down to its numeric values.
#[derive(Clone, Debug)]
enum Step {
    /// Into the named field of a struct.
    Field(String),
    /// Into the elements of a list (`list`, `large_list` or `fixed_size_list`).
    List,
}

/// A column as hepflow addresses it: a top-level column, or a field of a record (`Jet.pt`).
#[derive(Clone, Debug)]
struct Leaf {
    info: FieldInfo,
    /// The top-level column it lies in.
    root: String,
    /// The way from `root` to the values.
    steps: Vec<Step>,
    /// Its Parquet leaf column (for the projection).
    leaf: usize,
    /// The name of the Arrow field holding the values (checked against the Parquet leaf).
    leaf_name: String,
}

/// Number of Parquet leaf columns an Arrow type is stored in.
fn leaf_count(t: &DataType) -> usize {
    match t {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::Map(f, _) => leaf_count(f.data_type()),
        DataType::Struct(fs) => fs.iter().map(|f| leaf_count(f.data_type())).sum(),
        _ => 1,
    }
}

/// Collects the [`Leaf`]s of a schema in Parquet leaf order.
#[derive(Default)]
struct Walker {
    /// The next Parquet leaf column.
    next: usize,
    out: Vec<Leaf>,
}

impl Walker {
    /// The columns under `field` (named `name`, of shape `shape` so far; `wrap` is its type
    /// name with `{}` for the values' type, e.g. `list<{}>`).
    fn walk(
        &mut self,
        field: &Field,
        name: &str,
        root: &str,
        steps: &mut Vec<Step>,
        shape: Option<Shape>,
        wrap: &str,
    ) {
        let t = field.data_type();
        let mut push = |type_name: &str, shape: Option<Shape>, leaves: usize| {
            self.out.push(Leaf {
                info: FieldInfo {
                    name: name.to_string(),
                    type_name: wrap.replace("{}", type_name),
                    shape,
                    entries: 0,
                },
                root: root.to_string(),
                steps: steps.clone(),
                leaf: self.next,
                leaf_name: field.name().clone(),
            });
            self.next += leaves;
        };
        if let Some(n) = numeric_name(t) {
            push(n, shape, 1);
            return;
        }
        let elements = match (shape, t) {
            (Some(Shape::Flat), DataType::List(_) | DataType::LargeList(_)) => Some(Shape::Jagged),
            (Some(Shape::Flat), DataType::FixedSizeList(_, n)) => {
                usize::try_from(*n).ok().map(Shape::Fixed)
            }
            _ => None,
        };
        match t {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                let kind = match t {
                    DataType::List(_) => "list<{}>".to_string(),
                    DataType::LargeList(_) => "large_list<{}>".to_string(),
                    DataType::FixedSizeList(_, n) => format!("fixed_size_list<{{}}, {n}>"),
                    _ => "{}".to_string(),
                };
                steps.push(Step::List);
                self.walk(f, name, root, steps, elements, &wrap.replace("{}", &kind));
                steps.pop();
            }
            DataType::Struct(fs) => {
                for f in fs {
                    steps.push(Step::Field(f.name().clone()));
                    let n = format!("{name}.{}", f.name());
                    self.walk(f, &n, root, steps, shape, wrap);
                    steps.pop();
                }
            }
            _ => push(&t.to_string(), None, leaf_count(t)),
        }
    }
}

/// The columns of a Parquet file as hepflow addresses them (names and shapes; `entries` set).
fn leaves(
    schema: &Schema,
    parquet: &parquet::schema::types::SchemaDescriptor,
    entries: usize,
    path: &Path,
) -> Result<Vec<Leaf>, IoError> {
    let mut w = Walker::default();
    for f in schema.fields() {
        w.walk(
            f,
            f.name(),
            f.name(),
            &mut Vec::new(),
            Some(Shape::Flat),
            "{}",
        );
    }
    let (next, mut out) = (w.next, w.out);
    if next != parquet.num_columns() {
        return Err(corrupt(
            path,
            format!(
                "the Arrow schema has {next} leaf columns, the Parquet schema {}",
                parquet.num_columns()
            ),
        ));
    }
    for l in &mut out {
        l.info.entries = entries;
        if l.info.shape.is_some() && parquet.column(l.leaf).name() != l.leaf_name {
            return Err(corrupt(
                path,
                format!(
                    "column {}: the Arrow field {} is stored as Parquet column {}",
                    l.info.name,
                    l.leaf_name,
                    parquet.column(l.leaf).path()
                ),
            ));
        }
    }
    Ok(out)
}

/// Decodes the values under `a` along `steps`; `top` = the file row of `a`'s first element at
/// the top level (for messages). Nulls are an error unless `nulls_ok` (then a null list is
/// empty: [`describe_parquet`] counts elements).
fn extract(
    a: &dyn Array,
    steps: &[Step],
    top: Option<usize>,
    nulls_ok: bool,
) -> Result<Col, String> {
    if !nulls_ok && a.null_count() > 0 {
        return Err(match (top, (0..a.len()).find(|&k| a.is_null(k))) {
            (Some(row0), Some(k)) => {
                format!(
                    "row {}: null value (missing values are not supported)",
                    row0 + k
                )
            }
            _ => "null element in a list or record (missing values are not supported)".into(),
        });
    }
    let Some((step, rest)) = steps.split_first() else {
        return to_f32(a)
            .map(Col::Flat)
            .ok_or_else(|| format!("unexpected type {}", a.data_type()));
    };
    let jagged = |offsets: Vec<usize>, values: &ArrayRef| -> Result<Col, String> {
        match extract(values.as_ref(), rest, None, nulls_ok)? {
            Col::Flat(values) => Ok(Col::Jagged { offsets, values }),
            Col::Jagged { .. } => Err("lists of lists are not supported".into()),
        }
    };
    match (step, a.data_type()) {
        (Step::Field(n), DataType::Struct(_)) => {
            let s = a.as_struct();
            let c = s
                .column_by_name(n)
                .ok_or_else(|| format!("record field {n} is missing"))?;
            extract(c.as_ref(), rest, top, nulls_ok)
        }
        (Step::List, DataType::List(_)) => {
            let l = a.as_list::<i32>();
            let o = l.value_offsets().iter().map(|&x| x as usize).collect();
            jagged(o, l.values())
        }
        (Step::List, DataType::LargeList(_)) => {
            let l = a.as_list::<i64>();
            let o = l.value_offsets().iter().map(|&x| x as usize).collect();
            jagged(o, l.values())
        }
        (Step::List, DataType::FixedSizeList(..)) => {
            let l = a.as_fixed_size_list();
            let o = (0..=l.len()).map(|i| l.value_offset_at(i)).collect();
            jagged(o, l.values())
        }
        (_, t) => Err(format!("unexpected type {t}")),
    }
}

/// Appends the column `c` of one record batch to `acc`.
fn append(acc: &mut Col, c: Col) -> Result<(), String> {
    match (acc, c) {
        (Col::Flat(a), Col::Flat(v)) => a.extend(v),
        (
            Col::Jagged { offsets, values },
            Col::Jagged {
                offsets: o,
                values: v,
            },
        ) => {
            let (Some(&first), Some(&last)) = (o.first(), o.last()) else {
                return Err("list without offsets".into());
            };
            if o.windows(2).any(|w| w[0] > w[1]) || last > v.len() {
                return Err("list offsets out of order or out of range".into());
            }
            let base = values.len();
            values.extend_from_slice(&v[first..last]);
            offsets.extend(o[1..].iter().map(|&x| base + x - first));
        }
        _ => return Err("column shape changed between record batches".into()),
    }
    Ok(())
}

/// Reads the columns `wanted` (every one from `builder`'s file) in one pass (`nulls_ok`: see
/// [`extract`]).
fn read_leaves(
    path: &Path,
    builder: ParquetRecordBatchReaderBuilder<File>,
    wanted: &[&Leaf],
    nulls_ok: bool,
) -> Result<Vec<Col>, IoError> {
    let mask = ProjectionMask::leaves(builder.parquet_schema(), wanted.iter().map(|l| l.leaf));
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65536)
        .build()
        .map_err(|e| corrupt(path, e))?;
    let mut cols: Vec<Col> = wanted
        .iter()
        .map(|l| match l.info.shape {
            Some(Shape::Flat) => Col::Flat(Vec::new()),
            _ => Col::Jagged {
                offsets: vec![0],
                values: Vec::new(),
            },
        })
        .collect();
    let mut rows = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(path, e))?;
        for (l, acc) in wanted.iter().zip(&mut cols) {
            let name = &l.info.name;
            let a = batch
                .column_by_name(&l.root)
                .ok_or_else(|| corrupt(path, format!("column {name} missing in a row group")))?;
            let c = extract(a.as_ref(), &l.steps, Some(rows), nulls_ok).map_err(|m| {
                if m.contains("missing values") {
                    IoError::Unsupported {
                        file: path.to_path_buf(),
                        reason: format!("column {name}, {m}"),
                    }
                } else {
                    corrupt(path, format!("column {name}: {m}"))
                }
            })?;
            append(acc, c).map_err(|m| corrupt(path, format!("column {name}: {m}")))?;
        }
        rows += batch.num_rows();
    }
    Ok(cols)
}

/// Opens `path` and lists its columns.
fn open_leaves(
    path: &Path,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, Vec<Leaf>, usize), IoError> {
    let f = super::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| corrupt(path, e))?;
    let entries = usize::try_from(builder.metadata().file_metadata().num_rows())
        .map_err(|_| corrupt(path, "negative row count"))?;
    let leaves = leaves(
        builder.schema().as_ref(),
        builder.parquet_schema(),
        entries,
        path,
    )?;
    Ok((builder, leaves, entries))
}

/// Reads the selected columns of a Parquet file (`opts.columns`, else every flat numeric
/// column), values not yet checked for finiteness. Every codec pyarrow, polars and awkward
/// write is read (uncompressed, Snappy, gzip, Brotli, LZ4, LZ4_RAW, ZSTD); a panic inside the
/// `parquet` crate is reported as a corrupt file.
pub fn read_parquet(path: &Path, opts: &ReadOptions) -> Result<RootRead, IoError> {
    super::guard(path, "parquet", || {
        let (builder, leaves, entries) = open_leaves(path)?;
        let fields: Vec<FieldInfo> = leaves.iter().map(|l| l.info.clone()).collect();
        let read = |names: &[&str]| -> Result<Vec<Col>, IoError> {
            let wanted: Vec<&Leaf> = names
                .iter()
                .filter_map(|n| leaves.iter().find(|l| l.info.name == *n))
                .collect();
            read_leaves(path, builder, &wanted, false)
        };
        columnar::select(path, "parquet", "the file", &fields, entries, opts, read)
    })
}

/// The columns of a Parquet file with their stored types; list columns with the fewest and
/// most elements per event (their offsets are read, the other columns' values are not).
pub fn describe_parquet(path: &Path) -> Result<Vec<ColumnInfo>, IoError> {
    super::guard(path, "parquet", || {
        let (builder, leaves, _) = open_leaves(path)?;
        let jagged: Vec<&Leaf> = leaves
            .iter()
            .filter(|l| l.info.shape == Some(Shape::Jagged))
            .collect();
        let cols = if jagged.is_empty() {
            Vec::new()
        } else {
            read_leaves(path, builder, &jagged, true)?
        };
        Ok(leaves
            .iter()
            .map(|l| {
                let mut c = ColumnInfo::from(l.info.clone());
                if let Some(k) = jagged.iter().position(|j| j.leaf == l.leaf)
                    && let Some(Col::Jagged { offsets, .. }) = cols.get(k)
                {
                    let lens = offsets.windows(2).map(|w| w[1] - w[0]);
                    c.lengths = lens.clone().min().zip(lens.max());
                }
                if let ColumnKind::Fixed(n) = c.kind {
                    c.lengths = Some((n, n));
                }
                c
            })
            .collect())
    })
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
    use crate::engine::Matrix;
    use crate::io::{Format, ReadOptions, Table, read_table, read_table_noted, write_table};
    use arrow_array::{BooleanArray, Int64Array, StringArray};

    /// tests/fixtures/parquet/make_jagged_fixtures.py: event i has i % 4 jets, jet j with
    /// pt = 20 + i + 0.25 j (f32), eta = 0.1 j - 0.05 (i % 5) (f64), id = 10 i + j (i32);
    /// MET_pt = 5 + 0.5 i.
    const N: usize = 40;
    fn jet_pt(i: usize, j: usize) -> f32 {
        20.0 + i as f32 + 0.25 * j as f32
    }
    fn jet_eta(i: usize, j: usize) -> f32 {
        (0.1 * j as f64 - 0.05 * (i % 5) as f64) as f32
    }
    fn jagged(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parquet")
            .join(name)
    }
    fn cols(s: &str) -> ReadOptions {
        ReadOptions {
            columns: Some(s.split(',').map(crate::io::ColumnRef::parse).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn jagged_elements_of_awkward_and_pyarrow_lists() {
        // Every layout: awkward's flat lists, its lists of records and records of lists (dotted
        // names), pyarrow's list / large_list.
        let cases = [
            ("awkward_flat.parquet", ["Jet_pt", "Jet_eta", "Jet_id"]),
            ("awkward_records.parquet", ["Jet.pt", "Jet.eta", "Jet.id"]),
            ("awkward_records.parquet", ["Lep.pt", "Lep.eta", "Jet.id"]),
            ("pyarrow_lists.parquet", ["Jet_pt", "Jet_eta", "Jet_id"]),
        ];
        for (file, [pt, eta, id]) in cases {
            let p = jagged(file);
            let sel = format!("{pt}[1],{eta}[0],MET_pt,{id}[2]");
            let r = read_parquet(&p, &cols(&sel)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let kept: Vec<usize> = (0..N).filter(|i| i % 4 == 3).collect();
            assert_eq!(r.dropped, N - kept.len(), "{file}");
            let want: Vec<String> = vec![
                format!("{pt}[1]"),
                format!("{eta}[0]"),
                "MET_pt".into(),
                format!("{id}[2]"),
            ];
            assert_eq!(r.table.columns, want, "{file}");
            for (row, &i) in kept.iter().enumerate() {
                let got = r.table.data.row(row);
                let want = [
                    jet_pt(i, 1),
                    jet_eta(i, 0),
                    5.0 + 0.5 * i as f32,
                    (10 * i + 2) as f32,
                ];
                assert_eq!(got, &want, "{file}, event {i}");
            }
            // --fill keeps every event.
            let mut o = cols(&format!("{pt}[2],MET_pt"));
            o.fill = Some(-1.0);
            let (t, notes) = read_table_noted(&p, &o).unwrap();
            assert_eq!(t.rows(), N, "{file}");
            assert!(notes.is_empty(), "{notes:?}");
            for i in 0..N {
                let want = if i % 4 == 3 { jet_pt(i, 2) } else { -1.0 };
                assert_eq!(t.data.get(i, 0), want, "{file}, event {i}");
            }
            // Dropping is reported with the file name.
            let (t, notes) = read_table_noted(&p, &cols(&format!("{pt}[0]"))).unwrap();
            assert_eq!(t.rows(), 30);
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains(file) && n.contains("dropped 10")),
                "{notes:?}"
            );
            // Beyond every event: the file and the column are named.
            let e = read_table(&p, &cols(&format!("MET_pt,{pt}[3]")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(file) && e.contains(&format!("{pt}[3]")) && e.contains("3 elements"),
                "{e}"
            );
            let e = read_table(&p, &cols(pt)).unwrap_err().to_string();
            assert!(e.contains(&format!("{pt}[0]")), "{e}");
            let e = read_table(&p, &cols("MET_pt[0]")).unwrap_err().to_string();
            assert!(e.contains("not an array"), "{e}");
        }
    }

    #[test]
    fn default_read_keeps_flat_columns_and_notes_lists() {
        let (t, notes) =
            read_table_noted(&jagged("awkward_records.parquet"), &ReadOptions::default()).unwrap();
        assert_eq!(t.columns, ["MET.pt", "MET.phi", "MET_pt"]);
        assert_eq!(t.data.row(7), &[8.5, 0.07, 8.5]);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("Jet.pt") && n.contains("Jet.pt[0]")),
            "{notes:?}"
        );
        // Fixed-size lists, and a null list named by row and column.
        let p = jagged("pyarrow_lists.parquet");
        let t = read_table(&p, &cols("pair[1],pair[0]")).unwrap();
        assert_eq!(t.rows(), N);
        assert_eq!(t.data.row(9), &[-9.0, 9.0]);
        let e = read_table(&p, &cols("MET_pt,Tau_pt[0]"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 3") && e.contains("Tau_pt") && e.contains("null"),
            "{e}"
        );
    }

    #[test]
    fn columns_after_unreadable_ones_read_their_own_values() {
        // Strings, a map, a dictionary and a list of lists come first: their Parquet leaves
        // must be skipped exactly for the projection to find st.l, v and x.
        let p = jagged("pyarrow_mixed.parquet");
        let mut o = cols("st.l[1],v[1],x,st.a,v[0]");
        o.fill = Some(-1.0);
        let t = read_table(&p, &o).unwrap();
        assert_eq!(
            t.data.as_slice(),
            &[
                2.5, 11.0, 0.5, 1.0, 10.0, //
                -1.0, -1.0, 1.5, 2.0, 12.0, //
                -1.0, -1.0, 2.5, 3.0, -1.0
            ]
        );
        let e = read_table(&p, &cols("nested[0]")).unwrap_err().to_string();
        assert!(e.contains("list<list<float32>>"), "{e}");
        let (t, notes) = read_table_noted(&p, &ReadOptions::default()).unwrap();
        assert_eq!(t.columns, ["st.a", "x"]);
        assert_eq!(notes.len(), 6, "{notes:?}");
    }

    #[test]
    fn describe_lists_list_columns_with_lengths() {
        use crate::io::describe::{ColumnKind, describe};
        let d = describe(&jagged("pyarrow_lists.parquet"), &ReadOptions::default()).unwrap();
        let got: Vec<_> = d
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str(), c.kind, c.lengths))
            .collect();
        assert_eq!(
            got,
            [
                ("Jet_pt", "list<float32>", ColumnKind::Jagged, Some((0, 3))),
                (
                    "Jet_eta",
                    "large_list<float64>",
                    ColumnKind::Jagged,
                    Some((0, 3))
                ),
                ("Jet_id", "list<int32>", ColumnKind::Jagged, Some((0, 3))),
                (
                    "pair",
                    "fixed_size_list<int64, 2>",
                    ColumnKind::Fixed(2),
                    Some((2, 2))
                ),
                ("Tau_pt", "list<float32>", ColumnKind::Jagged, Some((0, 1))),
                ("MET_pt", "float64", ColumnKind::Flat, None),
            ]
        );
        assert!(d.iter().all(|c| c.entries == N));
        let d = describe(&jagged("awkward_records.parquet"), &ReadOptions::default()).unwrap();
        let names: Vec<_> = d.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Jet.pt", "Jet.eta", "Jet.id", "Lep.pt", "Lep.eta", "MET.pt", "MET.phi", "MET_pt"
            ]
        );
        assert_eq!(d[0].type_name, "large_list<float32>");
        assert_eq!(d[4].lengths, Some((0, 3)));
    }

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
