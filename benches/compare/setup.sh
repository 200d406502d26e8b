#!/usr/bin/env bash
# Creates the benchmark's own virtual environment under target/ (never used by tests
# or CI) and installs the peers from PyPI: torch (CPU use only), jax[cpu], keras.
#
#   bash benches/compare/setup.sh            # venv at target/bench-venv
#   BENCH_VENV=/some/dir bash benches/compare/setup.sh
#
# PyPI's Linux x86_64 torch wheel declares the nvidia-* CUDA runtime packages as
# dependencies, and the wheel's libtorch links against them, so they are installed
# too (a few GiB in target/); nothing here uses a GPU.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${BENCH_VENV:-$root/target/bench-venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
if KERAS_BACKEND=jax "$venv/bin/python" -c 'import torch, jax, keras, numpy, psutil' 2>/dev/null; then
    echo "bench venv ready: $venv"
    exit 0
fi
"$venv/bin/python" -m pip install --upgrade pip
# Versions are pinned so that results can be reproduced; bump them together.
"$venv/bin/python" -m pip install \
    "torch==${TORCH_VERSION:-2.15.0}" \
    "jax[cpu]==${JAX_VERSION:-0.10.2}" \
    "keras==${KERAS_VERSION:-3.15.1}" \
    numpy psutil
KERAS_BACKEND=jax "$venv/bin/python" -c 'import torch, jax, keras; print("torch", torch.__version__, "jax", jax.__version__, "keras", keras.__version__)'
