#!/usr/bin/env bash
# On a GPU machine: where the router GEMM's time goes. Prints (1) the
# harness time (CUDA graphs, as `bench`) of an empty-ish kernel next to each
# router variant, and (2) Nsight Compute's kernel duration and counters of one
# call of each, so the launch/graph overhead and the kernel body separate.
# Needs a machine where ncu may read the GPU's performance counters (some
# sandboxed containers give none); clocks are left alone (--clock-control none).
#   scripts/gpu_profile_router.sh           report under $OUT/ncu_router.txt
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MINIMAX_ROCM_JIT=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
cat > "$OUT/router_cases.py" <<'PY'
import sys, torch
from minimax_rocm.native import ext
from minimax_rocm.bench.harness import time_us
from minimax_rocm.ops.router_gemm import splitk_workspace
profile = len(sys.argv) > 1
assert ext.load() is not None, ext.load_error()
ops = ext.ops()
one = torch.ones(1, device="cuda")
cases = []
for name, H, E in (("M2", 3072, 256), ("M3", 6144, 128)):
    w = torch.randn(E, H, device="cuda")
    for M in (1, 8, 16, 32):
        x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
        out = torch.empty(M, E, device="cuda")
        part, cnt = splitk_workspace(x.device, E)
        cases.append((f"{name} M={M} one-pass", lambda x=x, w=w, out=out: ops.router_gemm(x, w, out)))
        if M >= 16:
            cases.append((f"{name} M={M} split-K", lambda x=x, w=w, out=out, p=part, c=cnt:
                          ops.router_gemm_splitk(x, w, out, p, c, 0)))
cases.insert(0, ("add_ on one float (launch floor)", lambda: one.add_(1.0)))
for label, fn in cases:
    fn(); fn()
torch.cuda.synchronize()
if profile:
    for label, fn in cases:
        torch.cuda.nvtx.range_push("case")
        fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print("profiled:", label, flush=True)
else:
    for label, fn in cases:
        print(f"{label:40s} graph {time_us(fn):6.2f} us   eager {time_us(fn, graph=False):6.2f} us", flush=True)
PY
python3 -c "from minimax_rocm.native import ext; assert ext.load() is not None, ext.load_error()"
python3 "$OUT/router_cases.py"
ncu --clock-control none --nvtx --nvtx-include "case/" \
    --section SpeedOfLight --section LaunchStats --section WarpStateStats --section Occupancy \
    python3 "$OUT/router_cases.py" profile > "$OUT/ncu_router.txt" 2>&1
grep -E "^  [A-Za-z_].*\(|profiled:|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Grid Size|Warp Cycles Per Issued" \
    "$OUT/ncu_router.txt" | head -150
