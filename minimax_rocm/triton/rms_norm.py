"""RMSNorm over a width split across TP ranks, in Triton: the fallback (and
the baseline) of the fused Lamport kernel, in three steps:

  1. `sum_squares`: per token, the sums of squares of two column segments
     of a row (q and k of a qkv shard; one tensor: segment 1 empty) ->
     `[T, 2]` float64;
  2. the caller all-reduces that `[T, 2]` over the group (NCCL/RCCL, gloo);
  3. `rms_scale`: each segment scaled in place by rsqrt(sum / full width + eps)
     and its weight; columns past the two segments (v) are never touched.

Sums are accumulated and exchanged in float64: a bf16/fp32 row holding
values above ~1.8e19 has a sum of squares past fp32's range, which would
normalise the row to zeros (rsqrt(inf) = 0); float64 holds the square of
any finite fp32 times any row width. The extra cost is one fp64 FMA per
element in a kernel bound by reading the row. (`out=` may still be fp32:
then such rows overflow as before.)

One program per token; the segments are walked in BLOCK-wide chunks.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _sum_squares_kernel(x_ptr, out_ptr, stride_x, N0, N1, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = x_ptr + t * stride_x
    offs = tl.arange(0, BLOCK)
    acc0 = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, N0, BLOCK):
        v = tl.load(row + start + offs, mask=start + offs < N0, other=0.0).to(tl.float64)
        acc0 += v * v
    acc1 = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, N1, BLOCK):
        v = tl.load(row + N0 + start + offs, mask=start + offs < N1, other=0.0).to(tl.float64)
        acc1 += v * v
    tl.store(out_ptr + t * 2, tl.sum(acc0, axis=0).to(out_ptr.dtype.element_ty))
    tl.store(out_ptr + t * 2 + 1, tl.sum(acc1, axis=0).to(out_ptr.dtype.element_ty))


@triton.jit
def _rms_scale_kernel(x_ptr, sums_ptr, w0_ptr, w1_ptr, stride_x, N0, N1, full0, full1, eps, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = x_ptr + t * stride_x
    offs = tl.arange(0, BLOCK)
    # rsqrt in float64, then fp32: 1 / rms of any finite row is at least
    # 2^-128, inside fp32's (subnormal) range
    inv0 = (1.0 / tl.sqrt(tl.load(sums_ptr + t * 2).to(tl.float64) / full0 + eps)).to(tl.float32)
    for start in range(0, N0, BLOCK):
        m = start + offs < N0
        v = tl.load(row + start + offs, mask=m, other=0.0).to(tl.float32)
        w = tl.load(w0_ptr + start + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(row + start + offs, (v * inv0 * w).to(x_ptr.dtype.element_ty), mask=m)
    inv1 = (1.0 / tl.sqrt(tl.load(sums_ptr + t * 2 + 1).to(tl.float64) / full1 + eps)).to(tl.float32)
    for start in range(0, N1, BLOCK):
        m = start + offs < N1
        v = tl.load(row + N0 + start + offs, mask=m, other=0.0).to(tl.float32)
        w = tl.load(w1_ptr + start + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(row + N0 + start + offs, (v * inv1 * w).to(x_ptr.dtype.element_ty), mask=m)


def _block(n: int) -> int:
    return min(1024, max(16, triton.next_power_of_2(max(n, 1))))


def sum_squares(x: torch.Tensor, n0: int, n1: int = 0, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`[T, 2]` float64 (or `out`'s dtype, fp32 or fp64): per-token sums of
    squares of x[:, :n0] and x[:, n0:n0+n1] (column 1 is 0 when n1 == 0).
    x: `[T, >= n0 + n1]` with unit column stride."""
    T = x.shape[0]
    assert x.dim() == 2 and x.stride(1) == 1 and n0 + n1 <= x.shape[1]
    if out is None:
        out = torch.empty((T, 2), dtype=torch.float64, device=x.device)
    assert out.dtype in (torch.float32, torch.float64) and out.is_contiguous() and out.shape[0] >= T \
        and out.numel() >= 2 * T
    if T:
        _sum_squares_kernel[(T,)](x, out, x.stride(0), n0, n1, BLOCK=_block(max(n0, n1)), num_warps=4)
    return out


def rms_scale(x: torch.Tensor, sums: torch.Tensor, w0: torch.Tensor, w1: Optional[torch.Tensor], n0: int, n1: int,
              full0: int, full1: int, eps: float) -> torch.Tensor:
    """In place: x[:, :n0] *= rsqrt(sums[:, 0] / full0 + eps) * w0, and the same
    for x[:, n0:n0+n1] with sums[:, 1], full1, w1."""
    T = x.shape[0]
    assert x.dim() == 2 and x.stride(1) == 1 and sums.is_contiguous() and sums.dtype in (torch.float32, torch.float64)
    assert w0.is_contiguous() and (w1 is None or w1.is_contiguous())
    if T:
        _rms_scale_kernel[(T,)](x, sums, w0, w0 if w1 is None else w1, x.stride(0), n0, n1, float(full0),
                                float(max(full1, 1)), float(eps), BLOCK=_block(max(n0, n1)), num_warps=4)
    return x


def aot_specs():
    from .aot import AotSpec
    # Production: MiniMax-M2 at TP2 (q 3072 | k 512 | v 512 per rank), bf16.
    ss = {"x_ptr": "*bf16", "out_ptr": "*fp64", "stride_x": "i32", "N0": "i32", "N1": "i32", "BLOCK": "constexpr"}
    sc = {"x_ptr": "*bf16", "sums_ptr": "*fp64", "w0_ptr": "*bf16", "w1_ptr": "*bf16", "stride_x": "i32",
          "N0": "i32", "N1": "i32", "full0": "fp32", "full1": "fp32", "eps": "fp32", "BLOCK": "constexpr"}
    return [
        AotSpec("rms_sum_squares[q=3072,k=512]", _sum_squares_kernel, ss, dict(BLOCK=1024)),
        AotSpec("rms_scale[q=3072,k=512]", _rms_scale_kernel, sc, dict(BLOCK=1024)),
    ]
