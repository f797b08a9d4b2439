#!/usr/bin/env bash
# Fidelity comparison ("a fair fight", issue 16): hepflow presets vs nflows NSF and zuko NSF on the
# same fixed split of the bundled HIGGS sample (higgs18 features, background and signal
# separately), with the same preprocessing, the same training budget and the same scoring code.
#
#   bash bench/fidelity.sh [--classes background,signal] [--hepflow default,rq-spline,...]
#                          [--peers nsf,zuko-nsf,realnvp,glow] [--epochs N] [--patience N]
#                          [--dropout P] [--seeds 0,1,2] [--repeats 3] [--threads 1]
#                          [--variants NAME=FILE.toml,NAME2=FILE2.toml] [--conditional]
#                          [--split-seed 1] [--parallel] [--python PY] [--out bench/out/fidelity]
#
# Quick check (a few minutes): bash bench/fidelity.sh --classes background --epochs 3
#
# The training budget defaults to `hepflow train`'s own (printed by `fidelity budget`: epochs,
# patience, lr and cosine schedule, batch size, gradient clip, the default preset's dropout); the
# PyTorch models get exactly the same knobs, and --epochs / --patience / --dropout change every
# side alike (--dropout applies to the peers' NSF conditioners; hepflow's default preset keeps its
# own). Every model trains on train.csv, stops early on val.csv (best model kept), and is scored on
# test.csv by `fidelity score` / `fidelity train` (hepflow::evaluate: test NLL, the C2ST once per
# generated sample, --repeats samples and evaluation seeds, KS, events outside the training range).
# --seeds trains every model once per seed. --parallel runs the hepflow side and the PyTorch side
# at the same time (each with --threads threads); wall times are then affected by each other.
# --variants trains every hepflow model once per variant (instead of once) with `--config FILE` (the same keys as
# `hepflow train --config`, e.g. `dropout = 0.2`, `weight_decay = 1e-5`, `ensemble = 3`), named
# hepflow-MODEL-NAME; the options set in the file are recorded in results.jsonl and the table.
# Without --variants each model trains once with its preset's defaults.
# --conditional also trains, per hepflow model and seed, one conditional model p(x | label) on
# both classes' train.csv (label 0 background, 1 signal; early stopping on both val.csv), once
# per variant, and scores it on each class's test.csv like the separate models (--classes ''
# leaves those out).
# PyTorch: --python PY, else bench/.venv (created with torch, nflows, zuko, numpy on first use).
# Output: OUT/results.jsonl (one line per model and seed), OUT/table.md, logs, environment.txt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

classes="background,signal"
hf_models="default"
variants=""
peers="nsf,zuko-nsf"
epochs=""
patience=""
dropout=""
seeds="0"
repeats=3
threads=1
split_seed=1
parallel=0
conditional=0
py=""
out="$here/out/fidelity"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --classes) classes="$2"; shift 2 ;;
        --hepflow) hf_models="$2"; shift 2 ;;
        --variants) variants="$2"; shift 2 ;;
        --peers|--nflows) peers="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --patience) patience="$2"; shift 2 ;;
        --dropout) dropout="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --split-seed) split_seed="$2"; shift 2 ;;
        --parallel) parallel=1; shift ;;
        --conditional) conditional=1; shift ;;
        --python) py="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
for v in threads repeats split_seed; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "$v" != split_seed && "${!v}" == 0 ]]; then
        echo "--${v//_/-} must be a positive integer" >&2
        exit 2
    fi
done
for v in epochs patience; do
    if [[ -n "${!v}" ]] && ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "--$v must be a positive integer" >&2
        exit 2
    fi
done
for v in ${variants//,/ }; do
    if ! [[ "$v" =~ ^[A-Za-z0-9_.-]+=.+$ ]] || [[ ! -f "${v#*=}" ]]; then
        echo "--variants: '$v' is not NAME=FILE with an existing FILE" >&2
        exit 2
    fi
done
if ! [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "--seeds must be a comma-separated list of non-negative integers" >&2
    exit 2
fi

# 1. Python environment (only when PyTorch models are requested).
if [[ -n "$peers" ]]; then
    if [[ -z "$py" ]]; then
        venv="$here/.venv"
        py="$venv/bin/python"
        if [[ ! -x "$py" ]]; then
            echo "== creating $venv" >&2
            python3 -m venv "$venv"
        fi
    fi
    if ! "$py" -c 'import torch, nflows, zuko, numpy' >/dev/null 2>&1; then
        echo "== installing torch, nflows, zuko, numpy for $py (large download on first run)" >&2
        "$py" -m pip install --quiet torch nflows zuko numpy
    fi
fi

# 2. Rust side (release).
echo "== cargo build --release --example fidelity" >&2
cargo build --quiet --release --example fidelity
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/examples/fidelity"

# 3. The budget (hepflow train's defaults unless overridden), the fixed split, the model space.
budget="$("$bin" budget)"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$budget" "$1"; }
epochs="${epochs:-$(field epochs)}"
patience="${patience:-$(field patience)}"
dropout="${dropout:-$(field dropout)}"
lr="$(field lr)"
batch="$(field batch_size)"
clip="$(field clip_grad_norm)"
schedule="$(field schedule)"
if [[ "$schedule" != Cosine || "$(field weight_decay)" != 0.0 || "$(field ema_decay)" != 0.0 ]]; then
    echo "hepflow's default budget changed ($budget): bench/fidelity.py implements cosine, no weight decay, no EMA; update it" >&2
    exit 1
fi

mkdir -p "$out"
split="$out/split"
"$bin" split --out "$split" --seed "$split_seed"
for cls in ${classes//,/ }; do
    "$bin" prep --dir "$split" --class "$cls" --out "$out/$cls/prep"
done
results="$out/results.jsonl"
: > "$results"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "rustc: $(rustc --version)"
    [[ -n "$peers" ]] && echo "python: $("$py" -c 'import sys, torch, numpy; from importlib.metadata import version; print(sys.version.split()[0], "torch", torch.__version__, "nflows", version("nflows"), "zuko", version("zuko"), "numpy", numpy.__version__)')"
    echo "hepflow train defaults: $budget"
    for v in ${variants//,/ }; do echo "variant ${v%%=*} (${v#*=}): $(grep -v '^ *#' "${v#*=}" | tr '\n' ' ')"; done
    echo "settings: epochs=$epochs patience=$patience dropout(peers)=$dropout lr=$lr batch=$batch clip=$clip schedule=$schedule seeds=$seeds repeats=$repeats threads=$threads split_seed=$split_seed parallel=$parallel"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/environment.txt"

run_hepflow() {
    local cls m s v name cfg
    [[ -z "$hf_models" ]] && return 0
    for cls in ${classes//,/ }; do
        for s in ${seeds//,/ }; do
            for m in ${hf_models//,/ }; do
                for v in $(if [[ -n "$variants" ]]; then echo "${variants//,/ }"; else echo "="; fi); do
                    name="hepflow-$m"
                    [[ -n "${v%%=*}" ]] && name="$name-${v%%=*}"
                    cfg=()
                    [[ -n "${v#*=}" ]] && cfg=(--config "${v#*=}")
                    "$bin" --threads "$threads" train --dir "$split" --class "$cls" --preset "$m" \
                        "${cfg[@]}" --name "$name" \
                        --epochs "$epochs" --patience "$patience" --seed "$s" --repeats "$repeats" \
                        --out "$out/$cls/$name-seed$s" --json "$results" > /dev/null
                done
            done
        done
    done
    [[ "$conditional" == 1 ]] || return 0
    for s in ${seeds//,/ }; do
        for m in ${hf_models//,/ }; do
            for v in $(if [[ -n "$variants" ]]; then echo "${variants//,/ }"; else echo "="; fi); do
                name="hepflow-$m-conditional"
                [[ -n "${v%%=*}" ]] && name="$name-${v%%=*}"
                cfg=()
                [[ -n "${v#*=}" ]] && cfg=(--config "${v#*=}")
                "$bin" --threads "$threads" train --dir "$split" --class both --conditional \
                    --preset "$m" "${cfg[@]}" --name "$name" \
                    --epochs "$epochs" --patience "$patience" --seed "$s" --repeats "$repeats" \
                    --out "$out/both/$name-seed$s" --json "$results" > /dev/null
            done
        done
    done
}
run_peers() {
    [[ -z "$peers" ]] && return 0
    OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" PYTHONWARNINGS=ignore \
        "$py" "$here/fidelity.py" --split "$split" --classes "$classes" --models "$peers" \
        --epochs "$epochs" --patience "$patience" --dropout "$dropout" --lr "$lr" \
        --batch-size "$batch" --clip "$clip" --seeds "$seeds" --repeats "$repeats" \
        --threads "$threads" --score-bin "$bin" --out "$out" --json "$results" > /dev/null
}

t0=$(date +%s)
if [[ "$parallel" == 1 ]]; then
    run_hepflow 2> "$out/hepflow.log" &
    hf_pid=$!
    run_peers 2> "$out/torch.log" &
    nf_pid=$!
    echo "== training in parallel (logs: $out/hepflow.log, $out/torch.log)" >&2
    st=0
    wait "$hf_pid" || st=$?
    wait "$nf_pid" || st=$?
    if [[ "$st" != 0 ]]; then
        echo "a side failed (exit $st): see the logs" >&2
        exit "$st"
    fi
else
    run_hepflow 2> >(tee "$out/hepflow.log" >&2)
    run_peers 2> >(tee "$out/torch.log" >&2)
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/environment.txt"
echo "total wall time: $(( $(date +%s) - t0 )) s" >> "$out/environment.txt"

# 4. Table: one row per class and model, pooled over the training seeds.
python3 "$here/fidelity_table.py" "$results" --split "$split/split.json" | tee "$out/table.md"
echo "(results: $results; environment: $out/environment.txt)" >&2
