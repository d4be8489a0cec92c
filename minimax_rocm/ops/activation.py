"""swiglu_oai: the MiniMax-M3 expert activation on a `[..., 2I]` GEMM1 output."""
from __future__ import annotations

import torch

from .. import oracle, reference
from ._common import check_choice, check_tensor, check_types, fail, on_gpu, run
from .moe import FLOAT_DTYPES, LAYOUTS, check_swiglu_params

OP = "swiglu_oai"


def check(x, alpha, limit, layout):
    check_choice(OP, "layout", layout, LAYOUTS)
    check_tensor(OP, "x", x, dtype=FLOAT_DTYPES, last_multiple=2)
    if x.dim() < 1:
        fail(OP, "x", "must have at least one dim")
    check_swiglu_params(OP, alpha, limit)


@torch.library.custom_op("minimax_rocm::swiglu_oai", mutates_args=())
def _swiglu_oai(x: torch.Tensor, alpha: float, limit: float, layout: str) -> torch.Tensor:
    check(x, alpha, limit, layout)
    p = oracle.Problem(OP, tokens=x.numel() // max(1, x.shape[-1]), hidden=x.shape[-1],
                       dtype=str(x.dtype)[6:], on_gpu=on_gpu(x))
    return run(p, x, alpha, limit, layout)


@_swiglu_oai.register_fake
def _(x, alpha, limit, layout):
    check(x, alpha, limit, layout)
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


@oracle.register_impl(OP, "torch")
def _torch(x, alpha, limit, layout):
    return reference.swiglu_oai(x, alpha, limit, layout)


@oracle.register_impl(OP, "triton")
def _triton(x, alpha, limit, layout):
    from ..triton import elementwise
    return elementwise.swiglu_oai(x, alpha, limit, layout)


def swiglu_oai(x: torch.Tensor, alpha: float = reference.SWIGLU_OAI_ALPHA,
               limit: float = reference.SWIGLU_OAI_LIMIT, layout: str = "split") -> torch.Tensor:
    """`[..., 2I]` -> `[..., I]`: (clamp(up) + 1) * min(gate, limit) * sigmoid(alpha * gate)."""
    check_types(OP, tensors=dict(x=x), numbers=dict(alpha=alpha, limit=limit), strings=dict(layout=layout))
    return torch.ops.minimax_rocm.swiglu_oai(x, alpha, limit, layout)
