"""bench --op mxfp8_quant: per-32 MXFP8 quantisation of a bf16 activation,
each backend of ours (native hip, Triton) vs the torch reference, measured in
the same run; bytes = bf16 in + fp8 out + e8m0 scales."""
from __future__ import annotations

import torch

from .. import oracle, reference
from ..models.config import preset
from ..ops.mxfp8 import FP8_DTYPES, QUANT
from .harness import Context, Row, register_bench, time_us

# M3's MoE input rows (K = its hidden size), decode to prefill
K = preset("minimax-m3").hidden_size
SHAPES = ((216, K), (4096, K), (16384, K))
MAIN = (16384, K)


def _ours() -> list[str]:
    """Backends of ours usable here, in the oracle's order."""
    plat = oracle.detect_platform()
    return [b for b in ("hip", "triton") if b in oracle.implemented(QUANT) and b in plat.backends]


@register_bench("mxfp8_quant")
def bench(ctx: Context) -> list[Row]:
    rows = []
    cases = [(s, "e4m3fn") for s in SHAPES] + [(MAIN, "e4m3fnuz")]
    if ctx.quick:
        cases = cases[:1]
    for (T, K), fp8 in cases:
        x = torch.randn(T, K, device=ctx.device).to(torch.bfloat16)
        nbytes = T * K * 2 + T * K + T * K // 32
        case = f"T={T} K={K} {fp8}"
        rows.append(Row("mxfp8_quant", case, "torch reference",
                        time_us(lambda: reference.mxfp8_quant(x, FP8_DTYPES[fp8]), graph=False), nbytes,
                        baseline=True))
        for backend in (_ours() if ctx.gpu else []):
            fn = oracle.impl(QUANT, backend)
            fn(x, fp8)
            rows.append(Row("mxfp8_quant", case, f"ours ({backend})", time_us(lambda: fn(x, fp8)), nbytes))
    return rows
