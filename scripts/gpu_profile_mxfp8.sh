#!/usr/bin/env bash
# On a GPU machine: Nsight Compute counters of the native MXFP8 MoE's
# kernels at the M3 EP8 rank, T=216 (the issue-7 goal shape), then mxfp8_quant
# at 16384 x 6144: achieved DRAM bandwidth, issue-slot use, warp stall reasons,
# occupancy. Needs a machine where ncu may read the GPU's performance counters
# (some sandboxed containers give none); clocks are left alone (--clock-control none).
#   scripts/gpu_profile_mxfp8.sh [T]        report under $OUT/ncu_mxfp8.txt
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
T=${1:-216}
cat > "$OUT/mxfp8_step.py" <<PY
import torch
from minimax_rocm import oracle
from minimax_rocm.bench.fused_moe import make_weights, rank_step
from minimax_rocm.ops.mxfp8 import mxfp8_quant
from minimax_rocm.triton import fused_moe_mxfp8 as tri
dev = torch.device("cuda")
H, I, E, E_loc, k = 6144, 3072, 128, 16, 4
fp8 = oracle.detect_platform().fp8_dtype
w13, w2 = make_weights(E_loc, H, I, dev)
(w13_q, w13_s), (w2_q, w2_s) = mxfp8_quant(w13, fp8), mxfp8_quant(w2, fp8)
del w13, w2
hidden, tw, ids, emap, grp, case = rank_step("M3 EP8", $T, H, E, E_loc, k, 8, $T, dev)
print(case, tri.plan(hidden, w13_q, ids, emap))
for _ in range(3):   # compile + warm; ncu skips these launches
    tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap)
torch.cuda.synchronize()
torch.cuda.nvtx.range_push("step")   # ncu profiles only the kernels of this call
tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap)
torch.cuda.synchronize()
torch.cuda.nvtx.range_pop()
# mxfp8_quant at the bench's main shape (issue 7 item 1), each backend of ours.
from minimax_rocm import oracle as orc
from minimax_rocm.ops.mxfp8 import QUANT
xq = torch.randn(16384, 6144, device=dev).to(torch.bfloat16)
for backend in ("hip", "triton"):
    if backend in orc.implemented(QUANT) and backend in orc.detect_platform().backends:
        fn = orc.impl(QUANT, backend)
        fn(xq, "e4m3fn"); torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("step")
        fn(xq, "e4m3fn"); torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print("quant profiled:", backend, flush=True)
PY
ncu --clock-control none --nvtx --nvtx-include "step/" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section SchedulerStats --section Occupancy --section LaunchStats \
    python3 "$OUT/mxfp8_step.py" > "$OUT/ncu_mxfp8.txt" 2>&1
grep -E "^  [A-Za-z_]+.*\(|Duration|Executed Ipc|Issued Warp|Warp Cycles Per Issued|DRAM Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Achieved Occupancy|Registers Per|Stall" \
    "$OUT/ncu_mxfp8.txt" | head -220
