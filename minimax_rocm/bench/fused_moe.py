"""bench --op fused_moe: one GPU simulating one rank's expert work.

Cases (issue 6): an M3 EP8 rank (H 6144, I 3072, 16 local of 128 experts,
top-4, SwiGLU-OAI split), an M2 EP8 rank (H 3072, I 1536, 32 local of 256,
top-8, silu), and M3's TP8 shape (all 128 experts, I 3072/8 = 384: GEMM2 has
K = 384). T in {1, 16, 64, 216, 1024}. Routing is random top-k over ALL
global experts (sigmoid scores of random logits), so at EP8 about 1/8 of the
routes are local; the same routing for every row of a case. The simulated EP
rank is the busiest one for that routing (most experts touched): a step waits
for its slowest rank, and at T = 1 most ranks have nothing to do.

Rows: ours (sparse-local, the per-arch table's configuration), ours with the
other activation placement (fused <-> separate kernel: the measurement behind
the table's `fuse_act`), at T = 1 ours with the other block layout
(per-route blocks <-> the alignment: the measurement behind the table's
`per_route_max_tokens`), the "before" configuration of the same kernels
(global alignment, 64-row tiles, separate activation, weights in the
reduction; the [base] row), torch._grouped_mm + torch SwiGLU-OAI +
index_add_, and a per-expert loop. The two torch baselines get this rank's
local routes grouped on the host before timing (they would otherwise need a
host sync), which only flatters them.

Floor: bytes of the local expert weights actually touched (experts that
receive at least one route: 3 x H x I x 2 bytes each) / measured copy
bandwidth. Where those bytes fit in L2 (T = 1), repeated graph replays find
the weights in cache and the "% roof" overstates.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from .. import reference
from ..models.config import preset
from ..ops.moe import align_routes
from ..parallel import expert_map as make_expert_map
from .harness import Context, Row, register_bench, time_us, vllm_fused_experts


def rank_case(name: str, model: str, ep: int = 1, tp: int = 1) -> tuple:
    """(name, H, I, E_glob, E_loc, top_k, activation, ep_size) of one rank of a model."""
    s = preset(model).moe_rank_shape(ep=ep, tp=tp)
    return (name, s.hidden, s.intermediate, s.num_experts, s.num_local_experts, s.top_k, s.activation, s.ep_size)


def served_moe(hidden, w13, w2, tw, ids, emap, act, **kw) -> torch.Tensor:
    """The BF16 MoE's Triton path as the op layer calls it (the oracle's
    alignment); kw: the kernel driver's overrides (variant, tiles, ...)."""
    from ..triton import fused_moe as tri
    return tri.fused_moe(hidden, w13, w2, tw, ids, emap, act, align=align_routes, **kw)


SHAPES = (rank_case("M3 EP8", "minimax-m3", ep=8), rank_case("M2 EP8", "minimax-m2", ep=8),
          rank_case("M3 TP8", "minimax-m3", tp=8))
TOKENS = (1, 16, 64, 216, 1024)


def routing(T: int, E: int, k: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    logits = torch.randn(T, E, generator=g)
    w, ids = reference.minimax_route(logits, None, k)
    return w.float().to(device), ids.to(device)


def make_weights(E_loc: int, H: int, I: int, device, seed: int = 0):
    torch.manual_seed(seed)
    w13 = torch.randn(E_loc, 2 * I, H, device=device, dtype=torch.bfloat16).mul_(H ** -0.5)
    w2 = torch.randn(E_loc, H, I, device=device, dtype=torch.bfloat16).mul_(I ** -0.5)
    return w13, w2


def local_groups(ids: torch.Tensor, tw: torch.Tensor, emap: Optional[torch.Tensor], E_loc: int):
    """Host-side grouping of this rank's routes (for the torch baselines)."""
    k = ids.shape[1]
    loc = reference.local_expert_ids(ids, emap).reshape(-1).cpu()
    order = torch.argsort(torch.where(loc >= 0, loc, E_loc), stable=True)
    n_local = int((loc >= 0).sum())
    order = order[:n_local]
    counts = torch.bincount(loc[order], minlength=E_loc)
    dev = ids.device
    return dict(order=order.to(dev), tok=(order // k).to(dev), w=tw.reshape(-1)[order.to(dev)],
                counts=counts, offs=torch.cumsum(counts, 0).to(torch.int32).to(dev),
                experts=[int(e) for e in torch.nonzero(counts).reshape(-1)])


def busiest_rank(ids, tw, E: int, E_loc: int, ep: int):
    """(expert_map, local groups) of the EP rank with the most experts touched
    (then the most routes); expert_map None when every expert is local."""
    if ep == 1:
        return None, local_groups(ids, tw, None, E_loc)
    best = None
    for rank in range(ep):
        emap = make_expert_map(E, ep, rank, device=ids.device)
        grp = local_groups(ids, tw, emap, E_loc)
        key = (len(grp["experts"]), len(grp["order"]))
        if best is None or key > best[0]:
            best = (key, emap, grp)
    return best[1], best[2]


def grouped_mm_available() -> bool:
    return hasattr(torch, "_grouped_mm") and torch.cuda.is_available()


def grouped_mm_moe(hidden, w13, w2, grp, act, layout):
    """torch._grouped_mm (2D x 3D, bf16, offs = int32 cumulative row ends) +
    torch SwiGLU-OAI + index_add_."""
    xs = hidden[grp["tok"]]
    h = torch._grouped_mm(xs, w13.transpose(1, 2), offs=grp["offs"])
    a = reference.activation(h, act, layout)
    y = torch._grouped_mm(a, w2.transpose(1, 2), offs=grp["offs"])
    out = torch.zeros_like(hidden)
    return out.index_add_(0, grp["tok"], y * grp["w"].to(y.dtype).unsqueeze(1))


def per_expert_moe(hidden, w13, w2, grp, act, layout, slices):
    out = torch.zeros_like(hidden)
    for e, tok, w in slices:
        a = reference.activation(hidden[tok] @ w13[e].t(), act, layout)
        out.index_add_(0, tok, (a @ w2[e].t()) * w.to(hidden.dtype).unsqueeze(1))
    return out


def rank_step(name: str, T: int, H: int, E: int, E_loc: int, k: int, ep: int, seed: int, device):
    """One decode step of a case: (hidden, router weights, ids, expert_map,
    local groups, case label) for the busiest EP rank of random routing."""
    hidden = torch.randn(T, H, device=device, dtype=torch.bfloat16)
    tw, ids = routing(T, E, k, seed=seed, device=device)
    emap, grp = busiest_rank(ids, tw, E, E_loc, ep)
    return hidden, tw, ids, emap, grp, f"{name} T={T} ({len(grp['experts'])} exp, {len(grp['order'])} rt)"


def touched_bytes(grp, H: int, I: int) -> int:
    return len(grp["experts"]) * 3 * H * I * 2


def _l2_bytes() -> int:
    try:
        return int(torch.cuda.get_device_properties(0).L2_cache_size)
    except Exception:
        return 50 << 20


@register_bench("fused_moe")
def bench(ctx: Context) -> list[Row]:
    if not ctx.gpu:
        return []   # weights of these shapes are GBs: GPU only
    from ..triton import fused_moe as tri
    rows: list[Row] = []
    shapes = SHAPES[:1] if ctx.quick else SHAPES
    tokens = (16, 216) if ctx.quick else TOKENS
    dev = ctx.device
    vllm = vllm_fused_experts()
    for name, H, I, E, E_loc, k, act, ep in shapes:
        w13, w2 = make_weights(E_loc, H, I, dev)
        for T in tokens:
            hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, 1000 + T, dev)
            nbytes = touched_bytes(grp, H, I)
            note = "weights fit in L2" if 0 < nbytes <= _l2_bytes() else ""
            big = T >= 216 or name != "M2 EP8"
            tk = dict(iters=20, inner=10) if big else {}
            p = tri.plan(hidden, w13, ids, emap, "sparse_local")
            ours = lambda f=p["fuse_act"]: served_moe(hidden, w13, w2, tw, ids, emap, act, variant="sparse_local",
                                                      fuse_act=f)
            label = "fused" if p["fuse_act"] else "separate act"
            rows.append(Row("fused_moe", case, f"ours sparse_local BM={p['block_m']} ({label})",
                            time_us(ours, **tk), nbytes, note=note))
            other = "separate act" if p["fuse_act"] else "fused"
            rows.append(Row("fused_moe", case, f"ours sparse_local BM={p['block_m']} ({other})",
                            time_us(lambda: ours(not p["fuse_act"]), **tk), nbytes, note=note))
            if T == 1:     # each route its own block, against the alignment (the table's per_route_max_tokens)
                blocks = "aligned" if p["per_route"] else "per-route blocks"
                rows.append(Row("fused_moe", case, f"ours sparse_local BM={p['block_m']} ({label}, {blocks})",
                                time_us(lambda: served_moe(hidden, w13, w2, tw, ids, emap, act, variant="sparse_local",
                                                           per_route=not p["per_route"]), **tk), nbytes, note=note))
            ref = ours().float()

            def agree(out) -> str:   # every row's output checked against ours (verified by the tests)
                err = reference.rel_error(out.float(), ref)
                return ("" if err < 2e-2 else f"MISMATCH rel {err:.1e}") if ref.abs().max() > 0 else \
                    ("" if out.abs().max() == 0 else "MISMATCH: nonzero")

            before_fn = lambda: served_moe(hidden, w13, w2, tw, ids, emap, act, variant="before")
            rows.append(Row("fused_moe", case, "before (global align, BM=64, sep. act)", time_us(before_fn, **tk),
                            nbytes, baseline=True, note=" ".join(filter(None, (note, agree(before_fn()))))))
            if grouped_mm_available() and grp["experts"]:
                try:
                    gfn = lambda: grouped_mm_moe(hidden, w13, w2, grp, act, "split")
                    rows.append(Row("fused_moe", case, "torch._grouped_mm + torch act + index_add_",
                                    time_us(gfn, **tk), nbytes, note=" ".join(filter(None, (note, agree(gfn()))))))
                except Exception as exc:  # API differences across torch versions: report, don't die
                    rows.append(Row("fused_moe", case, "torch._grouped_mm (failed)", 0.0, nbytes,
                                    note=f"{type(exc).__name__}: {str(exc)[:80]}"))
            if grp["experts"]:
                slices = []
                start = 0
                for e in range(E_loc):
                    n = int(grp["counts"][e])
                    if n:
                        slices.append((e, grp["tok"][start:start + n], grp["w"][start:start + n]))
                    start += n
                lfn = lambda: per_expert_moe(hidden, w13, w2, grp, act, "split", slices)
                rows.append(Row("fused_moe", case, "per-expert loop (torch)", time_us(lfn, iters=10, inner=5),
                                nbytes, note=" ".join(filter(None, (note, agree(lfn()))))))
            if vllm is not None:
                vfn = lambda: vllm(hidden, w13, w2, tw, ids, emap, activation=act)  # noqa: E731
                rows.append(Row("fused_moe", case, "vLLM fused_experts (local copy)", time_us(vfn, **tk), nbytes,
                                note=" ".join(filter(None, (note, agree(vfn()))))))
        del w13, w2
        torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- #
# tile sweep (not a registered bench): `python -m minimax_rocm.bench.fused_moe sweep` runs it
# to fill the sm90 entries of minimax_rocm/triton/moe_configs.py.
# --------------------------------------------------------------------------- #

def _t(bn, bk, w, st, swap=False, ppc=2, g=0):
    from ..triton.moe_configs import Tile
    return Tile(block_n=bn, block_k=bk, num_warps=w, num_stages=st, swap_ab=swap, progs_per_cu=ppc, group_m=g)


def sweep_plan():
    """(tokens, block_ms, gemm1 tiles, gemm2 tiles) rounds: the second H100
    round (T = 1024 and 216, BLOCK_M 16 / 32 / 64). What both rounds found:
    benchmarks/history/fused_moe.md."""
    g1 = [_t(64, 128, 4, 3), _t(64, 128, 4, 3, swap=True), _t(128, 64, 8, 4, swap=True, ppc=1),
          _t(64, 128, 4, 2), _t(64, 64, 4, 4)]
    g2 = [_t(128, 128, 4, 3), _t(128, 128, 4, 3, swap=True), _t(256, 64, 8, 3, swap=True),
          _t(128, 128, 4, 2), _t(128, 64, 4, 4)]
    return [((1024, 216), (16, 32, 64), g1, g2)]


def sweep(device: torch.device, plan=None, shapes=SHAPES, log=print, flops_per_s: float = 0.0) -> list[dict]:
    """Time GEMM1 (fused SwiGLU-OAI) and GEMM2 alone for candidate tiles; log
    each one's % of its own floor: weight bytes at the copy bandwidth, or
    with `flops_per_s` the larger of that and its FLOPs at that rate."""
    from ..triton.moe_align import moe_align
    from .harness import copy_bandwidth_gbs
    bw = (copy_bandwidth_gbs() or 1.0) * 1e9
    out = []
    for name, H, I, E, E_loc, k, act, ep in shapes:
        w13, w2 = make_weights(E_loc, H, I, device)
        for tokens, block_ms, g1_tiles, g2_tiles in (plan or sweep_plan()):
            for T in tokens:
                hidden, tw, ids, emap, grp, _ = rank_step(name, T, H, E, E_loc, k, ep, 1000 + T, device)
                n_exp = len(grp["experts"])
                if not n_exp:
                    continue
                for bm in block_ms:
                    s, b, n = moe_align(ids, bm, emap, E_loc)
                    rows = s.shape[0]
                    a1 = torch.zeros(rows, I, device=device, dtype=torch.bfloat16)
                    y = torch.empty(ids.numel(), H, device=device, dtype=torch.bfloat16)
                    g = dict(expert_map=emap, num_routes=ids.numel(), top_k=k, num_global=E)
                    macs = len(grp["order"]) * H * I   # GEMM2's; GEMM1 has twice as many
                    for which, tiles, nb, fl in (("gemm1", g1_tiles, n_exp * 2 * I * H * 2, 4 * macs),
                                                 ("gemm2", g2_tiles, n_exp * H * I * 2, 2 * macs)):
                        floor_s = max(nb / bw, fl / flops_per_s if flops_per_s else 0.0)
                        for t in tiles:
                            t = replace(t, block_m=bm)
                            def fn(w=which, t=t):
                                return gemm_alone(w, t, hidden, w13, w2, tw, (s, b, n), a1, y, **g)
                            out += time_tile(fn, floor_s, name, T, which, t, n_exp, log)
        del w13, w2
        torch.cuda.empty_cache()
    return out


def gemm_alone(which: str, tile, hidden, w13, w2, tw, aligned: tuple, a1, y, **g):
    """One expert GEMM by itself, as the sweeps time it: "gemm1" (fused
    SwiGLU-OAI) from the token rows into a1 `[rows, I]`, "gemm2" (router
    weighted) from a1 into y `[routes, H]`; `aligned` the routes' alignment
    (sorted ids, block experts, block count), g the kernel's routing args."""
    from ..triton import fused_moe as tri
    s, b, n = aligned
    if which == "gemm1":
        return tri.gemm(hidden, w13, a1, s, b, n, topk_w=None, N=a1.shape[1], tile=tile, a_by_token=True,
                        c_by_route=False, act=2, **g)
    return tri.gemm(a1, w2, y, s, b, n, topk_w=tw.reshape(-1), N=y.shape[1], tile=tile, a_by_token=False,
                    c_by_route=True, mul_weight=True, **g)


def tile_label(t) -> str:
    """A sweep tile's fields, as the logs show them."""
    return (f"BM={t.block_m:3d} BN={t.block_n:3d} BK={t.block_k:3d} w={t.num_warps} st={t.num_stages} "
            f"swap={int(t.swap_ab)} ppc={t.progs_per_cu} g={t.group_m} tma={int(t.tma_w)}")


def time_tile(fn, floor_s: float, name: str, T: int, which: str, t, n_exp: int, log) -> list[dict]:
    """One sweep point: time a GEMM call with tile t, log it against its
    floor (seconds); [] when the tile fails to compile or run (logged)."""
    try:
        us = time_us(fn, iters=10, inner=5)
    except Exception as exc:
        log(f"sweep {name} T={T} {which} {t}: FAILED {type(exc).__name__}: {str(exc)[:200]}")
        return []
    pct = floor_s / (us * 1e-6)
    log(f"sweep {name:7s} T={T:5d} exp={n_exp:3d} {which} {tile_label(t)}: {us:8.1f} us  {100 * pct:5.1f}% of floor")
    return [dict(shape=name, T=T, gemm=which, tile=t, us=us, pct=pct, experts=n_exp)]


def best_by(results: list[dict]) -> dict:
    """(shape, T, gemm) -> the fastest result."""
    best: dict = {}
    for r in results:
        key = (r["shape"], r["T"], r["gemm"])
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    return best


def print_best(results: list[dict]) -> None:
    """The fastest tile per (shape, T, gemm) of a sweep, with its % of floor."""
    print("\nbest per (shape, T, gemm):")
    for key, r in sorted(best_by(results).items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        t = r["tile"]
        print(f"  {key[0]:7s} T={key[1]:5d} {key[2]}: {tile_label(t)} {r['us']:.1f} us {100 * r['pct']:.1f}%")


if __name__ == "__main__":   # python -m minimax_rocm.bench.fused_moe sweep
    import argparse
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.fused_moe")
    ap.add_argument("sweep", choices=("sweep",), help="GEMM1 and GEMM2 alone over sweep_plan()'s tiles")
    ap.parse_args()
    print_best(sweep(torch.device("cuda")))
