"""ROOT interoperability with uproot, both directions, through the hepflow CLI.

* files uproot writes (an RNTuple with `f["events"] = {...}` and a TTree with `mktree`, with
  every compression) are read by `hepflow train` (a tiny model; it must see every event);
* files hepflow writes (`hepflow sample --out x.root`, a TTree) are read by uproot and hold
  the same values as the CSV hepflow writes for the same seed.

The binary is `$HEPFLOW_BIN` (default `target/debug/hepflow`); the tests skip when it or
uproot is missing. The Rust tests (`cargo test --lib io::root`) check the values of the
committed fixtures exactly (tests/fixtures/make_root_fixtures.py).
"""

import json
import os
import pathlib
import subprocess

import pytest

np = pytest.importorskip("numpy")
uproot = pytest.importorskip("uproot")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("HEPFLOW_BIN", ROOT / "target" / "debug" / "hepflow"))
if not BIN.is_absolute():
    BIN = ROOT / BIN
pytestmark = pytest.mark.skipif(not BIN.exists(), reason=f"hepflow binary not found at {BIN}")

N = 500


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def events():
    rng = np.random.default_rng(1)
    return {
        "a": rng.normal(size=N).astype(np.float32),
        "b": rng.normal(2.0, 0.5, size=N).astype(np.float64),
    }


def train(tmp_path, data, name):
    out = tmp_path / f"model_{name}"
    run("train", "--data", data, "--columns", "a,b", "--model", "realnvp", "--blocks", "2",
        "--hidden", "8", "--epochs", "1", "--val-fraction", "0.2", "--out", out)
    return out


@pytest.mark.parametrize("codec", ["zlib", "lz4", "lzma", "zstd", None])
@pytest.mark.parametrize("kind", ["rntuple", "ttree"])
def test_hepflow_reads_what_uproot_writes(tmp_path, codec, kind):
    if codec == "lz4":
        pytest.importorskip("lz4")
        pytest.importorskip("xxhash")
    if codec == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            pytest.importorskip("compression.zstd")
    comp = {"zlib": uproot.ZLIB(4), "lz4": uproot.LZ4(4), "lzma": uproot.LZMA(4),
            "zstd": uproot.ZSTD(4), None: None}[codec]
    p = tmp_path / f"{kind}_{codec}.root"
    with uproot.recreate(p, compression=comp) as f:
        if kind == "rntuple":
            f.mkrntuple("events", events())
        else:
            f.mktree("events", {k: v.dtype for k, v in events().items()})
            f["events"].extend(events())
    model = train(tmp_path, p, f"{kind}_{codec}")
    # The same events as CSV give the same model (same split, same initialisation).
    csv = tmp_path / "same.csv"
    d = events()
    np.savetxt(csv, np.column_stack([d["a"].astype(np.float64), d["b"].astype(np.float32).astype(np.float64)]),
               delimiter=",", header="a,b", comments="", fmt="%.9g")
    ref = train(tmp_path, csv, f"csv_{kind}_{codec}")
    w1 = (model / "model.safetensors").read_bytes() if (model / "model.safetensors").exists() else None
    w2 = (ref / "model.safetensors").read_bytes() if (ref / "model.safetensors").exists() else None
    assert w1 is not None and w1 == w2


def test_uproot_reads_what_hepflow_writes(tmp_path):
    p = tmp_path / "events.csv"
    d = events()
    np.savetxt(p, np.column_stack([d["a"], d["b"]]), delimiter=",", header="a,b", comments="")
    model = train(tmp_path, p, "src")
    run("sample", "--model", model, "-n", 300, "--seed", 3, "--out", tmp_path / "s.root")
    run("sample", "--model", model, "-n", 300, "--seed", 3, "--out", tmp_path / "s.csv")
    t = uproot.open(tmp_path / "s.root")["events"]
    got = t.arrays(library="np")
    want = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert set(got) == set(want.dtype.names)
    for k in got:
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], want[k].astype(np.float32))
