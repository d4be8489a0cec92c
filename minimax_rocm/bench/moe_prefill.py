"""bench --op moe_prefill: the MoE at chunked-prefill step sizes (T = 2048 to
16384 tokens), where the expert GEMMs turn compute-bound.

One GPU simulates the busiest rank of the rank shapes of bench/fused_moe.py
(M3 EP8, M2 EP8, M3 TP8), routing as there. Rows per case:
  ours BF16 [base]   fused_moe as the op runs it (the oracle's tiles and alignment)
  ours MXFP8         fused_moe_mxfp8's native path on the same weights quantised
                     (EP8 shapes; the oracle's choice between it and a BF16
                     copy is what this row and the base row measure)
  ours MXFP8 emul.   its emulation path (every local expert dequantised, then
                     the BF16 MoE): the choice where no BF16 copy is kept
  vLLM fused_experts a local copy of vLLM's Triton fused MoE
                     (harness.vllm_fused_experts: MINIMAX_ROCM_VLLM_MOE)
Each row's floor is max(its weight bytes / the measured copy bandwidth, its
FLOPs / the dense BF16 rate measured in the same run by an 8192^3 torch.mm):
% roof is the share of that dense rate where FLOPs bind. The MXFP8 row's
floor uses the same BF16 rate, so its % roof above 100% is its gain from the
fp8 tensor cores.
"""
from __future__ import annotations

import torch

from .fused_moe import SHAPES, gemm_alone, make_weights, rank_step, served_moe, tile_label, touched_bytes
from .fused_moe_mxfp8 import emulated_mxfp8, fp8_touched_bytes, mxfp8_weights, served_mxfp8
from .harness import Context, Row, register_bench, time_us, vllm_fused_experts

PREFILL_TOKENS = (2048, 4096, 8192, 16384)
QUICK_TOKENS = (2048,)


def expert_flops(num_local_routes: int, H: int, I: int) -> int:
    """GEMM1 (2I x H) and GEMM2 (H x I) per local route, 2 FLOPs per MAC."""
    return 2 * num_local_routes * 3 * H * I


@register_bench("moe_prefill")
def bench(ctx: Context) -> list[Row]:
    if not ctx.gpu:
        return []   # GBs of weights and activations: GPU only
    from ..triton import fused_moe as tri
    rows: list[Row] = []
    dev = ctx.device
    vllm = vllm_fused_experts()
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
            ours = lambda: served_moe(hidden, w13, w2, tw, ids, emap, act)  # noqa: E731
            p = tri.plan(hidden, w13, ids, emap)
            rows.append(Row("moe_prefill", case, f"ours BF16 BM={p['block_m']} BN={p['tile1'].block_n}",
                            time_us(ours, **tk), nbytes, flops, baseline=True))
            if mx is not None:
                # native, and (without a BF16 copy) the other MXFP8 path: dequantise, then the BF16 MoE
                for label, path in (("ours MXFP8 native", served_mxfp8),
                                    ("ours MXFP8 emulation (dequantise + BF16)", emulated_mxfp8)):
                    rows.append(Row("moe_prefill", case, label,
                                    time_us(lambda: path(hidden, *mx, tw, ids, emap, act), **tk),
                                    fp8_touched_bytes(grp, H, I), flops))
            if vllm is not None:
                rows.append(Row("moe_prefill", case, "vLLM fused_experts (local copy)",
                                time_us(lambda: vllm(hidden, w13, w2, tw, ids, emap, activation=act), **tk),
                                nbytes, flops))
        del w13, w2, mx
        torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- #
# prefill tile sweep (not a registered bench): `python -m minimax_rocm.bench.moe_prefill sweep`
# fills the sm90 prefill entries of minimax_rocm/triton/moe_configs.py.
# --------------------------------------------------------------------------- #

def sweep_plan():
    """(tokens, block_ms, gemm1 tiles, gemm2 tiles): the table's prefill
    tiles at group sizes 0 (N-tile major), 4, 8 and 16 M blocks, other
    shapes at 8, and two with weight tiles by TMA, with 64- and 128-row
    blocks (2048 tokens: the decode table's 64-row regime, whose A rows
    outgrow L2 at the TP8 rank; 8192: between the tiers). GEMM1's
    BLOCK_N counts output columns of the fused SwiGLU: each program
    multiplies 2 x BLOCK_N weight rows."""
    from dataclasses import replace

    from ..triton.moe_configs import ARCHS
    from .fused_moe import _t
    ent = ARCHS["sm90"]
    wide1, wide2 = _t(64, 64, 8, 4, ppc=1, g=8), _t(128, 128, 8, 3, ppc=1, g=8)
    pre1, pre2 = ent.prefill[0].gemm1, ent.prefill[0].gemm2
    g1 = [replace(pre1, group_m=g) for g in (0, 4, 8, 16)] + [
        _t(64, 128, 8, 3, ppc=1, g=8), _t(128, 64, 8, 3, ppc=1, g=8), wide1]
    g2 = [replace(pre2, group_m=g) for g in (0, 4, 8, 16)] + [
        _t(256, 64, 8, 3, ppc=1, g=8), wide2, _t(128, 64, 8, 4, ppc=1, g=8)]
    # weight tiles through tensor descriptors (TMA) on the table's tiles and an 8-warp one
    g1 += [replace(t, tma_w=True) for t in (pre1, wide1)]
    g2 += [replace(t, tma_w=True) for t in (pre2, wide2)]
    return [((2048, 4096, 8192, 16384), (64, 128), g1, g2)]


def dense_probe(device: torch.device, flops_per_s: float, rows: int = 8192, H: int = 6144, I: int = 3072,
                log=print) -> None:
    """What limits the prefill GEMMs: the same kernel and tiles on dense
    routing (one expert holding every row, in order: no gather scatter, no
    padding, one weight matrix), as % of the dense torch.mm rate. If these
    sit where the routed GEMMs do, the tile's GEMM code is the limit, not
    the routing."""
    from ..triton.moe_align import moe_align
    from ..triton.moe_configs import ARCHS
    w13, w2 = make_weights(1, H, I, device)
    x = torch.randn(rows, H, device=device, dtype=torch.bfloat16)
    ids = torch.zeros(rows, 1, dtype=torch.int32, device=device)
    tw = torch.ones(rows, 1, device=device)
    tiers = ARCHS["sm90"].prefill
    aligned = moe_align(ids, tiers[0].gemm1.block_m, None, 1)      # the tiers share one BLOCK_M
    a1 = torch.zeros(aligned[0].shape[0], I, device=device, dtype=torch.bfloat16)
    y = torch.empty(rows, H, device=device, dtype=torch.bfloat16)
    g = dict(expert_map=None, num_routes=rows, top_k=1, num_global=1)
    for which, fl in (("gemm1", 4 * rows * H * I), ("gemm2", 2 * rows * H * I)):
        for i, tier in enumerate(tiers):
            t = getattr(tier, which)
            us = time_us(lambda: gemm_alone(which, t, x, w13, w2, tw, aligned, a1, y, **g), iters=10, inner=5)
            log(f"dense routing {rows} rows {which} tier {i} ({tile_label(t)}): {us:8.1f} us "
                f"{fl / us / 1e6:6.1f} TFLOP/s {100 * fl / us / 1e-6 / flops_per_s:5.1f}% of torch.mm")


def mxfp8_variants() -> list[dict]:
    """End-to-end native MXFP8 variants at prefill sizes: the dot mode and
    the tile (both GEMMs) at 128 rows."""
    big = dict(block_n=128, block_k=128, num_warps=8, num_stages=3, progs_per_cu=1)
    mid = dict(block_n=64, block_k=128, num_warps=4, num_stages=3, progs_per_cu=1)
    return [dict(), dict(block_m=128, tile=big), dict(block_m=128, tile=mid),
            dict(block_m=128, dot="fp8", tile=big), dict(block_m=128, dot="fp8", tile=mid),
            dict(block_m=128, dot="fp8", tile=dict(big, block_k=64)), dict(block_m=64, dot="fp8", tile=mid),
            dict(block_m=128, dot="scaled", tile=big)]


def sweep_mxfp8(device: torch.device, tokens=(4096, 16384), log=print) -> None:
    """The native MXFP8 MoE end to end for each of mxfp8_variants(), beside
    the BF16 MoE, at the EP8 ranks: TFLOP/s and the ratio to BF16."""
    for name, H, I, E, E_loc, k, act, ep in SHAPES:
        if ep == 1:
            continue
        w13, w2, *mx = mxfp8_weights(E_loc, H, I, device)
        for T in tokens:
            hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, 2000 + T, device)
            flops = expert_flops(len(grp["order"]), H, I)
            base = time_us(lambda: served_moe(hidden, w13, w2, tw, ids, emap, act), warmup=2, iters=5, inner=2)
            log(f"mxfp8 sweep {case}: BF16 {base:8.1f} us {flops / base / 1e6:6.1f} TFLOP/s")
            for kw in mxfp8_variants():
                try:
                    us = time_us(lambda: served_mxfp8(hidden, *mx, tw, ids, emap, act, **kw), warmup=2, iters=5,
                                 inner=2)
                except Exception as exc:
                    log(f"mxfp8 sweep {case} {kw}: FAILED {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                log(f"mxfp8 sweep {case} {kw}: {us:8.1f} us {flops / us / 1e6:6.1f} TFLOP/s {base / us:5.2f}x BF16")
        del w13, w2, mx
        torch.cuda.empty_cache()


if __name__ == "__main__":   # python -m minimax_rocm.bench.moe_prefill sweep | sweep-mxfp8
    import argparse
    from .fused_moe import print_best, sweep
    from .harness import matmul_tflops
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.moe_prefill")
    ap.add_argument("what", choices=("sweep", "sweep-mxfp8"),
                    help="BF16 GEMM1 / GEMM2 alone over sweep_plan()'s tiles, or mxfp8_variants() end to end")
    a = ap.parse_args()
    if a.what == "sweep":
        rate = matmul_tflops() * 1e12
        print(f"dense BF16 torch.mm: {rate / 1e12:.1f} TFLOP/s")
        print_best(sweep(torch.device("cuda"), plan=sweep_plan(), flops_per_s=rate))
        dense_probe(torch.device("cuda"), rate)
    else:
        sweep_mxfp8(torch.device("cuda"))
