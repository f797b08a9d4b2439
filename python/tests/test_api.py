"""The public API on well-formed inputs: shapes, dtypes, layouts, formats, the CLI's bytes."""

from __future__ import annotations

import json
import pydoc
import re
import subprocess

import numpy as np
import pytest

import hepflow
from conftest import make_events

COLS = ["pt", "eta", "mass"]


def matrix(events, dtype=np.float64, order="C"):
    return np.array(np.column_stack([events[c] for c in COLS]), dtype=dtype, order=order)


def test_sample_shape_dtype_and_reproducibility(model):
    x = model.sample(1000, seed=1, progress=False)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (1000, 3)
    assert np.isfinite(x).all()
    assert np.array_equal(x, model.sample(1000, seed=1, progress=False))
    assert not np.array_equal(x, model.sample(1000, seed=2, progress=False))
    # Event i depends only on (model, seed, i): a prefix is a prefix.
    assert np.array_equal(x[:10], model.sample(10, seed=1, progress=False))
    assert model.sample(0, seed=1).shape == (0, 3)


def test_columns_info_repr(model):
    assert model.columns == COLS
    assert model.context_columns == []
    info = model.info()
    assert info["architecture"] == "made-mog"
    assert info["features"] == COLS and info["parameters"] > 0
    assert info["training"]["n_events"] == 600
    assert "made-mog" in repr(model)


def test_log_prob_every_layout_gives_the_same_values(model, events):
    ref = model.log_prob(matrix(events, np.float32))
    assert ref.dtype == np.float64 and ref.shape == (600,) and np.isfinite(ref).all()
    variants = {
        "float64 C": matrix(events),
        "float32 Fortran": matrix(events, np.float32, "F"),
        "float64 Fortran": matrix(events, np.float64, "F"),
        "dict (uproot)": events,
        "non-contiguous": np.repeat(matrix(events, np.float32), 2, axis=0)[::2],
        "column subset view": np.column_stack([matrix(events, np.float32), np.zeros(600)])[:, :3],
    }
    ro = matrix(events, np.float32)
    ro.setflags(write=False)
    variants["read-only"] = ro
    for name, v in variants.items():
        np.testing.assert_array_equal(model.log_prob(v), ref, err_msg=name)


def test_integer_arrays_are_converted(model):
    ints = np.array([[1, 0, 1], [2, 1, 1], [0, 0, 2]], dtype=np.int64)
    lp = model.log_prob(ints)
    np.testing.assert_array_equal(lp, model.log_prob(ints.astype(np.float32)))


def test_dataframe_in_dataframe_out(events):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(events)
    m = hepflow.train(df, columns=COLS, epochs=1, blocks=1, hidden=[8], progress=False)
    s = m.sample(50, seed=0, progress=False)
    assert isinstance(s, pd.DataFrame) and list(s.columns) == COLS and s.dtypes.iloc[0] == np.float32
    # columns picked by name, in any order, extra columns ignored
    lp = m.log_prob(df[["mass", "label", "pt", "eta"]])
    np.testing.assert_array_equal(lp, m.log_prob(matrix(events)))
    assert isinstance(m.sample(5, as_frame=False), np.ndarray)


def test_save_load_and_files(model, model_dir, tmp_path, events):
    assert (model_dir / "model.json").is_file() and (model_dir / "model.safetensors").is_file()
    m2 = hepflow.load(model_dir)
    assert np.array_equal(m2.sample(500, seed=7), model.sample(500, seed=7))
    np.save(tmp_path / "ev.npy", matrix(events, np.float32))
    np.testing.assert_array_equal(model.log_prob(tmp_path / "ev.npy"), model.log_prob(events))
    # a CSV with a header names the columns
    np.savetxt(tmp_path / "ev.csv", matrix(events, np.float32), delimiter=",", header="pt,eta,mass", comments="")
    lp = model.log_prob(str(tmp_path / "ev.csv"))
    np.testing.assert_allclose(lp, model.log_prob(events), rtol=1e-5)


def test_train_from_file_matches_train_from_array(tmp_path, events):
    x = matrix(events, np.float32)
    np.save(tmp_path / "ev.npy", x)
    a = hepflow.train(x, epochs=1, blocks=1, hidden=[8], progress=False)
    b = hepflow.train(tmp_path / "ev.npy", epochs=1, blocks=1, hidden=[8], progress=False)
    assert a.columns == b.columns == ["col0", "col1", "col2"]
    assert np.array_equal(a.sample(100, seed=3), b.sample(100, seed=3))


def test_python_and_cli_sample_the_same_bytes(model, model_dir, tmp_path, cli):
    out = tmp_path / "cli.npy"
    subprocess.run(
        [cli, "sample", "--model", str(model_dir), "-n", "70000", "--seed", "5", "--out", str(out)],
        check=True, capture_output=True,
    )
    from_cli = np.load(out)
    from_py = model.sample(70000, seed=5, progress=False)
    assert from_cli.dtype == from_py.dtype and from_cli.shape == from_py.shape
    assert from_cli.tobytes() == from_py.tobytes()


def test_cli_trained_model_loads_in_python(tmp_path, cli, events):
    np.savetxt(tmp_path / "ev.csv", matrix(events, np.float32), delimiter=",", header="pt,eta,mass", comments="")
    d = tmp_path / "cli_model"
    subprocess.run(
        [cli, "train", "--data", str(tmp_path / "ev.csv"), "--epochs", "1", "--blocks", "1",
         "--hidden", "8", "--out", str(d)],
        check=True, capture_output=True,
    )
    m = hepflow.load(d)
    assert m.columns == COLS
    subprocess.run(
        [cli, "sample", "--model", str(d), "-n", "300", "--seed", "9", "--out", str(tmp_path / "s.npy")],
        check=True, capture_output=True,
    )
    assert np.load(tmp_path / "s.npy").tobytes() == m.sample(300, seed=9).tobytes()


def test_conditional_model(cond_model, events):
    assert cond_model.context_columns == ["label"]
    s1 = cond_model.sample(2000, seed=0, condition={"label": 1}, progress=False)
    s0 = cond_model.sample(2000, seed=0, condition=0, progress=False)
    assert s1.shape == (2000, 3) and not np.array_equal(s0, s1)
    per_event = cond_model.sample(4, seed=0, condition={"label": np.array([1, 1, 0, 0])})
    np.testing.assert_array_equal(per_event[:2], s1[:2])
    np.testing.assert_array_equal(per_event[2:], s0[2:4])
    lp = cond_model.log_prob(events)  # context taken from the events' label column
    assert lp.shape == (600,) and np.isfinite(lp).all()
    np.testing.assert_array_equal(lp, cond_model.log_prob(matrix(events), condition=events["label"].reshape(-1, 1)))


def test_evaluate_writes_report(model, tmp_path):
    ref = make_events(400, seed=1)
    metrics = hepflow.evaluate(model, ref, n=400, out=tmp_path / "rep")
    assert 0.0 <= metrics["c2st_auc"] <= 1.0 and np.isfinite(metrics["test_nll"])
    assert [f["name"] for f in metrics["features"]] == COLS
    on_disk = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert on_disk["c2st_auc"] == metrics["c2st_auc"]
    assert (tmp_path / "rep" / "report.html").is_file()


def test_help_lists_options_with_defaults():
    text = pydoc.render_doc(hepflow.train, renderer=pydoc.plaintext)
    for opt in [r"epochs: 'int' = 200", r"model: 'str' = 'made-mog'", r"seed: 'int' = 0",
                r"progress: 'bool' = True", r"batch_size \(default 512\)", r"lr \(default 0.001\)",
                r"val_fraction \(default 0.2\)", r"schedule \(default cosine\)", r"weight \(default none\)", r"hidden", r"bins"]:
        assert re.search(opt, text), opt
    for f in (hepflow.train, hepflow.load, hepflow.evaluate, hepflow.Model.sample,
              hepflow.Model.log_prob, hepflow.Model.save, hepflow.Model.info):
        assert f.__doc__ and len(f.__doc__) > 40, f


def test_progress_bar_goes_to_stderr_and_can_be_disabled(events, capfd):
    x = matrix(events, np.float32)
    hepflow.train(x, epochs=1, blocks=1, hidden=[8], progress=True)
    assert "epoch" in capfd.readouterr().err
    hepflow.train(x, epochs=1, blocks=1, hidden=[8], progress=False)
    assert capfd.readouterr().err == ""
