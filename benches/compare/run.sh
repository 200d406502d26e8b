#!/usr/bin/env bash
# Side-by-side benchmark of kiln against PyTorch eager, JAX jit and Keras 3 (JAX).
#
#   bash benches/compare/run.sh                 # every case, 5 rounds × 50 steps
#   bash benches/compare/run.sh --only mlp128 --rounds 3
#   bash benches/compare/run.sh --json target/bench-compare.json
#
# Creates target/bench-venv on first use (see setup.sh), builds kiln in release mode,
# then runs compare.py pinned to the machine's cores with taskset. Run it on a quiet
# machine: other jobs on the same cores distort every number (the script reports how
# much CPU other processes took during the run). Not used by tests or CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${BENCH_VENV:-$root/target/bench-venv}"
bash "$root/benches/compare/setup.sh" >&2
# KILN=path/to/kiln benchmarks an existing binary instead of building this tree.
[ -n "${KILN:-}" ] || (cd "$root" && cargo build --release --quiet)
cpus="0-$(( $(nproc) - 1 ))"
exec taskset -c "$cpus" "$venv/bin/python" "$root/benches/compare/compare.py" \
    --kiln "${KILN:-$root/target/release/kiln}" "$@"
