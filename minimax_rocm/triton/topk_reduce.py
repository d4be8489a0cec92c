"""topk_reduce in Triton: `[T, k, H]` route rows -> `[T, H]`, fp32 sums.

Two users:
  * the `topk_reduce` op's triton backend (optional per-route weights);
  * the MoE driver, which also passes the routing (topk_ids + expert_map): a
    route whose expert is not local (or whose id is invalid) is skipped, so
    the rows the sparse GEMM2 never wrote are never read.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .moe_align import local_expert


@triton.jit
def _topk_reduce_kernel(x_ptr, w_ptr, out_ptr, ids_ptr, map_ptr, H, E_glob, E_loc, stride_xt, stride_xk,
                        stride_o, TOPK: tl.constexpr, HAS_W: tl.constexpr, HAS_MASK: tl.constexpr,
                        HAS_MAP: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    hm = offs < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in tl.static_range(TOPK):
        m = hm
        if HAS_MASK:
            loc = local_expert(tl.load(ids_ptr + t * TOPK + j), map_ptr, E_glob, E_loc, HAS_MAP)
            m = hm & ((offs * 0 + loc) >= 0)   # broadcast explicitly (interpreter mask dtype)
        v = tl.load(x_ptr + t * stride_xt + j * stride_xk + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_W:
            v = v * tl.load(w_ptr + t * TOPK + j).to(tl.float32)
        acc += v
    tl.store(out_ptr + t * stride_o + offs, acc.to(out_ptr.dtype.element_ty), mask=hm)


def topk_reduce(x: torch.Tensor, weights: Optional[torch.Tensor] = None, *, topk_ids: Optional[torch.Tensor] = None,
                expert_map: Optional[torch.Tensor] = None, num_local_experts: int = 0,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x `[T, k, H]` (rows contiguous) -> `[T, H]` = sum_j w[t, j] x[t, j].
    With topk_ids, routes to non-local experts (expert_map) count as zero."""
    T, k, H = x.shape
    if out is None:
        out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    if T == 0 or H == 0:
        return out
    assert x.stride(2) == 1 and out.stride(1) == 1
    block = min(1024, max(16, triton.next_power_of_2(H)))
    has_mask = topk_ids is not None
    E_glob = (expert_map.shape[0] if expert_map is not None else num_local_experts) if has_mask else 0
    _topk_reduce_kernel[(T, triton.cdiv(H, block))](
        x, x if weights is None else weights, out, x if topk_ids is None else topk_ids,
        x if expert_map is None else expert_map, H, E_glob, num_local_experts, x.stride(0), x.stride(1),
        out.stride(0), TOPK=k, HAS_W=weights is not None, HAS_MASK=has_mask, HAS_MAP=expert_map is not None,
        BLOCK_H=block, num_warps=4)
    return out


def aot_specs():
    from .aot import AotSpec
    sig = {"x_ptr": "*bf16", "w_ptr": "*fp32", "out_ptr": "*bf16", "ids_ptr": "*i32", "map_ptr": "*i32", "H": "i32",
           "E_glob": "i32", "E_loc": "i32", "stride_xt": "i32", "stride_xk": "i32", "stride_o": "i32",
           "TOPK": "constexpr", "HAS_W": "constexpr", "HAS_MASK": "constexpr", "HAS_MAP": "constexpr",
           "BLOCK_H": "constexpr"}
    return [
        AotSpec("topk_reduce[k=4,H=6144,ep-mask]", _topk_reduce_kernel, sig,
                dict(TOPK=4, HAS_W=False, HAS_MASK=True, HAS_MAP=True, BLOCK_H=1024)),
        AotSpec("topk_reduce[k=8,H=3072,weighted]", _topk_reduce_kernel, sig,
                dict(TOPK=8, HAS_W=True, HAS_MASK=False, HAS_MAP=False, BLOCK_H=1024)),
    ]
