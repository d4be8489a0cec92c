"""Sparse-local BF16 MoE (one EP rank's partial output) in Triton.

Pipeline (DESIGN.md section 3, issue 6):
  moe_align   routes -> groups of this rank's LOCAL experts padded to BLOCK_M
              (minimax_rocm/triton/moe_align.py; padded count stays on the device)
  GEMM1       h = x[token] @ w13[e]^T, activation in the epilogue -> act `[rows, I]`
              (or 2I columns + a separate activation kernel: the unfused variant)
  GEMM2       y[route] = topk_weight[route] * act @ w2[e]^T -> `[T*k, H]`
  reduce      out[t] = sum over t's LOCAL routes of y (no re-weighting; remote
              routes were never written and are skipped)

"before" (variant="before"): the generic configuration of the same kernels for
the benchmark: global alignment (every global expert gets blocks; blocks of
remote experts do no work, GEMM2 writes their rows as zeros), 64-row tiles, a
separate activation kernel, router weights applied in the reduction.

Both GEMMs are one kernel family (`_moe_gemm_kernel`). The decode GEMMs are
bound by reading expert weights, so the kernel is a persistent loop over work
items (M block x N tile; N tiles of one M block are far apart and M blocks of
one N tile adjacent, so blocks sharing an expert's weight tile run together
and hit L2). The grid is min(work items of the worst case, programs per CU x
CUs) and the real item count comes from the device, so there is no host sync
and no flood of empty programs when the worst-case buffer is mostly unused.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .. import reference
from ..platform import cached_outside_capture, device_arch, nvidia_capability
from . import moe_configs
from .elementwise import ACT_IDS, act_math, glu
from .moe_align import local_expert, moe_align
from .topk_reduce import topk_reduce

# Interpreter pitfall (Triton 3.6/3.9): tl.dot on bf16 operands is garbage
# there; only the interpreter upcasts the operands.
UPCAST_DOT = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _mma(a, w, acc, SWAP_AB: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """acc += a @ w^T ([BM, BN]) or, swapped, acc += w @ a^T ([BN, BM]).
    IEEE: fp32 operands multiply in full fp32 (tests), not tf32."""
    if UPCAST:
        a = a.to(tl.float32)
        w = w.to(tl.float32)
    if SWAP_AB:
        if IEEE:
            return tl.dot(w, tl.trans(a), acc, input_precision="ieee")
        else:
            return tl.dot(w, tl.trans(a), acc)
    else:
        if IEEE:
            return tl.dot(a, tl.trans(w), acc, input_precision="ieee")
        else:
            return tl.dot(a, tl.trans(w), acc)


@triton.jit
def item_coords(item, n_blocks, n_tiles, GROUP_M: tl.constexpr):
    """Work item -> (M block, N tile) of the persistent MoE GEMM loops (this
    file's and the MXFP8 one's). GROUP_M 0: the M blocks of one N tile are
    adjacent items, so blocks sharing an expert's weight tile run together
    (decode: the weights are the traffic). GROUP_M > 0: groups of GROUP_M M
    blocks sweep every N tile before the next group starts, so a group's A
    rows stay in L2 while weight tiles stream (prefill: A outgrows L2 and
    would be read again for every N tile)."""
    if GROUP_M == 0:
        return item % n_blocks, item // n_blocks
    per_group = GROUP_M * n_tiles
    first = (item // per_group) * GROUP_M
    size = tl.minimum(n_blocks - first, GROUP_M)
    r = item % per_group
    return first + r % size, r // size


@triton.jit
def item_tile(item, n_blocks, N, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """item_coords -> (M block b, its first column n0, its columns offs_n and
    their mask)."""
    b, n = item_coords(item, n_blocks, tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_n = n * BLOCK_N + tl.arange(0, BLOCK_N)
    return b, n * BLOCK_N, offs_n, offs_n < N


@triton.jit
def work_item(item, n_blocks, sorted_ptr, num_routes, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              GROUP_M: tl.constexpr):
    """item_tile, plus the block's route ids and their mask."""
    b, n0, offs_n, n_ok = item_tile(item, n_blocks, N, BLOCK_N, GROUP_M)
    routes = tl.load(sorted_ptr + b * BLOCK_M + tl.arange(0, BLOCK_M))
    return b, n0, offs_n, n_ok, routes, routes < num_routes


@triton.jit
def _w_tile(ptrs, w_desc, row0, k0, mask, TMA_W: tl.constexpr, MASKED: tl.constexpr):
    """A [BLOCK_N, BLOCK_K] weight tile: rows row0.. of the [E_loc x rows, K]
    weight view through its tensor descriptor (TMA_W: bulk copies, zeros
    past K), else through pointers (masked where a tile edge needs it)."""
    if TMA_W:
        return w_desc.load([row0, k0])
    elif MASKED:
        return tl.load(ptrs, mask=mask, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _moe_gemm_kernel(
        a_ptr, w_ptr, w_desc, c_ptr, sorted_ptr, block_ptr, npost_ptr, map_ptr, topk_w_ptr,
        num_routes, top_k, N, K, E_glob, E_loc,
        stride_am, stride_we, stride_wn, stride_cm,
        alpha, limit,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,        # item order (item_coords): 0 N-tile major, else groups of GROUP_M M blocks
        A_BY_TOKEN: tl.constexpr,     # GEMM1: A row = route // top_k (hidden); GEMM2: A row = sorted position
        C_BY_ROUTE: tl.constexpr,     # GEMM2: C row = route id; GEMM1: C row = sorted position
        ACT: tl.constexpr,            # 0: plain GEMM; 1 silu / 2 SwiGLU-OAI fused (loads gate + up tiles)
        INTERLEAVED: tl.constexpr,    # gate/up layout of w13 rows: interleaved (even/odd) or split halves
        MUL_WEIGHT: tl.constexpr,     # scale C rows by the route's router weight
        ZERO_REMOTE: tl.constexpr,    # blocks of non-local experts write zero rows ("before" GEMM2)
        MAP_BLOCKS: tl.constexpr,     # block expert ids are GLOBAL ("before"): map them to local ids
        HAS_MAP: tl.constexpr,
        SWAP_AB: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        ALIGNED: tl.constexpr,        # bases and row strides of A and W are 16-byte multiples
        UPCAST: tl.constexpr, IEEE: tl.constexpr,
        TMA_W: tl.constexpr = False):  # weight tiles through w_desc (split layout, N % BLOCK_N == 0)
    n_blocks = tl.load(npost_ptr) // BLOCK_M
    total = n_blocks * tl.cdiv(N, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    for item in range(tl.program_id(0), total, tl.num_programs(0)):
        b, n0, offs_n, n_ok, routes, row_ok = work_item(item, n_blocks, sorted_ptr, num_routes, N, BLOCK_M,
                                                        BLOCK_N, GROUP_M)
        e = tl.load(block_ptr + b)
        if MAP_BLOCKS:
            e = local_expert(e, map_ptr, E_glob, E_loc, HAS_MAP)
        else:
            e = tl.where((e >= 0) & (e < E_loc), e, -1)
        if C_BY_ROUTE:
            c_rows = routes.to(tl.int64)
        else:
            c_rows = (b * BLOCK_M + offs_m).to(tl.int64)
        if e >= 0:
            if A_BY_TOKEN:
                a_rows = tl.where(row_ok, routes // top_k, 0).to(tl.int64)
            else:
                a_rows = (b * BLOCK_M + offs_m).to(tl.int64)
            w_base = w_ptr + e.to(tl.int64) * stride_we
            if ACT == 0:
                g_rows = offs_n
            elif INTERLEAVED:
                g_rows = 2 * offs_n
            else:
                g_rows = offs_n
            a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
            g_ptrs = w_base + g_rows.to(tl.int64)[:, None] * stride_wn + offs_k[None, :]
            # the up tile: the next row (interleaved) or I rows further (split)
            if INTERLEAVED:
                u_ptrs = g_ptrs + stride_wn
            else:
                u_ptrs = g_ptrs + N.to(tl.int64) * stride_wn
            if ALIGNED:
                # The host checked 16-byte aligned bases and row strides. The
                # JIT infers this from its argument specialisation; saying it
                # here keeps ahead-of-time compiles (no specialisation) on
                # 16-byte loads and the cp.async / LDS pipeline too.
                a_ptrs = tl.multiple_of(a_ptrs, [16, 16])
                g_ptrs = tl.multiple_of(g_ptrs, [16, 16])
                u_ptrs = tl.multiple_of(u_ptrs, [16, 16])
            if SWAP_AB:
                acc_g = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            else:
                acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            acc_u = tl.zeros_like(acc_g)
            # the gate tile's first row in the [E_loc x rows, K] view (TMA_W)
            g_row0 = e * (stride_we // stride_wn) + n0
            for k0 in range(0, K, BLOCK_K):
                if EVEN_K:
                    a_m = row_ok[:, None]
                    w_m = n_ok[:, None]
                else:
                    k_ok = offs_k < K - k0
                    a_m = row_ok[:, None] & k_ok[None, :]
                    w_m = n_ok[:, None] & k_ok[None, :]
                a = tl.load(a_ptrs, mask=a_m, other=0.0)
                g = _w_tile(g_ptrs, w_desc, g_row0, k0, w_m, TMA_W, not (EVEN_N and EVEN_K))
                acc_g = _mma(a, g, acc_g, SWAP_AB, UPCAST, IEEE)
                if ACT != 0:
                    u = _w_tile(u_ptrs, w_desc, g_row0 + N, k0, w_m, TMA_W, not (EVEN_N and EVEN_K))
                    acc_u = _mma(a, u, acc_u, SWAP_AB, UPCAST, IEEE)
                a_ptrs += BLOCK_K
                g_ptrs += BLOCK_K
                u_ptrs += BLOCK_K
            if ACT != 0:
                y = act_math(acc_g, acc_u, alpha, limit, ACT)
            else:
                y = acc_g
            if MUL_WEIGHT:
                wts = tl.load(topk_w_ptr + routes, mask=row_ok, other=0.0).to(tl.float32)
                if SWAP_AB:
                    y = y * wts[None, :]
                else:
                    y = y * wts[:, None]
            if C_BY_ROUTE:
                r_m = row_ok
            else:
                r_m = offs_m < BLOCK_M      # GEMM1 stores padding rows too (zeros): GEMM2 reads whole blocks
            if SWAP_AB:
                tl.store(c_ptr + c_rows[None, :] * stride_cm + offs_n[:, None], y.to(c_ptr.dtype.element_ty),
                         mask=r_m[None, :] & n_ok[:, None])
            else:
                tl.store(c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :], y.to(c_ptr.dtype.element_ty),
                         mask=r_m[:, None] & n_ok[None, :])
        elif ZERO_REMOTE:
            z = tl.zeros((BLOCK_M, BLOCK_N), dtype=c_ptr.dtype.element_ty)
            tl.store(c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :], z,
                     mask=row_ok[:, None] & n_ok[None, :])


@functools.lru_cache(maxsize=None)
def _cu_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def cu_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return _cu_count(device.index if device.index is not None else torch.cuda.current_device())


def persistent_grid(items: int, tile: moe_configs.Tile, device: torch.device) -> int:
    """Programs of a persistent MoE GEMM: never more than the worst-case work
    items, tile.progs_per_cu per SM/CU on a GPU, a few in the interpreter (so
    one program runs several items)."""
    if device.type != "cuda":
        return max(1, min(items, 3))
    return max(1, min(items, tile.progs_per_cu * cu_count(device)))


def gemm(a, w, c, sorted_ids, block_ids, npost, expert_map, topk_w, *, num_routes: int, top_k: int, N: int,
         tile: moe_configs.Tile, a_by_token: bool, c_by_route: bool, act: int = 0, interleaved: bool = False,
         mul_weight: bool = False, zero_remote: bool = False, map_blocks: bool = False, num_global: int = 0,
         alpha: float = reference.SWIGLU_OAI_ALPHA, limit: float = reference.SWIGLU_OAI_LIMIT) -> None:
    """One launch of the GEMM family (see _moe_gemm_kernel's flags)."""
    E_loc, _, K = w.shape
    max_blocks = block_ids.shape[0]
    progs = persistent_grid(max_blocks * triton.cdiv(N, tile.block_n), tile, a.device)
    fp32 = w.dtype == torch.float32
    aligned = all(t.data_ptr() % 16 == 0 for t in (a, w)) and all(
        (st * t.element_size()) % 16 == 0 for t, st in ((a, a.stride(0)), (w, w.stride(0)), (w, w.stride(1))))
    # weight tiles by tensor descriptor: whole tiles of one expert's rows
    # (split gate/up layout, N a multiple of BLOCK_N), contiguous aligned weights
    tma = (tile.tma_w and aligned and w.is_contiguous() and not interleaved and N % tile.block_n == 0
           and (nvidia_capability(w.device) is not None or os.environ.get("TRITON_INTERPRET") == "1"))
    w_desc = TensorDescriptor.from_tensor(w.view(-1, K), [tile.block_n, tile.block_k]) if tma else w
    _moe_gemm_kernel[(progs,)](
        a, w, w_desc, c, sorted_ids, block_ids, npost, sorted_ids if expert_map is None else expert_map,
        sorted_ids if topk_w is None else topk_w,
        num_routes, top_k, N, K, num_global or E_loc, E_loc,
        a.stride(0), w.stride(0), w.stride(1), c.stride(0), float(alpha), float(limit),
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m, A_BY_TOKEN=a_by_token,
        C_BY_ROUTE=c_by_route, ACT=act, INTERLEAVED=interleaved, MUL_WEIGHT=mul_weight, ZERO_REMOTE=zero_remote,
        MAP_BLOCKS=map_blocks, HAS_MAP=expert_map is not None, SWAP_AB=tile.swap_ab,
        EVEN_K=K % tile.block_k == 0, EVEN_N=N % tile.block_n == 0, ALIGNED=aligned, UPCAST=UPCAST_DOT and not fp32,
        IEEE=fp32, TMA_W=tma, num_warps=tile.num_warps, num_stages=tile.num_stages)


def _buffer(shape, dtype, device) -> torch.Tensor:
    """Intermediate buffers (tests replace this to poison them with NaN: no
    element the kernels leave unwritten may reach the output)."""
    return torch.empty(shape, dtype=dtype, device=device)


def plan(hidden: torch.Tensor, w13: torch.Tensor, topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor],
         variant: str = "sparse_local", fuse_act: Optional[bool] = None, block_m: Optional[int] = None,
         tile1: Optional[moe_configs.Tile] = None, tile2: Optional[moe_configs.Tile] = None,
         per_route: Optional[bool] = None) -> dict:
    """The configuration the driver runs (tiles from the per-arch table)."""
    E_loc, two_i, H = w13.shape
    E_glob = E_loc if expert_map is None else expert_map.shape[0]
    return plan_shape(device_arch(hidden.device), cu_count(hidden.device), H=H, I=two_i // 2, E_glob=E_glob,
                      E_loc=E_loc, routes=topk_ids.numel(), tokens=topk_ids.shape[0], variant=variant,
                      fuse_act=fuse_act, block_m=block_m, tile1=tile1, tile2=tile2, per_route=per_route)


def plan_shape(arch: str, cus: int, *, H: int, I: int, E_glob: int, E_loc: int, routes: int, tokens: int = 0,
               variant: str = "sparse_local", fuse_act: Optional[bool] = None, block_m: Optional[int] = None,
               tile1: Optional[moe_configs.Tile] = None, tile2: Optional[moe_configs.Tile] = None,
               per_route: Optional[bool] = None) -> dict:
    """plan() from sizes alone: what `explain` shows for a target (tokens 0:
    not known, so the table's per-route blocks are off)."""
    ent = moe_configs.arch_entry(arch)
    before = variant == "before"
    if before:
        fuse = False if fuse_act is None else fuse_act
        bm = block_m or ent.before.block_m
    else:
        fuse = ent.fuse_act if fuse_act is None else fuse_act
        bm = block_m or moe_configs.choose_block_m(arch, routes, E_glob, E_loc)
    # "before" sees every global expert as a candidate for work: blocks are
    # counted over the global experts.
    e_count = E_glob if before else E_loc
    common = dict(num_routes=routes, num_experts=E_glob, num_local=e_count if before else E_loc, block_m=bm,
                  cu_count=cus, before=before)
    t1 = moe_configs.choose(arch, "gemm1", N=I if fuse else 2 * I, K=H, override=tile1, **common)
    t2 = moe_configs.choose(arch, "gemm2", N=H, K=I, override=tile2, **common)
    if per_route is None:
        per_route = 0 < tokens <= ent.per_route_max_tokens
    per_route = per_route and not before
    return dict(arch=arch, variant=variant, fuse_act=fuse, block_m=bm, tile1=t1, tile2=t2,
                align_experts=e_count, per_route=per_route)


_PER_ROUTE_INDEX: dict = {}


def per_route_blocks(topk_ids: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The alignment's three outputs with each route its own block (its row
    first, padding after): sorted ids, the blocks' GLOBAL expert ids (the
    routing itself: the GEMMs map them, `map_blocks`) and the padded row
    count. The two index tensors depend on the route count alone, so they are
    made once per device, never while a graph is captured (they would live
    in its memory pool)."""
    routes = topk_ids.numel()
    i32 = dict(dtype=torch.int32, device=topk_ids.device)

    def make_index():
        sorted_ids = torch.full((routes, block_m), routes, **i32)
        sorted_ids[:, 0] = torch.arange(routes, **i32)
        return sorted_ids.view(-1), torch.full((1,), routes * block_m, **i32)
    sorted_ids, npost = cached_outside_capture(_PER_ROUTE_INDEX, (topk_ids.device, routes, block_m), make_index)
    return sorted_ids, topk_ids.reshape(-1), npost


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor] = None, activation: str = "silu",
              layout: str = "split", alpha: float = reference.SWIGLU_OAI_ALPHA,
              limit: float = reference.SWIGLU_OAI_LIMIT, variant: str = "sparse_local",
              fuse_act: Optional[bool] = None, block_m: Optional[int] = None,
              tile1: Optional[moe_configs.Tile] = None, tile2: Optional[moe_configs.Tile] = None,
              per_route: Optional[bool] = None, align: Optional[Callable] = None) -> torch.Tensor:
    """This rank's partial `[T, H]` (hidden's dtype). Inputs as the op checks
    them (contiguous; topk_ids GLOBAL ids; expert_map global -> local or -1).
    variant "sparse_local" (default; "auto" means the same) or "before";
    fuse_act / block_m / tile1 / tile2 / per_route (each route its own
    block, no alignment) override the per-arch table.
    `align(topk_ids, block_m, expert_map, num_local_experts)` aligns the
    routes: the op layer passes the oracle's choice, the default is this
    package's Triton alignment."""
    T, H = hidden.shape
    if T == 0:
        return hidden.new_empty((0, H))
    if variant == "auto":
        variant = "sparse_local"
    if variant not in ("sparse_local", "before"):
        raise ValueError(f"fused_moe: variant {variant!r} is not 'sparse_local', 'before' or 'auto'")
    E_loc, two_i, _ = w13.shape
    I = two_i // 2
    k = topk_ids.shape[1]
    routes = topk_ids.numel()
    E_glob = E_loc if expert_map is None else expert_map.shape[0]
    p = plan(hidden, w13, topk_ids, expert_map, variant, fuse_act, block_m, tile1, tile2, per_route)
    before = variant == "before"
    bm = p["block_m"]
    act = ACT_IDS[activation]
    inter = layout == "interleaved"
    tw = topk_weights.reshape(-1)

    align = align or moe_align
    if p["per_route"]:
        sorted_ids, block_ids, npost = per_route_blocks(topk_ids, bm)
    elif before:   # global alignment: blocks carry GLOBAL expert ids
        sorted_ids, block_ids, npost = align(topk_ids, bm, None, E_glob)
    else:
        sorted_ids, block_ids, npost = align(topk_ids, bm, expert_map, E_loc)
    rows = sorted_ids.shape[0]
    g = dict(expert_map=expert_map, num_routes=routes, top_k=k, map_blocks=before or p["per_route"],
             num_global=E_glob, alpha=alpha, limit=limit)

    if p["fuse_act"]:
        a1 = _buffer((rows, I), hidden.dtype, hidden.device)
        gemm(hidden, w13, a1, sorted_ids, block_ids, npost, topk_w=None, N=I, tile=p["tile1"], a_by_token=True,
             c_by_route=False, act=act, interleaved=inter, **g)
    else:
        h1 = _buffer((rows, 2 * I), hidden.dtype, hidden.device)
        gemm(hidden, w13, h1, sorted_ids, block_ids, npost, topk_w=None, N=2 * I, tile=p["tile1"],
             a_by_token=True, c_by_route=False, **g)
        # (global block ids: blocks of remote experts, which GEMM1 leaves unwritten, are skipped)
        a1 = glu(h1, activation, layout, alpha, limit, row_count=npost,
                 out=_buffer((rows, I), hidden.dtype, hidden.device),
                 blocks=(block_ids, bm, expert_map, E_loc) if g["map_blocks"] else None)

    y = _buffer((routes, H), hidden.dtype, hidden.device)
    gemm(a1, w2, y, sorted_ids, block_ids, npost, topk_w=None if before else tw, N=H, tile=p["tile2"],
         a_by_token=False, c_by_route=True, mul_weight=not before, zero_remote=before, **g)
    # Remote routes: rows never written by the sparse GEMM2 (zeros in
    # "before"); the reduction skips them either way. "before" weights them
    # in the reduction, so a remote route's weight is zeroed first: its 0 row
    # times a NaN weight must not reach the output.
    if before:
        ok = (topk_ids >= 0) & (topk_ids < E_glob)
        loc = topk_ids.long().clamp(0, E_glob - 1)
        if expert_map is not None:
            loc = expert_map.long()[loc]
        tw = torch.where(ok & (loc >= 0) & (loc < E_loc), topk_weights, 0).reshape(-1)
    return topk_reduce(y.view(T, k, H), tw.view(T, k) if before else None, topk_ids=topk_ids,
                       expert_map=expert_map, num_local_experts=E_loc,
                       out=_buffer((T, H), hidden.dtype, hidden.device))


# --------------------------------------------------------------------------- #
# ahead-of-time compile specs (production tiles of the per-arch table)
# --------------------------------------------------------------------------- #

_SIG = {"a_ptr": "*bf16", "w_ptr": "*bf16", "w_desc": "*bf16", "c_ptr": "*bf16", "sorted_ptr": "*i32",
        "block_ptr": "*i32", "npost_ptr": "*i32", "map_ptr": "*i32", "topk_w_ptr": "*fp32", "num_routes": "i32",
        "top_k": "i32", "N": "i32", "K": "i32", "E_glob": "i32", "E_loc": "i32", "stride_am": "i32", "stride_we": "i32",
        "stride_wn": "i32", "stride_cm": "i32", "alpha": "fp32", "limit": "fp32"}
_CONST = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "A_BY_TOKEN", "C_BY_ROUTE", "ACT", "INTERLEAVED", "MUL_WEIGHT",
          "ZERO_REMOTE", "MAP_BLOCKS", "HAS_MAP", "SWAP_AB", "EVEN_K", "EVEN_N", "ALIGNED", "UPCAST",
          "IEEE", "TMA_W")


def aot_specs():
    from .aot import AotSpec
    sig = {**_SIG, **{c: "constexpr" for c in _CONST}}

    targets = {t: moe_configs.ARCHS[t] for t in ("gfx942", "gfx950", "sm90")}

    def settings(t) -> dict:
        return dict(**t.constexprs(), num_warps=t.num_warps, num_stages=t.num_stages)

    def per_target(which: str) -> dict:
        """{target: launch settings} of a decode-table tile."""
        return {name: settings(getattr(ent, which)) for name, ent in targets.items() if getattr(ent, which)}

    def prefill_tier(gemm: str, tier: int) -> dict:
        """{target: launch settings} of `gemm`'s tile in a prefill tier, where the target has that tier."""
        return {name: settings(getattr(ent.prefill[tier], gemm)) for name, ent in targets.items()
                if tier < len(ent.prefill)}

    pre1, pre2 = prefill_tier("gemm1", 0), prefill_tier("gemm2", 0)
    big1 = prefill_tier("gemm1", 1)
    t2 = moe_configs.ARCHS["sm90"].prefill[-1].gemm2      # the tier whose GEMM2 loads weights by TMA
    assert t2.tma_w

    base = dict(A_BY_TOKEN=True, C_BY_ROUTE=False, ACT=2, INTERLEAVED=False, MUL_WEIGHT=False, ZERO_REMOTE=False,
                MAP_BLOCKS=False, HAS_MAP=True, EVEN_K=True, EVEN_N=True, ALIGNED=True, UPCAST=False, IEEE=False,
                TMA_W=False, **moe_configs.ARCHS["sm90"].gemm1.constexprs())
    g2 = dict(base, A_BY_TOKEN=False, C_BY_ROUTE=True, ACT=0, MUL_WEIGHT=True,
              **moe_configs.ARCHS["sm90"].gemm2.constexprs())
    return [
        # M3 EP8 rank: GEMM1 N = I = 3072 (fused SwiGLU-OAI, split), K = 6144
        AotSpec("moe_gemm1[swiglu_oai,split,fused]", _moe_gemm_kernel, sig, base, matmul=True,
                per_target=per_target("gemm1")),
        # M2: silu-and-mul, interleaved layout exercised too
        AotSpec("moe_gemm1[silu,interleaved,fused]", _moe_gemm_kernel, sig, dict(base, ACT=1, INTERLEAVED=True),
                matmul=True, per_target=per_target("gemm1")),
        # one token: each route its own block, GLOBAL block expert ids mapped in the kernel
        AotSpec("moe_gemm1[swiglu_oai,split,fused,per-route]", _moe_gemm_kernel, sig, dict(base, MAP_BLOCKS=True),
                matmul=True, per_target=per_target("gemm1")),
        # unfused GEMM1 (2I columns, separate activation kernel)
        AotSpec("moe_gemm1[unfused]", _moe_gemm_kernel, sig, dict(base, ACT=0), matmul=True,
                per_target=per_target("gemm1")),
        # GEMM2 (K = I = 3072) with the router weight; and the TP8 short-K tile (K = 384)
        AotSpec("moe_gemm2[weighted]", _moe_gemm_kernel, sig, g2, matmul=True, per_target=per_target("gemm2")),
        AotSpec("moe_gemm2[short_k]", _moe_gemm_kernel, sig, g2, matmul=True,
                per_target=per_target("gemm2_short_k")),
        # BLOCK_M 64 (an expert averaging > 24 rows, e.g. T = 1024 at EP8)
        AotSpec("moe_gemm1[swiglu_oai,split,fused,BM=64]", _moe_gemm_kernel, sig, dict(base, BLOCK_M=64),
                matmul=True, per_target={t: dict(v, BLOCK_M=64, num_stages=moe_configs.ARCHS[t].large_m_stages)
                                         for t, v in per_target("gemm1").items()}),
        # prefill tiles (a chunked-prefill step, hundreds of rows per expert), where an arch's entry has them
        AotSpec("moe_gemm1[swiglu_oai,split,fused,prefill]", _moe_gemm_kernel, sig, base, matmul=True,
                targets=tuple(pre1), per_target=pre1),
        AotSpec("moe_gemm2[weighted,prefill]", _moe_gemm_kernel, sig, g2, matmul=True, targets=tuple(pre2),
                per_target=pre2),
        AotSpec("moe_gemm1[swiglu_oai,split,fused,prefill large]", _moe_gemm_kernel, sig, base, matmul=True,
                targets=tuple(big1), per_target=big1),
        # weight tiles by tensor descriptor: TMA bulk copies on sm90
        AotSpec("moe_gemm2[weighted,prefill large,tma]", _moe_gemm_kernel,
                {**sig, "w_desc": f"tensordesc<bf16[{t2.block_n}, {t2.block_k}]>"},
                dict(g2, **t2.constexprs(), TMA_W=True), matmul=True, tma=True, targets=("sm90",),
                num_warps=t2.num_warps, num_stages=t2.num_stages),
        # the "before" configuration: 64-row tiles, global blocks mapped to local, zero rows for remote blocks
        AotSpec("moe_gemm2[before]", _moe_gemm_kernel, sig,
                dict(g2, MUL_WEIGHT=False, ZERO_REMOTE=True, MAP_BLOCKS=True), matmul=True,
                per_target=per_target("before")),
    ]
