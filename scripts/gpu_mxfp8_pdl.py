"""On a GPU machine: the native MXFP8 MoE with and without programmatic
dependent launch of its short kernels, with BF16 / fp32 output atomics,
against the BF16 MoE in
the same process (M3 and M2 EP8 ranks), each with its % of the fp8 floor.
    PYTHONPATH=$PWD python scripts/gpu_mxfp8_pdl.py [T ...]
REPEAT=n: the M3 shape only, BF16, the default native configuration and
the native one with the rounding pass's stream placement flipped, timed n
times in alternation (the run-to-run spread of the % of floor)."""
import os
import sys

import torch

from minimax_rocm.bench.fused_moe import rank_step
from minimax_rocm.bench.fused_moe_mxfp8 import SHAPES, fp8_touched_bytes, mxfp8_weights
from minimax_rocm.bench.harness import copy_bandwidth_gbs, time_us
from minimax_rocm.triton import dependent_launch
from minimax_rocm.triton import fused_moe as bf16_moe
from minimax_rocm.triton import fused_moe_mxfp8 as tri

dev = torch.device("cuda")
bw = copy_bandwidth_gbs() * 1e9
tokens = [int(t) for t in sys.argv[1:]] or [1, 16, 64, 216]
print(torch.cuda.get_device_name(), f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
repeat = int(os.environ.get("REPEAT", "0"))
for name, H, I, E, E_loc, k, act, ep in (SHAPES[:1] if repeat else SHAPES):
    w13, w2, w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, dev)
    for T in tokens:
        hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, dev)
        floor = fp8_touched_bytes(grp, H, I) / bw * 1e6
        tk = dict(iters=20, inner=10) if T >= 216 else {}
        if repeat:
            for _ in range(repeat):
                base = time_us(lambda: bf16_moe.fused_moe(hidden, w13, w2, tw, ids, emap, act), **tk)
                us = time_us(lambda: tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act), **tk)
                flip = not tri.plan(hidden, w13_q, ids, emap)["overlap_rounding"]
                alt = time_us(lambda: tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act,
                                                          overlap_rounding=flip), **tk)
                print(f"{case:40s} BF16 {base:8.1f} us  native {us:8.1f} us  {100 * floor / us:5.1f}% of floor  "
                      f"{base / us:4.2f}x BF16  | rounding {'beside' if flip else 'after'} the alignment "
                      f"{alt:8.1f} us {100 * floor / alt:5.1f}%", flush=True)
            continue
        base = time_us(lambda: bf16_moe.fused_moe(hidden, w13, w2, tw, ids, emap, act), **tk)
        print(f"{case:40s} BF16 {base:8.1f} us   fp8 floor {floor:6.1f} us", flush=True)
        for label, pdl, b16 in (("no pdl, fp32 atomics", False, False),
                                ("no pdl, bf16x2 atomics", False, True),
                                ("pdl, bf16x2 atomics", True, True)):
            def fn(pdl=pdl, b16=b16):
                with dependent_launch.forced(pdl):
                    return tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act,
                                               bf16_atomics=b16)
            us = time_us(fn, **tk)
            print(f"{'':40s} {label:22s} {us:8.1f} us  {100 * floor / us:5.1f}% of floor  "
                  f"{base / us:4.2f}x BF16", flush=True)
    del w13, w2, w13_q, w13_s, w2_q, w2_s
    torch.cuda.empty_cache()
