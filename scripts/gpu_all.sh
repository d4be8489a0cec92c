#!/usr/bin/env bash
# On a GPU machine, in one go: build the native extension (JIT, translated
# CUDA), run every GPU test, then the benchmarks; logs and JSON under $OUT.
#   scripts/gpu_all.sh [bench ops...]      (default: all benches)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 MINIMAX_ROCM_JIT=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'gpus', torch.cuda.device_count())"
python3 - <<'PY' 2>&1 | tee "$OUT/build.log"
import time
t = time.time()
from minimax_rocm.native import ext
m = ext.load(verbose=False)
print("extension:", "loaded" if m is not None else f"FAILED: {ext.load_error()}", f"({time.time() - t:.0f} s)")
PY
python3 -m minimax_rocm info
marks="gpu"
[ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ] && marks="gpu or multigpu"
python3 -m pytest -q -x -m "$marks" -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -40
ops=""
for o in "$@"; do ops="$ops --op $o"; done
python3 -m minimax_rocm bench $ops --json "$OUT/bench.json" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.log"
