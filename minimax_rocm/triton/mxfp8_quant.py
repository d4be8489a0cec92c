"""Triton MXFP8 quantise / dequantise (OCP MX: block 32 along the last dim,
e8m0 scales), byte-compatible with reference.mxfp8_quant.

Scale exponent = floor(log2(amax)) - emax_elem, read off amax's exponent bits
(exact; a subnormal or zero amax lands on the clamp, -127), so the only
rounding is the saturating round-to-nearest-even into fp8, done in integer
math for both flavours, except e4m3fn on NVIDIA sm89+ where one PTX cvt
per pair gives the same bytes (HW_CVT). A block holding NaN or Inf gets the
NaN scale (0xFF) and NaN elements.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..platform import nvidia_capability
from . import dependent_launch
from .aot import AotSpec
from .dependent_launch import pdl_enter

_EMAX = {torch.float8_e4m3fn: 8, torch.float8_e4m3fnuz: 7}
_BIAS = {torch.float8_e4m3fn: 7, torch.float8_e4m3fnuz: 8}
_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0}
_NAN_BYTE = {torch.float8_e4m3fn: 0x7F, torch.float8_e4m3fnuz: 0x80}


@triton.jit
def mx_quantize(x, EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr,
                FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, HW_CVT: tl.constexpr = False):
    """fp32 x `[BLOCK_R, BLOCK_K]` -> (fp8 bytes uint8 `[BLOCK_R, BLOCK_K]`,
    e8m0 bytes uint8 `[BLOCK_R, BLOCK_K // 32]`): the MX quantisation every
    kernel here shares (this file's quantiser, the MoE's SwiGLU + quant).
    HW_CVT (e4m3fn on NVIDIA sm89+, see `hw_fp8_cvt`): the saturating RNE
    encode is one cvt.rn.satfinite per pair of elements instead of the
    integer code below (same bytes; about 15 instructions per element fewer)."""
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
    if HW_CVT:
        # first source -> high byte: element 0 ($1) goes to the low byte
        q = tl.inline_asm_elementwise("cvt.rn.satfinite.e4m3x2.f32 $0, $2, $1;", "=h,r,r", [y],
                                      dtype=tl.uint8, is_pure=True, pack=2)
        q = tl.where(bad[:, :, None], NAN_BYTE, q).to(tl.uint8)
        sb = tl.where(bad, 255, e + 127).to(tl.uint8)
        return tl.reshape(q, (BLOCK_R, BLOCK_K)), sb
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
def mx_round(x, EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr,
             FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, HW_CVT: tl.constexpr = False):
    """fp32 x `[BLOCK_R, BLOCK_K]` -> the fp32 value of its MXFP8 image (fp8
    element times its block scale): what a kernel that quantises and then
    multiplies by the scales computes, without the bytes in between."""
    q, sb = mx_quantize(x, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_K, HW_CVT)
    v = tl.reshape(fp8_decode(q.to(tl.int32), BIAS, FNUZ), (BLOCK_R, BLOCK_K // 32, 32))
    return tl.reshape(v * e8m0_decode(sb.to(tl.int32))[:, :, None], (BLOCK_R, BLOCK_K))


@triton.jit
def fp8_bits_as_bf16(b, PACKED_ASM: tl.constexpr):
    """fp8 e4m3 bytes (uint8) -> bf16 holding value * 2^(BIAS - 127): sign,
    exponent and mantissa moved into bf16's fields as they are (bf16 has the
    wider exponent, so subnormals stay exact), three integer operations and no
    conversion instruction. The caller's per-block multiplier (see
    `bf16_block_multiplier`) restores the exponent bias together with the
    block scale. NaN bytes become finite values: MX blocks holding NaN carry
    the NaN scale (0xFF), whose multiplier is NaN."""
    if PACKED_ASM:
        # four bytes per 32-bit register: byte pairs to the high bytes of two
        # 16-bit halves (prmt), then sign kept and the other seven bits
        # moved down by four: two bf16 per four instructions
        return tl.inline_asm_elementwise(
            """{
            .reg .b32 lo, hi, slo, shi;
            prmt.b32 lo, $2, 0, 0x1404;
            prmt.b32 hi, $2, 0, 0x3424;
            shr.b32 slo, lo, 4;
            shr.b32 shi, hi, 4;
            and.b32 slo, slo, 0x07F007F0;
            and.b32 shi, shi, 0x07F007F0;
            and.b32 lo, lo, 0x80008000;
            and.b32 hi, hi, 0x80008000;
            or.b32 $0, lo, slo;
            or.b32 $1, hi, shi;
            }""",
            "=r,=r,r", [b], dtype=tl.bfloat16, is_pure=True, pack=4)
    else:
        b16 = b.to(tl.uint16)
        return (((b16 & 0x80) << 8) | ((b16 & 0x7F) << 4)).to(tl.bfloat16, bitcast=True)


def _multiplier_asm(bias: int) -> str:
    # two scales per 32-bit register as 16-bit halves: one add, one packed
    # min, one shift per pair (no carries cross the halves)
    add = (127 - bias) * 0x10001
    return f"""{{
                .reg .b32 lo, hi, top;
                mov.b32 top, 0x00FF00FF;
                prmt.b32 lo, $2, 0, 0x4140;
                prmt.b32 hi, $2, 0, 0x4342;
                add.u32 lo, lo, 0x{add:08X};
                add.u32 hi, hi, 0x{add:08X};
                min.u16x2 lo, lo, top;
                min.u16x2 hi, hi, top;
                shl.b32 $0, lo, 7;
                shl.b32 $1, hi, 7;
                }}"""


_MULTIPLIER_ASM_BIAS7 = tl.constexpr(_multiplier_asm(7))   # e4m3fn
_MULTIPLIER_ASM_BIAS8 = tl.constexpr(_multiplier_asm(8))   # e4m3fnuz


@triton.jit
def bf16_block_multiplier(s, BIAS: tl.constexpr, PACKED_ASM: tl.constexpr):
    """e8m0 bytes (uint8) -> the BF16 factor 2^(s - BIAS) that turns
    `fp8_bits_as_bf16` values into element x 2^(s - 127), built as BF16 bits
    ((s + 127 - BIAS) << 7, the exponent field saturated at 255): exact for s
    <= 127 + BIAS (block scales up to 2^BIAS, far above any weight's). Larger
    scales give inf, so such blocks come out inf / NaN, never as wrong finite
    numbers; the NaN scale gives NaN (an inf weight could come out of
    SwiGLU-OAI's clamp as a finite number)."""
    if PACKED_ASM:
        if BIAS == 8:
            m = tl.inline_asm_elementwise(_MULTIPLIER_ASM_BIAS8, "=r,=r,r", [s], dtype=tl.bfloat16, is_pure=True,
                                          pack=4)
        else:
            m = tl.inline_asm_elementwise(_MULTIPLIER_ASM_BIAS7, "=r,=r,r", [s], dtype=tl.bfloat16, is_pure=True,
                                          pack=4)
    else:
        f = tl.minimum(s.to(tl.int32) - BIAS + 127, 255)
        m = (f << 23).to(tl.float32, bitcast=True).to(tl.bfloat16)
    # one select per 32 weights
    return tl.where(s == 255, float("nan"), m)


@triton.jit
def mxfp8_quant_kernel(x_ptr, q_ptr, s_ptr, rows, K, EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr,
                       NAN_BYTE: tl.constexpr, FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                       HW_CVT: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (r[:, None] < rows) & (k[None, :] < K)
    x = tl.load(x_ptr + r[:, None] * K + k[None, :], mask=mask, other=0.0).to(tl.float32)
    q, sb = mx_quantize(x, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_K, HW_CVT)
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


@triton.jit
def mxfp8_round_kernel(x_ptr, out_ptr, zero_ptr, rows, K, EMAX: tl.constexpr, BIAS: tl.constexpr,
                       FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr, FNUZ: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_K: tl.constexpr, ZERO: tl.constexpr, HW_CVT: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (r[:, None] < rows) & (k[None, :] < K)
    x = tl.load(x_ptr + r[:, None] * K + k[None, :], mask=mask, other=0.0).to(tl.float32)
    v = mx_round(x, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_K, HW_CVT)
    tl.store(out_ptr + r[:, None] * K + k[None, :], v.to(out_ptr.dtype.element_ty), mask=mask)
    if ZERO:
        tl.store(zero_ptr + r[:, None] * K + k[None, :], tl.zeros((BLOCK_R, BLOCK_K), zero_ptr.dtype.element_ty),
                 mask=mask)


def flavour_constexprs(fp8_dtype: torch.dtype) -> dict:
    """The constexprs of mx_quantize for one fp8 flavour."""
    return dict(EMAX=_EMAX[fp8_dtype], BIAS=_BIAS[fp8_dtype], FP8_MAX=_MAX[fp8_dtype],
                NAN_BYTE=_NAN_BYTE[fp8_dtype], FNUZ=fp8_dtype == torch.float8_e4m3fnuz)


def hw_fp8_cvt(device: torch.device, fp8_dtype: torch.dtype) -> bool:
    """mx_quantize's HW_CVT: e4m3fn on an NVIDIA GPU of sm89 or later (PTX
    cvt.rn.satfinite.e4m3x2.f32). Never in the interpreter (CPU tensors)."""
    return fp8_dtype == torch.float8_e4m3fn and (nvidia_capability(device) or (0, 0)) >= (8, 9)


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
                                 BLOCK_K=_BLOCK_K, HW_CVT=hw_fp8_cvt(x.device, fp8_dtype), num_warps=4)
    return q.view(fp8_dtype), s


def mxfp8_round(x: torch.Tensor, fp8_dtype: torch.dtype, zero: Optional[torch.Tensor] = None,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x [..., K] -> BF16 `dequant(quant(x))` in one pass: the MXFP8 image of
    x, exact in BF16 while the image lies in BF16's normal range (any block
    scale from 2^-126 to 2^127 / FP8_MAX). The upcast MoE GEMMs take their
    activation operand in this form. `zero` (x's shape, contiguous) is
    zero-filled by the same pass: the MoE's output accumulator. PDL-launched
    where supported (the MoE's chain: triton/dependent_launch.py). `out`: a
    contiguous BF16 tensor of x's shape to write (the MoE allocates it on its
    main stream when the pass runs on a side stream)."""
    K = x.shape[-1]
    rows = x.numel() // K if K else 0
    if out is None:
        out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and out.is_contiguous() and out.device == x.device
    if zero is not None:
        assert zero.shape == x.shape and zero.is_contiguous() and zero.device == x.device
    if rows:
        grid = (triton.cdiv(rows, _BLOCK_R), triton.cdiv(K, _BLOCK_K))
        mxfp8_round_kernel[grid](x, out, out if zero is None else zero, rows, K, **flavour_constexprs(fp8_dtype),
                                 BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K, ZERO=zero is not None,
                                 HW_CVT=hw_fp8_cvt(x.device, fp8_dtype), num_warps=4,
                                 **dependent_launch.launch(x.device))
    return out


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
           "BLOCK_K": "constexpr", "HW_CVT": "constexpr"}
    fn = dict(EMAX=8, BIAS=7, FP8_MAX=448.0, NAN_BYTE=0x7F, FNUZ=False, BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K)
    fnuz = dict(EMAX=7, BIAS=8, FP8_MAX=240.0, NAN_BYTE=0x80, FNUZ=True, BLOCK_R=_BLOCK_R, BLOCK_K=_BLOCK_K)
    # zero_ptr: the MoE output that GEMM2's bf16 atomics add into (sm90 table)
    rsig = {"x_ptr": "*bf16", "out_ptr": "*bf16", "zero_ptr": "*bf16", "rows": "i32", "K": "i32",
            **{c: "constexpr" for c in ("EMAX", "BIAS", "FP8_MAX", "NAN_BYTE", "FNUZ", "BLOCK_R", "BLOCK_K", "ZERO",
                                             "HW_CVT", "PDL")}}
    return [AotSpec("mxfp8_quant[e4m3fn,K=6144]", mxfp8_quant_kernel, sig, dict(fn, HW_CVT=False),
                    targets=("gfx950",)),
            AotSpec("mxfp8_quant[e4m3fn,K=6144,cvt]", mxfp8_quant_kernel, sig, dict(fn, HW_CVT=True),
                    targets=("sm90",)),
            AotSpec("mxfp8_round[e4m3fn,K=6144,zero,cvt]", mxfp8_round_kernel, rsig,
                    dict(fn, ZERO=True, HW_CVT=True), targets=("sm90",)),
            AotSpec("mxfp8_quant[e4m3fnuz,K=6144]", mxfp8_quant_kernel, sig, dict(fnuz, HW_CVT=False),
                    targets=("gfx942",))]
