#!/usr/bin/env bash
# The checks that need a GPU, as one command: the test suite on the GPU (every test's name printed
# as it finishes, so a run cut short still says which ones failed) and the FNO benchmark against
# neuraloperator. CI never runs this (it has no GPU).
#
#   bash scripts/gpu_check.sh OUT_DIR [TEST_SECONDS]
#
# Needs JAX with CUDA, torch with CUDA and neuraloperator importable (a machine without internet
# access can take neuraloperator, tensorly and tensorly-torch as wheels on PYTHONPATH). Writes
# OUT_DIR/tests.log, OUT_DIR/operators_gpu.json and OUT_DIR/bench.log.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [TEST_SECONDS]}
test_seconds=${2:-300}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Several pytest workers share the GPU: allocate on demand rather than 75% each.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"

# The notebook, README and multi-device tests start CPU interpreters of their own; skip them here.
timeout "$test_seconds" python3 -m pytest tests -p no:cacheprovider -o addopts="" -m "not slow" \
    -n 12 -v -rf --ignore=tests/test_notebooks.py --ignore=tests/test_readme.py \
    --ignore=tests/test_multidevice.py 2>&1 | grep -E "PASSED|FAILED|ERROR|passed|failed|error" \
    > "$out/tests.log"
grep -E "FAILED|ERROR" "$out/tests.log" | sort | uniq | head -50
tail -1 "$out/tests.log"

timeout 300 python3 benchmarks/bench_operators.py --gpu --out "$out/operators_gpu.json" \
    > "$out/bench.log" 2>&1
tail -40 "$out/bench.log"
