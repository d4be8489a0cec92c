"""On a GPU machine: the MoE ops with the Triton alignment (three launches)
against the native one-launch alignment (MINIMAX_ROCM_FORCE_MOE_ALIGN=hip),
timed in alternation in one process: the native MXFP8 MoE and the BF16 MoE
at the M3 / M2 EP8-rank shapes, each with its % of its floor.
    MINIMAX_ROCM_JIT=1 PYTHONPATH=$PWD python scripts/gpu_align_native.py [T ...]
(the native alignment needs the extension: MINIMAX_ROCM_JIT=1 builds it)
REPEAT=n (default 2): rounds of the alternation (the run-to-run spread)."""
import os
import sys

import torch

from minimax_rocm.bench.fused_moe import rank_step, touched_bytes
from minimax_rocm.bench.fused_moe_mxfp8 import SHAPES, fp8_touched_bytes, mxfp8_weights
from minimax_rocm.bench.harness import copy_bandwidth_gbs, time_us
from minimax_rocm.triton import fused_moe as bf16_moe
from minimax_rocm.triton import fused_moe_mxfp8 as tri

KEY = "MINIMAX_ROCM_FORCE_MOE_ALIGN"
dev = torch.device("cuda")
bw = copy_bandwidth_gbs() * 1e9
tokens = [int(t) for t in sys.argv[1:]] or [16, 64, 216]
repeat = int(os.environ.get("REPEAT", "2"))
print(torch.cuda.get_device_name(), f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)


def timed(fn, align, **tk):
    os.environ[KEY] = align
    try:
        return time_us(fn, **tk)
    finally:
        del os.environ[KEY]


for name, H, I, E, E_loc, k, act, ep in SHAPES:
    w13, w2, w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, dev)
    for T in tokens:
        hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, dev)
        floor8 = fp8_touched_bytes(grp, H, I) / bw * 1e6
        floor16 = touched_bytes(grp, H, I) / bw * 1e6
        tk = dict(iters=20, inner=10) if T >= 216 else {}
        mx = lambda: tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act)  # noqa: E731
        bf = lambda: bf16_moe.fused_moe(hidden, w13, w2, tw, ids, emap, act)  # noqa: E731
        for _ in range(repeat):
            line = []
            for label, fn, floor in (("mxfp8", mx, floor8), ("bf16", bf, floor16)):
                t_tri, t_hip = timed(fn, "triton", **tk), timed(fn, "hip", **tk)
                line.append(f"{label} triton-align {t_tri:7.1f} us ({100 * floor / t_tri:4.1f}%) "
                            f"native-align {t_hip:7.1f} us ({100 * floor / t_hip:4.1f}%)")
            print(f"{case:36s} " + " | ".join(line), flush=True)
    del w13, w2, w13_q, w13_s, w2_q, w2_s
    torch.cuda.empty_cache()
