"""Jagged Parquet files written by awkward (`ak.to_parquet`, its defaults: zstd, `large_list`),
read by the hepflow CLI with `--columns Jet_pt[1],...`: hepflow must see exactly the values
awkward gives for the same selection. A tiny model trained on the Parquet file and one trained on
a CSV of awkward's values (same split, same initialisation) must have identical weights, both
when events without the element are dropped and with `--fill`.

The binary is `$HEPFLOW_BIN` (default `target/debug/hepflow`); the tests skip when it, awkward
or pyarrow is missing. The Rust tests (`cargo test --lib io::parquet`) check the committed
fixtures exactly (tests/fixtures/parquet/make_jagged_fixtures.py).
"""

import os
import pathlib
import subprocess

import pytest

np = pytest.importorskip("numpy")
ak = pytest.importorskip("awkward")
pytest.importorskip("pyarrow")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("HEPFLOW_BIN", ROOT / "target" / "debug" / "hepflow"))
if not BIN.is_absolute():
    BIN = ROOT / BIN
pytestmark = pytest.mark.skipif(not BIN.exists(), reason=f"hepflow binary not found at {BIN}")

N = 400


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def jets():
    rng = np.random.default_rng(7)
    n = rng.poisson(1.5, N)
    pt = ak.unflatten(rng.exponential(30.0, n.sum()).astype(np.float32) + 20, n)
    eta = ak.unflatten(rng.normal(0.0, 1.5, n.sum()), n)  # float64
    met = rng.exponential(40.0, N).astype(np.float32)
    return pt, eta, met


def train(tmp_path, data, columns, name, *extra):
    out = tmp_path / f"model_{name}"
    run("train", "--data", data, "--columns", columns, "--model", "realnvp", "--blocks", "2",
        "--hidden", "8", "--epochs", "1", "--val-fraction", "0.2", "--out", out, *extra)
    return (out / "model.safetensors").read_bytes()


@pytest.mark.parametrize("fill", [None, -1.0])
@pytest.mark.parametrize("layout", ["flat", "records"])
def test_jagged_selection_matches_awkward(tmp_path, layout, fill):
    pt, eta, met = jets()
    p = tmp_path / f"{layout}.parquet"
    if layout == "flat":
        ak.to_parquet(ak.Array({"Jet_pt": pt, "Jet_eta": eta, "MET_pt": met}), p)
        cols = "Jet_pt[1],Jet_eta[0],MET_pt"
    else:
        ak.to_parquet(ak.Array({"Jet": ak.zip({"pt": pt, "eta": eta}), "MET_pt": met}), p)
        cols = "Jet.pt[1],Jet.eta[0],MET_pt"
    # awkward's answer for the same selection.
    if fill is None:
        keep = ak.num(pt) >= 2
        want = [pt[keep][:, 1], eta[keep][:, 0], met[ak.to_numpy(keep)]]
        extra = ()
    else:
        want = [ak.fill_none(ak.pad_none(x, k + 1)[:, k], fill) for x, k in ((pt, 1), (eta, 0))]
        want.append(met)
        extra = ("--fill", fill)
    want = np.column_stack([np.asarray(ak.to_numpy(w), dtype=np.float32) for w in want])
    assert 0 < len(want) <= N
    csv = tmp_path / "same.csv"
    np.savetxt(csv, want.astype(np.float64), delimiter=",", header="a,b,c", comments="", fmt="%.9g")
    got = train(tmp_path, p, cols, f"pq_{layout}", *extra)
    ref = train(tmp_path, csv, "a,b,c", f"csv_{layout}")
    assert got == ref
    # `hepflow info` lists the list columns with their element counts.
    info = run("info", "--data", p).stdout
    name = "Jet_pt" if layout == "flat" else "Jet.pt"
    lo, hi = int(ak.min(ak.num(pt))), int(ak.max(ak.num(pt)))
    assert any(line.startswith(name) and f"{lo} to {hi}" in line for line in info.splitlines()), info
