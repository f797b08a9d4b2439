#!/usr/bin/env python3
"""Table of bench/fidelity.sh results: one row per class and model, pooled over training seeds.

    python3 bench/fidelity_table.py OUT/results.jsonl [MORE.jsonl ...] [--split OUT/split/split.json]

C2ST AUC: mean ± sample standard deviation over every scored sample (repeats x seeds), with the
smallest and largest value; test NLL: the mean over seeds (± the standard error of the mean over
test events for one seed, else the standard deviation over seeds); outside training range: the
fraction of generated events with any feature outside the range of train.csv, next to the same
fraction for the test events (a second MC sample).
"""
import argparse
import json
import math

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("results", nargs="+")
ap.add_argument("--split")
args = ap.parse_args()
rows = [json.loads(l) for p in args.results for l in open(p) if l.strip().startswith("{")]
split = json.load(open(args.split)) if args.split else {}

def mean_sd(v):
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd

def f(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"

groups = {}
for r in rows:
    groups.setdefault((r["class"], r["name"]), []).append(r)
print("| class | model | seeds | test NLL (nats) | C2ST AUC (mean ± sd) | C2ST AUC min-max | MC-vs-MC AUC "
      "| outside training range: generated / MC | KS max | epochs (best) | training s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
order = {"background": 0, "signal": 1}
side = lambda n: 0 if n.startswith("hepflow") else 1 if n.startswith("nflows") else 2
for (cls, name), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), side(kv[0][1]), kv[0][1])):
    aucs = [a for r in rs for a in r.get("c2st_aucs", [r.get("c2st_auc")]) if a is not None]
    auc, auc_sd = mean_sd(aucs)
    nll, nll_sd = mean_sd([r["test_nll"] for r in rs])
    nll_txt = f"{f(nll)} ± {f(rs[0]['test_nll_err'])}" if len(rs) == 1 else f"{f(nll)} (sd {f(nll_sd)} over seeds)"
    mc, _ = mean_sd([r.get("c2st_auc_mc_vs_mc") for r in rs])
    og, _ = mean_sd([r.get("outside_train_range") for r in rs])
    om, _ = mean_sd([r.get("outside_train_range_mc") for r in rs])
    ks, _ = mean_sd([r.get("ks_max") for r in rs])
    secs, _ = mean_sd([r.get("train_seconds") for r in rs])
    ep = ", ".join(f"{r.get('epochs_run', '-')} ({r.get('best_epoch', '-')})" for r in rs)
    label = name + (f" ({r['preset']})" if name == "hepflow-default" and (r := rs[0]).get("preset") else "")
    label += f" [{rs[0]['options']}]" if rs[0].get("options") else ""
    print(f"| {cls} | {label} | {len(rs)} | {nll_txt} | {f(auc)} ± {f(auc_sd)} | "
          f"{f(min(aucs) if aucs else None)}-{f(max(aucs) if aucs else None)} | {f(mc)} | "
          f"{f(None if og is None else 100 * og, 2)} % / {f(None if om is None else 100 * om, 2)} % | {f(ks)} | {ep} | {f(secs, 0)} |")
if split:
    print()
    print("split (events): " + ", ".join(
        f"{c}: train {s['train']}, val {s['val']}, test {s['test']}" for c, s in split.items() if isinstance(s, dict)))
