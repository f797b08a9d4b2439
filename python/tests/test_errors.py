"""Bad input gets a clear Python exception (the CLI's message), never a crash."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import hepflow
from conftest import make_events

COLS = ["pt", "eta", "mass"]


def good():
    e = make_events(100)
    return np.column_stack([e[c] for c in COLS]).astype(np.float32)


def with_nan():
    x = good()
    x[7, 1] = np.nan
    return x


def with_inf():
    x = good()
    x[3, 2] = np.inf
    return x


# (name, call(model, cond_model, tmp_path), exception type, regex on the message)
CASES = [
    ("NaN cell", lambda m, c, t: m.log_prob(with_nan()), ValueError, r"row 7.*col1|col1.*row 7|NaN|nan"),
    ("inf cell", lambda m, c, t: m.log_prob(with_inf()), ValueError, r"row 3"),
    ("NaN in training data", lambda m, c, t: hepflow.train(with_nan(), epochs=1, progress=False), ValueError, r"row 7"),
    ("empty array", lambda m, c, t: m.log_prob(np.empty((0, 3), np.float32)), ValueError, r"no events|0 rows|empty"),
    ("empty training data", lambda m, c, t: hepflow.train(np.empty((0, 3)), epochs=1, progress=False), ValueError, r"no events|0 rows|empty"),
    ("a single row to train on", lambda m, c, t: hepflow.train(good()[:1], epochs=1, progress=False), ValueError, r"at least 10 events|1 "),
    ("wrong number of columns", lambda m, c, t: m.log_prob(good()[:, :2]), ValueError, r"2 columns given, the model has 3"),
    ("1-D array", lambda m, c, t: m.log_prob(good()[:, 0]), ValueError, r"1-D array.*2-D"),
    ("string column", lambda m, c, t: m.log_prob({"pt": ["a"] * 3, "eta": [1.0] * 3, "mass": [1.0] * 3}), ValueError, r"column 'pt'.*not numeric"),
    ("object array", lambda m, c, t: m.log_prob(np.array([[1, "x", 2.0]], dtype=object)), ValueError, r"not numeric"),
    ("unknown column", lambda m, c, t: hepflow.train(make_events(50), columns=["pt", "nope"], epochs=1, progress=False), ValueError, r"nope"),
    ("missing column for a loaded model", lambda m, c, t: m.log_prob({"pt": np.ones(3), "eta": np.ones(3)}), ValueError, r"'mass'"),
    ("missing condition (sample)", lambda m, c, t: c.sample(10), ValueError, r"conditional.*label"),
    ("missing condition (log_prob)", lambda m, c, t: c.log_prob(good()), ValueError, r"conditional.*label"),
    ("condition for an unconditional model", lambda m, c, t: m.sample(10, condition=1), ValueError, r"not conditional"),
    ("unknown condition column", lambda m, c, t: c.sample(10, condition={"flavour": 1}), ValueError, r"flavour"),
    ("n < 0", lambda m, c, t: m.sample(-1), ValueError, r"n = -1"),
    ("n not an integer", lambda m, c, t: m.sample(2.5), TypeError, r"integer"),
    ("seed < 0", lambda m, c, t: m.sample(3, seed=-2), ValueError, r"seed = -2"),
    ("missing data file", lambda m, c, t: hepflow.train(str(t / "nope.csv"), progress=False), FileNotFoundError, r"nope.csv"),
    ("missing events file", lambda m, c, t: m.log_prob(t / "nope.npy"), FileNotFoundError, r"nope.npy"),
    ("missing model directory", lambda m, c, t: hepflow.load(t / "no_model"), FileNotFoundError, r"no_model"),
    ("unknown option", lambda m, c, t: hepflow.train(good(), epochs=1, learning_rate=0.1, progress=False), ValueError, r"learning_rate"),
    ("unknown architecture", lambda m, c, t: hepflow.train(good(), model="resnet", epochs=1, progress=False), ValueError, r"resnet"),
    ("bad format file", lambda m, c, t: m.log_prob(_write(t / "x.xyz", b"1,2,3\n")), ValueError, r"x.xyz.*format"),
    ("non-numeric CSV cell", lambda m, c, t: m.log_prob(_write(t / "x.csv", b"pt,eta,mass\n1,2,3\n1,abc,3\n")), ValueError, r"line 3.*abc"),
    ("ragged dict", lambda m, c, t: m.log_prob({"pt": np.ones(3), "eta": np.ones(2), "mass": np.ones(3)}), ValueError, r"'eta' has 2 values"),
    ("too small reference", lambda m, c, t: hepflow.evaluate(m, good()[:5]), ValueError, r"at least 20"),
    ("threads = 0", lambda m, c, t: m.sample(10, threads=0), ValueError, r"threads"),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,call,exc,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, pattern, model, cond_model, tmp_path):
    with pytest.raises(exc, match=pattern):
        call(model, cond_model, tmp_path)


def test_at_least_15_bad_inputs():
    assert len(CASES) >= 15


def test_damaged_model_directories(model_dir, tmp_path):
    import shutil

    # invalid model.json
    d = tmp_path / "bad_json"
    shutil.copytree(model_dir, d)
    (d / "model.json").write_text("{not json")
    with pytest.raises(hepflow.ModelError, match=r"model.json: invalid model description"):
        hepflow.load(d)
    # truncated weights
    d = tmp_path / "bad_weights"
    shutil.copytree(model_dir, d)
    w = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(w[: len(w) // 2])
    with pytest.raises(hepflow.ModelError, match=r"model.safetensors"):
        hepflow.load(d)
    # weights missing from an existing directory
    d = tmp_path / "no_weights"
    shutil.copytree(model_dir, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(hepflow.ModelError, match=r"model.safetensors"):
        hepflow.load(d)
    assert issubclass(hepflow.ModelError, Exception)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test: a process started with SIGINT ignored (a
    background job of a non-interactive shell) inherits that, and Python then keeps it ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def interrupt_after(seconds):
    """Sends this process SIGINT (Ctrl-C) after `seconds`; the list gets the time it fired."""
    fired = []

    def interrupt():
        time.sleep(seconds)
        fired.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    return fired


def test_keyboard_interrupt_stops_training_quickly(tmp_path, python_sigint):
    e = make_events(20000, seed=3)
    x = np.column_stack([e[c] for c in COLS]).astype(np.float32)
    out = tmp_path / "run"
    fired = interrupt_after(1.5)
    with pytest.raises(KeyboardInterrupt):
        hepflow.train(x, model="pq-spline", epochs=10_000, batch_size=256, blocks=2, hidden=[16], out=out, progress=False)
    waited = time.monotonic() - fired[0]
    assert waited < 1.5, f"training took {waited:.2f} s to stop"
    # the interpreter is fine and the library can train again
    m = hepflow.train(x[:200], epochs=1, blocks=1, hidden=[8], progress=False)
    assert m.sample(5).shape == (5, 3)


@pytest.mark.parametrize("threads", [3, 4])
def test_keyboard_interrupt_stops_sampling_on_any_pool(threads, python_sigint):
    # One of 3 and 4 differs from the size of rayon's global pool, so that call samples on a
    # private pool, whose worker threads never run Python's signal handlers themselves.
    e = make_events(2000, seed=4)
    x = np.column_stack([e[c] for c in COLS]).astype(np.float32)
    m = hepflow.train(x, epochs=1, blocks=4, hidden=[64], progress=False)
    fired = interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        m.sample(20_000_000, seed=1, threads=threads, progress=False)
    waited = time.monotonic() - fired[0]
    assert waited < 1.5, f"sampling took {waited:.2f} s to stop"
    assert m.sample(5, seed=1, threads=threads).shape == (5, 3)
