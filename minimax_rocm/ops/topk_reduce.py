"""topk_reduce: `[T, k, H]` routes -> `[T, H]` per token, optionally weighted."""
from __future__ import annotations

from typing import Optional

import torch

from .. import oracle, reference
from ._common import aligned16, check_tensor, on_gpu
from .spec import Tensor, declare_op

OP = "topk_reduce"


def check(x: torch.Tensor, weights: Optional[torch.Tensor]) -> None:
    check_tensor(OP, "x", x, dtype=(torch.bfloat16, torch.float16, torch.float32), dim=3)
    if weights is not None:
        check_tensor(OP, "weights", weights, dtype=(torch.float32, x.dtype), shape=(x.shape[0], x.shape[1]),
                     device=x.device)


def problem(x: torch.Tensor, weights: Optional[torch.Tensor]) -> oracle.Problem:
    return oracle.Problem(OP, tokens=x.shape[0], hidden=x.shape[2], top_k=x.shape[1], dtype=str(x.dtype)[6:],
                          on_gpu=on_gpu(x, weights), aligned16=aligned16(x))


TOPK_REDUCE = declare_op(
    OP,
    params=(Tensor("x"), Tensor("weights", optional=True, default=None)),
    check=check, problem=problem,
    fake=lambda x, weights: x.new_empty((x.shape[0], x.shape[2])),
    doc="Sum each token's k route rows: out[t] = sum_j w[t, j] * x[t, j] (w = 1 if None).")
topk_reduce = TOPK_REDUCE.public


@TOPK_REDUCE.impl("torch")
def _torch(x, weights):
    return reference.topk_reduce(x, weights)


@TOPK_REDUCE.impl("triton")
def _triton(x, weights):
    from ..triton import topk_reduce as tri
    return tri.topk_reduce(x, weights)


@TOPK_REDUCE.impl("hip")
def _hip(x, weights):
    from ..native import ext
    out = torch.empty((x.shape[0], x.shape[2]), dtype=x.dtype, device=x.device)
    ext.ops().topk_reduce(x, None if weights is None else weights.float(), out)
    return out
