#!/usr/bin/env bash
# hepflow vs nflows / zuko benchmark: reference RealNVP (8 affine couplings, MLP 2 x 128 ReLU,
# batch 1024, D = 18 higgs18 features, Adam 1e-3). Prints events/s for a training step and for
# sampling 1,000,000 events, and the ratios hepflow / nflows and hepflow / zuko.
#
#   bash bench/run.sh [--threads N] [--data CSV(.gz)] [--sides nflows,zuko] [--chunks 128,256,512]
#                     [--simd avx512|avx2|portable]
#
# --simd forces hepflow's kernel path (HEPFLOW_SIMD); every path gives the same bits, only the
# speed differs. The peer side always runs its own best path.
#
# Creates bench/.venv (torch, nflows, zuko, numpy from PyPI) on first use and builds the Rust side
# with `cargo build --release --example benchmark`. Raw JSON lines go to bench/out/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

threads="$(nproc)"
data=""
sides="nflows,zuko"
chunks="128,256,512"
simd=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --sides) sides="$2"; shift 2 ;;
        --chunks) chunks="$2"; shift 2 ;;
        --simd) simd="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$threads" =~ ^[1-9][0-9]*$ ]]; then
    echo "--threads must be a positive integer" >&2
    exit 2
fi

if [[ -z "$data" ]]; then
    for cand in data/higgs_35k.csv.gz ../shared/data/higgs_openml_rows_valtest_35298.csv.gz \
        /work/shared/data/higgs_openml_rows_valtest_35298.csv.gz; do
        if [[ -f "$cand" ]]; then data="$cand"; break; fi
    done
fi
if [[ -z "$data" ]]; then
    echo "no data: pass --data PATH (label-first HIGGS CSV, e.g. data/higgs_35k.csv.gz)" >&2
    exit 1
fi
if [[ ! -f "$data" ]]; then
    echo "data file not found: $data" >&2
    exit 1
fi

# 1. Python environment.
venv="$here/.venv"
py="$venv/bin/python"
if [[ ! -x "$py" ]]; then
    echo "== creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$py" -c 'import torch, nflows, zuko, numpy' >/dev/null 2>&1; then
    echo "== installing torch, nflows, zuko, numpy into $venv (large download on first run)" >&2
    "$py" -m pip install --quiet torch nflows zuko numpy
fi

# 2. Rust side (release).
echo "== cargo build --release --example benchmark" >&2
cargo build --quiet --release --example benchmark
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/examples/benchmark"

# 3. Run both sides with the same thread count, one after the other (never concurrently).
out="$here/out"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
hf_json="$out/hepflow-t${threads}-$stamp.jsonl"
py_json="$out/torch-t${threads}-$stamp.jsonl"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== hepflow (threads=$threads, data=$data${simd:+, simd=$simd})" >&2
"$bin" --data "$data" --threads "$threads" --chunks "$chunks" ${simd:+--simd "$simd"} | tee "$hf_json" >&2
echo "== PyTorch: $sides (threads=$threads)" >&2
OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
    "$py" "$here/torch_flows.py" --data "$data" --threads "$threads" --sides "$sides" | tee "$py_json" >&2
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# 4. Table and ratios.
"$py" - "$hf_json" "$py_json" "$threads" "$load_before" "$load_after" <<'EOF'
import json, sys
rows = {}
chunks = []
for path in sys.argv[1:3]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("side") == "hepflow-chunk":
                chunks.append(r)
            elif "train_events_per_s" in r or "skipped" in r:
                rows[r["side"]] = r
threads = sys.argv[3]
print()
print(f"threads: {threads}   (load average before: {sys.argv[4]}, after: {sys.argv[5]})")
if chunks:
    print("hepflow chunk_rows: " + ", ".join(
        f"{c['chunk_rows']} -> {c['train_events_per_s']:,.0f} ev/s" for c in chunks))
print()
print(f"{'side':<10} | {'train events/s':>15} | {'sample events/s':>16}")
print(f"{'-'*10}-+-{'-'*15}-+-{'-'*16}")
for side in ("hepflow", "nflows", "zuko"):
    r = rows.get(side)
    if r is None:
        continue
    if "skipped" in r:
        print(f"{side:<10} | skipped: {r['skipped']}")
        continue
    print(f"{side:<10} | {r['train_events_per_s']:>15,.0f} | {r['sample_events_per_s']:>16,.0f}")
print()
hf = rows.get("hepflow")
for other in ("nflows", "zuko"):
    o = rows.get(other)
    if hf is None or o is None or "skipped" in o:
        continue
    print(f"training: hepflow / {other} = {hf['train_events_per_s'] / o['train_events_per_s']:.2f}x")
    print(f"sampling: hepflow / {other} = {hf['sample_events_per_s'] / o['sample_events_per_s']:.2f}x")
# CPU time (user + system, all threads): events per CPU-second. At --threads 1 this measures the
# work itself and is robust to a shared machine (time spent waiting for a core is not counted);
# with more threads it also counts threads spinning while they wait for work.
if all("train_events_per_cpu_s" in r for r in rows.values() if "skipped" not in r):
    print()
    print("per CPU-second (user+sys of all threads; robust to other load at --threads 1):")
    print(f"{'side':<10} | {'train ev/CPU-s':>15} | {'sample ev/CPU-s':>16}")
    for side in ("hepflow", "nflows", "zuko"):
        r = rows.get(side)
        if r is None or "skipped" in r:
            continue
        print(f"{side:<10} | {r['train_events_per_cpu_s']:>15,.0f} | {r['sample_events_per_cpu_s']:>16,.0f}")
    for other in ("nflows", "zuko"):
        o = rows.get(other)
        if hf is None or o is None or "skipped" in o:
            continue
        print(f"training per CPU-second: hepflow / {other} = "
              f"{hf['train_events_per_cpu_s'] / o['train_events_per_cpu_s']:.2f}x")
        print(f"sampling per CPU-second: hepflow / {other} = "
              f"{hf['sample_events_per_cpu_s'] / o['sample_events_per_cpu_s']:.2f}x")
# Noise check: the fastest of the 3 timed repeats on each side (a shared machine slows some repeats).
best_hf = min((min(c["train_step_repeats_s"]) for c in chunks), default=None)
for other in ("nflows", "zuko"):
    o = rows.get(other)
    if best_hf is None or o is None or "skipped" in o:
        continue
    print(f"training, fastest repeat each side: hepflow / {other} = "
          f"{min(o['train_step_repeats_s']) / best_hf:.2f}x")
EOF
echo "(raw JSON lines: $hf_json, $py_json)" >&2
