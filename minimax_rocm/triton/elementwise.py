"""Gated activations as standalone Triton kernels: `[R, 2I]` -> `[R, I]`.

Used by the unfused MoE variant (GEMM1 stores 2I columns, this kernel makes
I) and as the `swiglu_oai` op's triton backend. The math matches
reference.swiglu_oai / silu_and_mul; `act_math` is shared with GEMM1's fused
epilogue so both variants compute the same function.

Rows are looped (`for r in range(pid, rows, programs)`) with the row count
optionally read from the device (the MoE's padded route count), so the grid
is sized once from the buffer and nothing syncs with the host.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .moe_align import local_expert

ACT_IDS = {"silu": 1, "swiglu_oai": 2}


@triton.jit
def act_math(g, u, alpha, limit, ACT: tl.constexpr):
    """fp32 gate/up -> activation. ACT 1: silu(g) * u; 2: SwiGLU-OAI."""
    if ACT == 2:
        # NaN must survive the clamps (as in torch.clamp): the default
        # min/max return the other operand, turning NaN into +-limit.
        g = tl.minimum(g, limit, propagate_nan=tl.PropagateNan.ALL)
        u = tl.minimum(tl.maximum(u, -limit, propagate_nan=tl.PropagateNan.ALL), limit,
                       propagate_nan=tl.PropagateNan.ALL)
        # g * sigmoid(alpha g) first: it is bounded by limit, while (u + 1) * g
        # overflows for a huge negative gate (inf * 0 = NaN instead of -0)
        return (u + 1.0) * (g * tl.sigmoid(alpha * g))
    else:
        return g * tl.sigmoid(g) * u


@triton.jit
def _glu_kernel(x_ptr, out_ptr, count_ptr, block_ptr, map_ptr, R, I, stride_x, stride_o, alpha, limit, E_glob, E_loc,
                ACT: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_COUNT: tl.constexpr, BLOCK: tl.constexpr,
                BLOCK_M: tl.constexpr, HAS_MAP: tl.constexpr):
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cm = cols < I
    rows = R
    if HAS_COUNT:
        rows = tl.minimum(tl.load(count_ptr), R)
    for r in range(tl.program_id(0), rows, tl.num_programs(0)):
        r64 = tl.cast(r, tl.int64)
        m = cm
        if BLOCK_M > 0:   # rows of a remote expert's block: never written upstream, never read downstream
            e = local_expert(tl.load(block_ptr + r // BLOCK_M), map_ptr, E_glob, E_loc, HAS_MAP)
            m = cm & (cols * 0 + e >= 0)
        base = x_ptr + r64 * stride_x
        if INTERLEAVED:
            g = tl.load(base + 2 * cols, mask=m, other=0.0).to(tl.float32)
            u = tl.load(base + 2 * cols + 1, mask=m, other=0.0).to(tl.float32)
        else:
            g = tl.load(base + cols, mask=m, other=0.0).to(tl.float32)
            u = tl.load(base + I + cols, mask=m, other=0.0).to(tl.float32)
        y = act_math(g, u, alpha, limit, ACT)
        tl.store(out_ptr + r64 * stride_o + cols, y.to(out_ptr.dtype.element_ty), mask=m)


def _row_programs(R: int, col_blocks: int, device: torch.device) -> int:
    if device.type != "cuda":
        return max(1, min(R, 3))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(R, triton.cdiv(8 * sms, col_blocks)))


def glu(x: torch.Tensor, activation: str, layout: str = "split", alpha: float = 1.702, limit: float = 7.0,
        out: Optional[torch.Tensor] = None, row_count: Optional[torch.Tensor] = None,
        blocks: Optional[tuple] = None) -> torch.Tensor:
    """`[..., 2I]` -> `[..., I]` (last dim contiguous). row_count: optional
    device int32 `[1]`: only rows below it are computed (the rest of `out` is
    left as it was). blocks: optional (block expert ids, BLOCK_M, expert map
    or None, E_loc) of MoE-aligned rows: rows of blocks whose expert is not
    local are skipped too."""
    I = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * I)
    R = x2.shape[0]
    if out is None:
        out = torch.empty((*x.shape[:-1], I), dtype=x.dtype, device=x.device)
    o2 = out.reshape(-1, I)
    if R == 0 or I == 0:
        return out
    block = min(1024, max(16, triton.next_power_of_2(I)))
    cb = triton.cdiv(I, block)
    grid = (_row_programs(R, cb, x.device), cb)
    block_ids, block_m, emap, e_loc = blocks if blocks is not None else (None, 0, None, 0)
    e_glob = e_loc if emap is None else emap.shape[0]
    _glu_kernel[grid](x2, o2, x2 if row_count is None else row_count, x2 if block_ids is None else block_ids,
                      x2 if emap is None else emap, R, I, x2.stride(0), o2.stride(0), float(alpha), float(limit),
                      e_glob, e_loc, ACT=ACT_IDS[activation], INTERLEAVED=layout == "interleaved",
                      HAS_COUNT=row_count is not None, BLOCK=block, BLOCK_M=block_m, HAS_MAP=emap is not None,
                      num_warps=4)
    return out


def swiglu_oai(x, alpha=1.702, limit=7.0, layout="split"):
    return glu(x.contiguous(), "swiglu_oai", layout, alpha, limit)


def silu_and_mul(x, layout="split"):
    return glu(x.contiguous(), "silu", layout)


def aot_specs():
    from .aot import AotSpec
    sig = {"x_ptr": "*bf16", "out_ptr": "*bf16", "count_ptr": "*i32", "block_ptr": "*i32", "map_ptr": "*i32",
           "R": "i32", "I": "i32", "stride_x": "i32", "stride_o": "i32", "alpha": "fp32", "limit": "fp32",
           "E_glob": "i32", "E_loc": "i32", "ACT": "constexpr", "INTERLEAVED": "constexpr", "HAS_COUNT": "constexpr",
           "BLOCK": "constexpr", "BLOCK_M": "constexpr", "HAS_MAP": "constexpr"}
    return [
        AotSpec("swiglu_oai[split,I=3072]", _glu_kernel, sig,
                dict(ACT=2, INTERLEAVED=False, HAS_COUNT=True, BLOCK=1024, BLOCK_M=0, HAS_MAP=False)),
        AotSpec("silu_and_mul[interleaved,I=1536]", _glu_kernel, sig,
                dict(ACT=1, INTERLEAVED=True, HAS_COUNT=False, BLOCK=1024, BLOCK_M=0, HAS_MAP=False)),
    ]
