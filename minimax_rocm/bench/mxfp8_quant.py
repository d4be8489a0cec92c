"""bench --op mxfp8_quant: per-32 MXFP8 quantisation of a bf16 activation,
the oracle's kernel vs the torch reference; bytes = bf16 in + fp8 out + scales."""
from __future__ import annotations

import torch

from .. import reference
from ..ops.mxfp8 import mxfp8_quant
from ..ops._common import LAST_BACKEND
from .harness import Context, Row, register_bench, time_us

SHAPES = ((216, 6144), (4096, 6144), (16384, 6144))


@register_bench("mxfp8_quant")
def bench(ctx: Context) -> list[Row]:
    rows = []
    fp8 = "e4m3fn"
    for T, K in (SHAPES[:1] if ctx.quick else SHAPES):
        x = torch.randn(T, K, device=ctx.device).to(torch.bfloat16)
        nbytes = T * K * 2 + T * K + T * K // 32
        case = f"T={T} K={K} {fp8}"
        rows.append(Row("mxfp8_quant", case, "torch reference",
                        time_us(lambda: reference.mxfp8_quant(x, torch.float8_e4m3fn), graph=False), nbytes,
                        baseline=True))
        mxfp8_quant(x, fp8)
        rows.append(Row("mxfp8_quant", case, f"ours ({LAST_BACKEND['mxfp8_quant']})",
                        time_us(lambda: mxfp8_quant(x, fp8)), nbytes))
    return rows
