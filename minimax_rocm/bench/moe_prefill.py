"""bench --op moe_prefill: the MoE at chunked-prefill step sizes (T = 2048 to
16384 tokens), where the expert GEMMs turn compute-bound.

One GPU simulates the busiest rank of the rank shapes of bench/fused_moe.py
(M3 EP8, M2 EP8, M3 TP8), routing as there. Rows per case:
  ours BF16 [base]   fused_moe as the op runs it (the oracle's tiles and alignment)
  ours MXFP8         fused_moe_mxfp8's native path on the same weights quantised
                     (EP8 shapes; the oracle's choice between it and a BF16
                     copy is what this row and the base row measure)
  vLLM fused_experts a local copy of vLLM's Triton fused MoE, where
                     MINIMAX_ROCM_VLLM_MOE names a Python file defining
                     `fused_experts(hidden, w13, w2, topk_weights, topk_ids,
                     expert_map)` as vLLM's takes them (global ids, the map
                     global -> local or -1); never part of the package
Each row's floor is max(its weight bytes / the measured copy bandwidth, its
FLOPs / the dense BF16 rate measured in the same run by an 8192^3 torch.mm):
% roof is the share of that dense rate where FLOPs bind. The MXFP8 row's
floor uses the same BF16 rate, so its % roof above 100% is its gain from the
fp8 tensor cores.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Optional

import torch

from .fused_moe import SHAPES, make_weights, rank_step, touched_bytes
from .fused_moe_mxfp8 import fp8_touched_bytes, mxfp8_weights
from .harness import Context, Row, register_bench, time_us
from ..ops.moe import align_routes
from ..ops.mxfp8 import quantize_tokens

PREFILL_TOKENS = (2048, 4096, 8192, 16384)
QUICK_TOKENS = (2048,)


def expert_flops(num_local_routes: int, H: int, I: int) -> int:
    """GEMM1 (2I x H) and GEMM2 (H x I) per local route, 2 FLOPs per MAC."""
    return 2 * num_local_routes * 3 * H * I


def vllm_baseline() -> Optional[Callable]:
    """`fused_experts` from the file MINIMAX_ROCM_VLLM_MOE names, or None."""
    path = os.environ.get("MINIMAX_ROCM_VLLM_MOE")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("vllm_moe_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fused_experts


@register_bench("moe_prefill")
def bench(ctx: Context) -> list[Row]:
    if not ctx.gpu:
        return []   # GBs of weights and activations: GPU only
    from ..triton import fused_moe as tri
    from ..triton import fused_moe_mxfp8 as trimx
    rows: list[Row] = []
    dev = ctx.device
    vllm = vllm_baseline()
    tk = dict(warmup=2, iters=5, inner=2)
    for name, H, I, E, E_loc, k, act, ep in SHAPES:
        if ep > 1:
            w13, w2, *mx = mxfp8_weights(E_loc, H, I, dev)
        else:
            (w13, w2), mx = make_weights(E_loc, H, I, dev), None
        for T in (QUICK_TOKENS if ctx.quick else PREFILL_TOKENS):
            hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, 2000 + T, dev)
            flops = expert_flops(len(grp["order"]), H, I)
            nbytes = touched_bytes(grp, H, I)
            ours = lambda: tri.fused_moe(hidden, w13, w2, tw, ids, emap, act, align=align_routes)  # noqa: E731
            p = tri.plan(hidden, w13, ids, emap)
            rows.append(Row("moe_prefill", case, f"ours BF16 BM={p['block_m']} BN={p['tile1'].block_n}",
                            time_us(ours, **tk), nbytes, flops, baseline=True))
            if mx is not None:
                def native():
                    return trimx.fused_moe_mxfp8(hidden, *mx, tw, ids, emap, act, quantize=quantize_tokens,
                                                 align=align_routes)
                rows.append(Row("moe_prefill", case, "ours MXFP8 native", time_us(native, **tk),
                                fp8_touched_bytes(grp, H, I), flops))
            if vllm is not None:
                rows.append(Row("moe_prefill", case, "vLLM fused_experts (local copy)",
                                time_us(lambda: vllm(hidden, w13, w2, tw, ids, emap, activation=act), **tk),
                                nbytes, flops))
        del w13, w2, mx
        torch.cuda.empty_cache()
    return rows
