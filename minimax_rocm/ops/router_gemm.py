"""router_gemm: MoE gate logits in fp32 from bf16 or fp32 activations."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import oracle, reference
from ._common import check_tensor, fail, on_gpu, run

OP = "router_gemm"


def check(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    # Non-contiguous x is rejected rather than copied: a hidden copy would
    # double the op's launches on the decode path this op exists to shorten.
    check_tensor(OP, "x", x, dtype=(torch.bfloat16, torch.float32), dim=2)
    check_tensor(OP, "w", w, dtype=torch.float32, dim=2, device=x.device)
    if w.shape[1] != x.shape[1]:
        fail(OP, "w", f"has {w.shape[1]} columns; x has hidden size {x.shape[1]}")
    if bias is not None:
        check_tensor(OP, "bias", bias, dtype=torch.float32, shape=(w.shape[0],), device=x.device)


def problem(x, w, bias) -> oracle.Problem:
    return oracle.Problem(OP, tokens=x.shape[0], hidden=x.shape[1], num_experts=w.shape[0],
                          dtype=str(x.dtype)[6:], has_bias=bias is not None, on_gpu=on_gpu(x, w, bias))


@torch.library.custom_op("minimax_rocm::router_gemm", mutates_args=())
def _router_gemm(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    check(x, w, bias)
    return run(problem(x, w, bias), x, w, bias)


@_router_gemm.register_fake
def _(x, w, bias):
    check(x, w, bias)
    return x.new_empty((x.shape[0], w.shape[0]), dtype=torch.float32)


@oracle.register_impl(OP, "torch")
def _torch(x, w, bias):
    # The baseline the fast paths replace: cast, then a BLAS GEMM.
    return F.linear(x.float(), w, bias)


@oracle.register_impl(OP, "triton")
def _triton(x, w, bias):
    from ..triton.router_gemm import router_gemm as kernel
    return kernel(x, w)


@oracle.register_impl(OP, "hip")
def _hip(x, w, bias):
    from ..build import ext
    out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32, device=x.device)
    ext.ops().router_gemm(x, w, out)
    return out


def router_gemm(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits `[M, E]` fp32 = x `[M, H]` (bf16/fp32) @ w `[E, H]` (fp32)^T (+ bias)."""
    return torch.ops.minimax_rocm.router_gemm(x, w, bias)


