"""bench --op topk_reduce: native reduction vs torch (x * w).sum(1)."""
from __future__ import annotations

import torch

from .. import oracle
from ..models.config import preset
from ..ops.topk_reduce import topk_reduce
from .harness import Context, Row, register_bench, time_us

_M3, _M2 = preset("minimax-m3"), preset("minimax-m2")
# (T, k, H): M3's then M2's routes
CASES = ((216, _M3.top_k, _M3.hidden_size), (1024, _M3.top_k, _M3.hidden_size),
         (256, _M2.top_k, _M2.hidden_size), (2048, _M2.top_k, _M2.hidden_size))


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
