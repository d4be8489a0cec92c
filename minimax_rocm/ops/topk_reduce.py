"""topk_reduce: `[T, k, H]` routes -> `[T, H]` per token, optionally weighted."""
from __future__ import annotations

from typing import Optional

import torch

from .. import oracle, reference
from ._common import aligned16, check_tensor, check_types, on_gpu, run

OP = "topk_reduce"


def check(x: torch.Tensor, weights: Optional[torch.Tensor]) -> None:
    check_tensor(OP, "x", x, dtype=(torch.bfloat16, torch.float16, torch.float32), dim=3)
    if weights is not None:
        check_tensor(OP, "weights", weights, dtype=(torch.float32, x.dtype), shape=(x.shape[0], x.shape[1]),
                     device=x.device)


def problem(x: torch.Tensor, weights: Optional[torch.Tensor]) -> oracle.Problem:
    return oracle.Problem(OP, tokens=x.shape[0], hidden=x.shape[2], top_k=x.shape[1], dtype=str(x.dtype)[6:],
                          on_gpu=on_gpu(x, weights), aligned16=aligned16(x))


@torch.library.custom_op("minimax_rocm::topk_reduce", mutates_args=())
def _topk_reduce(x: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    check(x, weights)
    return run(problem(x, weights), x, weights)


@_topk_reduce.register_fake
def _(x, weights):
    check(x, weights)
    return x.new_empty((x.shape[0], x.shape[2]))


@oracle.register_impl(OP, "torch")
def _torch(x, weights):
    return reference.topk_reduce(x, weights)


@oracle.register_impl(OP, "triton")
def _triton(x, weights):
    from ..triton import topk_reduce as tri
    return tri.topk_reduce(x, weights)


@oracle.register_impl(OP, "hip")
def _hip(x, weights):
    from ..native import ext
    out = torch.empty((x.shape[0], x.shape[2]), dtype=x.dtype, device=x.device)
    ext.ops().topk_reduce(x, None if weights is None else weights.float(), out)
    return out


def topk_reduce(x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum each token's k route rows: out[t] = sum_j w[t, j] * x[t, j] (w = 1 if None)."""
    check_types(OP, tensors=dict(x=x), optional=dict(weights=weights))
    return torch.ops.minimax_rocm.topk_reduce(x, weights)
