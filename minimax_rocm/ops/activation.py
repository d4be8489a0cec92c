"""swiglu_oai: the MiniMax-M3 expert activation on a `[..., 2I]` GEMM1 output."""
from __future__ import annotations

from .. import oracle, reference
from ._common import check_choice, check_tensor, fail, on_gpu
from .moe import FLOAT_DTYPES, LAYOUTS, check_swiglu_params
from .spec import Float, Str, Tensor, declare_op

OP = "swiglu_oai"


def check(x, alpha, limit, layout):
    check_choice(OP, "layout", layout, LAYOUTS)
    check_tensor(OP, "x", x, dtype=FLOAT_DTYPES, last_multiple=2)
    if x.dim() < 1:
        fail(OP, "x", "must have at least one dim")
    check_swiglu_params(OP, alpha, limit)


def problem(x, alpha, limit, layout) -> oracle.Problem:
    return oracle.Problem(OP, tokens=x.numel() // max(1, x.shape[-1]), hidden=x.shape[-1],
                          dtype=str(x.dtype)[6:], on_gpu=on_gpu(x))


SWIGLU_OAI = declare_op(
    OP,
    params=(Tensor("x"), Float("alpha", default=reference.SWIGLU_OAI_ALPHA),
            Float("limit", default=reference.SWIGLU_OAI_LIMIT), Str("layout", default="split")),
    check=check, problem=problem,
    fake=lambda x, alpha, limit, layout: x.new_empty((*x.shape[:-1], x.shape[-1] // 2)),
    doc="`[..., 2I]` -> `[..., I]`: (clamp(up) + 1) * min(gate, limit) * sigmoid(alpha * gate).")
swiglu_oai = SWIGLU_OAI.public


@SWIGLU_OAI.impl("torch")
def _torch(x, alpha, limit, layout):
    return reference.swiglu_oai(x, alpha, limit, layout)


@SWIGLU_OAI.impl("triton")
def _triton(x, alpha, limit, layout):
    from ..triton import elementwise
    return elementwise.swiglu_oai(x, alpha, limit, layout)
