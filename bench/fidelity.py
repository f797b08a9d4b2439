#!/usr/bin/env python3
"""PyTorch side of the fidelity comparison (see bench/fidelity.sh and docs/FIDELITY.md).

For one class of the fixed split written by `cargo run --release --example fidelity -- split`,
trains nflows / zuko models on train.csv with early stopping on val.csv, computes the per-event
log-density of the test events in original units, draws as many events as the test split three
times (sampling seeds seed + 100 + k), and hands everything to the Rust `score` subcommand, which
applies exactly the metrics (and the C2ST) used for hepflow.

Preprocessing: hepflow's own. `fidelity prep` writes the train/val/test events mapped by the
preprocessing hepflow's `train` fits on train.csv, with log|det dz/dx| per event and a flag for
events outside the map's support (density zero); the models here train in that space, and `score
--model-space` maps their samples back with the same map. So log p(x) = log p_flow(z) + ladj is in
original units and every side sees the same space.

Models (D = 18, 10 blocks, conditioners with 128 hidden units):
- nsf:      nflows 10 x [LULinear (identity init), rational-quadratic coupling (alternating masks,
            8 bins, linear tails at +-5, ResidualNet 128 hidden, 2 residual blocks, dropout)]
- zuko-nsf: zuko.flows.NSF(18, transforms=10, bins=8, passes=2 (coupling), hidden (128, 128),
            residual=True): 10 x [rational-quadratic coupling, bound 5, masked residual MLP with
            the same layer sizes as nflows' ResidualNet]; dropout inserted in each residual block
            at the place nflows' ResidualNet has it (zuko has no dropout option); alternating
            orders, no LU layers (zuko's NSF has none)
- realnvp:  nflows 10 x [affine coupling, alternating half masks, MLP 2 x 128 ReLU]
- glow:     nflows 10 x [BatchNorm, LULinear, affine coupling (alternating masks, MLP 2 x 128 ReLU)]
  (nflows' MLP has no dropout: --dropout applies to nsf and zuko-nsf only)

Training budget, the knobs of hepflow's TrainOptions with the same values on every side: Adam
lr 1e-3, batch 512 (the last partial batch dropped), cosine decay per step to lr/100 over the
maximum number of epochs, gradient-norm clip 5, dropout in the conditioners (--dropout, hepflow's
default preset: 0.2), early stopping on the validation NLL (--patience epochs), best model kept,
the fixed validation split.
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

MODELS = ("nsf", "zuko-nsf", "realnvp", "glow")


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


def read_prep(path):
    """A `fidelity prep` file -> (feature names, z, ladj, outside_support)."""
    header, data = read_csv(path)
    if header[-2:] != ["ladj", "outside_support"]:
        raise ValueError(f"{path}: expected the last columns ladj,outside_support, got {header[-2:]}")
    return header[:-2], data[:, :-2], data[:, -2], data[:, -1] > 0.5


def build_nflows(name, dim, dropout, torch):
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
        return nets.ResidualNet(i, o, hidden_features=128, num_blocks=2, dropout_probability=dropout)

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
            raise ValueError(f"unknown nflows model {name!r}")
    flow = Flow(CompositeTransform(layers), StandardNormal([dim]))
    return flow, flow.log_prob, lambda n: flow.sample(n)


def build_zuko_nsf(dim, dropout, torch):
    import zuko

    flow = zuko.flows.NSF(dim, transforms=10, bins=8, passes=2, hidden_features=(128, 128), residual=True)
    if dropout > 0:
        # zuko's residual block is Residual(Linear, ReLU, Linear); nflows' ResidualNet applies its
        # dropout between the block's activation and its second linear layer: do the same.
        for t in flow.transform.transforms:
            hyper = getattr(t, "hyper", None)
            if hyper is None:
                continue
            for i, m in enumerate(hyper):
                if isinstance(m, zuko.nn.Residual):
                    parts = list(m)
                    hyper[i] = zuko.nn.Residual(*parts[:2], torch.nn.Dropout(dropout), *parts[2:])
    return flow, lambda z: flow().log_prob(z), lambda n: flow().sample((n,))


def build(name, dim, dropout, torch):
    if name == "zuko-nsf":
        return build_zuko_nsf(dim, dropout, torch)
    return build_nflows(name, dim, dropout, torch)


def side_name(name):
    return name if name.startswith("zuko-") else f"nflows-{name}"


def log_prob_np(log_prob, flow, z, torch, batch=4096):
    """Per-event log p_flow(z) (eval mode, no grad), float64 numpy."""
    out = []
    flow.eval()
    with torch.no_grad():
        for s in range(0, z.shape[0], batch):
            out.append(log_prob(torch.from_numpy(z[s : s + batch])).double().numpy())
    return np.concatenate(out)


def train_one(name, args, cls, seed, torch):
    cdir = os.path.join(args.split, cls)
    pdir = os.path.join(args.out, cls, "prep")
    names, z_train, _, _ = read_prep(os.path.join(pdir, "train.csv"))
    _, z_val, ladj_val, _ = read_prep(os.path.join(pdir, "val.csv"))
    _, z_test, ladj_test, out_test = read_prep(os.path.join(pdir, "test.csv"))
    dim = z_train.shape[1]
    label = side_name(name)
    tag = f"{cls}/{label}/seed{seed}"

    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    z_train = torch.from_numpy(z_train.astype(np.float32))
    z_val32 = z_val.astype(np.float32)
    flow, log_prob, sample = build(name, dim, args.dropout, torch)
    num_params = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr)
    n = z_train.shape[0]
    steps_per_epoch = max(1, n // args.batch_size)  # drop the last partial batch
    total_steps = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=args.lr * 0.01)
    gen = torch.Generator().manual_seed(seed)
    best_val, best_epoch, best_state, bad = math.inf, 0, None, 0
    epochs_run = 0
    for epoch in range(1, args.epochs + 1):
        te = time.perf_counter()
        flow.train()
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for s in range(steps_per_epoch):
            batch = z_train[perm[s * args.batch_size : (s + 1) * args.batch_size]]
            loss = -log_prob(batch).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), args.clip)
            opt.step()
            sched.step()
            tot += loss.item()
        val = -(log_prob_np(log_prob, flow, z_val32, torch) + ladj_val).mean()
        epochs_run = epoch
        improved = np.isfinite(val) and val < best_val
        if improved:
            best_val, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(flow.state_dict())
        else:
            bad += 1
        print(
            f"[{tag}] epoch {epoch:>3}  train {tot / steps_per_epoch:.4f} (model space)  val {val:.4f} (orig. units)"
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

    # Test log-densities in original units; zero density outside the map's support.
    lp = log_prob_np(log_prob, flow, z_test.astype(np.float32), torch) + ladj_test
    lp[out_test] = -np.inf
    out_dir = os.path.join(args.out, cls, f"{label}-seed{seed}")
    os.makedirs(out_dir, exist_ok=True)
    gen_paths = []
    dropped = 0
    for k in range(args.repeats):
        with torch.no_grad():
            torch.manual_seed(seed + 100 + k)
            z_gen = sample(z_test.shape[0]).double().numpy()
        finite = np.isfinite(z_gen).all(axis=1)
        dropped += int((~finite).sum())
        path = os.path.join(out_dir, f"generated_z_{k}.csv")
        write_csv(path, names, z_gen[finite])
        gen_paths.append(path)
    torch.save(flow.state_dict(), os.path.join(out_dir, "model.pt"))

    cmd = [
        args.score_bin,
        "score",
        "--test", os.path.join(cdir, "test.csv"),
        "--train", os.path.join(cdir, "train.csv"),
        "--model-space",
        "--generated", ",".join(gen_paths),
        "--name", label,
        "--class", cls,
        "--seconds", repr(seconds),
        "--epochs-run", str(epochs_run),
        "--best-epoch", str(best_epoch),
        "--num-params", str(num_params),
        "--seed", str(seed),
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
        print(f"[{tag}] {lp.size - f.size} test events with zero density skipped", file=sys.stderr)
        cmd += ["--nll", repr(-f.mean()), "--nll-err", repr(f.std(ddof=1) / math.sqrt(f.size))]
    if args.json:
        cmd += ["--json", args.json]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    line = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(line), flush=True)
    if dropped:
        print(f"[{tag}] {dropped} non-finite generated events dropped", file=sys.stderr)
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="directory written by the split subcommand")
    ap.add_argument("--classes", default="background,signal")
    ap.add_argument("--models", default="nsf,zuko-nsf", help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--dropout", type=float, default=0.2, help="conditioner dropout (nsf, zuko-nsf)")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--repeats", type=int, default=3, help="generated samples (C2ST seeds) per model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--score-bin", required=True, help="path of the built fidelity example")
    ap.add_argument("--out", required=True, help="output directory (prep files, generated events, models)")
    ap.add_argument("--json", help="append the result lines to this file")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (expected some of {','.join(MODELS)})")
    if not 0.0 <= args.dropout < 1.0:
        ap.error("--dropout must be in [0, 1)")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"[torch] torch {torch.__version__}, nflows {dist_version('nflows')}, zuko {dist_version('zuko')},"
        f" numpy {np.__version__}, threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    for cls in [c for c in args.classes.split(",") if c]:
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            for name in models:
                train_one(name, args, cls, seed, torch)


if __name__ == "__main__":
    main()
