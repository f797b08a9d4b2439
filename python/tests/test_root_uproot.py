"""ROOT interoperability with uproot, both directions, through the hepflow CLI.

* files uproot writes (an RNTuple with `f["events"] = {...}` and a TTree with `mktree`, with
  every compression) are read by `hepflow train` (a tiny model; it must see every event);
* files hepflow writes (`hepflow sample --out x.root`, a TTree, or an RNTuple with
  `--root-format rntuple`) are read by uproot and hold the same values as the CSV hepflow
  writes for the same seed; the RNTuple and the TTree hold the same bits.

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


def source_model(tmp_path):
    p = tmp_path / "events.csv"
    d = events()
    np.savetxt(p, np.column_stack([d["a"], d["b"]]), delimiter=",", header="a,b", comments="")
    return train(tmp_path, p, "src")


@pytest.mark.parametrize("root_format", [None, "ttree", "rntuple"])
def test_uproot_reads_what_hepflow_writes(tmp_path, root_format):
    model = source_model(tmp_path)
    extra = [] if root_format is None else ["--root-format", root_format]
    run("sample", "--model", model, "-n", 300, "--seed", 3, "--out", tmp_path / "s.root", *extra)
    run("sample", "--model", model, "-n", 300, "--seed", 3, "--out", tmp_path / "s.csv")
    f = uproot.open(tmp_path / "s.root")
    assert f.classnames() == {"events;1": "ROOT::RNTuple" if root_format == "rntuple" else "TTree"}
    t = f["events"]
    got = t.arrays(library="np")
    want = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert set(got) == set(want.dtype.names)
    for k in got:
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], want[k].astype(np.float32))


def test_rntuple_and_ttree_hold_the_same_bits(tmp_path):
    """Enough events for several pages per column; uproot reads the zstd RNTuple hepflow
    streams (split floats, page checksums) and the TTree with identical bits, also in chunks."""
    model = source_model(tmp_path)
    n = 200_000
    for fmt in ["rntuple", "ttree"]:
        run("sample", "--model", model, "-n", n, "--seed", 5, "--batch", 7777,
            "--out", tmp_path / f"{fmt}.root", "--root-format", fmt)
    nt = uproot.open(tmp_path / "rntuple.root")["events"]
    tt = uproot.open(tmp_path / "ttree.root")["events"]
    assert nt.num_entries == tt.num_entries == n
    a, b = nt.arrays(library="np"), tt.arrays(library="np")
    assert sorted(a) == sorted(b) == ["a", "b"]
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k].view(np.uint32), b[k].view(np.uint32))
    start = 0
    for chunk in nt.iterate(step_size=65_000, library="np"):
        m = len(chunk["a"])
        np.testing.assert_array_equal(chunk["a"], b["a"][start:start + m])
        start += m
    assert start == n
    # hepflow reads its own RNTuple back: the same model input as the TTree.
    assert "200000" in run("info", "--data", tmp_path / "rntuple.root").stdout


def test_bad_root_format_names_the_option_and_choices(tmp_path):
    model = source_model(tmp_path)
    r = subprocess.run([str(BIN), "sample", "--model", str(model), "-n", "10", "--out",
                        str(tmp_path / "x.root"), "--root-format", "rntupel"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "--root-format" in r.stderr and "ttree" in r.stderr and "rntuple" in r.stderr, r.stderr
    assert not (tmp_path / "x.root").exists()
    r = subprocess.run([str(BIN), "sample", "--model", str(model), "-n", "10", "--out",
                        str(tmp_path / "x.csv"), "--root-format", "rntuple"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--root-format" in r.stderr and "x.csv" in r.stderr, r.stderr
    assert not (tmp_path / "x.csv").exists()
