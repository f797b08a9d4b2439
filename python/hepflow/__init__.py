"""hepflow: normalizing flows for collider events, from Python.

Train a flow on Monte-Carlo events, generate new events fast, and compare them with a reference::

    import hepflow
    model = hepflow.train(events, columns=["lep_pt", "m_bb"], epochs=50)
    x = model.sample(1_000_000, seed=1)          # numpy float32 (n, d)
    lp = model.log_prob(events)                  # numpy float64 (n,)
    model.save("bkg/")                           # the same files as `hepflow train --out bkg/`
    report = hepflow.evaluate(model, reference, out="report/")

``data``, ``events`` and ``reference`` may be a 2-D numpy array (any float or integer dtype, any
memory layout), a pandas DataFrame (columns by name), a dict of 1-D arrays (what uproot's
``tree.arrays(library="np")`` returns) or the path of an event file (.csv[.gz], .tsv, .npy,
.parquet, .root). The numeric work runs in Rust (the ``hepflow`` crate) without the GIL, on the
same thread pool as the ``hepflow`` command line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _hepflow_rust as _rust
from ._hepflow_rust import ModelError

__all__ = ["Model", "ModelError", "train", "load", "evaluate", "__version__"]
__version__: str = _rust.__version__

# Every option of `hepflow train` as {name: (default, description)}, from the library's one
# configuration type (hepflow::config::TrainOptions), so help(), the CLI and the TOML agree.
TRAIN_OPTIONS: dict[str, tuple[str, str]] = {
    name: (default, text) for name, default, text in _rust.train_options()
}
_NAMED = ("columns", "model", "condition", "epochs", "seed", "threads")


# --------------------------------------------------------------------------- input conversion


def _is_dataframe(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("pandas") and hasattr(obj, "columns") and hasattr(obj, "to_numpy")


def _float_array(a: Any, what: str, ndim: int | None = 2) -> np.ndarray:
    """`a` as a float32/float64 ndarray (no copy when it already is one)."""
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{what}: cannot be read as a numeric array: {e}") from None
    if arr.dtype.kind in "OUSV" or arr.dtype.kind == "M" or arr.dtype.kind == "m":
        raise ValueError(
            f"{what}: dtype {arr.dtype} is not numeric (give float or integer columns)"
        )
    if arr.dtype.kind == "c":
        raise ValueError(f"{what}: complex values are not supported")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)  # integers and booleans: converted (a copy)
    if ndim is not None and arr.ndim != ndim:
        if ndim == 2 and arr.ndim == 1:
            raise ValueError(
                f"{what}: a 1-D array of {arr.shape[0]} values where a 2-D array (events x "
                "features) is needed; use x.reshape(-1, 1) for a single feature"
            )
        raise ValueError(f"{what}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.dtype.byteorder not in ("=", "|", "<" if sys.byteorder == "little" else ">"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _columns_table(cols: Mapping[str, Any], what: str) -> tuple[list[str], np.ndarray]:
    """A mapping of 1-D columns -> (names, 2-D float array in Fortran order: one copy)."""
    names = [str(k) for k in cols.keys()]
    if not names:
        raise ValueError(f"{what}: no columns")
    arrays = []
    for k in names:
        c = _float_array(cols[k], f"{what}: column '{k}'", ndim=None)
        if c.ndim != 1:
            raise ValueError(
                f"{what}: column '{k}' has shape {c.shape}; every column must be 1-D "
                "(jagged uproot branches must be flattened or reduced first)"
            )
        arrays.append(c)
    n = arrays[0].shape[0]
    for k, c in zip(names, arrays):
        if c.shape[0] != n:
            raise ValueError(
                f"{what}: column '{k}' has {c.shape[0]} values, column '{names[0]}' has {n}"
            )
    dtype = np.float32 if all(c.dtype == np.float32 for c in arrays) else np.float64
    out = np.empty((n, len(names)), dtype=dtype, order="F")
    for j, c in enumerate(arrays):
        out[:, j] = c
    return names, out


def _as_table(data: Any, what: str) -> tuple[list[str] | None, np.ndarray, bool]:
    """(names or None, 2-D float array, was_dataframe) for an in-memory table."""
    if _is_dataframe(data):
        return _columns_table({c: data[c].to_numpy() for c in data.columns}, what) + (True,)
    if isinstance(data, Mapping):
        return _columns_table(data, what) + (False,)
    if hasattr(data, "dtype") and getattr(data.dtype, "names", None):  # numpy record array
        return _columns_table({k: data[k] for k in data.dtype.names}, what) + (False,)
    arr = _float_array(data, what)
    return None, arr, False


def _is_path(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _path_table(path: Any, fmt: str | None = None) -> tuple[list[str], np.ndarray]:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: file not found")
    names, arr = _rust.read_table(p, fmt)
    return list(names), arr


def _named_or_positional(names: list[str] | None, want: list[str]) -> list[str] | None:
    """Files without column names (npy, headerless CSV) get col0, col1, ...: read them by position."""
    if names is not None and names == [f"col{j}" for j in range(len(names))] and not set(want) <= set(names):
        return None
    return names


def _select(
    names: list[str] | None, arr: np.ndarray, want: list[str], what: str
) -> np.ndarray:
    """Columns `want` of a named table; an unnamed array must already have exactly them."""
    if names is None:
        if arr.shape[1] != len(want):
            raise ValueError(
                f"{what}: {arr.shape[1]} columns given, the model has {len(want)} "
                f"({', '.join(want)})"
            )
        return arr
    names = _named_or_positional(names, want)
    if names is None:
        return _select(None, arr, want, what)
    missing = [c for c in want if c not in names]
    if missing:
        raise ValueError(
            f"{what}: no column named {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(names)})"
        )
    if names == want:
        return arr
    idx = [names.index(c) for c in want]
    return arr[:, idx]


# --------------------------------------------------------------------------- progress


class _Progress:
    """tqdm when installed (terminal and Jupyter), else a one-line bar on stderr."""

    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.desc = desc
        self.total = total
        self.t0 = time.monotonic()
        self.last = -1
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, unit="ev" if desc == "sampling" else "step")
        except ImportError:
            self.bar = None

    def update(self, done: int, total: int | None = None, postfix: str = "") -> None:
        if not self.enabled:
            return
        if total is not None and total != self.total:
            self.total = total
            if self.bar is not None:
                self.bar.reset(total=total)
        if self.bar is not None:
            self.bar.n = done
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.refresh()
            return
        width = 30
        frac = done / self.total if self.total else 0.0
        fill = int(frac * width)
        sys.stderr.write(
            f"\r{self.desc} [{'=' * fill}{' ' * (width - fill)}] {done}/{self.total} {postfix}"
        )
        sys.stderr.flush()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            sys.stderr.write("\r" + text + " " * 20 + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


# --------------------------------------------------------------------------- the model


class Model:
    """A trained flow: sample events, evaluate densities, save in the CLI's model format.

    Get one from :func:`train` or :func:`load`. Attributes: ``columns`` (feature names) and
    ``context_columns`` (condition names, empty for an unconditional model).
    """

    def __init__(self, _inner: Any, _frame: bool = False) -> None:
        self._inner = _inner
        self._frame = _frame

    @property
    def columns(self) -> list[str]:
        """Feature names, in the order of the columns of :meth:`sample`'s output."""
        return list(self._inner.columns)

    @property
    def context_columns(self) -> list[str]:
        """Names of the condition columns (empty for an unconditional model)."""
        return list(self._inner.context_columns)

    def info(self) -> dict[str, Any]:
        """Architecture, layers, parameter count, features, context and training metadata."""
        return json.loads(self._inner.info_json())

    def __repr__(self) -> str:
        i = self.info()
        ctx = f", condition={i['context']}" if i["context"] else ""
        return f"hepflow.Model({i['architecture']}, {len(i['features'])} features, {i['parameters']} parameters{ctx})"

    def _context(self, condition: Any, n: int | None, what: str) -> np.ndarray | None:
        """Raw context rows: one row (a scalar or a mapping of scalars) or one per event."""
        names = self.context_columns
        if condition is None:
            return None
        if not names:
            raise ValueError("condition: the model is not conditional (it has no context columns)")
        if np.isscalar(condition) and not isinstance(condition, (str, bytes)):
            if len(names) != 1:
                raise ValueError(
                    f"condition: a single value for {len(names)} context columns ({', '.join(names)}); "
                    "give a dict"
                )
            return _float_array([[condition]], "condition")
        if isinstance(condition, Mapping) and all(np.ndim(v) == 0 for v in condition.values()):
            unknown = [k for k in condition if k not in names]
            if unknown:
                raise ValueError(
                    f"condition: no context column named {', '.join(map(repr, unknown))} "
                    f"(the model's context columns are {', '.join(names)})"
                )
            missing = [k for k in names if k not in condition]
            if missing:
                raise ValueError(f"condition: give a value for {', '.join(missing)}")
            return _float_array([[condition[k] for k in names]], "condition")
        if _is_path(condition):
            cn, arr = _path_table(condition)
            return np.ascontiguousarray(_select(cn, arr, names, "condition"))
        cn, arr, _ = _as_table(condition, "condition")
        if cn is None and arr.ndim == 2 and arr.shape[1] != len(names):
            raise ValueError(
                f"condition: {arr.shape[1]} columns given, the model has {len(names)} context "
                f"columns ({', '.join(names)})"
            )
        return _select(cn, arr, names, "condition")

    def sample(
        self,
        n: int,
        seed: int = 0,
        condition: Any = None,
        *,
        threads: int | None = None,
        progress: bool = True,
        as_frame: bool | None = None,
    ) -> Any:
        """Generate ``n`` events with ``seed``: the same bytes as ``hepflow sample -n N --seed S``.

        Args:
            n: number of events (>= 0).
            seed: sample seed; event ``i`` depends only on (model, seed, i).
            condition: for a conditional model, the context: a value (one context column), a
                dict ``{column: value}`` (the same for every event), or a table (DataFrame, dict
                of arrays, 2-D array or file) with at least ``n`` rows, one per event.
            threads: worker threads (default: all cores).
            progress: draw a progress bar.
            as_frame: return a pandas DataFrame named by ``columns`` (default: when the model
                was trained on a DataFrame and pandas is installed).

        Returns:
            numpy float32 array of shape (n, len(columns)), or a DataFrame.

        Raises:
            KeyboardInterrupt: Ctrl-C; sampling stops within about a batch, whatever ``threads``.
        """
        n = _count(n, "n")
        seed = _seed(seed)
        ctx = self._context(condition, n, "condition")
        bar = _Progress(n, "sampling", progress and n >= 200_000)
        try:
            out = self._inner.sample(n, seed, ctx, threads, (lambda kind, d, t, c, x, y: bar.update(d)) if bar.enabled else None)
        finally:
            bar.close()
        want_frame = self._frame if as_frame is None else as_frame
        if want_frame:
            try:
                import pandas as pd
            except ImportError:
                if as_frame:
                    raise
                return out
            return pd.DataFrame(out, columns=self.columns, copy=False)
        return out

    def log_prob(self, events: Any, condition: Any = None, *, threads: int | None = None) -> np.ndarray:
        """``log p(x | c)`` of every event in nats (original units), numpy float64 of shape (n,).

        Args:
            events: the events: a 2-D array with the model's columns in order, or a DataFrame,
                dict of arrays or file holding columns with the model's names (extra columns are
                ignored; the context columns are taken from there when ``condition`` is None).
            condition: for a conditional model: a value, a dict of values, or one row per event.
            threads: worker threads (default: all cores).
        """
        names, arr = _table_any(events, "events")
        x = _select(names, arr, self.columns, "events")
        ctx_names = self.context_columns
        if condition is None and ctx_names and names is not None and all(c in names for c in ctx_names):
            ctx = _select(names, arr, ctx_names, "events")
        else:
            ctx = self._context(condition, x.shape[0], "condition")
        if ctx is not None and ctx.shape[0] == 1 and x.shape[0] != 1:
            ctx = np.broadcast_to(ctx, (x.shape[0], ctx.shape[1]))
        return self._inner.log_prob(x, ctx, threads)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``model.json`` and ``model.safetensors`` into directory ``path`` (atomically).

        The CLI reads the result (``hepflow sample --model path``) and vice versa.
        """
        self._inner.save(os.fspath(path))


def _table_any(data: Any, what: str, fmt: str | None = None) -> tuple[list[str] | None, np.ndarray]:
    if _is_path(data):
        return _path_table(data, fmt)
    names, arr, _ = _as_table(data, what)
    return names, arr


def _count(n: Any, what: str) -> int:
    if isinstance(n, bool):
        raise TypeError(f"{what} must be an integer, got bool")
    try:
        v = int(n.__index__()) if hasattr(n, "__index__") else None
    except Exception:
        v = None
    if v is None:
        if isinstance(n, float) and n.is_integer():
            v = int(n)
        else:
            raise TypeError(f"{what} must be an integer, got {n!r}")
    if v < 0:
        raise ValueError(f"{what} = {v}: must be >= 0")
    return v


def _seed(seed: Any) -> int:
    s = _count(seed, "seed")
    if s >= 2**64:
        raise ValueError(f"seed = {s}: must be < 2**64")
    return s


def load(path: str | os.PathLike[str]) -> Model:
    """Load a model directory written by ``hepflow train`` or :meth:`Model.save`.

    Raises:
        FileNotFoundError: the directory does not exist.
        hepflow.ModelError: model.json or model.safetensors is missing, invalid or does not match.
    """
    return Model(_rust.RustModel.load(os.fspath(path)))


def train(
    data: Any,
    columns: list[str] | None = None,
    model: str = "made-mog",
    condition: str | list[str] | None = None,
    epochs: int = 200,
    seed: int = 0,
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> Model:
    """Train a normalizing flow on events, exactly as ``hepflow train`` does.

    Args:
        data: the training events: a 2-D numpy array (columns named col0, col1, ...), a pandas
            DataFrame, a dict of 1-D arrays (uproot's ``tree.arrays(library="np")``) or the path
            of an event file (.csv[.gz], .tsv, .npy, .parquet, .root).
        columns: feature columns (names, or 0-based indices); default: every column except
            the condition columns and a column named ``label``.
        model: architecture: made-mog (default), pq-spline, rq-spline, realnvp, glow, maf or
            flow-matching.
        condition: context column(s) of a conditional flow, e.g. ``"label"``.
        epochs: maximum number of epochs (early stopping may end sooner).
        seed: seed of the split, the initialisation and the shuffling.
        threads: worker threads (default: all cores).
        out: directory for model.json, model.safetensors, history.csv, training.png and the
            checkpoint (default: a temporary directory, removed after loading the model).
        progress: draw a progress bar (tqdm when installed) and a line per epoch.
        **options: any other option of ``hepflow train`` (an unknown name is an error):

    {options}

    Returns:
        the trained :class:`Model` (the best epoch's parameters).

    Raises:
        ValueError: bad data (NaN/inf, wrong shape, unknown column, non-numeric dtype) or a bad option.
        FileNotFoundError: ``data`` is a path that does not exist.
        KeyboardInterrupt: Ctrl-C; training stops within about a second and the last complete
            checkpoint stays in ``out/checkpoint``.
    """
    if isinstance(condition, str):
        condition = [c.strip() for c in condition.split(",") if c.strip()]
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if isinstance(options.get("select"), str):
        options["select"] = [options["select"]]
    opts: dict[str, Any] = {
        "model": model,
        "epochs": _count(epochs, "epochs"),
        "seed": _seed(seed),
    }
    if columns is not None:
        opts["columns"] = [str(c) for c in columns]
    if condition:
        opts["condition"] = list(condition)
    if threads is not None:
        opts["threads"] = _count(threads, "threads")
    if isinstance(options.get("hidden"), int):
        options["hidden"] = [options["hidden"]]
    for k, v in options.items():
        if v is not None:
            opts[k] = v.tolist() if isinstance(v, np.ndarray) else v
    frame = _is_dataframe(data)
    if _is_path(data):
        p = os.fspath(data)
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p}: file not found")
        source: Any = p
    else:
        names, arr, frame = _as_table(data, "data")
        if names is None:
            names = [f"col{j}" for j in range(arr.shape[1])]
        source = (names, arr)
    bar = _Progress(None, "training", progress)

    def on_progress(kind: str, epoch: int, step: int, steps: int, a: float, b: float) -> None:
        if kind == "step":
            bar.desc = f"epoch {epoch}"
            if bar.bar is not None:
                bar.bar.set_description(bar.desc, refresh=False)
            bar.update(step, steps, f"loss {a:.4f}")
        else:
            bar.line(f"epoch {epoch:>3}: train {a:.4f}  val {b:.4f} (model space)")

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="hepflow-train-")
        out_dir = tmp.name
    else:
        out_dir = os.fspath(out)
    try:
        inner, _summary = _rust.train(source, json.dumps(opts), out_dir, on_progress if progress else None)
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    return Model(inner, frame)


def _options_doc() -> str:
    rows = [
        f"            {k} (default {v[0]}): {v[1]}" for k, v in TRAIN_OPTIONS.items() if k not in _NAMED
    ]
    return "\n".join(rows)


if train.__doc__:
    train.__doc__ = train.__doc__.replace("    {options}", _options_doc())


def evaluate(
    model: Model,
    reference: Any,
    n: int | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    condition: Any = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Compare ``n`` generated events with reference (MC) events, as ``hepflow evaluate`` does.

    Args:
        model: a trained :class:`Model`.
        reference: held-out reference events (array, DataFrame, dict of arrays or file) with the
            model's columns (and its context columns, for a conditional model, unless
            ``condition`` is given); at least 20 events.
        n: events to generate (default: as many as the reference).
        out: report directory (metrics.json, plots, report.html); default: none kept.
        condition: context rows of the reference, for a conditional model.
        seed: seed of generation and of the classifier test.
        threads: worker threads (default: all cores).

    Returns:
        the metrics (the content of metrics.json): test NLL, C2ST AUC, per-feature KS/chi2/W1,
        Frechet distance, ...
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a hepflow.Model, got {type(model).__name__}")
    names, arr = _table_any(reference, "reference")
    x = np.ascontiguousarray(_select(names, arr, model.columns, "reference"))
    ctx = None
    if model.context_columns:
        if condition is None and names is not None:
            ctx = _select(names, arr, model.context_columns, "reference")
        else:
            ctx = model._context(condition, x.shape[0], "condition")
            if ctx is not None and ctx.shape[0] == 1:
                ctx = np.broadcast_to(ctx, (x.shape[0], ctx.shape[1]))
        if ctx is None:
            raise ValueError(
                "the model is conditional: the reference needs the column(s) "
                f"{', '.join(model.context_columns)}, or give condition="
            )
    n = None if n is None else _count(n, "n")
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="hepflow-eval-")
        out_dir = tmp.name
    else:
        out_dir = os.fspath(out)
    try:
        metrics = _rust.evaluate_model(model._inner, x, ctx, n, _seed(seed), out_dir, threads)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return json.loads(metrics)
