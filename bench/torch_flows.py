#!/usr/bin/env python3
"""PyTorch side of the hepflow benchmark: nflows and zuko flows (see bench/README.md).

Models (`--model`, D = 18 HIGGS "higgs18" features, standardised, Adam lr 1e-3):
- realnvp (reference): 8 affine coupling layers (alternating half masks, a fixed random
  permutation between consecutive couplings, as hepflow's `realnvp` preset), conditioner MLP
  2 x 128 ReLU; zuko: zuko.flows.RealNVP(18, transforms=8, hidden (128, 128), ReLU).
- nsf: nflows' NSF, 10 x [LULinear (identity init), rational-quadratic coupling (alternating
  masks, 8 bins, linear tails, tail_bound 5), ResidualNet(hidden 128, 2 blocks)]; zuko:
  zuko.flows.NSF(18, transforms=10, bins=8, passes=2 (coupling), hidden (128, 128),
  residual=True): the same conditioner layer sizes, no LU layers.
- glow: nflows 10 x [BatchNorm, LULinear, affine coupling (half masks alternating as hepflow's
  `glow` preset, MLP 2 x 128 ReLU)], hepflow's glow preset layer for layer; zuko has no Glow
  (no batch-norm or LU layer among its flows), so its side is reported as skipped.
- maf: nflows 10 x [MaskedAffineAutoregressiveTransform(hidden 128, 1 feed-forward block, i.e.
  a MADE 18 -> 128 -> 128 -> 36, no residual blocks)], with a ReversePermutation before the
  second block and a RandomPermutation before every later one (hepflow's maf preset orders:
  identity, reversed, then random); zuko: zuko.flows.MAF(18, transforms=10, hidden (128, 128))
  (ascending / descending orders alternating).
- mog-made: nflows' MixtureOfGaussiansMADE(18, hidden 256, num_blocks=1, no residual blocks,
  10 components), i.e. a MADE 18 -> 256 -> 256 -> 540, hepflow's made-mog preset; sampled by its
  own per-feature loop (D full MADE passes) without a context. zuko has none (skipped).

Timing protocol (same as examples/benchmark.rs):
- training: 5 warm-up steps, then 3 repeats of 30 steps (forward log_prob + backward + Adam
  step); the step time is the median over the repeats; events/s = batch / step time.
- sampling: warm-up on 10,000 events, then one timed run of --samples events under no_grad.

Prints one JSON object per line.
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
from importlib.metadata import PackageNotFoundError, version as pkg_version

# HIGGS column order (after the label): 0 lepton_pT, 1 lepton_eta, 2 lepton_phi,
# 3 missing_energy_magnitude, 4 missing_energy_phi, 5 jet1_pt, 6 jet1_eta, 7 jet1_phi,
# 8 jet1_b-tag, 9..12 jet2 (pt, eta, phi, b-tag), 13..16 jet3, 17..20 jet4,
# 21..27 m_jj, m_jjj, m_lv, m_jlv, m_bb, m_wbb, m_wwbb.
PHI = [2, 4, 7, 11, 15, 19]
BTAG = [8, 12, 16, 20]
HIGGS18 = [i for i in range(28) if i not in PHI and i not in BTAG]
assert len(HIGGS18) == 18

WARMUP_STEPS = 5
REPEATS = 3
STEPS = 30
N_SAMPLE_WARMUP = 10_000


def load_higgs18(path):
    """Label-first HIGGS CSV (gzip or plain) -> standardised float32 (n, 18)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float64)
    x = raw[:, 1:][:, HIGGS18]
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    return ((x - mu) / sd).astype(np.float32)


def dist_version(name):
    try:
        return pkg_version(name)
    except PackageNotFoundError:
        return "unknown"


def emit(obj):
    print(json.dumps(obj), flush=True)


def time_training(step_fn, data, torch, batch):
    n = data.shape[0]
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    # Pre-build the batches so that the timed loop only trains.
    n_batches = n // batch
    batches = [torch.from_numpy(data[order[i * batch:(i + 1) * batch]]) for i in range(n_batches)]
    k = 0
    for _ in range(WARMUP_STEPS):
        step_fn(batches[k % n_batches])
        k += 1
    times = []
    cpu_times = []
    loss = float("nan")
    for _ in range(REPEATS):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            loss = step_fn(batches[k % n_batches])
            k += 1
        times.append((time.perf_counter() - t0) / STEPS)
        cpu_times.append((time.process_time() - c0) / STEPS)
    return statistics.median(times), times, statistics.median(cpu_times), cpu_times, loss


def time_sampling(sample_fn, n_sample):
    """Median wall and CPU seconds of REPEATS draws of n_sample events (after a warm-up draw),
    their lists, and whether every value drawn was finite (as hepflow's benchmark does)."""
    sample_fn(N_SAMPLE_WARMUP)
    times, cpu_times, finite = [], [], True
    for _ in range(REPEATS):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = sample_fn(n_sample)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if tuple(out.shape) != (n_sample, 18):
            raise RuntimeError(f"sample shape {tuple(out.shape)}")
        finite = finite and bool(np.isfinite(out.numpy()).all())
        del out
    return statistics.median(times), times, statistics.median(cpu_times), cpu_times, finite


def mlp_net_fn(torch, hidden):
    """`transform_net_create_fn` of an nflows coupling: nflows' own MLP (Linear -> ReLU -> ... ->
    Linear, `hidden` widths).

    The coupling transform calls its net as `net(inputs, context)`, but `nflows.nn.nets.MLP`
    takes only `inputs`: a thin wrapper drops the (always None) context.
    """
    from nflows.nn.nets import MLP

    class Conditioner(torch.nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.mlp = MLP((in_features,), (out_features,), hidden_sizes=list(hidden))

        def forward(self, inputs, context=None):
            return self.mlp(inputs)

    return Conditioner


def half_mask(torch, d, k):
    """hepflow's half_mask(dim, flip = k odd): the first half transformed, or the second half."""
    mask = torch.zeros(d)
    if k % 2 == 0:
        mask[: d // 2] = 1
    else:
        mask[d // 2:] = 1
    return mask


def build_nflows(torch, hidden):
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.permutations import RandomPermutation

    d = 18
    layers = []
    for k in range(8):
        if k > 0:
            layers.append(RandomPermutation(d))
        layers.append(AffineCouplingTransform(half_mask(torch, d, k), mlp_net_fn(torch, hidden)))
    return Flow(CompositeTransform(layers), StandardNormal([d]))


def build_nflows_glow(torch):
    """hepflow's glow preset in nflows: 10 x [BatchNorm, LULinear, AffineCouplingTransform with
    hepflow's half masks and nflows' MLP 2 x 128 ReLU] (as bench/fidelity.py's glow peer)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.lu import LULinear
    from nflows.transforms.normalization import BatchNorm

    d = 18
    layers = []
    for b in range(10):
        layers.append(BatchNorm(d))
        layers.append(LULinear(d, identity_init=True))
        layers.append(AffineCouplingTransform(half_mask(torch, d, b), mlp_net_fn(torch, (128, 128))))
    return Flow(CompositeTransform(layers), StandardNormal([d]))


def build_nflows_maf(torch):
    """hepflow's maf preset in nflows: 10 MAF layers whose MADE is 18 -> 128 -> 128 -> 36 (ReLU),
    with the preset's orders: natural, reversed, then random (as permutations before a MADE in
    natural order)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import RandomPermutation, ReversePermutation

    d = 18
    layers = []
    for b in range(10):
        if b == 1:
            layers.append(ReversePermutation(d))
        elif b >= 2:
            layers.append(RandomPermutation(d))
        layers.append(MaskedAffineAutoregressiveTransform(
            features=d, hidden_features=128, num_blocks=1, use_residual_blocks=False))
    return Flow(CompositeTransform(layers), StandardNormal([d]))


def build_nflows_nsf(torch):
    """nflows' NSF: 10 x [LULinear, rational-quadratic coupling, 8 bins, linear tails at 5,
    ResidualNet(hidden 128, 2 blocks)] (as bench/fidelity.py, without dropout)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn import nets
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.lu import LULinear
    from nflows.utils import torchutils

    d = 18

    def resnet(i, o):
        return nets.ResidualNet(i, o, hidden_features=128, num_blocks=2)

    layers = []
    for b in range(10):
        layers.append(LULinear(d, identity_init=True))
        layers.append(
            PiecewiseRationalQuadraticCouplingTransform(
                mask=torchutils.create_alternating_binary_mask(d, even=(b % 2 == 0)),
                transform_net_create_fn=resnet,
                num_bins=8,
                tails="linear",
                tail_bound=5.0,
            )
        )
    return Flow(CompositeTransform(layers), StandardNormal([d]))


def build_nflows_mog_made(torch):
    """nflows' MixtureOfGaussiansMADE of hepflow's made-mog size: K = 10 Gaussians per feature,
    MADE 18 -> 256 -> 256 -> 540 (ReLU; num_blocks=1 feed-forward block after the initial
    layer). Returns (module, log_prob, sample).

    Its own `sample` needs a context (it reads `context.shape[0]` even when the context is None),
    so the unconditional draw below is that method's loop without the context: per feature one
    full MADE pass on the events drawn so far, a categorical draw of the component and a normal
    draw, as nflows does."""
    from nflows.nn.nde.made import MixtureOfGaussiansMADE
    import torch.nn.functional as F

    d, k = 18, 10
    made = MixtureOfGaussiansMADE(features=d, hidden_features=256, num_blocks=1,
                                  num_mixture_components=k, use_residual_blocks=False)

    def sample(n):
        x = torch.zeros(n, d)
        for f in range(d):
            out = made.forward(x).reshape(n, d, k, 3)
            logits, means, raw_stds = out[:, f, :, 0], out[:, f, :, 1], out[:, f, :, 2]
            comp = torch.distributions.Categorical(logits=torch.log_softmax(logits, dim=-1)).sample((1,)).reshape(-1, 1)
            stds = F.softplus(raw_stds) + made.epsilon
            x[:, f] = means.gather(1, comp).reshape(-1) + torch.randn(n) * stds.gather(1, comp).reshape(-1)
        return x

    return made, made.log_prob, sample


def build_side(side, model, torch):
    """(module, log_prob(x), sample(n)) of `side` for `model`, or a string saying why not."""
    if model == "mog-made":
        if side != "nflows":
            return "zuko has no MADE-MoG (mixture-of-Gaussians MADE density)"
        return build_nflows_mog_made(torch)
    if side == "nflows":
        builders = {"realnvp": lambda: build_nflows(torch, (128, 128)),
                    "nsf": lambda: build_nflows_nsf(torch),
                    "glow": lambda: build_nflows_glow(torch),
                    "maf": lambda: build_nflows_maf(torch)}
        flow = builders[model]()
        return flow, flow.log_prob, flow.sample
    if model == "glow":
        return "zuko has no Glow (no batch-norm or LU-linear flow layer)"
    try:
        import zuko
    except ImportError as e:  # pragma: no cover - depends on the venv
        return f"zuko not importable: {e}"
    if model == "realnvp":
        if not hasattr(zuko.flows, "RealNVP"):
            return "this zuko has no zuko.flows.RealNVP (affine coupling flow)"
        # zuko's RealNVP: `transforms` affine couplings (monotonic affine, soft-clamped
        # log-scale) with alternating checkerboard masks, conditioner MLP hidden_features, ReLU.
        flow = zuko.flows.RealNVP(18, transforms=8, hidden_features=(128, 128), activation=torch.nn.ReLU)
    elif model == "maf":
        # zuko's MAF: 10 affine autoregressive transforms (monotonic affine, soft-clamped
        # log-scale), MaskedMLP 18 -> 128 -> 128 -> 36 (ReLU), ascending / descending orders.
        flow = zuko.flows.MAF(18, transforms=10, hidden_features=(128, 128))
    else:
        # zuko's NSF as a coupling flow (passes=2) with residual conditioners: Linear(18, 128),
        # 2 x Residual(Linear 128, ReLU, Linear 128), Linear(128, 18 x 23) (masked), the layer
        # sizes of nflows' ResidualNet; rational-quadratic splines on [-5, 5], identity outside.
        flow = zuko.flows.NSF(18, transforms=10, bins=8, passes=2, hidden_features=(128, 128), residual=True)
    return flow, (lambda x: flow().log_prob(x)), (lambda n: flow().sample((n,)))


def bench_side(side, model, torch, data, threads, batch, n_sample):
    torch.manual_seed(0)
    built = build_side(side, model, torch)
    if isinstance(built, str):
        emit({"side": side, "model": model, "skipped": built})
        return
    flow, log_prob, sample_n = built
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    n_params = sum(p.numel() for p in flow.parameters())

    def step(xb):
        opt.zero_grad(set_to_none=True)
        loss = -log_prob(xb).mean()
        loss.backward()
        opt.step()
        return loss.item()

    flow.train()
    step_t, times, cpu_t, cpu_times, loss = time_training(step, data, torch, batch)
    flow.eval()

    def sample(n):
        with torch.no_grad():
            return sample_n(n)

    sample_t, sample_times, sample_cpu, sample_cpu_times, finite = time_sampling(sample, n_sample)
    emit({
        "side": side,
        "model": model,
        "version": dist_version(side),
        "torch": torch.__version__,
        "threads": threads,
        "params": n_params,
        "batch": batch,
        "samples": n_sample,
        "train_step_s": step_t,
        "train_step_repeats_s": times,
        "train_events_per_s": batch / step_t,
        "last_loss": loss,
        "sample_s": sample_t,
        "sample_repeats_s": sample_times,
        "sample_events_per_s": n_sample / sample_t,
        "train_step_cpu_s": cpu_t,
        "train_step_cpu_repeats_s": cpu_times,
        "train_events_per_cpu_s": batch / cpu_t,
        "sample_cpu_s": sample_cpu,
        "sample_cpu_repeats_s": sample_cpu_times,
        "sample_events_per_cpu_s": n_sample / sample_cpu,
        "sample_finite": finite,
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="label-first HIGGS CSV (.csv or .csv.gz)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sides", default="nflows,zuko", help="comma-separated: nflows,zuko")
    ap.add_argument("--model", default="realnvp", choices=("realnvp", "nsf", "glow", "maf", "mog-made"))
    ap.add_argument("--batch", type=int, default=0, help="events per step (default: 1024 realnvp, 512 the others)")
    ap.add_argument("--samples", type=int, default=1_000_000, help="events of the timed sampling run")
    args = ap.parse_args()
    batch = args.batch or (1024 if args.model == "realnvp" else 512)
    if batch < 1 or args.samples < 1:
        ap.error("--batch and --samples must be positive")

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    data = load_higgs18(args.data)
    emit({"side": "torch-info", "rows": int(data.shape[0]), "dim": int(data.shape[1]),
          "threads": torch.get_num_threads(), "torch": torch.__version__,
          "cpu_capability": torch.backends.cpu.get_cpu_capability(),
          "config": torch.__config__.parallel_info().splitlines()[:4]})
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for s in sides:
        if s not in ("nflows", "zuko"):
            print(f"unknown side {s!r}", file=sys.stderr)
            return 2
    for s in sides:
        bench_side(s, args.model, torch, data, args.threads, batch, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
