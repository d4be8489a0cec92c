#!/usr/bin/env bash
# Issue 6 (sparse-local BF16 MoE) on a GPU machine, in one go: GPU tests of the
# MoE kernels, optionally the tile sweep, then the fused_moe bench; the bench
# table is printed last. Logs under $OUT.
#   MOE_SWEEP=1 scripts/gpu_moe.sh        (sweep GEMM tiles before the bench)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
t0=$(date +%s)
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_moe_align.py tests/test_swiglu.py \
    tests/test_topk_reduce_triton.py tests/test_fused_moe.py 2>&1 | tee "$OUT/pytest_moe.log" | tail -25
echo "tests: $(( $(date +%s) - t0 )) s"
if [ "${MOE_SWEEP:-0}" = 1 ]; then
  t0=$(date +%s)
  python3 -m minimax_rocm.bench.fused_moe sweep > "$OUT/sweep.log" 2>&1
  grep -A200 "best per" "$OUT/sweep.log" || tail -30 "$OUT/sweep.log"
  echo "sweep: $(( $(date +%s) - t0 )) s"
fi
t0=$(date +%s)
python3 - <<'PY' 2>&1 | tee "$OUT/bench_moe.log"
import json, os, torch
from minimax_rocm.bench import harness
rows = harness.run(["fused_moe"], harness.Context(torch.device("cuda")))
env = harness.env_summary()
with open(os.path.join(os.environ.get("OUT", "/tmp"), "bench_moe.json"), "w") as f:
    json.dump(dict(env=env, rows=[r.as_dict() for r in rows]), f, indent=1)
print(env)
notes = sorted({r.note for r in rows if r.note})
if notes:
    print("notes:", "; ".join(notes))
print(harness.format_table(rows))
PY
echo "bench: $(( $(date +%s) - t0 )) s"
