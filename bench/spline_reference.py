#!/usr/bin/env python3
"""Reference values of nflows' spline functions for tests/spline_reference.rs.

Feeds the same raw (unnormalised) bin-width, bin-height / vertex and derivative parameters to
nflows' `unconstrained_rational_quadratic_spline` and `quadratic_spline` (float64) and writes the
inputs, outputs, inverses and log-determinants to tests/fixtures/spline_reference/*.json.

Parameter layouts (hepflow's `theta` -> nflows' arguments):

* rational-quadratic, K bins, `theta = [u_w (K), u_h (K), u_d (K - 1)]`: nflows gets
  `unnormalized_widths = u_w`, `unnormalized_heights = u_h` and
  `unnormalized_derivatives = u_d + c` with `c = log(exp(1 - 1e-3) - 1)`: hepflow shifts its
  derivative parameters by `c` so that zero parameters give slope 1 (the identity), nflows does
  not (zero parameters give slope 1e-3 + log 2 = 0.694). Linear (identity) tails, bound B.
* piecewise-quadratic, K bins, `theta = [u_w (K), u_v (K + 1)]`: nflows' `quadratic_spline` on
  [-B, B] with all K + 1 vertices free and `min_bin_height = 0` (hepflow has no height floor);
  identity outside [-B, B]. nflows' own `unconstrained_quadratic_spline` (linear tails) takes
  K - 1 vertices and sets both end vertices so that the density is 1 at +-B (a C1 join with the
  identity tails); hepflow keeps them free, so its log-derivative jumps at +-B.

Usage: python bench/spline_reference.py   (needs torch and nflows; writes a few KB)
"""

import json
import math
import os

import numpy as np
import torch
from nflows.transforms.splines.quadratic import quadratic_spline
from nflows.transforms.splines.rational_quadratic import (
    unconstrained_rational_quadratic_spline,
)

torch.set_default_dtype(torch.float64)
MIN_DERIVATIVE = 1e-3
SHIFT = math.log(math.exp(1.0 - MIN_DERIVATIVE) - 1.0)
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "spline_reference"
)


def points(rng, bound, n):
    """Inputs spread over [-B, B] plus two beyond each end (identity tails) and the ends."""
    inside = rng.uniform(-bound, bound, size=n).tolist()
    return inside + [-bound, bound, -bound - 0.7, bound + 1.3]


def rq_case(rng, bins, bound, scale, n):
    theta = rng.normal(0.0, scale, size=3 * bins - 1)
    uw = torch.tensor(theta[:bins])
    uh = torch.tensor(theta[bins : 2 * bins])
    ud = torch.tensor(theta[2 * bins :] + SHIFT)
    x = torch.tensor(points(rng, bound, n))
    m = len(x)

    def run(v, inverse):
        out, lad = unconstrained_rational_quadratic_spline(
            v,
            uw.expand(m, bins),
            uh.expand(m, bins),
            ud.expand(m, bins - 1),
            inverse=inverse,
            tails="linear",
            tail_bound=bound,
        )
        return out.tolist(), lad.tolist()

    y, ld = run(x, False)
    # Inverse at fresh points of the output interval (not only at the forward outputs).
    yi = torch.tensor(points(rng, bound, n))
    xi, ldi = run(yi, True)
    return dict(
        bins=bins,
        bound=bound,
        theta=theta.tolist(),
        x=x.tolist(),
        y=y,
        logdet=ld,
        inv_in=yi.tolist(),
        inv_out=xi,
        inv_logdet=ldi,
    )


def quad_case(rng, bins, bound, scale, n):
    theta = rng.normal(0.0, scale, size=2 * bins + 1)
    uw = torch.tensor(theta[:bins])
    uv = torch.tensor(theta[bins:])

    def run(v, inverse):
        out = v.clone()
        lad = torch.zeros_like(v)
        inside = (v >= -bound) & (v <= bound)
        k = int(inside.sum())
        o, l = quadratic_spline(
            v[inside],
            uw.expand(k, bins),
            uv.expand(k, bins + 1),
            inverse=inverse,
            left=-bound,
            right=bound,
            bottom=-bound,
            top=bound,
            min_bin_height=0.0,
        )
        out[inside] = o
        lad[inside] = l
        return out.tolist(), lad.tolist()

    x = torch.tensor(points(rng, bound, n))
    y, ld = run(x, False)
    yi = torch.tensor(points(rng, bound, n))
    xi, ldi = run(yi, True)
    return dict(
        bins=bins,
        bound=bound,
        theta=theta.tolist(),
        x=x.tolist(),
        y=y,
        logdet=ld,
        inv_in=yi.tolist(),
        inv_out=xi,
        inv_logdet=ldi,
    )


def main():
    rng = np.random.default_rng(20261202)
    os.makedirs(OUT, exist_ok=True)
    # (bins, bound, parameter scale): the presets' 8 bins on [-5, 5], plus uneven and odd cases.
    settings = [(8, 5.0, 1.0), (8, 5.0, 2.5), (4, 3.0, 1.5), (16, 5.0, 1.0), (1, 2.0, 1.0)]
    for name, fn in [("rational_quadratic", rq_case), ("quadratic", quad_case)]:
        cases = [fn(rng, b, bd, s, 12) for (b, bd, s) in settings]
        meta = dict(
            source="nflows 0.14 (nflows.transforms.splines), float64, via bench/spline_reference.py",
            torch=torch.__version__,
            derivative_shift=SHIFT,
            cases=cases,
        )
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w") as f:
            json.dump(meta, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
