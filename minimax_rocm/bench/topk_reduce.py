"""bench --op topk_reduce: native reduction vs torch (x * w).sum(1)."""
from __future__ import annotations

import torch

from .. import oracle
from ..ops.topk_reduce import topk_reduce
from .harness import Context, Row, register_bench, time_us

CASES = ((216, 4, 6144), (1024, 4, 6144), (256, 8, 3072), (2048, 8, 3072))


@register_bench("topk_reduce")
def bench(ctx: Context) -> list[Row]:
    rows = []
    cases = CASES[:1] if ctx.quick else CASES
    for T, k, H in cases:
        x = torch.randn(T, k, H, device=ctx.device, dtype=torch.bfloat16)
        w = torch.rand(T, k, device=ctx.device, dtype=torch.float32)
        case = f"T={T} k={k} H={H}"
        nbytes = x.numel() * 2 + w.numel() * 4 + T * H * 2
        rows.append(Row("topk_reduce", case, "torch (x*w).sum(1)",
                        time_us(lambda: (x * w.unsqueeze(-1).to(x.dtype)).sum(1)), nbytes, baseline=True))
        backend = oracle.decide(oracle.Problem("topk_reduce", tokens=T, hidden=H, top_k=k,
                                               on_gpu=ctx.gpu)).chosen.backend
        rows.append(Row("topk_reduce", case, f"ours ({backend})", time_us(lambda: topk_reduce(x, w)), nbytes))
    return rows
