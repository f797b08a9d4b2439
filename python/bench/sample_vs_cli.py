"""Python `model.sample(n)` against `hepflow sample -n n` on the same model, in one run.

Usage: python python/bench/sample_vs_cli.py MODEL_DIR HEPFLOW_BINARY [N]
Prints events/s of both (the CLI's time includes writing the .npy file to a temporary directory)
and checks that the bytes are identical.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hepflow


def main() -> None:
    model_dir, cli = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10**6
    model = hepflow.load(model_dir)
    model.sample(1000, seed=1, progress=False)  # warm-up (thread pool)
    t0 = time.perf_counter()
    x = model.sample(n, seed=1, progress=False)
    t_py = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.npy"
        t0 = time.perf_counter()
        subprocess.run([cli, "sample", "--model", model_dir, "-n", str(n), "--seed", "1", "--out", str(out)],
                       check=True, capture_output=True)
        t_cli = time.perf_counter() - t0
        same = np.load(out).tobytes() == x.tobytes()
    print(f"python sample: {n / t_py:,.0f} events/s ({t_py:.2f} s); "
          f"CLI sample (process + file): {n / t_cli:,.0f} events/s ({t_cli:.2f} s); identical bytes: {same}")


if __name__ == "__main__":
    main()
