#!/usr/bin/env bash
# On a CUDA machine: build the translated extension through setup.py (what
# `pip install .` does), check that the prebuilt module loads without JIT, then
# run the GPU tests and the demo against it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 MINIMAX_ROCM_BUILD_EXT=1 TORCH_CUDA_ARCH_LIST="9.0" MAX_JOBS=16
unset MINIMAX_ROCM_JIT
t0=$(date +%s)
python3 setup.py -q build_ext --inplace 2>&1 | grep -vE "^(running|copying|creating)" | tail -20
echo "build_ext: rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
ls minimax_rocm/_C*.so
python3 -c "
import minimax_rocm._C, torch
from minimax_rocm.native import ext
print('prebuilt loads:', ext.available(), 'ops:', [o for o in dir(torch.ops.minimax_rocm_ext) if not o.startswith('_')][:8])
"
python3 -m minimax_rocm info | head -4
python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -4
python3 -m minimax_rocm demo
