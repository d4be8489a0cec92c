#!/usr/bin/env bash
# Issue 5 (fp32 router GEMM) on one NVIDIA GPU (sm90+ for every kernel), in one go:
# JIT-build the native extension, run the router tests, the per-kernel sweep,
# the op at every M <= 32 and the bench; logs under $OUT.
#   scripts/gpu_router.sh     (ROUTER_TESTS="-k tc" narrows the tests; ROUTER_SKIP_TESTS=1 /
#                              ROUTER_SKIP_SWEEP=1 skip the tests / the sweep)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MINIMAX_ROCM_JIT=1 PYTHONPATH=$PWD MAX_JOBS=${MAX_JOBS:-16}
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
python3 -c "
from minimax_rocm.native import ext
m = ext.load(verbose=True)
print('extension:', 'loaded' if m is not None else f'FAILED: {ext.load_error()}')" > "$OUT/build.log" 2>&1
grep -E "error|extension:" "$OUT/build.log" | tail -25
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
if [ -z "${ROUTER_SKIP_TESTS:-}" ]; then
  python3 -m pytest -q -x tests/test_router_gemm.py tests/test_dependent_launch.py ${ROUTER_TESTS:-} > "$OUT/tests.log" 2>&1 || rc=1
  tail -15 "$OUT/tests.log"
fi
if [ -z "${ROUTER_SKIP_SWEEP:-}" ]; then
  python3 -c "from minimax_rocm.bench.router_gemm import sweep_splitk; sweep_splitk()" 2>&1 | tee "$OUT/sweep.log"
fi
python3 -c "from minimax_rocm.bench.router_gemm import sweep_op; sweep_op()" 2>&1 | tee "$OUT/sweep_op.log"
python3 -m minimax_rocm demo > "$OUT/demo.log" 2>&1 || rc=1
tail -3 "$OUT/demo.log"
python3 -m minimax_rocm bench --op router_gemm > "$OUT/bench.log" 2>&1 || rc=1
grep -E "router_gemm|shape|---" "$OUT/bench.log" | head -80
exit $rc
