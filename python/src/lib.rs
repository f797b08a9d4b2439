//! `hepflow._hepflow_rust`: the compiled half of the `hepflow` Python package.
//!
//! A thin layer over the `hepflow` crate (the safetensors/polars pattern): numpy arrays come in
//! through the `numpy` crate (float32 or float64, any layout or strides, read-only allowed) and are
//! copied once into the library's row-major `Matrix<f32>`; results go back as numpy arrays that
//! own the library's buffers (no copy). Every heavy call releases the GIL and runs on rayon's
//! global pool, the pool the CLI uses. The pure-Python layer (`hepflow/__init__.py`) holds the
//! signatures, the docstrings and the conversion of DataFrames, dicts and integer arrays.

use hepflow::config::{ConfigError, TrainOptions};
use hepflow::dataset::{self, DatasetError};
use hepflow::engine::Matrix;
use hepflow::evaluate::{EvalError, EvalOptions, evaluate, write_report};
use hepflow::interrupt;
use hepflow::io::{IoError, Table};
use hepflow::model::{Model, ModelError as CoreModelError, encode_context};
use hepflow::pipeline::{TrainJob, train_model};
use hepflow::train::{EpochEnd, TrainObserver};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyOSError,
    PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

create_exception!(
    _hepflow_rust,
    ModelError,
    PyException,
    "A model directory is damaged: model.json or model.safetensors is missing, invalid or does not match the architecture."
);

/// Events generated per batch, as `hepflow sample` does by default.
const SAMPLE_BATCH: usize = 65536;
/// How often (at most) training and sampling take the GIL to check Ctrl-C and draw progress.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------- errors

fn model_error(e: CoreModelError) -> PyErr {
    let msg = e.to_string();
    match &e {
        CoreModelError::Io { path, source } => match source.kind() {
            // A missing model directory (or file given directly) is "not found"; a file missing
            // inside an existing model directory means the model is damaged.
            std::io::ErrorKind::NotFound
                if path.parent().is_some_and(|p| p.is_dir())
                    && !path.exists()
                    && path
                        .file_name()
                        .is_some_and(|f| f == "model.json" || f == "model.safetensors") =>
            {
                ModelError::new_err(msg)
            }
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        CoreModelError::Json { .. } | CoreModelError::Weights { .. } => ModelError::new_err(msg),
        CoreModelError::Input(_) => PyValueError::new_err(msg),
        CoreModelError::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
    }
}

fn config_error(e: ConfigError) -> PyErr {
    value_error(e.to_string())
}

fn dataset_error(e: DatasetError) -> PyErr {
    match e {
        DatasetError::Io(e) => io_error(e),
        DatasetError::Invalid(m) => value_error(m),
    }
}

fn io_error(e: IoError) -> PyErr {
    let msg = e.to_string();
    match e {
        IoError::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        IoError::Os { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn eval_error(e: EvalError) -> PyErr {
    let msg = e.to_string();
    match e {
        EvalError::Io { .. } | EvalError::Plot(_) => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

// ---------------------------------------------------------------- arrays in and out

/// A 2-D float array from Python, in any memory layout.
#[derive(FromPyObject)]
enum FloatArray<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl FloatArray<'_> {
    /// One copy into a row-major matrix (f64 is rounded to f32, as the file readers do).
    fn to_matrix(&self) -> Matrix<f32> {
        let (rows, cols, data): (usize, usize, Vec<f32>) = match self {
            FloatArray::F32(a) => {
                let v = a.as_array();
                let (r, c) = v.dim();
                let data = match v.as_slice() {
                    Some(s) => s.to_vec(),
                    None => v.iter().copied().collect(),
                };
                (r, c, data)
            }
            FloatArray::F64(a) => {
                let v = a.as_array();
                let (r, c) = v.dim();
                let data = match v.as_slice() {
                    Some(s) => s.iter().map(|&x| x as f32).collect(),
                    None => v.iter().map(|&x| x as f32).collect(),
                };
                (r, c, data)
            }
        };
        Matrix::from_vec(rows, cols, data).unwrap_or_else(|| Matrix::zeros(0, cols))
    }
}

/// The table `names` x `data`, checked: names match the columns, at least one row, all finite.
fn table_from(names: Vec<String>, data: &FloatArray<'_>, source: &str) -> PyResult<Table> {
    let m = data.to_matrix();
    if names.len() != m.cols() {
        return Err(value_error(format!(
            "{source}: {} column names for {} columns",
            names.len(),
            m.cols()
        )));
    }
    let t = Table::new(names, m).ok_or_else(|| value_error(format!("{source}: bad shape")))?;
    if t.rows() == 0 {
        return Err(value_error(format!("{source}: no events (0 rows)")));
    }
    t.validate_finite(Path::new(source)).map_err(io_error)?;
    Ok(t)
}

fn checked_matrix(data: &FloatArray<'_>, names: &[String], source: &str) -> PyResult<Matrix<f32>> {
    Ok(table_from(names.to_vec(), data, source)?.data)
}

fn alloc_f32(len: usize) -> PyResult<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| PyMemoryError::new_err(format!("cannot allocate {len} float32 values")))?;
    Ok(v)
}

// ---------------------------------------------------------------- threads and signals

/// Runs `f` on rayon's global pool (the CLI's), built with `threads` workers when it does not exist
/// yet; when it already exists with another size, on a pool of that size for this call only,
/// watching for Ctrl-C meanwhile ([`run_watching_signals`]).
fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    match threads {
        None => Ok(f()),
        Some(0) => Err(value_error("option `threads` = 0: must be at least 1")),
        Some(t) => {
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build_global();
            if rayon::current_num_threads() == t {
                Ok(f())
            } else {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .map_err(|e| PyOSError::new_err(format!("cannot start {t} threads: {e}")))?;
                run_watching_signals(|| pool.install(f))
            }
        }
    }
}

/// Runs `f` on a thread of its own while this thread runs Python's signal handlers every
/// [`POLL`]. Python runs them only on its main thread, so a KeyboardInterrupt would never reach
/// `f` on a private pool's worker; here it asks the job to stop ([`interrupt::request_stop`]),
/// the job stops at its next safe point, and the KeyboardInterrupt is raised once it has.
fn run_watching_signals<R: Send>(f: impl FnOnce() -> R + Send) -> PyResult<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut interrupted = None;
    let result = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let _ = tx.send(f());
        });
        loop {
            match rx.recv_timeout(POLL) {
                Ok(r) => return Ok(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if interrupted.is_none()
                        && let Err(e) = Python::attach(|py| py.check_signals())
                    {
                        interrupt::request_stop();
                        interrupted = Some(e);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(match worker.join() {
                        Err(p) => std::panic::resume_unwind(p),
                        Ok(()) => {
                            PyRuntimeError::new_err("the worker thread ended without a result")
                        }
                    });
                }
            }
        }
    });
    if let Some(e) = interrupted {
        interrupt::clear_stop();
        return Err(e);
    }
    result
}

/// Arguments of the progress callback: `(kind, a, b, c, x, y)` = ("sample", done, n, 0, 0, 0),
/// ("step", epoch, step, steps, loss, NaN) or ("epoch", epoch, 0, 0, train_nll, val_nll).
type ProgressArgs = (&'static str, usize, usize, usize, f64, f64);

/// Takes the GIL at most every [`POLL`], runs Python's signal handlers (Ctrl-C raises
/// KeyboardInterrupt there) and the progress callback; the first error is kept.
struct Poll {
    callback: Option<Py<PyAny>>,
    last: Instant,
    error: Option<PyErr>,
}

impl Poll {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        Self {
            callback,
            last: Instant::now(),
            error: None,
        }
    }

    /// `args` go to the callback; `force` skips the rate limit. Returns false once interrupted.
    fn tick(&mut self, force: bool, args: impl FnOnce() -> ProgressArgs) -> bool {
        if self.error.is_some() {
            return false;
        }
        if !force && self.last.elapsed() < POLL {
            return true;
        }
        self.last = Instant::now();
        let cb = self.callback.as_ref();
        let r = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = cb {
                cb.call1(py, args())?;
            }
            Ok(())
        });
        if let Err(e) = r {
            self.error = Some(e);
            return false;
        }
        true
    }
}

// ---------------------------------------------------------------- the model

/// A trained flow in memory (see `hepflow.Model` for the documented Python class).
#[pyclass(name = "RustModel", module = "hepflow._hepflow_rust", frozen)]
struct PyModel {
    inner: Model,
}

impl PyModel {
    fn context_names(&self) -> Vec<String> {
        self.inner
            .config
            .context
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Encodes raw context rows (one row, or one per event) after checking presence and width.
    fn encode(&self, context: Option<&FloatArray<'_>>) -> PyResult<Option<Matrix<f32>>> {
        let names = self.context_names();
        match (context, names.is_empty()) {
            (None, true) => Ok(None),
            (Some(_), true) => Err(value_error(
                "condition: the model is not conditional (it has no context columns)",
            )),
            (None, false) => Err(value_error(format!(
                "the model is conditional: give condition= with the column(s) {}",
                names.join(", ")
            ))),
            (Some(c), false) => {
                let raw = checked_matrix(c, &names, "condition")?;
                encode_context(&self.inner.config.context, &raw)
                    .map(Some)
                    .map_err(model_error)
            }
        }
    }
}

#[pymethods]
impl PyModel {
    /// Loads a model directory written by `hepflow train` or `Model.save`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| Model::load(&path)).map_err(model_error)?;
        Ok(Self { inner })
    }

    /// Writes `model.json` and `model.safetensors` into `path` (created if needed), atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path)).map_err(model_error)
    }

    /// Feature names.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner.config.features.clone()
    }

    /// Context column names (empty for an unconditional model).
    #[getter]
    fn context_columns(&self) -> Vec<String> {
        self.context_names()
    }

    /// Description as JSON: architecture, layers, parameters, features, context, training metadata.
    fn info_json(&self) -> PyResult<String> {
        let c = &self.inner.config;
        let mut layers: Vec<(String, usize)> = Vec::new();
        for l in &c.layers {
            match layers.iter_mut().find(|(k, _)| k == l.kind()) {
                Some((_, n)) => *n += 1,
                None => layers.push((l.kind().to_string(), 1)),
            }
        }
        let v = serde_json::json!({
            "architecture": c.preset,
            "format_version": c.format_version,
            "layers": layers.iter().map(|(k, n)| format!("{n} x {k}")).collect::<Vec<_>>(),
            "parameters": self.inner.num_params(),
            "features": c.features,
            "context": self.context_names(),
            "preprocessing": if c.preprocessing.is_some() { "min-max (with margin) -> logit -> standardize" } else { "none" },
            "training": c.training,
        });
        serde_json::to_string(&v).map_err(|e| value_error(e.to_string()))
    }

    /// Events `0..n` of the sample with `seed`: the same bytes as `hepflow sample`.
    /// `context`: raw context values, one row (every event) or `n` rows (one per event).
    #[pyo3(signature = (n, seed, context=None, threads=None, progress=None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: u64,
        seed: u64,
        context: Option<FloatArray<'py>>,
        threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ctx = self.encode(context.as_ref())?;
        let n = usize::try_from(n).map_err(|_| value_error(format!("n = {n} is too large")))?;
        if let Some(c) = &ctx
            && c.rows() != 1
            && c.rows() < n
        {
            return Err(value_error(format!(
                "condition has {} rows for {n} events (give one row, or one per event)",
                c.rows()
            )));
        }
        let d = self.inner.dim();
        let len = n
            .checked_mul(d)
            .ok_or_else(|| value_error(format!("n = {n} is too large")))?;
        let mut out = alloc_f32(len)?;
        let model = &self.inner;
        let mut poll = Poll::new(progress);
        let result = py.detach(|| {
            with_threads(threads, || -> Result<(), PyErr> {
                let mut done = 0usize;
                while done < n {
                    let b = SAMPLE_BATCH.min(n - done);
                    let c = ctx.as_ref().map(|c| {
                        if c.rows() == 1 {
                            Matrix::from_fn(b, c.cols(), |_, j| c.get(0, j))
                        } else {
                            c.slice_rows(done, done + b)
                        }
                    });
                    let x = model
                        .sample_range(done as u64, b, seed, c.as_ref())
                        .map_err(model_error)?;
                    if !x.all_finite() {
                        return Err(ModelError::new_err(format!(
                            "the model produced a non-finite value in events {done}..{}; the model file may be damaged",
                            done + b
                        )));
                    }
                    out.extend_from_slice(x.as_slice());
                    done += b;
                    if !poll.tick(done == n, || ("sample", done, n, 0, 0.0, 0.0))
                        || interrupt::stop_requested()
                    {
                        break;
                    }
                }
                Ok(())
            })
        });
        if let Some(e) = poll.error {
            return Err(e);
        }
        result??;
        let arr = Array2::from_shape_vec((n, d), out).map_err(|e| value_error(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    /// `log p(x | c)` per event, in nats, original units.
    #[pyo3(signature = (events, context=None, threads=None))]
    fn log_prob<'py>(
        &self,
        py: Python<'py>,
        events: FloatArray<'py>,
        context: Option<FloatArray<'py>>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let x = events.to_matrix();
        if x.cols() != self.inner.dim() {
            return Err(value_error(format!(
                "events: {} columns given, the model has {} features ({})",
                x.cols(),
                self.inner.dim(),
                self.inner.config.features.join(", ")
            )));
        }
        let x = checked_matrix(&events, &self.inner.config.features, "events")?;
        let ctx = self.encode(context.as_ref())?;
        if let Some(c) = &ctx
            && c.rows() != x.rows()
        {
            return Err(value_error(format!(
                "condition has {} rows for {} events",
                c.rows(),
                x.rows()
            )));
        }
        let model = &self.inner;
        let lp = py
            .detach(|| with_threads(threads, || model.log_prob(&x, ctx.as_ref())))?
            .map_err(model_error)?;
        Ok(PyArray1::from_vec(py, lp))
    }
}

// ---------------------------------------------------------------- files

/// Reads an event file (every format the CLI reads) into column names and a float32 array.
#[pyfunction]
#[pyo3(signature = (path, format=None))]
fn read_table<'py>(
    py: Python<'py>,
    path: PathBuf,
    format: Option<String>,
) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
    let table = py
        .detach(|| dataset::read_source(&path, format.as_deref()))
        .map_err(dataset_error)?;
    let (r, c) = (table.rows(), table.cols());
    let arr = Array2::from_shape_vec((r, c), table.data.into_vec())
        .map_err(|e| value_error(e.to_string()))?;
    Ok((table.columns, arr.into_pyarray(py)))
}

// ---------------------------------------------------------------- training

struct PyObserver {
    poll: Poll,
}

impl TrainObserver for PyObserver {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64) {
        // A KeyboardInterrupt (or an exception in the callback) stops training at the next step.
        if !self
            .poll
            .tick(false, || ("step", epoch, step, steps, loss, f64::NAN))
        {
            interrupt::request_stop();
        }
    }

    fn on_epoch_end(
        &mut self,
        _flow: &hepflow::flow::Flow<f32>,
        end: &EpochEnd<'_>,
    ) -> Result<(), String> {
        let r = end.record;
        if !self.poll.tick(true, || {
            ("epoch", r.epoch, 0usize, 0usize, r.train_nll, r.val_nll)
        }) {
            interrupt::request_stop();
        }
        Ok(())
    }
}

/// Trains a model. `source` is a file path (str) or a table `(names, array)`; `options` is the
/// JSON object of the keyword arguments; `progress(kind, epoch, step, steps, a, b)` is called at
/// most every 0.1 s. Returns the model and a JSON summary.
#[pyfunction]
#[pyo3(signature = (source, options, out, progress=None))]
fn train<'py>(
    py: Python<'py>,
    source: Bound<'py, PyAny>,
    options: &str,
    out: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<(PyModel, String)> {
    let value: serde_json::Value =
        serde_json::from_str(options).map_err(|e| value_error(e.to_string()))?;
    let opts =
        TrainOptions::from_json(value, "hepflow.train keyword arguments").map_err(config_error)?;
    let settings = opts.resolve().map_err(config_error)?;
    let data = if let Ok(path) = source.extract::<String>() {
        py.detach(|| dataset::load(std::slice::from_ref(&path), &opts))
            .map_err(dataset_error)?
    } else {
        let (names, data): (Vec<String>, FloatArray<'py>) = source.extract()?;
        let table = table_from(names, &data, "data")?;
        dataset::from_table(table, &opts, "data").map_err(dataset_error)?
    };
    let job = TrainJob::new(&settings, data, out.clone(), false).map_err(config_error)?;
    let mut obs = PyObserver {
        poll: Poll::new(progress),
    };
    interrupt::clear_stop();
    let result = py.detach(|| with_threads(settings.threads, || train_model(&job, &mut obs)));
    interrupt::clear_stop();
    if let Some(e) = obs.poll.error {
        return Err(e);
    }
    let result = result?;
    let summary = result.map_err(model_error)?;
    let model = py.detach(|| Model::load(&out)).map_err(model_error)?;
    let s = serde_json::to_string(&summary).map_err(|e| value_error(e.to_string()))?;
    Ok((PyModel { inner: model }, s))
}

// ---------------------------------------------------------------- evaluation

/// Compares `n` generated events (seed `seed`) with the reference, as `hepflow evaluate` does,
/// and writes the report to `out`. Returns metrics.json's content.
#[pyfunction]
#[pyo3(signature = (model, reference, context, n, seed, out, threads=None))]
#[allow(clippy::too_many_arguments)]
fn evaluate_model<'py>(
    py: Python<'py>,
    model: &PyModel,
    reference: FloatArray<'py>,
    context: Option<FloatArray<'py>>,
    n: Option<usize>,
    seed: u64,
    out: PathBuf,
    threads: Option<usize>,
) -> PyResult<String> {
    let m = &model.inner;
    let x = checked_matrix(&reference, &m.config.features, "reference")?;
    if x.rows() < 20 {
        return Err(value_error(format!(
            "reference: only {} events; at least 20 are needed",
            x.rows()
        )));
    }
    let raw_ctx = match &context {
        Some(c) => Some(checked_matrix(c, &model.context_names(), "condition")?),
        None => None,
    };
    let ctx = model.encode(context.as_ref())?;
    let n = n.unwrap_or(x.rows());
    let summary = vec![
        ("architecture".to_string(), m.config.preset.clone()),
        ("parameters".to_string(), m.num_params().to_string()),
        ("features".to_string(), m.config.features.join(", ")),
        ("reference".to_string(), "<python>".to_string()),
    ];
    let run = || -> PyResult<String> {
        let lp = m.log_prob(&x, ctx.as_ref()).map_err(model_error)?;
        let generated = m.generate(n, seed, raw_ctx.as_ref()).map_err(model_error)?;
        let opts = EvalOptions {
            seed,
            ..EvalOptions::default()
        };
        let ev =
            evaluate(&x, &generated, &m.config.features, Some(&lp), &opts).map_err(eval_error)?;
        write_report(&out, &ev, &summary).map_err(eval_error)?;
        serde_json::to_string(&ev.metrics).map_err(|e| value_error(e.to_string()))
    };
    py.detach(|| with_threads(threads, run))?
}

/// Every option of `hepflow train` as (name, default, description), from the library.
#[pyfunction]
fn train_options() -> Vec<(&'static str, &'static str, &'static str)> {
    TrainOptions::documentation()
}

/// The compiled module.
#[pymodule]
fn _hepflow_rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(read_table, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(train_options, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_model, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
