"""EP combine: the all-reduce that sums every EP rank's partial MoE output.

Each EP rank's fused_moe computes only the routes to its local experts (and,
for M3, its slice of the shared expert); the token's output is the sum over
the EP group. The sum runs in float32 by default: summing bf16 partials in
bf16 would round once per rank on top of each partial's own rounding.
Works under gloo (CPU) and NCCL/RCCL (GPU) alike.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def ep_combine(partial: torch.Tensor, group_name: str = "", out_dtype: Optional[torch.dtype] = None,
               accumulate_dtype: Optional[torch.dtype] = torch.float32) -> torch.Tensor:
    """Sum of `partial` `[T, H]` over the EP group named group_name ("" or a
    group of one: no communication). Returns a new tensor in out_dtype
    (default: partial's dtype); partial itself is left unchanged unless it
    already has accumulate_dtype, in which case it is reduced in place."""
    from .groups import group_world_size, resolve_group
    out_dtype = out_dtype or partial.dtype
    if not group_name or group_world_size(group_name) == 1:
        return partial.to(out_dtype)
    acc = accumulate_dtype or partial.dtype
    buf = partial if partial.dtype == acc else partial.to(acc)
    if not buf.is_contiguous():
        buf = buf.contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=resolve_group(group_name))
    return buf.to(out_dtype)
