#!/usr/bin/env bash
# Issue 4 (Lamport all-reduce + RMSNorm) on a machine with two NVIDIA GPUs,
# in one go: JIT-build the native extension (translated CUDA), run the
# two-GPU tests, then the two-rank bench; logs and JSON under $OUT.
#   scripts/gpu_lamport.sh            (LAMPORT_SKIP_TESTS=1: bench only)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 MINIMAX_ROCM_JIT=1
# NVLink multicast stays off in every process (as the bench's ENV does)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export MAX_JOBS=${MAX_JOBS:-16}
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvidia-smi topo -m 2>/dev/null | head -4
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'gpus', torch.cuda.device_count())"

t0=$(date +%s)
python3 - > "$OUT/build.log" 2>&1 <<'PY'
import time
t = time.time()
from minimax_rocm.native import ext
m = ext.load(verbose=True)
print("extension:", "loaded" if m is not None else f"FAILED: {ext.load_error()}", f"({time.time() - t:.0f} s)")
if m is not None:
    print("lamport ops:", [n for n in ("lamport_alloc", "lamport_allreduce_rms_qk", "lamport_allreduce_rms")
                           if hasattr(m, n)])
PY
grep -E "error|Error|extension:|lamport ops" "$OUT/build.log" | tail -25
echo "build: $(( $(date +%s) - t0 )) s"

if [ "${LAMPORT_SKIP_TESTS:-0}" != 1 ]; then
  t0=$(date +%s)
  timeout 300 python3 -m pytest -q -x -s -m multigpu -p no:cacheprovider tests/test_lamport_multigpu.py \
      2>&1 | tee "$OUT/pytest_lamport.log" | grep -vE "^\s*$" | tail -45
  echo "tests: $(( $(date +%s) - t0 )) s"
fi

t0=$(date +%s)
timeout 170 python3 -m minimax_rocm.bench.allreduce_rms_qk --json "$OUT/bench_lamport.json" \
    2>&1 | tee "$OUT/bench_lamport.log" | tail -40
echo "bench: $(( $(date +%s) - t0 )) s"
