"""Triton MXFP8 quantise / dequantise (OCP MX: block 32 along the last dim,
e8m0 scales), byte-compatible with reference.mxfp8_quant.

Scale exponent = floor(log2(amax)) - emax_elem, read off amax's exponent bits
(exact; a subnormal or zero amax lands on the clamp, -127), so the only
rounding is the saturating round-to-nearest-even into fp8, done in integer
math for both flavours. A block holding NaN or Inf gets the
NaN scale (0xFF) and NaN elements.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .aot import AotSpec

_EMAX = {torch.float8_e4m3fn: 8, torch.float8_e4m3fnuz: 7}
_BIAS = {torch.float8_e4m3fn: 7, torch.float8_e4m3fnuz: 8}
_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0}
_NAN_BYTE = {torch.float8_e4m3fn: 0x7F, torch.float8_e4m3fnuz: 0x80}


@triton.jit
def mx_quantize(x, EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr,
                FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 x `[BLOCK_R, BLOCK_K]` -> (fp8 bytes uint8 `[BLOCK_R, BLOCK_K]`,
    e8m0 bytes uint8 `[BLOCK_R, BLOCK_K // 32]`): the MX quantisation every
    kernel here shares (this file's quantiser, the MoE's SwiGLU + quant)."""
    xb = tl.reshape(x, (BLOCK_R, BLOCK_K // 32, 32))
    amax = tl.max(tl.abs(xb), axis=2)
    bits = amax.to(tl.int32, bitcast=True)
    exp_bits = (bits >> 23) & 0xFF
    # NaN or Inf in the block (max() may drop a NaN, so look for it directly)
    bad = (exp_bits == 255) | (tl.max((xb != xb).to(tl.int32), axis=2) > 0)
    e = tl.minimum(tl.maximum(exp_bits - 127 - EMAX, -127), 127)
    # 2^-e is a normal float for every e the clamp allows (e <= 127 - 7).
    inv = ((127 - e) << 23).to(tl.float32, bitcast=True)
    y = xb * inv[:, :, None]
    y = tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX)
    # Encode to the fp8 byte with integer math, rounding to nearest even:
    # the same code for both flavours on every backend (Triton has no fnuz
    # type on NVIDIA, and the interpreter's fp8 casts do not round to even).
    yb = y.to(tl.int32, bitcast=True)
    sign = (yb >> 24) & 0x80
    a = yb & 0x7FFFFFFF
    # normal range: 3 mantissa bits kept, RNE; rounding may carry into the exponent
    ar = (a + 0x7FFFF + ((a >> 20) & 1)) >> 20          # [exp(8) | mant(3)]
    normal = ar - ((127 - BIAS) << 3)
    # subnormal range: |y| / 2^(1 - BIAS - 3), rounded to even by adding and
    # removing 1.5 * 2^23 (exact integer steps), 8 meaning the smallest normal
    magic = 1.5 * 2.0 ** 23
    sub = (((tl.abs(y) * 2.0 ** (BIAS + 2)) + magic) - magic).to(tl.int32)
    code = tl.where(a < ((127 + 1 - BIAS) << 23), sub, normal)
    if FNUZ:
        q = tl.where(code == 0, 0, code | sign)           # no negative zero
    else:
        q = code | sign
    q = tl.where(bad[:, :, None], NAN_BYTE, q).to(tl.uint8)
    sb = tl.where(bad, 255, e + 127).to(tl.uint8)
    return tl.reshape(q, (BLOCK_R, BLOCK_K)), sb


@triton.jit
def fp8_decode(qb, BIAS: tl.constexpr, FNUZ: tl.constexpr):
    """fp8 bytes (as int32) -> fp32 in integer math (no fnuz type on NVIDIA,
    no fp8 at all in the interpreter)."""
    e = (qb >> 3) & 0xF
    m = qb & 7
    mag = tl.where(e == 0, m.to(tl.float32) * 2.0 ** (1 - BIAS - 3),
                   (((e + 127 - BIAS) << 23) | (m << 20)).to(tl.float32, bitcast=True))
    v = tl.where((qb & 0x80) != 0, -mag, mag)
    if FNUZ:
        v = tl.where(qb == 0x80, float("nan"), v)
    else:
        v = tl.where((qb & 0x7F) == 0x7F, float("nan"), v)
    return v


@triton.jit
def e8m0_decode(s):
    """e8m0 bytes (as int32) -> fp32 2^(s - 127); byte 0 is 2^-127 (a float
    subnormal), 0xFF is NaN."""
    scale = tl.where(s == 0, 2.0 ** -127, (s << 23).to(tl.float32, bitcast=True))
    return tl.where(s == 255, float("nan"), scale)


@triton.jit
def mxfp8_quant_kernel(x_ptr, q_ptr, s_ptr, rows, K, EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr,
                       NAN_BYTE: tl.constexpr, FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (r[:, None] < rows) & (k[None, :] < K)
    x = tl.load(x_ptr + r[:, None] * K + k[None, :], mask=mask, other=0.0).to(tl.float32)
    q, sb = mx_quantize(x, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_K)
    tl.store(q_ptr + r[:, None] * K + k[None, :], q, mask=mask)
    kb = tl.program_id(1) * (BLOCK_K // 32) + tl.arange(0, BLOCK_K // 32)
    tl.store(s_ptr + r[:, None] * (K // 32) + kb[None, :], sb, mask=(r[:, None] < rows) & (kb[None, :] < K // 32))


@triton.jit
def mxfp8_dequant_kernel(q_ptr, s_ptr, out_ptr, rows, K, BIAS: tl.constexpr, FNUZ: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (r[:, None] < rows) & (k[None, :] < K)
    v = fp8_decode(tl.load(q_ptr + r[:, None] * K + k[None, :], mask=mask, other=0).to(tl.int32), BIAS, FNUZ)
    s = tl.load(s_ptr + r[:, None] * (K // 32) + k[None, :] // 32, mask=mask, other=127).to(tl.int32)
    tl.store(out_ptr + r[:, None] * K + k[None, :], (v * e8m0_decode(s)).to(out_ptr.dtype.element_ty), mask=mask)


def flavour_constexprs(fp8_dtype: torch.dtype) -> dict:
    """The constexprs of mx_quantize for one fp8 flavour."""
    return dict(EMAX=_EMAX[fp8_dtype], BIAS=_BIAS[fp8_dtype], FP8_MAX=_MAX[fp8_dtype],
                NAN_BYTE=_NAN_BYTE[fp8_dtype], FNUZ=fp8_dtype == torch.float8_e4m3fnuz)


_BLOCK_R, _BLOCK_K = 16, 128


def mxfp8_quant(x: torch.Tensor, fp8_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] (K % 32 == 0, contiguous) -> (fp8 [..., K], uint8 e8m0 [..., K/32])."""
    K = x.shape[-1]
    rows = x.numel() // K if K else 0
    q = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    s = torch.empty((*x.shape[:-1], K // 32), dtype=torch.uint8, device=x.device)
    if rows:
        grid = (triton.cdiv(rows, _BLOCK_R), triton.cdiv(K, _BLOCK_K))
        mxfp8_quant_kernel[grid](x, q, s, rows, K, **flavour_constexprs(fp8_dtype), BLOCK_R=_BLOCK_R,
                                 BLOCK_K=_BLOCK_K, num_warps=4)
    return q.view(fp8_dtype), s


def mxfp8_dequant(q: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    K = q.shape[-1]
    rows = q.numel() // K if K else 0
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    if rows:
        grid = (triton.cdiv(rows, _BLOCK_R), triton.cdiv(K, _BLOCK_K))
        mxfp8_dequant_kernel[grid](q.view(torch.uint8), scales, out, rows, K, BIAS=_BIAS[q.dtype],
                                   FNUZ=q.dtype == torch.float8_e4m3fnuz, BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K,
                                   num_warps=4)
    return out


def aot_specs() -> list[AotSpec]:
    sig = {"x_ptr": "*bf16", "q_ptr": "*u8", "s_ptr": "*u8", "rows": "i32", "K": "i32", "EMAX": "constexpr",
           "BIAS": "constexpr", "FP8_MAX": "constexpr", "NAN_BYTE": "constexpr", "FNUZ": "constexpr", "BLOCK_R": "constexpr",
           "BLOCK_K": "constexpr"}
    fn = dict(EMAX=8, BIAS=7, FP8_MAX=448.0, NAN_BYTE=0x7F, FNUZ=False, BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K)
    fnuz = dict(EMAX=7, BIAS=8, FP8_MAX=240.0, NAN_BYTE=0x80, FNUZ=True, BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K)
    return [AotSpec("mxfp8_quant[e4m3fn,K=6144]", mxfp8_quant_kernel, sig, fn, targets=("gfx950", "sm90")),
            AotSpec("mxfp8_quant[e4m3fnuz,K=6144]", mxfp8_quant_kernel, sig, fnuz, targets=("gfx942",))]
