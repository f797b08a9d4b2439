//! Streaming, reproducible, shardable generation of events to a file.
//!
//! Event `i` of a sample depends only on `(model, seed, i)` (see [`crate::flow::base_sample`]),
//! so shard `k/M` generates events `floor((k-1)N/M) .. floor(kN/M)`, the shards are disjoint and
//! their concatenation is byte-identical to the unsharded output, for any thread count. Events are
//! generated and written in batches through [`crate::io::TableWriter`], so memory stays bounded
//! for any `N` (except for ROOT output as a TTree, whose writer needs whole columns), and the output is
//! renamed into place only when complete.

use crate::engine::Matrix;
use crate::io::{Format, RootFormat, TableWriter};
use crate::model::{Model, ModelError};
use std::path::PathBuf;
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
    /// How ROOT output stores the events (a TTree by default).
    pub root_format: RootFormat,
    /// Context.
    pub context: SampleContext,
    /// Also write the raw context columns (named after the model's context columns).
    pub context_columns: Option<(Vec<String>, Matrix<f32>)>,
}

/// What a sampling job wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleSummary {
    /// Events written.
    pub written: u64,
    /// Events with at least one continuous feature pinned at the end of the model's support.
    pub pinned_any: usize,
    /// Events with every continuous feature pinned.
    pub pinned_all: usize,
}

/// Generates the job's events with `model` and writes them atomically to `job.out`;
/// `progress` is called with the number of events written so far.
pub fn sample_to_file(
    model: &Model,
    job: &SampleJob,
    progress: &mut dyn FnMut(u64),
) -> Result<SampleSummary, ModelError> {
    let (start, end) = job.shard.range(job.n);
    let total = end - start;
    let mut names = model.config.features.clone();
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
    let ioerr = |e: crate::io::IoError| ModelError::Input(e.to_string());
    let mut writer =
        TableWriter::create_with(out, job.format, job.root_format, &names, Some(total))
            .map_err(ioerr)?;
    let mut done = 0u64;
    let mut summary = SampleSummary::default();
    let batch = job.batch.max(1) as u64;
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
        let pinned = model.pinned(&x);
        summary.pinned_any += pinned.any_feature;
        summary.pinned_all += pinned.all_features;
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
        if !x.all_finite() {
            return Err(ModelError::Input(format!(
                "the model produced a non-finite value in events {first}..{}; the model file may be damaged",
                first + b as u64
            )));
        }
        writer.write(&x).map_err(ioerr)?;
        done += b as u64;
        progress(done);
    }
    writer.finish().map_err(ioerr)?;
    summary.written = total;
    Ok(summary)
}
