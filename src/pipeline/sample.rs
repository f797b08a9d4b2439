//! Streaming, reproducible, shardable generation of events to a file.
//!
//! Event `i` of a sample depends only on `(model, seed, i)` (see [`crate::flow::base_sample`]),
//! so shard `k/M` generates events `floor((k-1)N/M) .. floor(kN/M)`, the shards are disjoint and
//! their concatenation is byte-identical to the unsharded output, for any thread count. Events are
//! generated and written in batches, so memory stays bounded for any `N` (except for ROOT output,
//! whose writer needs whole columns).

use crate::engine::Matrix;
use crate::io::{Format, Table, write_table};
use crate::model::{Model, ModelError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
}

impl Shard {
    /// The whole sample.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Event range of this shard in a sample of `n` events.
    pub fn range(&self, n: u64) -> (u64, u64) {
        let s = (n as u128 * (self.index - 1) as u128 / self.count as u128) as u64;
        let e = (n as u128 * self.index as u128 / self.count as u128) as u64;
        (s, e)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid shard '{s}': expected K/M with 1 <= K <= M, e.g. 3/10");
        let (a, b) = s.split_once('/').ok_or_else(err)?;
        let index: u64 = a.trim().parse().map_err(|_| err())?;
        let count: u64 = b.trim().parse().map_err(|_| err())?;
        if count == 0 || index == 0 || index > count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }
}

/// Context for conditional sampling.
#[derive(Clone, Debug)]
pub enum SampleContext {
    /// Unconditional model.
    None,
    /// One encoded context vector for every event.
    Fixed(Vec<f32>),
    /// One encoded context vector per event (row `i` for event `i`).
    PerEvent(Matrix<f32>),
}

/// A sampling job.
#[derive(Clone, Debug)]
pub struct SampleJob {
    /// Events in the whole sample (all shards).
    pub n: u64,
    /// Sample seed.
    pub seed: u64,
    /// Which part to generate.
    pub shard: Shard,
    /// Events generated per batch.
    pub batch: usize,
    /// Output file.
    pub out: PathBuf,
    /// Output format.
    pub format: Format,
    /// Context.
    pub context: SampleContext,
    /// Also write the raw context columns (named after the model's context columns).
    pub context_columns: Option<(Vec<String>, Matrix<f32>)>,
}

enum Sink {
    Csv(Box<dyn Write>),
    Npy(Box<dyn Write>),
    Parquet(
        Box<parquet::arrow::ArrowWriter<std::fs::File>>,
        arrow_schema::SchemaRef,
    ),
    Collect(Vec<f32>),
}

fn npy_header(rows: u64, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = dict.into_bytes();
    let total = 10 + h.len() + 1;
    let pad = (64 - total % 64) % 64;
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out
}

/// Generates the job's events with `model` and writes them atomically to `job.out`;
/// `progress` is called with the number of events written so far.
pub fn sample_to_file(
    model: &Model,
    job: &SampleJob,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, ModelError> {
    let (start, end) = job.shard.range(job.n);
    let total = end - start;
    let mut names = model.config.features.clone();
    let extra_cols = job.context_columns.as_ref().map_or(0, |(n, _)| n.len());
    if let Some((n, _)) = &job.context_columns {
        names.extend(n.iter().cloned());
    }
    let width = names.len();
    if let SampleContext::PerEvent(m) = &job.context
        && (m.rows() as u64) < job.n
    {
        return Err(ModelError::Input(format!(
            "{} context rows for {} events",
            m.rows(),
            job.n
        )));
    }
    let out = &job.out;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".hepflow-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| ModelError::Io {
            path: out.clone(),
            source: e,
        })?;
    let ioe = |e: std::io::Error| ModelError::Io {
        path: out.clone(),
        source: e,
    };
    let file = tmp.reopen().map_err(ioe)?;
    let mut sink = match job.format {
        Format::Csv => {
            let mut w: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(1 << 20, file));
            if out.extension().is_some_and(|e| e == "gz") {
                w = Box::new(flate2::write::GzEncoder::new(
                    w,
                    flate2::Compression::default(),
                ));
            }
            writeln!(w, "{}", names.join(",")).map_err(ioe)?;
            Sink::Csv(w)
        }
        Format::Npy => {
            let mut w: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(1 << 20, file));
            w.write_all(&npy_header(total, width)).map_err(ioe)?;
            Sink::Npy(w)
        }
        Format::Parquet => {
            let fields: Vec<arrow_schema::Field> = names
                .iter()
                .map(|n| arrow_schema::Field::new(n, arrow_schema::DataType::Float32, false))
                .collect();
            let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
            let w =
                parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| {
                    ModelError::Io {
                        path: out.clone(),
                        source: std::io::Error::other(e),
                    }
                })?;
            Sink::Parquet(Box::new(w), schema)
        }
        Format::Root => Sink::Collect(Vec::new()),
    };
    let mut done = 0u64;
    let batch = job.batch.max(1) as u64;
    let mut line = String::new();
    while done < total {
        if crate::interrupt::stop_requested() {
            // Dropping the temporary file removes it: no partial output remains.
            return Err(ModelError::Input(format!(
                "{}: sampling interrupted; no output file was written",
                out.display()
            )));
        }
        let b = batch.min(total - done) as usize;
        let first = start + done;
        let ctx = match &job.context {
            SampleContext::None => None,
            SampleContext::Fixed(v) => Some(Matrix::from_fn(b, v.len(), |_, j| v[j])),
            SampleContext::PerEvent(m) => Some(m.slice_rows(first as usize, first as usize + b)),
        };
        let x = model.sample_range(first, b, job.seed, ctx.as_ref())?;
        let x = match &job.context_columns {
            Some((_, raw)) => {
                let d = x.cols();
                Matrix::from_fn(b, width, |i, j| {
                    if j < d {
                        x.get(i, j)
                    } else if raw.rows() == 1 {
                        raw.get(0, j - d)
                    } else {
                        raw.get(first as usize + i, j - d)
                    }
                })
            }
            None => x,
        };
        let _ = extra_cols;
        if !x.all_finite() {
            return Err(ModelError::Input(format!(
                "the model produced a non-finite value in events {first}..{}; the model file may be damaged",
                first + b as u64
            )));
        }
        match &mut sink {
            Sink::Csv(w) => {
                for i in 0..b {
                    line.clear();
                    for (j, v) in x.row(i).iter().enumerate() {
                        if j > 0 {
                            line.push(',');
                        }
                        use std::fmt::Write as _;
                        let _ = write!(line, "{v}");
                    }
                    line.push('\n');
                    w.write_all(line.as_bytes()).map_err(ioe)?;
                }
            }
            Sink::Npy(w) => {
                let bytes: Vec<u8> = x.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes).map_err(ioe)?;
            }
            Sink::Parquet(w, schema) => {
                let cols: Vec<arrow_array::ArrayRef> = (0..width)
                    .map(|j| {
                        let v: Vec<f32> = (0..b).map(|i| x.get(i, j)).collect();
                        std::sync::Arc::new(arrow_array::Float32Array::from(v))
                            as arrow_array::ArrayRef
                    })
                    .collect();
                let rb = arrow_array::RecordBatch::try_new(schema.clone(), cols).map_err(|e| {
                    ModelError::Io {
                        path: out.clone(),
                        source: std::io::Error::other(e),
                    }
                })?;
                w.write(&rb).map_err(|e| ModelError::Io {
                    path: out.clone(),
                    source: std::io::Error::other(e),
                })?;
            }
            Sink::Collect(v) => v.extend_from_slice(x.as_slice()),
        }
        done += b as u64;
        progress(done);
    }
    match sink {
        Sink::Csv(mut w) | Sink::Npy(mut w) => {
            w.flush().map_err(ioe)?;
            drop(w);
        }
        Sink::Parquet(w, _) => {
            w.close().map_err(|e| ModelError::Io {
                path: out.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        Sink::Collect(v) => {
            let data = Matrix::from_vec(total as usize, width, v)
                .unwrap_or_else(|| Matrix::zeros(0, width));
            let table = Table {
                columns: names,
                data,
            };
            drop(tmp);
            write_table(out, &table, Format::Root).map_err(|e| ModelError::Input(e.to_string()))?;
            return Ok(total);
        }
    }
    tmp.persist(out).map_err(|e| ModelError::Io {
        path: out.clone(),
        source: e.error,
    })?;
    Ok(total)
}
