"""MoE ops: moe_align (local-expert alignment) and fused_moe (one EP rank's
partial output with BF16 weights)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import oracle, reference
from ..platform import graph_capturing
from ._common import check_choice, check_tensor, fail, on_gpu, run
from .spec import Float, Int, Str, Tensor, declare_op

ACTIVATIONS = ("silu", "swiglu_oai")
LAYOUTS = ("split", "interleaved")
VARIANTS = ("auto", "sparse_local", "before")
FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ID_DTYPES = (torch.int32, torch.int64)


def check_routing(op: str, topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor],
                  num_local_experts: int, device: torch.device,
                  topk_weights: Optional[torch.Tensor] = None, tokens: Optional[int] = None) -> None:
    """Shapes and dtypes of the routing inputs, and (outside graph capture, where
    reading values would sync) their value ranges. The kernels also treat any
    id outside the map as remote, so nothing is written out of bounds even when
    capture hides a bad id."""
    check_tensor(op, "topk_ids", topk_ids, dtype=ID_DTYPES, dim=2, device=device)
    if tokens is not None and topk_ids.shape[0] != tokens:
        fail(op, "topk_ids", f"has {topk_ids.shape[0]} rows; hidden has {tokens} tokens")
    if topk_weights is not None:
        check_tensor(op, "topk_weights", topk_weights, dtype=FLOAT_DTYPES, shape=tuple(topk_ids.shape),
                     device=device)
    num_global = num_local_experts
    if expert_map is not None:
        check_tensor(op, "expert_map", expert_map, dtype=ID_DTYPES, dim=1, device=device)
        num_global = expert_map.shape[0]
        if num_global < num_local_experts:
            fail(op, "expert_map", f"maps {num_global} global experts, fewer than {num_local_experts} local ones")
    if isinstance(topk_ids, torch._subclasses.FakeTensor) or graph_capturing():
        return
    if topk_ids.numel():
        lo, hi = int(topk_ids.min()), int(topk_ids.max())
        if lo < 0 or hi >= num_global:
            fail(op, "topk_ids", f"holds expert ids in [{lo}, {hi}]; valid ids are [0, {num_global})")
    # the map is checked even without routes: it is wrong either way
    if expert_map is not None:
        mlo, mhi = int(expert_map.min()), int(expert_map.max())
        if mlo < -1 or mhi >= num_local_experts:
            fail(op, "expert_map", f"holds local ids in [{mlo}, {mhi}]; valid are -1 and [0, {num_local_experts})")


# --------------------------------------------------------------------------- #
# moe_align
# --------------------------------------------------------------------------- #

ALIGN = "moe_align"


def check_align(topk_ids, block_m, expert_map, num_local_experts):
    if block_m <= 0 or block_m & (block_m - 1):
        fail(ALIGN, "block_m", f"is {block_m}; expected a power of two")
    if num_local_experts <= 0:
        fail(ALIGN, "num_local_experts", f"is {num_local_experts}; expected > 0")
    check_routing(ALIGN, topk_ids, expert_map, num_local_experts, topk_ids.device)


def align_problem(topk_ids, expert_map, num_local_experts) -> oracle.Problem:
    return oracle.Problem(ALIGN, tokens=topk_ids.shape[0], top_k=topk_ids.shape[1],
                          num_local_experts=num_local_experts, on_gpu=on_gpu(topk_ids, expert_map))


def _align_fake(topk_ids, block_m, expert_map, num_local_experts):
    n = reference.align_buffer_size(topk_ids.numel(), block_m, num_local_experts)
    i32 = dict(dtype=torch.int32, device=topk_ids.device)
    return (torch.empty((n,), **i32), torch.empty((n // block_m,), **i32), torch.empty((1,), **i32))


# expert_map is required though it may be None (every expert local): the
# public signature has always had it so.
MOE_ALIGN = declare_op(
    ALIGN,
    params=(Tensor("topk_ids"), Int("block_m"), Tensor("expert_map", optional=True), Int("num_local_experts")),
    check=check_align,
    problem=lambda topk_ids, block_m, expert_map, n_local: align_problem(topk_ids, expert_map, n_local),
    fake=_align_fake, returns=3,
    doc="""(sorted_route_ids, block_expert_ids, num_routes_post_padded): see
    reference.moe_align for the layout. Buffers are sized by LOCAL experts.""")
moe_align = MOE_ALIGN.public


def align_routes(topk_ids, block_m, expert_map, num_local_experts):
    """The MoE backends' route alignment: the oracle's choice on a GPU (no
    custom-op hop: the MoE op has checked the routing); off the GPU the Triton
    kernels' own, which the interpreter runs together with the MoE kernels."""
    if not topk_ids.is_cuda:
        from ..triton import moe_align as tri
        return tri.moe_align(topk_ids, block_m, expert_map, num_local_experts)
    return run(align_problem(topk_ids, expert_map, num_local_experts), topk_ids.contiguous(), block_m,
               expert_map, num_local_experts)


@MOE_ALIGN.impl("torch")
def _align_torch(topk_ids, block_m, expert_map, num_local_experts):
    return reference.moe_align(topk_ids, block_m, expert_map, num_local_experts)


@MOE_ALIGN.impl("triton")
def _align_triton(topk_ids, block_m, expert_map, num_local_experts):
    from ..triton import moe_align as tri
    return tri.moe_align(topk_ids, block_m, expert_map, num_local_experts)


@MOE_ALIGN.impl("hip")
def _align_hip(topk_ids, block_m, expert_map, num_local_experts):
    from ..native import ext
    n = reference.align_buffer_size(topk_ids.numel(), block_m, num_local_experts)
    i32 = dict(dtype=torch.int32, device=topk_ids.device)
    sorted_ids, block_ids, npp = torch.empty(n, **i32), torch.empty(n // block_m, **i32), torch.empty(1, **i32)
    emap = None if expert_map is None else expert_map.to(torch.int32)
    ext.ops().moe_align(topk_ids, emap, num_local_experts, block_m, sorted_ids, block_ids, npp)
    return sorted_ids, block_ids, npp


# --------------------------------------------------------------------------- #
# fused_moe
# --------------------------------------------------------------------------- #

MOE = "fused_moe"


def check_swiglu_params(op: str, alpha, limit) -> None:
    """SwiGLU-OAI's alpha and limit, for the activation op and the MoE ops that fuse it."""
    if not limit > 0:
        fail(op, "limit", f"is {limit}; expected > 0")
    if not math.isfinite(alpha):
        fail(op, "alpha", f"is {alpha}; expected a finite number")


def check_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, variant="auto",
              op=MOE, weight_dtypes=None, names=("w13", "w2"), alpha=None, limit=None):
    """Checks shared by fused_moe and fused_moe_mxfp8 (whose weights are fp8:
    weight_dtypes and names say so)."""
    check_choice(op, "activation", activation, ACTIVATIONS)
    check_choice(op, "layout", layout, LAYOUTS)
    check_choice(op, "variant", variant, VARIANTS)
    if activation == "swiglu_oai" and alpha is not None and limit is not None:
        check_swiglu_params(op, alpha, limit)
    check_tensor(op, "hidden", hidden, dtype=FLOAT_DTYPES, dim=2)
    T, H = hidden.shape
    wd = weight_dtypes or hidden.dtype
    check_tensor(op, names[0], w13, dtype=wd, dim=3, device=hidden.device)
    E, two_i, h13 = w13.shape
    if h13 != H:
        fail(op, names[0], f"has K = {h13}; hidden size is {H}")
    if two_i % 2:
        fail(op, names[0], f"has {two_i} rows per expert; expected 2 * intermediate (even)")
    check_tensor(op, names[1], w2, dtype=w13.dtype, shape=(E, H, two_i // 2), device=hidden.device)
    check_routing(op, topk_ids, expert_map, E, hidden.device, topk_weights, T)


def moe_problem(op, hidden, w13, topk_ids, expert_map, weight_format="bf16", max_model_len=0,
                **extra) -> oracle.Problem:
    E_loc = w13.shape[0]
    E_glob = E_loc if expert_map is None else expert_map.shape[0]
    return oracle.Problem(op, tokens=hidden.shape[0], hidden=hidden.shape[1], dtype=str(hidden.dtype)[6:],
                          weight_format=weight_format, num_experts=E_glob, num_local_experts=E_loc,
                          top_k=topk_ids.shape[1], ep_size=max(1, round(E_glob / E_loc)),
                          max_model_len=max_model_len, on_gpu=on_gpu(hidden, w13, topk_ids), **extra)


def _check_fused(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit, variant):
    check_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, variant, alpha=alpha,
              limit=limit)


def _fused_problem(hidden, w13, w2, topk_weights, topk_ids, expert_map, *_) -> oracle.Problem:
    return moe_problem(MOE, hidden, w13, topk_ids, expert_map)


FUSED_MOE = declare_op(
    MOE,
    params=(Tensor("hidden"), Tensor("w13"), Tensor("w2"), Tensor("topk_weights"), Tensor("topk_ids"),
            Tensor("expert_map", optional=True, default=None), Str("activation", default="silu"),
            Str("layout", default="split"), Float("alpha", default=reference.SWIGLU_OAI_ALPHA),
            Float("limit", default=reference.SWIGLU_OAI_LIMIT), Str("variant", default="auto")),
    check=_check_fused, problem=_fused_problem,
    fake=lambda hidden, *_: torch.empty_like(hidden),
    doc="""This EP rank's partial MoE output `[T, H]` (only routes to local experts).

    variant "auto" lets the oracle's table choose the kernel configuration;
    "sparse_local" and "before" force the two configurations the benchmark
    compares (Triton backend only; the reference ignores it).
    """)
fused_moe = FUSED_MOE.public


@FUSED_MOE.impl("torch")
def _moe_torch(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit,
               variant):
    return reference.fused_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout,
                               alpha, limit)


@FUSED_MOE.impl("triton")
def _moe_triton(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit,
                variant):
    # "auto": the sparse-local configuration with the per-arch table's tiles
    # (its BLOCK_M grows with the rows per expert, so it also serves the
    # generic rule's larger batches); "before" only for the benchmark.
    from ..triton import fused_moe as tri
    return tri.fused_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit,
                         variant="sparse_local" if variant == "auto" else variant, align=align_routes)
