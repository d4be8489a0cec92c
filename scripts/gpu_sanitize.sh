#!/usr/bin/env bash
# compute-sanitizer over every native kernel and every Triton kernel's GPU
# tests, one tool at a time (memcheck, racecheck, synccheck, initcheck), on
# one CUDA GPU. Each tool's log goes to $OUT/sanitize_<tool>.log and its
# summary line ("ERROR SUMMARY: N errors") is printed.
#   scripts/gpu_sanitize.sh [tool ...]        (default: all four)
# Kernels run once per test under the sanitizer (slow: tens of times the
# plain run), so the test selection is the GPU tests of each op plus the
# vLLM record replay, not the benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MINIMAX_ROCM_JIT=1 PYTHONPATH=$PWD MAX_JOBS=${MAX_JOBS:-16}
unset TRITON_INTERPRET
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
tools=${*:-memcheck racecheck synccheck initcheck}
python3 -c "
from minimax_rocm.native import ext
m = ext.load(verbose=False)
print('extension:', 'loaded' if m is not None else f'FAILED: {ext.load_error()}')" 2>&1 | tee "$OUT/build.log"
TESTS="tests/test_router_gemm.py tests/test_topk_reduce_native.py tests/test_moe_align_native.py
       tests/test_mxfp8_quant.py tests/test_fused_moe.py tests/test_fused_moe_mxfp8.py tests/test_swiglu.py
       tests/test_moe_align.py tests/test_topk_reduce_triton.py tests/test_allreduce_rms.py tests/test_vllm_replay.py"
rc=0
for tool in $tools; do
  extra=""
  [ "$tool" = memcheck ] && extra="--leak-check full"
  "$CS" --tool "$tool" $extra --target-processes all --print-limit 50 \
    python3 -m pytest -q -x -m gpu -p no:cacheprovider $TESTS > "$OUT/sanitize_$tool.log" 2>&1 || rc=1
  echo "$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | sort | uniq -c | tr '\n' ' ')"
  tail -3 "$OUT/sanitize_$tool.log"
done
exit $rc
