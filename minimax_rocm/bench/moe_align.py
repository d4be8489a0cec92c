"""bench --op moe_align: the alignment kernels at EP-rank routing sizes: the
Triton path (count + offsets + place, the MoE paths' choice; a memset
preceded them until the count kernel stopped using atomics) as the
baseline, beside the native one-block kernel, same run; this sets the
oracle's align_native_min_local_experts and align_native_max_routes.
Two other Triton designs (one program; two launches) were measured slower
and dropped: benchmarks/history/moe_align.md."""
from __future__ import annotations

import torch

from .. import oracle, reference
from ..models.config import preset
from ..parallel import expert_map
from ..triton.moe_align import moe_align
from .harness import Context, Row, register_bench, time_us

_M3, _M2 = preset("minimax-m3"), preset("minimax-m2")
# (T, k, E_glob, EP, block_m): M3 / M2 EP8 decode to prefill, and M2's
# "before" layout (every expert local, 64-row tiles)
CASES = (tuple((T, _M3.top_k, _M3.num_experts, 8, 16) for T in (16, 64, 216, 1024, 4096))
         + tuple((T, _M2.top_k, _M2.num_experts, 8, 16) for T in (256, 1024))
         + tuple((T, _M2.top_k, _M2.num_experts, 1, 64) for T in (64, 216, 512, 1024)))


@register_bench("moe_align")
def bench(ctx: Context) -> list[Row]:
    if not ctx.gpu:
        return []
    rows = []
    native = oracle.detect_platform().native_ext
    for T, k, E, ep, bm in (CASES[2:3] if ctx.quick else CASES):
        g = torch.Generator().manual_seed(T)
        ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32).to(ctx.device)
        emap = expert_map(E, ep, 0, device=ctx.device) if ep > 1 else None
        E_loc = E // ep
        case = f"T={T} k={k} E={E} EP{ep} BM={bm}"
        nbytes = ids.numel() * 4 + reference.align_buffer_size(ids.numel(), bm, E_loc) * 4
        rows.append(Row("moe_align", case, "ours (triton)", time_us(lambda: moe_align(ids, bm, emap, E_loc)),
                        nbytes, baseline=True))
        if native:
            fn = oracle.impl("moe_align", "hip")
            rows.append(Row("moe_align", case, "ours (hip)", time_us(lambda: fn(ids, bm, emap, E_loc)), nbytes))
    return rows
