#!/usr/bin/env bash
# The GPU figures of issues 4 and 5 in one call on a lent GPU host (current JAX, no TensorFlow,
# Reverb or rlax; rillet imported from this checkout). Logs go to $OUT (default /tmp/gpu_check).
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#     STEPS="r2d2 pac_l_b96" bash benchmarks/gpu_check.sh    # only those steps
# Each step has its own time limit, most important first, so a slow compile costs only its own step.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
pkg=$(mktemp -d) && ln -s "$PWD" "$pkg/rillet" && export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import sys, jax, equinox, optax, numpy; print('python', sys.version.split()[0], 'jax', jax.__version__,
'equinox', equinox.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())" 2>&1 | tee -a "$OUT/gpu.txt"
STEPS=${STEPS:-pac_b64 r2d2 pac_l_b128 pac_l_b96 pac_l_b96_cudnn pytest}
step() {  # step NAME SECONDS CMD...: runs CMD with a limit, logs to $OUT/NAME.txt (if NAME is in $STEPS)
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name exit ${PIPESTATUS[0]}"
}
step pac_b64 ${PAC_LIMIT:-210} python3 benchmarks/pac_step.py --sizes xs s m l --batch 64 --steps 10
step r2d2 ${R2D2_LIMIT:-120} python3 benchmarks/r2d2_update.py --iters 30 --scan-unroll 1 4 16
step pac_l_b128 ${PAC_L_LIMIT:-110} python3 benchmarks/pac_step.py --sizes l --batch 128 --steps 6
step pac_l_b96 ${PAC_L_LIMIT:-110} python3 benchmarks/pac_step.py --sizes l --batch 96 --steps 8
step pac_l_b96_cudnn ${PAC_L_LIMIT:-110} python3 benchmarks/pac_step.py --sizes l --batch 96 --steps 8 --attention cudnn
step pytest ${PYTEST_LIMIT:-60} python3 -m pytest -q -p no:cacheprovider tests/learners/test_value_ops.py tests/learners/test_pac.py
