#!/usr/bin/env bash
# Fidelity comparison: hepflow presets vs nflows RealNVP / Glow / NSF on the same fixed split of the
# bundled HIGGS sample (higgs18 features, background and signal separately), with the same metrics.
#
#   bash bench/fidelity.sh [--classes background,signal] [--hepflow realnvp,glow,rq-spline,pq-spline,maf,default]
#                          [--nflows realnvp,glow,nsf] [--epochs 60] [--patience 10] [--threads 1]
#                          [--seed 0] [--split-seed 1] [--parallel] [--out bench/out/fidelity]
#
# Quick check (a few minutes): bash bench/fidelity.sh --classes background --hepflow default --nflows nsf --epochs 3
#
# Creates bench/.venv (torch, nflows, numpy from PyPI) on first use, builds the Rust side with
# `cargo build --release --example fidelity`, writes the split, trains every model (early stopping on
# the validation split, best model kept), scores it on the test split and prints the table.
# --parallel runs the hepflow side and the nflows side at the same time (each with --threads
# threads); timings are then affected by each other. Result lines: OUT/results.jsonl.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

classes="background,signal"
hf_models="realnvp,glow,rq-spline,pq-spline,maf,default"
nf_models="realnvp,glow,nsf"
epochs=60
patience=10
threads=1
seed=0
split_seed=1
parallel=0
out="$here/out/fidelity"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --classes) classes="$2"; shift 2 ;;
        --hepflow) hf_models="$2"; shift 2 ;;
        --nflows) nf_models="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --patience) patience="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --split-seed) split_seed="$2"; shift 2 ;;
        --parallel) parallel=1; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
for v in epochs patience threads; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "--$v must be a positive integer" >&2
        exit 2
    fi
done

# 1. Python environment (only when nflows models are requested).
py=""
if [[ -n "$nf_models" ]]; then
    venv="$here/.venv"
    py="$venv/bin/python"
    if [[ ! -x "$py" ]]; then
        echo "== creating $venv" >&2
        python3 -m venv "$venv"
    fi
    if ! "$py" -c 'import torch, nflows, numpy' >/dev/null 2>&1; then
        echo "== installing torch, nflows, numpy into $venv (large download on first run)" >&2
        "$py" -m pip install --quiet torch nflows numpy
    fi
fi

# 2. Rust side (release).
echo "== cargo build --release --example fidelity" >&2
cargo build --quiet --release --example fidelity
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/examples/fidelity"

# 3. The fixed split.
mkdir -p "$out"
split="$out/split"
"$bin" split --out "$split" --seed "$split_seed"
results="$out/results.jsonl"
: > "$results"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "rustc: $(rustc --version)"
    [[ -n "$py" ]] && echo "python: $("$py" -c 'import sys, torch, numpy; from importlib.metadata import version; print(sys.version.split()[0], "torch", torch.__version__, "nflows", version("nflows"), "numpy", numpy.__version__)')"
    echo "settings: epochs=$epochs patience=$patience threads=$threads seed=$seed split_seed=$split_seed parallel=$parallel"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/environment.txt"

default_preset="$("$bin" default-preset)"
echo "default preset of hepflow train: $default_preset" >> "$out/environment.txt"
run_hepflow() {
    local cls m
    for cls in ${classes//,/ }; do
        for m in ${hf_models//,/ }; do
            if [[ "$m" == default && ",$hf_models," == *",$default_preset,"* ]]; then
                continue # same model as hepflow-$default_preset: its line is copied below
            fi
            "$bin" --threads "$threads" train --dir "$split" --class "$cls" --preset "$m" \
                --epochs "$epochs" --patience "$patience" --seed "$seed" \
                --out "$out/$cls/hepflow-$m" --json "$results" > /dev/null
        done
    done
}
run_nflows() {
    [[ -z "$nf_models" ]] && return 0
    OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" PYTHONWARNINGS=ignore \
        "$py" "$here/fidelity.py" --split "$split" --classes "$classes" --models "$nf_models" \
        --epochs "$epochs" --patience "$patience" --seed "$seed" --threads "$threads" \
        --score-bin "$bin" --out "$out" --json "$results" > /dev/null
}

t0=$(date +%s)
if [[ "$parallel" == 1 ]]; then
    run_hepflow 2> "$out/hepflow.log" &
    hf_pid=$!
    run_nflows 2> "$out/nflows.log" &
    nf_pid=$!
    echo "== training in parallel (logs: $out/hepflow.log, $out/nflows.log)" >&2
    st=0
    wait "$hf_pid" || st=$?
    wait "$nf_pid" || st=$?
    if [[ "$st" != 0 ]]; then
        echo "a side failed (exit $st): see the logs" >&2
        exit "$st"
    fi
else
    run_hepflow 2> >(tee "$out/hepflow.log" >&2)
    run_nflows 2> >(tee "$out/nflows.log" >&2)
fi
# "default" when it is also listed under its own name: the same training (deterministic), renamed.
if [[ ",$hf_models," == *",default,"* && ",$hf_models," == *",$default_preset,"* ]]; then
    python3 - "$results" "$default_preset" <<'EOF'
import json, sys
path, preset = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
with open(path, "a") as f:
    for r in rows:
        if r["name"] == f"hepflow-{preset}":
            f.write(json.dumps(dict(r, name="hepflow-default")) + "\n")
EOF
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/environment.txt"
echo "total wall time: $(( $(date +%s) - t0 )) s" >> "$out/environment.txt"

# 4. Table.
python3 - "$results" "$split/split.json" <<'EOF' | tee "$out/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
split = json.load(open(sys.argv[2]))
def f(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"
print("| class | model | test NLL (nats) | C2ST AUC | MC-vs-MC AUC | KS max (feature) | epochs (best) | training s |")
print("|---|---|---|---|---|---|---|---|")
order = {"background": 0, "signal": 1}
for r in sorted(rows, key=lambda r: (order.get(r["class"], 9), not r["name"].startswith("hepflow"), r["name"])):
    name = r["name"] + (f" ({r['preset']})" if r["name"] == "hepflow-default" else "")
    print(f"| {r['class']} | {name} | {f(r['test_nll'])} ± {f(r['test_nll_err'])} "
          f"| {f(r['c2st_auc'])} ± {f(r['c2st_auc_err'])} | {f(r.get('c2st_auc_mc_vs_mc'))} "
          f"| {f(r['ks_max'])} ({r.get('ks_max_feature', '')}) "
          f"| {r.get('epochs_run', '-')} ({r.get('best_epoch', '-')}) | {f(r.get('train_seconds'), 0)} |")
print()
print("split (events): " + ", ".join(
    f"{c}: train {s['train']}, val {s['val']}, test {s['test']}" for c, s in split.items() if isinstance(s, dict)))
EOF
echo "(results: $results; environment: $out/environment.txt)" >&2
