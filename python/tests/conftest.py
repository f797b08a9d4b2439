"""Shared fixtures: small synthetic event tables and two quickly trained models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import hepflow

ROOT = Path(__file__).resolve().parents[2]


def make_events(n: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    """Three correlated continuous features and a 0/1 label, as uproot would return them."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int32)
    a = rng.normal(1.0 + label, 1.0, n)
    b = 0.5 * a + rng.normal(0.0, 0.5, n)
    c = np.exp(rng.normal(0.0, 0.3, n))
    return {
        "pt": a.astype(np.float32),
        "eta": b.astype(np.float32),
        "mass": c.astype(np.float32),
        "label": label,
    }


@pytest.fixture(scope="session")
def events() -> dict[str, np.ndarray]:
    return make_events()


@pytest.fixture(scope="session")
def model(events, tmp_path_factory) -> hepflow.Model:
    out = tmp_path_factory.mktemp("model")
    return hepflow.train(
        events, columns=["pt", "eta", "mass"], epochs=2, blocks=2, hidden=[16], out=out, progress=False
    )


@pytest.fixture(scope="session")
def model_dir(model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("saved") / "m"
    model.save(d)
    return d


@pytest.fixture(scope="session")
def cond_model(events) -> hepflow.Model:
    return hepflow.train(
        events, columns=["pt", "eta", "mass"], condition="label", epochs=2, blocks=2, hidden=[16],
        progress=False,
    )


@pytest.fixture(scope="session")
def cli() -> str:
    """The `hepflow` binary that `cargo test`/`cargo build` leave in the shared target dir."""
    env = os.environ.get("HEPFLOW_CLI")
    candidates = [env] if env else []
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    candidates += [str(target / "debug" / "hepflow"), str(target / "release" / "hepflow")]
    candidates.append(shutil.which("hepflow") or "")
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    pytest.skip("no hepflow binary: run `cargo build` first or set HEPFLOW_CLI")
