#!/usr/bin/env bash
# The whole test suite, as CI runs it (after fmt and clippy, see .ci/run): the Rust crate's tests,
# then the Python package built from ./python into a fresh virtual environment and its pytest suite.
# The extension builds into the same cargo target directory with the dev profile, so it reuses the
# dependencies `cargo test` compiled. Environment: HEPFLOW_VENV (default target/python-venv),
# HEPFLOW_SKIP_PYTHON=1 to run only the Rust tests.
set -euo pipefail
cd "$(dirname "$0")"

cargo test --workspace
# The kernels and everything built on them again on the other SIMD paths this CPU has (same
# binaries, chosen at run time; a path the CPU lacks falls back to the next one down).
HEPFLOW_SIMD=avx2 cargo test --workspace --lib --test flows --test no_alloc
HEPFLOW_SIMD=portable cargo test --workspace --lib --test flows --test no_alloc

[ "${HEPFLOW_SKIP_PYTHON:-0}" = 1 ] && exit 0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${HEPFLOW_VENV:-$CARGO_TARGET_DIR/python-venv}"
t0=$(date +%s)
python3 -m venv --clear "$venv"
MATURIN_PEP517_ARGS="--profile dev --strip" "$venv/bin/pip" install --quiet --disable-pip-version-check ./python pytest pandas uproot lz4 xxhash zstandard awkward pyarrow
HEPFLOW_CLI="$CARGO_TARGET_DIR/debug/hepflow" "$venv/bin/python" -m pytest -q python/tests
echo "python package: built and tested in $(( $(date +%s) - t0 )) s"
