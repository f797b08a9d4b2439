"""The README's Python example runs as written (on small synthetic ROOT files, with fewer epochs
and events so that it takes seconds)."""

import pathlib
import re

import numpy as np
import pytest

uproot = pytest.importorskip("uproot")

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _events(rng, n):
    label = (rng.random(n) < 0.5).astype(np.int32)
    return {
        "lep_pt": rng.exponential(40.0, n) + 20.0,
        "met": rng.exponential(30.0, n),
        "m_bb": rng.normal(120.0, 15.0, n) + 10.0 * label,
        "label": label,
    }


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    rng = np.random.default_rng(0)
    monkeypatch.chdir(tmp_path)
    with uproot.recreate("mc.root") as f:
        f["Events"] = _events(rng, 1200)
    with uproot.recreate("heldout.root") as f:
        f["Events"] = _events(rng, 600)
    for code in blocks:
        small = code.replace("1_000_000", "2_000").replace("epochs=100", "epochs=2")
        scope = {}
        exec(compile(small, "README.md", "exec"), scope)
        assert scope["x"].shape == (2_000, 3)
        lp = scope["lp"]
        # -inf marks events outside the model's support (here: signal events beyond the
        # background's range); never NaN.
        assert not np.isnan(lp).any()
        assert np.isfinite(lp).mean() > 0.9
        assert 0.0 <= scope["report"]["c2st_auc"] <= 1.0
        assert (tmp_path / "bkg" / "model.json").exists()
        assert (tmp_path / "report" / "metrics.json").exists()
