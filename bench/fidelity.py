#!/usr/bin/env python3
"""nflows side of the fidelity comparison (see bench/fidelity.sh and docs/FIDELITY.md).

For one class of the fixed split written by `cargo run --release --example fidelity -- split`,
trains nflows models on train.csv with early stopping on val.csv, then on test.csv computes the
per-event log-density in original units, samples as many events as the test split, and hands
both to the Rust `score` subcommand, which applies exactly the metrics used for hepflow.

Models (D = 18, 10 blocks, conditioners with 128 hidden units):
- realnvp: 10 x [affine coupling, alternating half masks, MLP 2 x 128 ReLU]
- glow:    10 x [BatchNorm, LULinear, affine coupling (alternating masks, MLP 2 x 128 ReLU)]
- nsf:     10 x [LULinear, rational-quadratic coupling (alternating masks, 8 bins,
           linear tails at +-5, ResidualNet 128 hidden, 2 residual blocks)]

Preprocessing (the seminar's, as hepflow does it), fitted on train.csv only, in float64:
    u = (clip(x, min, max) - lo) / (hi - lo),  lo = min - 0.05 (max - min),  hi = max + 0.05 (max - min)
    y = log(u / (1 - u)),  z = (y - mean(y)) / std(y)   (population std)
    log|dz/dx| = sum_j [-log(hi - lo) - log(u (1 - u)) - log std]
so that log p(x) = log p_flow(z) + log|dz/dx| is in original units. Test values outside the
training range are evaluated at the nearest end of the range (clip), as hepflow does.

Training: Adam lr 1e-3, batch 512, cosine decay per step to 1e-5 over the maximum number of
epochs, gradient-norm clip 5, early stopping on the validation NLL (patience epochs), best model
kept. These are hepflow's TrainConfig defaults.
"""

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version as pkg_version

import numpy as np

MARGIN = 0.05
U_CLAMP = 1e-7


def dist_version(name):
    try:
        return pkg_version(name)
    except PackageNotFoundError:
        return "unknown"


def read_csv(path):
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return header, data


def write_csv(path, header, data):
    np.savetxt(path, data, delimiter=",", header=",".join(header), comments="", fmt="%.9g")


class Preprocessor:
    """min-max (5% margin) -> logit -> standardisation, with its exact log-determinant."""

    def __init__(self, x):
        self.mn = x.min(axis=0)
        self.mx = x.max(axis=0)
        width = self.mx - self.mn
        if np.any(width <= 0):
            raise ValueError("a feature is constant on the training split")
        self.lo = self.mn - MARGIN * width
        self.hi = self.mx + MARGIN * width
        y, _ = self._logit(x)
        self.mean = y.mean(axis=0)
        self.std = y.std(axis=0)

    def _logit(self, x):
        xc = np.clip(x, self.mn, self.mx)
        u = np.clip((xc - self.lo) / (self.hi - self.lo), U_CLAMP, 1.0 - U_CLAMP)
        return np.log(u) - np.log1p(-u), u

    def forward(self, x):
        y, u = self._logit(x)
        z = (y - self.mean) / self.std
        ladj = (-np.log(self.hi - self.lo) - np.log(u) - np.log1p(-u) - np.log(self.std)).sum(axis=1)
        return z, ladj

    def inverse(self, z):
        y = z * self.std + self.mean
        u = 0.5 * (1.0 + np.tanh(0.5 * y))  # sigmoid, overflow-free
        return self.lo + u * (self.hi - self.lo)


def build_flow(name, dim, torch):
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn import nets
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import (
        AffineCouplingTransform,
        PiecewiseRationalQuadraticCouplingTransform,
    )
    from nflows.transforms.lu import LULinear
    from nflows.transforms.normalization import BatchNorm
    from nflows.utils import torchutils

    class Mlp(torch.nn.Module):
        """nflows' MLP 2 x 128 ReLU, with the (ignored) context argument couplings pass."""

        def __init__(self, i, o):
            super().__init__()
            self.net = nets.MLP([i], [o], hidden_sizes=[128, 128])

        def forward(self, x, context=None):
            return self.net(x)

    def mlp(i, o):
        return Mlp(i, o)

    def resnet(i, o):
        return nets.ResidualNet(i, o, hidden_features=128, num_blocks=2)

    layers = []
    for b in range(10):
        mask = torchutils.create_alternating_binary_mask(dim, even=(b % 2 == 0))
        if name == "realnvp":
            layers.append(AffineCouplingTransform(mask=mask, transform_net_create_fn=mlp))
        elif name == "glow":
            layers.append(BatchNorm(dim))
            layers.append(LULinear(dim, identity_init=True))
            layers.append(AffineCouplingTransform(mask=mask, transform_net_create_fn=mlp))
        elif name == "nsf":
            layers.append(LULinear(dim, identity_init=True))
            layers.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask=mask,
                    transform_net_create_fn=resnet,
                    num_bins=8,
                    tails="linear",
                    tail_bound=5.0,
                )
            )
        else:
            raise ValueError(f"unknown model {name!r} (realnvp, glow, nsf)")
    return Flow(CompositeTransform(layers), StandardNormal([dim]))


def mean_log_prob(flow, z, torch, batch=4096):
    """Per-event log p_flow(z) (eval mode, no grad), float64 numpy."""
    out = []
    with torch.no_grad():
        for s in range(0, z.shape[0], batch):
            out.append(flow.log_prob(torch.from_numpy(z[s : s + batch])).double().numpy())
    return np.concatenate(out)


def train_one(name, args, cls, torch):
    cdir = os.path.join(args.split, cls)
    header, x_train = read_csv(os.path.join(cdir, "train.csv"))
    _, x_val = read_csv(os.path.join(cdir, "val.csv"))
    _, x_test = read_csv(os.path.join(cdir, "test.csv"))
    dim = x_train.shape[1]
    tag = f"{cls}/nflows-{name}"

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    t0 = time.perf_counter()
    pre = Preprocessor(x_train)
    z_train, ladj_train = pre.forward(x_train)
    z_val, ladj_val = pre.forward(x_val)
    z_train = torch.from_numpy(z_train.astype(np.float32))
    z_val32 = z_val.astype(np.float32)
    flow = build_flow(name, dim, torch)
    num_params = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr)
    n = z_train.shape[0]
    steps_per_epoch = max(1, n // args.batch_size)  # drop the last partial batch
    total_steps = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=args.lr * 0.01)
    gen = torch.Generator().manual_seed(args.seed)
    best_val, best_epoch, best_state, bad = math.inf, 0, None, 0
    epochs_run = 0
    for epoch in range(1, args.epochs + 1):
        te = time.perf_counter()
        flow.train()
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for s in range(steps_per_epoch):
            batch = z_train[perm[s * args.batch_size : (s + 1) * args.batch_size]]
            loss = -flow.log_prob(batch).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), args.clip)
            opt.step()
            sched.step()
            tot += loss.item()
        flow.eval()
        val = -mean_log_prob(flow, z_val32, torch).mean() - ladj_val.mean()
        epochs_run = epoch
        improved = np.isfinite(val) and val < best_val
        if improved:
            best_val, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(flow.state_dict())
        else:
            bad += 1
        print(
            f"[{tag}] epoch {epoch:>3}  train {tot / steps_per_epoch:.4f}  val {val:.4f} (orig. units)"
            f"  lr {sched.get_last_lr()[0]:.2e}  {time.perf_counter() - te:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if bad >= args.patience:
            break
    if best_state is not None:
        flow.load_state_dict(best_state)
    flow.eval()
    seconds = time.perf_counter() - t0

    # Test NLL in original units.
    z_test, ladj_test = pre.forward(x_test)
    lp = mean_log_prob(flow, z_test.astype(np.float32), torch) + ladj_test
    # Generated events, as many as the test split.
    n_gen = x_test.shape[0]
    with torch.no_grad():
        torch.manual_seed(args.seed + 100)
        z_gen = flow.sample(n_gen).double().numpy()
    x_gen = pre.inverse(z_gen)
    finite = np.isfinite(x_gen).all(axis=1)
    out_dir = os.path.join(args.out, cls, f"nflows-{name}")
    os.makedirs(out_dir, exist_ok=True)
    gen_path = os.path.join(out_dir, "generated.csv")
    write_csv(gen_path, header, x_gen[finite])
    torch.save(flow.state_dict(), os.path.join(out_dir, "model.pt"))

    cmd = [
        args.score_bin,
        "score",
        "--test",
        os.path.join(cdir, "test.csv"),
        "--generated",
        gen_path,
        "--name",
        f"nflows-{name}",
        "--class",
        cls,
        "--seconds",
        repr(seconds),
        "--epochs-run",
        str(epochs_run),
        "--best-epoch",
        str(best_epoch),
        "--num-params",
        str(num_params),
    ]
    if args.threads:
        cmd[1:1] = ["--threads", str(args.threads)]
    if np.isfinite(lp).all():
        lp_path = os.path.join(out_dir, "test_log_prob.csv")
        write_csv(lp_path, ["log_prob"], lp[:, None])
        cmd += ["--log-prob", lp_path]
    else:
        # Same estimator as hepflow's mean_nll: finite values only, n - 1 in the std.
        f = lp[np.isfinite(lp)]
        print(f"[{tag}] {lp.size - f.size} non-finite test log-densities skipped", file=sys.stderr)
        cmd += ["--nll", repr(-f.mean()), "--nll-err", repr(f.std(ddof=1) / math.sqrt(f.size))]
    if args.json:
        cmd += ["--json", args.json]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    line = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(line), flush=True)
    if (~finite).any():
        print(f"[{tag}] {(~finite).sum()} non-finite generated events dropped", file=sys.stderr)
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="directory written by the split subcommand")
    ap.add_argument("--classes", default="background,signal")
    ap.add_argument("--models", default="realnvp,glow,nsf")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--score-bin", required=True, help="path of the built fidelity example")
    ap.add_argument("--out", required=True, help="output directory (generated events, models)")
    ap.add_argument("--json", help="append the result lines to this file")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"[nflows] torch {torch.__version__}, nflows {dist_version('nflows')}, numpy {np.__version__},"
        f" threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    for cls in [c for c in args.classes.split(",") if c]:
        for name in [m for m in args.models.split(",") if m]:
            train_one(name, args, cls, torch)


if __name__ == "__main__":
    main()
