"""Python `hepflow.train` against `hepflow train` on the same data and options, in one run (the
reference RealNVP, 8 couplings, 2 x 128, batch 1024, on the bundled background events).

Usage: python python/bench/train_vs_cli.py HEPFLOW_BINARY   (from the repository root)
Prints wall time and the summed epoch times of both, and whether the model files are identical.
"""

import pathlib
import subprocess
import sys
import tempfile
import time

import hepflow
cli = sys.argv[1]
kw = dict(format="higgs", features="higgs18", select=["label=0"], model="realnvp", blocks=8,
          epochs=4, batch_size=1024, patience=100, seed=3)
for rep in range(2):
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        hepflow.train("data/higgs_35k.csv.gz", out=f"{d}/py", progress=False, **kw)
        t_py = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([cli, "train", "--data", "data/higgs_35k.csv.gz", "--format", "higgs", "--preset", "higgs18",
                        "--select", "label=0", "--model", "realnvp", "--blocks", "8", "--epochs", "4",
                        "--batch-size", "1024", "--patience", "100", "--seed", "3", "--out", f"{d}/cli"],
                       check=True, capture_output=True)
        t_cli = time.perf_counter() - t0
        same = pathlib.Path(f"{d}/py/model.safetensors").read_bytes() == pathlib.Path(f"{d}/cli/model.safetensors").read_bytes()
        h = [l.split(",") for l in pathlib.Path(f"{d}/py/history.csv").read_text().splitlines()[1:]]
        hc = [l.split(",") for l in pathlib.Path(f"{d}/cli/history.csv").read_text().splitlines()[1:]]
        ep_py = sum(float(r[-1]) for r in h); ep_cli = sum(float(r[-1]) for r in hc)
        print(f"train 4 epochs: python {t_py:.2f} s (epochs {ep_py:.2f} s), CLI {t_cli:.2f} s (epochs {ep_cli:.2f} s), identical model: {same}")
