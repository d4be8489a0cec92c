#!/usr/bin/env bash
# The property tests (tests/test_properties.py) and the hostile-input tests
# on one CUDA / ROCm GPU: every op against its float64 reference through the
# oracle's dispatch and every backend whose rule takes the drawn case
# (native extension, Triton with each MoE path, torch), with a larger
# Hypothesis budget than the CPU suite's. With two or more GPUs, also the
# Lamport kernel's huge-row case (expected to fail: see test_hostile.py).
#   scripts/gpu_properties.sh            (MINIMAX_ROCM_HYPOTHESIS_EXAMPLES=400 by default)
# A failure prints the drawn case and an @reproduce_failure line. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MINIMAX_ROCM_JIT=1 PYTHONPATH=$PWD MAX_JOBS=${MAX_JOBS:-16}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export MINIMAX_ROCM_HYPOTHESIS_EXAMPLES=${MINIMAX_ROCM_HYPOTHESIS_EXAMPLES:-400}
unset TRITON_INTERPRET
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
python3 -c "import hypothesis" 2>/dev/null || pip install -q hypothesis
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0))"
python3 -c "
from minimax_rocm.native import ext
m = ext.load(verbose=False)
print('extension:', 'loaded' if m is not None else f'FAILED: {ext.load_error()}')" 2>&1 | tee "$OUT/build.log"
marks="gpu"
[ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ] && marks="gpu or multigpu"
t0=$(date +%s)
python3 -m pytest -q -m "$marks" -p no:cacheprovider -rxXs tests/test_properties.py tests/test_hostile.py \
  tests/test_swiglu.py 2>&1 | tee "$OUT/properties.log" | tail -60
rc=${PIPESTATUS[0]}
echo "properties: $(( $(date +%s) - t0 )) s, examples per test $MINIMAX_ROCM_HYPOTHESIS_EXAMPLES, exit $rc"
exit $rc
