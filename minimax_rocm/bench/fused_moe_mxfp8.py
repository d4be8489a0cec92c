"""bench --op fused_moe_mxfp8: native MXFP8 vs emulation vs BF16 experts, one
GPU simulating the busiest EP8 rank (routing and rank choice as in
bench/fused_moe.py).

Shapes: M3 EP8 rank (H 6144, I 3072, 16 local of 128, top-4, SwiGLU-OAI) and
M2 EP8 rank (H 3072, I 1536, 32 local of 256, top-8, silu); T in {1, 16, 64,
216, 1024}. Rows per case:
  BF16 [base]   the sparse-local BF16 MoE on BF16 weights (the mixed policy's copy)
  native        fp8 GEMMs with in-kernel block scales (the oracle's tiles)
  native-alt    the other dot modes, half the BLOCK_K, the other swap-AB
                setting, the other SwiGLU placement in upcast mode (the
                measurements behind the per-arch table)
  emulation     dequantise every local expert to BF16, then the BF16 MoE
Each row's floor is its own bytes: native reads the touched experts' fp8
weights plus e8m0 scales (3 x H x I x 33/32 bytes each), BF16 reads 2 bytes
per weight, emulation reads all local fp8 weights, writes and reads them as
BF16. The printed crossover is where BF16 becomes faster than native: the
measurement behind the oracle's mxfp8_bf16_max_tokens / _min_tokens entries.
"""
from __future__ import annotations

import torch

from . import fused_moe as bf16_bench
from .fused_moe import TOKENS, _l2_bytes, make_weights, rank_step, served_moe, touched_bytes
from .harness import Context, Row, register_bench, time_us
from ..ops.moe import align_routes
from ..ops.mxfp8 import quantize_tokens

SHAPES = tuple(s for s in bf16_bench.SHAPES if s[0] in ("M3 EP8", "M2 EP8"))


def mxfp8_weights(E_loc: int, H: int, I: int, device) -> tuple[torch.Tensor, ...]:
    """(w13, w2, w13_q, w13_s, w2_q, w2_s): the BF16 bench weights
    (fused_moe.make_weights) and their MXFP8 form in this GPU's fp8 flavour
    (loose: the benches call the Triton kernels, which take them so)."""
    from ..ops.mxfp8 import Mxfp8Experts
    w13, w2 = make_weights(E_loc, H, I, device)
    ex = Mxfp8Experts.quantize(w13, w2)
    return w13, w2, ex.w13_q, ex.w13_s, ex.w2_q, ex.w2_s


def served_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, **kw) -> torch.Tensor:
    """The native MXFP8 MoE as the op layer calls it (the oracle's token
    quantiser and alignment); kw: the kernel driver's overrides."""
    from ..triton import fused_moe_mxfp8 as tri
    return tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, quantize=quantize_tokens,
                               align=align_routes, **kw)


def emulated_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act) -> torch.Tensor:
    """The op's emulation path (every local expert dequantised, then the BF16 MoE)."""
    from .. import reference
    from ..ops.mxfp8 import _moe_triton
    return _moe_triton(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, "split", reference.SWIGLU_OAI_ALPHA,
                       reference.SWIGLU_OAI_LIMIT, None, None, path="emulation")


def fp8_touched_bytes(grp, H: int, I: int) -> int:
    """The native MoE's floor bytes: the touched experts' fp8 weights plus
    their e8m0 scales (fused_moe.touched_bytes at 33/32 bytes per weight)."""
    return len(grp["experts"]) * 3 * H * I * 33 // 32


def _crossover(rows: list[Row], name: str) -> str:
    by_t: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.case.startswith(name + " "):
            t = int(r.case.split("T=")[1].split()[0])
            by_t.setdefault(t, {})[r.impl.split(" ")[0]] = r.us
    wins = [t for t, d in sorted(by_t.items()) if d.get("native", 1e30) < d.get("BF16", 0.0)]
    if not wins:
        return f"{name}: BF16 is as fast as native MXFP8 at every measured T {sorted(by_t)}"
    return (f"{name}: native MXFP8 faster than BF16 for T in {wins} of {sorted(by_t)} "
            f"(oracle: native between mxfp8_bf16_max_tokens and mxfp8_bf16_min_tokens)")


@register_bench("fused_moe_mxfp8")
def bench(ctx: Context) -> list[Row]:
    if not ctx.gpu:
        return []   # GBs of weights: GPU only
    from ..triton import fused_moe_mxfp8 as tri
    from ..triton import dependent_launch
    rows: list[Row] = []
    shapes = SHAPES[:1] if ctx.quick else SHAPES
    tokens = (16, 216) if ctx.quick else TOKENS
    dev = ctx.device
    for name, H, I, E, E_loc, k, act, ep in shapes:
        w13, w2, w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, dev)
        for T in tokens:
            hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, dev)
            per_expert = 3 * H * I
            tk = dict(iters=20, inner=10) if T >= 216 else {}
            bf16_bytes = touched_bytes(grp, H, I)
            note = "weights fit in L2" if 0 < bf16_bytes <= _l2_bytes() else ""

            bf16 = lambda: served_moe(hidden, w13, w2, tw, ids, emap, act)  # noqa: E731
            ref = bf16().float()
            rows.append(Row("fused_moe_mxfp8", case, "BF16 (sparse-local, BF16 weights)", time_us(bf16, **tk),
                            bf16_bytes, baseline=True, note=note))

            p = tri.plan(hidden, w13_q, ids, emap)
            pdl = dependent_launch.supported(dev)
            variants = [("native", {})] + [
                (f"native-alt ({what})", kw) for what, kw in (
                    *((f"{d} dot", dict(dot=d)) for d in ("fp8", "upcast", "scaled") if d != p["dot"]),
                    ("BLOCK_K / 2", dict(tile=dict(block_k=p["tile1"].block_k // 2))),
                    ("swap-AB", dict(tile=dict(swap_ab=not p["tile1"].swap_ab))),
                    *(((("SwiGLU in its own kernel" if p["fuse_act"] else "SwiGLU fused into GEMM1"),
                        dict(fuse_act=not p["fuse_act"])),) if p["dot"] == "upcast" else ()),
                    ("fp32 atomics + conversion" if p["bf16_atomics"] else "BF16 atomics",
                     dict(bf16_atomics=not p["bf16_atomics"])),
                    *(((("rounding on the main stream" if p["overlap_rounding"] else "rounding beside the alignment"),
                        dict(overlap_rounding=not p["overlap_rounding"])),) if p["dot"] == "upcast" else ()),
                    *((("no PDL", dict(pdl=False)),) if pdl else ()))]
            for label, kw in variants:
                kw = dict(kw)
                on = kw.pop("pdl", True)

                def fn(kw=kw, on=on):
                    with dependent_launch.forced(on):
                        return served_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, **kw)
                q = tri.plan(hidden, w13_q, ids, emap, **kw)
                err = (fn().float() - ref).norm() / ref.norm().clamp_min(1e-30)
                cfg = (f"BM={q['block_m']} BN={q['tile1'].block_n}/{q['tile2'].block_n} "
                       f"BK={q['tile1'].block_k}/{q['tile2'].block_k} {q['dot']}{'+act' if q['fuse_act'] else ''} "
                       f"swapAB={q['tile1'].swap_ab} w{q['tile1'].num_warps} "
                       f"{'bf16' if q['bf16_atomics'] else 'fp32'}-atomics{' pdl' if pdl and on else ''}"
                       f"{' 2-stream' if q['overlap_rounding'] else ''}")
                rows.append(Row("fused_moe_mxfp8", case, f"{label} [{cfg}]", time_us(fn, **tk),
                                fp8_touched_bytes(grp, H, I),
                                note=(note + f" rel.diff vs BF16 {err:.1e}").strip()))

            emulation = lambda: emulated_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act)  # noqa: E731
            emu_bytes = E_loc * per_expert * (33 + 64) // 32 + bf16_bytes  # fp8 in, BF16 out, BF16 MoE
            rows.append(Row("fused_moe_mxfp8", case, "emulation (dequantise all local + BF16)",
                            time_us(emulation, **tk), emu_bytes, note=note))
        del w13, w2, w13_q, w13_s, w2_q, w2_s
        torch.cuda.empty_cache()
    for name, *_ in shapes:
        print(f"# crossover {_crossover(rows, name)}")
    return rows


def sweep_variants() -> list[dict]:
    """Tile overrides tried on top of the table's fp8 tile (both GEMMs):
    programs per SM, pipeline depth, BLOCK_K and BLOCK_N."""
    return [{}, dict(progs_per_cu=3), dict(progs_per_cu=4), dict(num_stages=4), dict(num_stages=4, progs_per_cu=3),
            dict(block_k=128, num_stages=4), dict(block_k=128, num_stages=6),
            dict(block_k=128, num_stages=4, progs_per_cu=3), dict(block_k=128, num_stages=4, progs_per_cu=4),
            dict(block_n=128), dict(block_n=128, num_stages=4), dict(block_n=32, progs_per_cu=4),
            dict(block_n=32, num_stages=4, progs_per_cu=4)]


def sweep(device: torch.device, shapes=SHAPES[:1], tokens=(16, 64, 216, 1024), block_ms=(None,),
          variants=None, log=print) -> list[dict]:
    """Time the native MXFP8 GEMM1 and GEMM2 alone for tile variants; log
    each one's % of its own fp8 weight-bytes floor."""
    from dataclasses import replace
    from ..triton import fused_moe_mxfp8 as tri
    from ..triton.moe_align import moe_align
    from ..triton.mxfp8_quant import mxfp8_round
    from .fused_moe import time_tile
    from .harness import copy_bandwidth_gbs
    bw = (copy_bandwidth_gbs() or 1.0) * 1e9
    out = []
    for name, H, I, E, E_loc, k, act, ep in shapes:
        w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, device)[2:]
        for T in tokens:
            hidden, tw, ids, emap, grp, _ = rank_step(name, T, H, E, E_loc, k, ep, 1000 + T, device)
            n_exp = len(grp["experts"])
            if not n_exp:
                continue
            for bm in block_ms:
                p = tri.plan(hidden, w13_q, ids, emap, block_m=bm)
                s, b, n = moe_align(ids.reshape(-1), p["block_m"], emap, E_loc)
                rows = s.shape[0]
                xr = mxfp8_round(hidden, w13_q.dtype)
                h = torch.zeros(rows, 2 * I, device=device)
                a2 = torch.randn(rows, I, device=device).to(torch.bfloat16)
                y = torch.zeros(T, H, device=device)
                g = dict(num_routes=ids.numel(), top_k=k, dot=p["dot"])
                for which, base, nb in (("gemm1", p["tile1"], n_exp * 2 * I * H * 33 // 32),
                                        ("gemm2", p["tile2"], n_exp * H * I * 33 // 32)):
                    for kw in (variants or sweep_variants()):
                        t = replace(base, **kw)
                        if which == "gemm1":
                            fn = lambda t=t: tri.gemm(xr, None, w13_q, w13_s, h, s, b, n, None, tile=t,  # noqa: E731
                                                      a_by_token=True, atomic_out=False, **g)
                        else:
                            fn = lambda t=t: tri.gemm(a2, None, w2_q, w2_s, y, s, b, n, tw.reshape(-1),  # noqa: E731
                                                      tile=t, a_by_token=False, atomic_out=True, **g)
                        out += time_tile(fn, nb / bw, name, T, which, t, n_exp, log)
        del w13_q, w13_s, w2_q, w2_s
        torch.cuda.empty_cache()
    return out


def spread(device: torch.device, tokens=(16, 64, 216), repeat: int = 3, log=print) -> None:
    """The run-to-run spread at the M3 EP8 rank: the BF16 MoE, the native
    MXFP8 MoE as the table configures it and the native one with the
    rounding pass's stream placement flipped, timed in alternation `repeat`
    times in one process, each with its % of the fp8 floor (the goal of 80%
    sits within that spread: benchmarks/history/fused_moe_mxfp8.md)."""
    from ..triton import fused_moe_mxfp8 as tri
    from .harness import copy_bandwidth_gbs
    bw = copy_bandwidth_gbs() * 1e9
    log(f"{torch.cuda.get_device_name()} copy bandwidth {bw / 1e9:.0f} GB/s")
    name, H, I, E, E_loc, k, act, ep = SHAPES[0]
    w13, w2, w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, device)
    for T in tokens:
        hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, device)
        floor = fp8_touched_bytes(grp, H, I) / bw * 1e6
        tk = dict(iters=20, inner=10) if T >= 216 else {}
        flip = not tri.plan(hidden, w13_q, ids, emap)["overlap_rounding"]
        mx = (w13_q, w13_s, w2_q, w2_s)
        for _ in range(repeat):
            base = time_us(lambda: served_moe(hidden, w13, w2, tw, ids, emap, act), **tk)
            us = time_us(lambda: served_mxfp8(hidden, *mx, tw, ids, emap, act), **tk)
            alt = time_us(lambda: served_mxfp8(hidden, *mx, tw, ids, emap, act, overlap_rounding=flip), **tk)
            log(f"{case:40s} BF16 {base:8.1f} us  native {us:8.1f} us  {100 * floor / us:5.1f}% of floor  "
                f"{base / us:4.2f}x BF16  | rounding {'beside' if flip else 'after'} the alignment "
                f"{alt:8.1f} us {100 * floor / alt:5.1f}%")
    del w13, w2, w13_q, w13_s, w2_q, w2_s
    torch.cuda.empty_cache()


def _sweep_main(shape: str) -> None:
    from .fused_moe import print_best
    shp = tuple(s for s in SHAPES if s[0].startswith(shape)) if shape else SHAPES[:1]
    res = sweep(torch.device("cuda"), shapes=shp, tokens=(64, 216), variants=[
        {}, dict(block_k=128, num_stages=4),
        # longer contiguous runs per weight row (BLOCK_K / 2 measured 12% slower end to end)
        dict(block_n=32, block_k=512), dict(block_n=32, block_k=512, progs_per_cu=2),
        dict(block_n=32, block_k=512, num_stages=4, progs_per_cu=2),
        dict(block_n=64, block_k=512, num_stages=2, progs_per_cu=2),
        dict(block_n=64, block_k=512, num_stages=3, progs_per_cu=1)])
    print_best(res)


if __name__ == "__main__":
    # python -m minimax_rocm.bench.fused_moe_mxfp8 sweep [M2] | spread [--repeat N] [T ...]
    import argparse
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.fused_moe_mxfp8")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="GEMM tile variants alone, against their fp8 floors")
    sw.add_argument("shape", nargs="?", default="", help="shape name prefix (M3, M2; default M3)")
    sp = sub.add_parser("spread", help="BF16 vs native (and the rounding placement flipped), alternating")
    sp.add_argument("tokens", type=int, nargs="*", default=[16, 64, 216])
    sp.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "sweep":
        _sweep_main(a.shape)
    else:
        spread(torch.device("cuda"), tokens=a.tokens, repeat=a.repeat)
