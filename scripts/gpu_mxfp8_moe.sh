#!/usr/bin/env bash
# Issue 7's MoE on a GPU machine, in one go: the GPU tests of the native
# MXFP8 MoE and its op paths (and of the alignment and BF16 MoE it shares),
# then `bench --op fused_moe_mxfp8`. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export MINIMAX_ROCM_JIT=1 PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "from minimax_rocm.native import ext; m = ext.load(); print('extension', m is not None, ext.load_error())"
python3 -m pytest -q -x -m gpu -p no:cacheprovider tests/test_fused_moe_mxfp8.py tests/test_moe_align.py \
    tests/test_fused_moe.py 2>&1 | tee "$OUT/pytest_mxfp8_moe.log" | tail -25
python3 -m minimax_rocm bench --op fused_moe_mxfp8 "$@" --json "$OUT/bench_mxfp8_moe.json" 2>&1 | tee "$OUT/bench_mxfp8_moe.log"
