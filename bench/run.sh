#!/usr/bin/env bash
# hepflow vs nflows / zuko speed benchmark (issue 15): the models users run, side by side in one run.
#
#   bash bench/run.sh [--threads N] [--models default,nsf,realnvp|all] [--simd avx512,avx2,...]
#                     [--sides nflows,zuko] [--samples N] [--chunks 128,256,512] [--data CSV(.gz)]
#                     [--python PY] [--omp-wait passive|active] [--peer-isa best|avx2]
#
# Models (D = 18 higgs18 features, Adam 1e-3; see bench/README.md):
#   default        hepflow's default preset with its defaults (batch 512) vs nflows NSF / zuko NSF
#   nsf            hepflow rq-spline shaped like nflows' NSF (batch 512)    vs nflows NSF / zuko NSF
#   realnvp        the RealNVP reference (8 affine couplings, MLP 2 x 128, batch 1024) vs nflows / zuko
#   glow           the glow preset (batch 512)       vs nflows [BatchNorm, LULinear, affine coupling]
#                  (zuko has no Glow)
#   maf            the maf preset (batch 512)        vs nflows MAF / zuko MAF of the same sizes
#   made-mog       the made-mog preset (MADE-MoG base, K = 10, MADE 2 x 256, no flow layer; batch 512)
#                  vs nflows NSF / zuko NSF (the default preset's peers) and nflows'
#                  MixtureOfGaussiansMADE of the same size (zuko has none)
#   rq-spline      the stock rq-spline preset        vs nflows NSF / zuko NSF
#   flow-matching  the flow-matching preset (batch 512; ODE sampling at its default RK4 steps),
#                  hepflow only (no peer in nflows or zuko)
#   all            every model above
# The default is default,nsf,realnvp. The peers' NSF is timed once and serves every spline row.
# Prints events/s for a training step and for sampling (--samples events; default 1,000,000 for
# realnvp, 50,000 for the others), wall-clock and per CPU-second, and the ratios hepflow / nflows
# and hepflow / zuko next to the issue's targets.
#
# --simd forces hepflow's kernel path (HEPFLOW_SIMD); a comma list (avx512,avx2) times hepflow on
# each path in the same run, next to one run of each peer. Every path gives the same bits, only
# the speed differs. The peers always run their own best path. PyTorch's OpenMP threads wait passively
# by default (OMP_WAIT_POLICY=PASSIVE), because on a shared machine spinning threads that lose
# their core make PyTorch many times slower; --omp-wait active restores OpenMP's default.
# --peer-isa avx2 restricts PyTorch to AVX2 as well (ATEN_CPU_CAPABILITY=avx2,
# MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2): with --simd avx2 both sides then run as
# on a CPU without AVX-512 (the peers' JSON records the capability torch reports).
#
# PyTorch: --python PY, else bench/.venv (created with torch, nflows, zuko, numpy on first use).
# The Rust side is built with `cargo build --release --example benchmark`. Raw JSON lines go to
# bench/out/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

threads="$(nproc)"
data=""
sides="nflows,zuko"
chunks="128,256,512"
simd=""
models="default,nsf,realnvp"
samples=""
py=""
omp_wait="passive"
peer_isa="best"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --sides) sides="$2"; shift 2 ;;
        --chunks) chunks="$2"; shift 2 ;;
        --simd) simd="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        --python) py="$2"; shift 2 ;;
        --omp-wait) omp_wait="$2"; shift 2 ;;
        --peer-isa) peer_isa="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$threads" =~ ^[1-9][0-9]*$ ]]; then
    echo "--threads must be a positive integer" >&2
    exit 2
fi
if [[ -n "$samples" ]] && ! [[ "$samples" =~ ^[1-9][0-9]*$ ]]; then
    echo "--samples must be a positive integer" >&2
    exit 2
fi
for p in ${simd//,/ }; do
    case "$p" in avx512 | avx2 | portable) ;; *) echo "--simd expects avx512, avx2 or portable (or a comma list of them)" >&2; exit 2 ;; esac
done
case "$omp_wait" in passive | active) ;; *) echo "--omp-wait expects passive or active" >&2; exit 2 ;; esac
peer_env=()
case "$peer_isa" in
    best) ;;
    avx2) peer_env=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
    *) echo "--peer-isa expects best or avx2" >&2; exit 2 ;;
esac
all_models="default,nsf,realnvp,glow,maf,made-mog,rq-spline,flow-matching"
[[ "$models" == all ]] && models="$all_models"
if [[ -z "$models" ]]; then
    echo "--models: name at least one of $all_models (or all)" >&2
    exit 2
fi
for m in ${models//,/ }; do
    case ",$all_models," in *",$m,"*) ;; *) echo "--models: unknown model $m ($all_models, all)" >&2; exit 2 ;; esac
done
for s in ${sides//,/ }; do
    case "$s" in nflows | zuko) ;; *) echo "--sides: unknown side $s (nflows, zuko)" >&2; exit 2 ;; esac
done

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
if [[ -n "$sides" ]]; then
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
echo "== cargo build --release --example benchmark" >&2
cargo build --quiet --release --example benchmark
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/examples/benchmark"

# 3. Every side with the same thread count, one after the other (never concurrently).
out="$here/out"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="$out/bench-t${threads}${simd:+-${simd//,/+}}${peer_env:+-peer-$peer_isa}-$stamp.jsonl"
: > "$json"
omp_policy="$(tr '[:lower:]' '[:upper:]' <<< "$omp_wait")"
n_samples() { # model -> events of the timed sampling run
    if [[ -n "$samples" ]]; then
        echo "$samples"
    elif [[ "$1" == realnvp ]]; then
        echo 1000000
    else
        echo 50000
    fi
}
peer_of() { # model -> the PyTorch models it is compared with, space-separated ("" = none)
    case "$1" in
        default | nsf | rq-spline) echo nsf ;;
        made-mog) echo "nsf mog-made" ;;
        flow-matching) echo "" ;;
        *) echo "$1" ;;
    esac
}
# Adds "bench_model", "bench_simd" (the forced path, or "best") and the load average at the end
# of the line's run to every JSON line (stdout), passes other lines to stderr.
tag() {
    python3 -c 'import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        r["bench_model"] = sys.argv[1]
        r["bench_simd"] = sys.argv[2]
        r["loadavg"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(r), flush=True)
    elif line:
        print(line, file=sys.stderr, flush=True)' "$1" "${2:-best}"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
t_start=$(date +%s)
peers_done=","
paths="${simd:-best}"
for m in ${models//,/ }; do
    for path in ${paths//,/ }; do
        [[ "$path" == best ]] && path=""
        echo "== hepflow $m (threads=$threads, data=$data${path:+, simd=$path})" >&2
        "$bin" --model "$m" --data "$data" --threads "$threads" --chunks "$chunks" \
            --samples "$(n_samples "$m")" ${path:+--simd "$path"} | tag "$m" "$path" | tee -a "$json" >&2
    done
    for peer_model in $(peer_of "$m"); do
        if [[ -n "$sides" && "$peers_done" != *",$peer_model,"* ]]; then
            echo "== PyTorch $peer_model: $sides (threads=$threads, OMP_WAIT_POLICY=$omp_policy)" >&2
            env "${peer_env[@]}" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OMP_WAIT_POLICY="$omp_policy" \
                PYTHONWARNINGS=ignore "$py" "$here/torch_flows.py" --data "$data" --threads "$threads" \
                --sides "$sides" --model "$peer_model" --samples "$(n_samples "$m")" \
                | tag "peer-$peer_model" | tee -a "$json" >&2
            peers_done+="$peer_model,"
        fi
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "(total: $(( $(date +%s) - t_start )) s; PyTorch ISA: $peer_isa)" >&2

# 4. Table and ratios.
python3 - "$json" "$threads" "$load_before" "$load_after" "${simd:-best}" "$omp_policy" <<'EOF'
import json, sys
path, threads, load_before, load_after, simd_opt, omp = sys.argv[1:7]
rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
# hepflow rows by (model, kernel path actually used).
hf = {}
for r in rows:
    if r.get("side") == "hepflow":
        hf[(r["bench_model"], r.get("simd", r.get("bench_simd")))] = r
chunks = {}
for r in rows:
    if r.get("side") == "hepflow-chunk":
        chunks.setdefault((r["bench_model"], r.get("bench_simd")), []).append(r)
peers = {(r["bench_model"][len("peer-"):], r["side"]): r for r in rows if r.get("side") in ("nflows", "zuko")}
# Issue 15's targets for hepflow / nflows (training, sampling), by model and kernel path.
TARGETS = {("default", "avx512"): (6, 8), ("nsf", "avx512"): (6, 8), ("realnvp", "avx512"): (2.5, 5),
           ("default", "avx2"): (5, 6), ("realnvp", "avx2"): (2, 4)}
PEER = {"default": ["nsf"], "nsf": ["nsf"], "rq-spline": ["nsf"], "realnvp": ["realnvp"], "glow": ["glow"],
        "maf": ["maf"], "made-mog": ["nsf", "mog-made"], "flow-matching": []}
print()
print(f"threads: {threads}   hepflow kernel paths: {simd_opt}   PyTorch OMP_WAIT_POLICY={omp}")
print(f"load average before: {load_before}, after: {load_after}")
for (m, p), cs in chunks.items():
    print(f"hepflow {m} [{p}] chunk_rows: " + ", ".join(
        f"{c['chunk_rows']} -> {c['train_events_per_s']:,.0f} ev/s" for c in cs))
print()
hdr = (f"{'model':<13} | {'side':<15} | {'params':>9} | {'batch':>5} | {'samples':>9} | {'train ev/s':>11} "
       f"| {'sample ev/s':>11} | {'train ev/CPU-s':>14} | {'sample ev/CPU-s':>15} | load (1 min)")
print(hdr)
print("-" * len(hdr))
def cell(r, k, w):
    v = r.get(k)
    return f"{v:>{w},.0f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
shown = set()
for (m, p), h in hf.items():
    sides = [(f"hepflow {p}", h)]
    if m not in shown:
        shown.add(m)
        sides += [(f"{s} {pm}", peers.get((pm, s))) for pm in PEER[m] for s in ("nflows", "zuko")]
    for side, r in sides:
        if r is None:
            continue
        if "skipped" in r:
            print(f"{m:<13} | {side:<15} | skipped: {r['skipped']}")
            continue
        load = (r.get("loadavg") or ["-"])[0]
        print(f"{m:<13} | {side:<15} | {cell(r, 'params', 9)} | {cell(r, 'batch', 5)} | {cell(r, 'samples', 9)} | "
              f"{cell(r, 'train_events_per_s', 11)} | {cell(r, 'sample_events_per_s', 11)} | "
              f"{cell(r, 'train_events_per_cpu_s', 14)} | {cell(r, 'sample_events_per_cpu_s', 15)} | {load}")
print()
print("ratios hepflow / peer: wall clock (per CPU-second); targets: issue 15, vs nflows, on the per-CPU-second ratios")
hdr = f"{'model':<13} | {'path':<8} | {'peer':<15} | {'training':>17} | {'sampling':>17} | target training / sampling"
print(hdr)
print("-" * len(hdr))
def ratio(a, b, k):
    x, y = a.get(k), b.get(k)
    ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and y > 0
    return x / y if ok else None
def fmt(x):
    return "-" if x is None else f"{x:.2f}x"
def met(x, t):
    return "" if x is None else (" met" if x >= t else " MISSED")
for (m, p), h in hf.items():
    if not PEER[m]:
        print(f"{m:<13} | {p:<8} | {'(no peer)':<15} |")
        continue
    for pm, side in [(pm, s) for pm in PEER[m] for s in ("nflows", "zuko")]:
        o = peers.get((pm, side))
        if o is None or "skipped" in o:
            continue
        tw, tc = ratio(h, o, "train_events_per_s"), ratio(h, o, "train_events_per_cpu_s")
        sw, sc = ratio(h, o, "sample_events_per_s"), ratio(h, o, "sample_events_per_cpu_s")
        tgt = TARGETS.get((m, p)) if side == "nflows" and pm == PEER[m][0] else None
        ttxt = f">= {tgt[0]}x{met(tc, tgt[0])} / >= {tgt[1]}x{met(sc, tgt[1])}" if tgt else "-"
        print(f"{m:<13} | {p:<8} | {side + ' ' + pm:<15} | {fmt(tw):>6} ({fmt(tc):>8}) | {fmt(sw):>6} ({fmt(sc):>8}) | {ttxt}")
print()
print("Only ratios within one run are comparable (the machine's speed drifts).")
EOF
echo "(raw JSON lines: $json)" >&2
