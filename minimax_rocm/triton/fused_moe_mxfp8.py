"""Native MXFP8 sparse-local MoE (one EP rank's partial output) in Triton.

Expert weights stay fp8 with one e8m0 scale per 32 elements along K; no
dequantised copy exists. Pipeline (issue 7):
  moe_align   routes -> groups of this rank's LOCAL experts padded to BLOCK_M
              (as in the BF16 path: minimax_rocm/triton/moe_align.py)
  quant       hidden -> fp8 + e8m0 per token in 1x32 blocks (the mxfp8_quant
              op: native HIP where built, Triton otherwise), in the weights'
              flavour (e4m3fn, or e4m3fnuz on gfx942); in upcast mode the
              BF16 image of those values instead (mxfp8_round, which also
              zeroes GEMM2's output), on sm90 on a second stream beside the
              alignment, joined before GEMM1 (mxfp8_overlap_rounding)
  GEMM1       h = xq[token] @ w13q[e]^T, fp32 `[rows, 2I]`
  act+quant   SwiGLU-OAI / silu-and-mul of h and MXFP8 quantisation of the
              result in one kernel, over the aligned rows that hold a
              route (padding rows are never touched: GEMM1 does not write
              them, GEMM2 does not read them); upcast mode can fuse this
              into GEMM1's epilogue (the table's mxfp8_fuse_act)
  GEMM2       out[token] += topk_weight * aq @ w2q[e]^T with atomics into a
              zeroed `[T, H]` buffer: the top-k reduction is fused, no
              `[T*k, H]` intermediate exists. The buffer is the BF16 output
              itself where the table says the target has BF16 atomics
              (mxfp8_bf16_atomics: no fp32 buffer, no conversion launch),
              fp32 otherwise
On sm90 the short kernels of the chain (alignment, rounding, SwiGLU +
rounding) launch programmatically dependent (PDL: triton/dependent_launch.py),
so their launches hide behind the tail of the kernel before; the GEMMs launch
plainly (PDL-launched they measured 20% slower, see dependent_launch).

Both GEMMs are one kernel (`_mx_gemm_kernel`) with two ways to apply the
block scales (the per-arch table's `mxfp8_dot` picks):
  fp8 dot   for every 32-wide K block one fp8 x fp8 product (v_mfma_*fp8 on
            gfx942, mma/wgmma on NVIDIA), scaled in registers by the two
            operands' block scales and added to an fp32 accumulator: the
            "block-scaled fp8 dot" of the issue;
  upcast    activations as the BF16 image of their MXFP8 values, weight
            tiles moved into BF16 and times their scales in registers
            (exact), one BF16 product per K step: the weights still cross
            memory as fp8;
  scaled    tl.dot_scaled: MX hardware where the target has it, the
            compiler's own upcast elsewhere (not in the interpreter: there
            the upcast code runs). Like the BF16 path, the kernel is a persistent loop over (M block, N
tile) items whose count comes from the device (no host sync).

In the interpreter (CPU tests) fp8 operands are decoded to fp32 in integer
math first (DECODE): numpy has no fp8, and Triton's interpreter casts are not
exact for fnuz.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

from .. import reference
from ..platform import ARCHS, device_arch, nvidia_capability
from . import dependent_launch, moe_configs
from .dependent_launch import pdl_enter
from .elementwise import ACT_IDS, act_math
from .fused_moe import _buffer, cu_count, item_coords, item_tile, persistent_grid
from .moe_align import moe_align
from .mxfp8_quant import (bf16_block_multiplier, e8m0_decode, flavour_constexprs, fp8_bits_as_bf16, fp8_decode,
                          hw_fp8_cvt, mx_quantize, mx_round)

DECODE = os.environ.get("TRITON_INTERPRET") == "1"
# how the block scales meet the MMA (moe_configs' per-arch `mxfp8_dot`)
DOT_MODES = {"fp8": 0, "upcast": 1, "scaled": 2}


@triton.jit
def _load_fp8(ptrs, mask, FNUZ: tl.constexpr, DECODE: tl.constexpr):
    b = tl.load(ptrs, mask=mask, other=0)
    if DECODE:
        if FNUZ:
            return fp8_decode(b.to(tl.int32), 8, True)
        else:
            return fp8_decode(b.to(tl.int32), 7, False)
    elif FNUZ:
        return b.to(tl.float8e4b8, bitcast=True)
    else:
        return b.to(tl.float8e4nv, bitcast=True)


@triton.jit
def _upcast_tile(ptrs, s_ptrs, row_ok, ROWS: tl.constexpr, BLOCK_K: tl.constexpr, FNUZ: tl.constexpr,
                 DECODE: tl.constexpr, PTX: tl.constexpr):
    """An fp8 weight tile `[ROWS, BLOCK_K]` times its e8m0 block scales as
    BF16, exact: the bytes moved into BF16's fields (fp8_bits_as_bf16), then
    one multiply by 2^(scale - bias) per element, about a third of the
    instructions of convert-to-fp32, scale, round-to-BF16 (which made this
    kernel issue-bound on sm90). The interpreter decodes to fp32 instead
    (its bf16 dots are wrong)."""
    if DECODE:
        v = _load_fp8(ptrs, row_ok[:, None], FNUZ, DECODE)
        m = e8m0_decode(tl.load(s_ptrs, mask=row_ok[:, None], other=127).to(tl.int32))
    else:
        v = fp8_bits_as_bf16(tl.load(ptrs, mask=row_ok[:, None], other=0), PTX)
        m = bf16_block_multiplier(tl.load(s_ptrs, mask=row_ok[:, None], other=0), 8 if FNUZ else 7, PTX)
    return tl.reshape(tl.reshape(v, (ROWS, BLOCK_K // 32, 32)) * m[:, :, None], (ROWS, BLOCK_K))


@triton.jit
def _red_add_bf16x2(row_ptrs, offs_n, v, row_ok, n_ok, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """c[row, n] += v rounded to BF16, one packed atomic per column pair
    (PTX red.global.add.noftz.bf16x2, sm90): Triton's BF16 atomic_add is a
    16-bit operation that ptxas turns into a compare-and-swap loop (and a
    stack frame). N is even and rows are 4-byte aligned (the op's contract:
    H % 32 == 0, a contiguous BF16 output)."""
    lo, hi = tl.split(tl.reshape(v.to(tl.bfloat16), (BLOCK_M, BLOCK_N // 2, 2)))
    pair = (hi.to(tl.uint16, bitcast=True).to(tl.uint32) << 16) | lo.to(tl.uint16, bitcast=True).to(tl.uint32)
    col, _ = tl.split(tl.reshape(offs_n, (BLOCK_N // 2, 2)))
    ok_lo, ok_hi = tl.split(tl.reshape(n_ok, (BLOCK_N // 2, 2)))
    ok = row_ok[:, None] & (ok_lo & ok_hi)[None, :]
    ptrs = (row_ptrs[:, None] + col[None, :]).to(tl.pointer_type(tl.uint32))
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p red.relaxed.gpu.global.add.noftz.bf16x2 [$1], $2; mov.b32 $0, 0; }",
        "=r,l,r,r", [ptrs, pair, ok.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _item_indices(item, n_blocks, N, sorted_ptr, block_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  GROUP_M: tl.constexpr):
    """A work item's loaded indices: its block's route ids and expert id. An
    item past the last (the prefetch after a program's final item) wraps to
    a valid one, keeping every load in bounds; n_blocks must be >= 1."""
    n_tiles = tl.cdiv(N, BLOCK_N)
    b, _ = item_coords(item % (n_blocks * n_tiles), n_blocks, n_tiles, GROUP_M)
    return tl.load(sorted_ptr + b * BLOCK_M + tl.arange(0, BLOCK_M)), tl.load(block_ptr + b)


@triton.jit
def _item(item, n_blocks, routes, e, num_routes, top_k, N, E_loc, stride_wn, stride_wsn,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, A_BY_TOKEN: tl.constexpr,
          ACT: tl.constexpr, INTERLEAVED: tl.constexpr):
    """Work item and its _item_indices -> (M block b, columns offs_n, n_ok,
    row_ok, local expert e, A rows, weight row offsets, scale row offsets)."""
    offs_m = tl.arange(0, BLOCK_M)
    b, _, offs_n, n_ok = item_tile(item, n_blocks, N, BLOCK_N, GROUP_M)
    row_ok = routes < num_routes
    # an invalid block id (none inside the padded count) masks the whole
    # item (compared as vectors: the interpreter's masks must be bool arrays)
    e_n, e_m = offs_n * 0 + e, offs_m * 0 + e
    n_ok = n_ok & (e_n >= 0) & (e_n < E_loc)
    row_ok = row_ok & (e_m >= 0) & (e_m < E_loc)
    e = tl.where((e >= 0) & (e < E_loc), e, 0)
    if A_BY_TOKEN:
        a_rows = tl.where(row_ok, routes // top_k, 0).to(tl.int64)
    else:
        a_rows = (b * BLOCK_M + offs_m).to(tl.int64)
    if ACT != 0 and INTERLEAVED:
        n64 = 2 * offs_n.to(tl.int64)      # gate rows; up rows follow each
    else:
        n64 = offs_n.to(tl.int64)
    return b, offs_n, n_ok, row_ok, e.to(tl.int64), a_rows, n64 * stride_wn, n64 * stride_wsn


@triton.jit
def _k_step(acc, acc_u, ks, a_ptr, as_ptr, w_ptr, ws_ptr, e, a_rows, row_ok, w_rows, ws_rows, n_ok, up_rows,
            stride_am, stride_asm, stride_we, stride_wn, stride_wse, stride_wsn,
            BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP_AB: tl.constexpr, DOT_MODE: tl.constexpr,
            FNUZ: tl.constexpr, DECODE: tl.constexpr, PTX: tl.constexpr, ACT: tl.constexpr):
    """acc (and acc_u, the up rows' product when SwiGLU is fused) plus one
    BLOCK_K step `ks` of A rows x the expert's weight tile."""
    w_base = w_ptr + e * stride_we + w_rows
    ws_base = ws_ptr + e * stride_wse + ws_rows
    if DOT_MODE == 0:
        # one fp8 product per 32-wide block, scaled by both block scales
        offs_k = tl.arange(0, 32)
        for j in tl.static_range(BLOCK_K // 32):
            kb = ks * (BLOCK_K // 32) + j
            a = _load_fp8(a_ptr + a_rows[:, None] * stride_am + kb * 32 + offs_k[None, :], row_ok[:, None], FNUZ,
                          DECODE)
            w = _load_fp8(w_base[:, None] + kb * 32 + offs_k[None, :], n_ok[:, None], FNUZ, DECODE)
            sa = e8m0_decode(tl.load(as_ptr + a_rows * stride_asm + kb, mask=row_ok, other=127).to(tl.int32))
            sw = e8m0_decode(tl.load(ws_base + kb, mask=n_ok, other=127).to(tl.int32))
            if SWAP_AB:
                acc += tl.dot(w, tl.trans(a)) * (sw[:, None] * sa[None, :])
            else:
                acc += tl.dot(a, tl.trans(w)) * (sa[:, None] * sw[None, :])
    else:
        offs_kk = ks * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_ks = ks * (BLOCK_K // 32) + tl.arange(0, BLOCK_K // 32)
        w_ptrs = w_base[:, None] + offs_kk[None, :]
        ws_ptrs = ws_base[:, None] + offs_ks[None, :]
        if DOT_MODE == 2 and not DECODE:
            # tl.dot_scaled: the compiler's own MX lowering
            a = _load_fp8(a_ptr + a_rows[:, None] * stride_am + offs_kk[None, :], row_ok[:, None], FNUZ, False)
            w = _load_fp8(w_ptrs, n_ok[:, None], FNUZ, False)
            sa = tl.load(as_ptr + a_rows[:, None] * stride_asm + offs_ks[None, :], mask=row_ok[:, None], other=127)
            sw = tl.load(ws_ptrs, mask=n_ok[:, None], other=127)
            if SWAP_AB:
                acc = tl.dot_scaled(w, sw, "e4m3", tl.trans(a), sa, "e4m3", acc)
            else:
                acc = tl.dot_scaled(a, sa, "e4m3", tl.trans(w), sw, "e4m3", acc)
        else:
            # upcast: the weight tile scaled to BF16 in registers (exact: an
            # fp8 value times a power of two fits bf16's 8 exponent bits), one
            # BF16 product; A arrives as the BF16 image of its MXFP8 values
            # (mxfp8_round / the activation kernel): no scales, no per-warp
            # conversion of the shared A tile
            a = tl.load(a_ptr + a_rows[:, None] * stride_am + offs_kk[None, :], mask=row_ok[:, None], other=0.0)
            w = _upcast_tile(w_ptrs, ws_ptrs, n_ok, BLOCK_N, BLOCK_K, FNUZ, DECODE, PTX)
            if DECODE:
                a = a.to(tl.float32)
            if SWAP_AB:
                acc = tl.dot(w, tl.trans(a), acc)
            else:
                acc = tl.dot(a, tl.trans(w), acc)
            if ACT != 0:
                wu = _upcast_tile(w_ptrs + up_rows * stride_wn, ws_ptrs + up_rows * stride_wsn, n_ok, BLOCK_N,
                                  BLOCK_K, FNUZ, DECODE, PTX)
                acc_u = tl.dot(a, tl.trans(wu), acc_u)
    return acc, acc_u


@triton.jit
def _epilogue(acc, acc_u, c_ptr, topk_w_ptr, b, offs_n, n_ok, routes, row_ok, top_k, stride_cm, alpha, limit,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP_AB: tl.constexpr, ATOMIC_OUT: tl.constexpr,
              PTX: tl.constexpr, ACT: tl.constexpr, EMAX: tl.constexpr, BIAS: tl.constexpr,
              FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr, FNUZ: tl.constexpr):
    """One item's rows out: stored by sorted position (GEMM1; SwiGLU + MX
    rounding first when fused) or added into each route's token row times
    its router weight (GEMM2)."""
    if SWAP_AB:
        y = tl.trans(acc)
    else:
        y = acc
    c_rows = (b * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    if ACT != 0:
        # SwiGLU and the MX rounding of GEMM2's operand, in registers:
        # each row's 32-wide blocks lie inside this BLOCK_N tile
        v = mx_round(act_math(y, acc_u, alpha, limit, ACT), EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_M, BLOCK_N)
        tl.store(c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :], v.to(c_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & n_ok[None, :])
    elif ATOMIC_OUT:
        wts = tl.load(topk_w_ptr + routes, mask=row_ok, other=0.0).to(tl.float32)
        tok = tl.where(row_ok, routes // top_k, 0).to(tl.int64)
        # c is fp32, or the BF16 output itself (BF16 atomics)
        if PTX and c_ptr.dtype.element_ty == tl.bfloat16:
            _red_add_bf16x2(c_ptr + tok * stride_cm, offs_n, y * wts[:, None], row_ok, n_ok, BLOCK_M, BLOCK_N)
        else:
            tl.atomic_add(c_ptr + tok[:, None] * stride_cm + offs_n[None, :],
                          (y * wts[:, None]).to(c_ptr.dtype.element_ty),
                          mask=row_ok[:, None] & n_ok[None, :], sem="relaxed")
    else:
        # route rows only: nothing reads a padding row (the activation
        # kernel and GEMM2 mask them too), and at decode sizes most rows
        # of a 16-row block are padding (M3 T=64: 36 routes in 256 rows)
        tl.store(c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :], y.to(c_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _mx_gemm_kernel(
        a_ptr, as_ptr, w_ptr, ws_ptr, c_ptr, sorted_ptr, block_ptr, npost_ptr, topk_w_ptr,
        num_routes, top_k, N, K, E_loc,
        stride_am, stride_asm, stride_we, stride_wn, stride_wse, stride_wsn, stride_cm,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,        # item order (fused_moe.item_coords)
        A_BY_TOKEN: tl.constexpr,     # GEMM1: A row = route // top_k (the token); GEMM2: the sorted position
        ATOMIC_OUT: tl.constexpr,     # GEMM2: c[token] += router weight * row (fp32 atomics); GEMM1: c[position] = row
        SWAP_AB: tl.constexpr,        # compute the weight tile as the MMA's M side (wgmma wants M >= 64)
        DOT_MODE: tl.constexpr,       # 0 fp8 MMA per 32-wide block; 1 upcast tiles, one BF16 MMA per step;
                                      # 2 tl.dot_scaled (the compiler's own MX lowering)
        FNUZ: tl.constexpr, DECODE: tl.constexpr,
        PTX: tl.constexpr,            # NVIDIA target: inline PTX for the packed fp8 -> BF16 bit moves
        ACT: tl.constexpr = 0,        # upcast GEMM1 only: 1 silu / 2 SwiGLU-OAI of the gate and up tiles, then
        INTERLEAVED: tl.constexpr = False,  # MX rounding, c = BF16 image `[rows, N = I]` (gate/up row layout)
        alpha=1.0, limit=0.0,
        EMAX: tl.constexpr = 8, BIAS: tl.constexpr = 7, FP8_MAX: tl.constexpr = 448.0,
        NAN_BYTE: tl.constexpr = 0x7F):
    n_blocks = tl.load(npost_ptr) // BLOCK_M
    total = n_blocks * tl.cdiv(N, BLOCK_N)
    k_steps = K // BLOCK_K
    pid, progs = tl.program_id(0), tl.num_programs(0)
    if ACT != 0 and not INTERLEAVED:
        up_rows = N
    else:
        up_rows = 1
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)      # the up rows' product (fused SwiGLU only)
    # the next item's route ids and expert id load while this item runs its
    # K loop, so each item starts with its first weight tiles' loads rather
    # than a chain of dependent index loads (measured: GEMM1 1-3 us faster
    # at M3 T=64/216). n_blocks 0 runs no item; the modulo's divisor stays
    # non-zero and every index load in bounds.
    routes_nxt, e_nxt = _item_indices(pid, tl.maximum(n_blocks, 1), N, sorted_ptr, block_ptr, BLOCK_M, BLOCK_N,
                                      GROUP_M)
    for item in range(pid, total, progs):
        routes, e = routes_nxt, e_nxt
        routes_nxt, e_nxt = _item_indices(item + progs, n_blocks, N, sorted_ptr, block_ptr, BLOCK_M, BLOCK_N,
                                          GROUP_M)
        b, offs_n, n_ok, row_ok, e, a_rows, w_rows, ws_rows = _item(
            item, n_blocks, routes, e, num_routes, top_k, N, E_loc, stride_wn, stride_wsn, BLOCK_M, BLOCK_N,
            GROUP_M, A_BY_TOKEN, ACT, INTERLEAVED)
        acc = tl.zeros_like(acc)
        acc_u = tl.zeros_like(acc_u)
        for ks in range(0, k_steps):
            acc, acc_u = _k_step(acc, acc_u, ks, a_ptr, as_ptr, w_ptr, ws_ptr, e, a_rows, row_ok, w_rows, ws_rows,
                                 n_ok, up_rows, stride_am, stride_asm, stride_we, stride_wn, stride_wse, stride_wsn,
                                 BLOCK_N, BLOCK_K, SWAP_AB, DOT_MODE, FNUZ, DECODE, PTX, ACT)
        _epilogue(acc, acc_u, c_ptr, topk_w_ptr, b, offs_n, n_ok, routes, row_ok, top_k, stride_cm, alpha, limit,
                  BLOCK_M, BLOCK_N, SWAP_AB, ATOMIC_OUT, PTX, ACT, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ)


@triton.jit
def _act_quant_kernel(h_ptr, q_ptr, s_ptr, count_ptr, sorted_ptr, num_routes, R, I, stride_h, alpha, limit,
                      ACT: tl.constexpr, INTERLEAVED: tl.constexpr,
                      EMAX: tl.constexpr, BIAS: tl.constexpr, FP8_MAX: tl.constexpr, NAN_BYTE: tl.constexpr,
                      FNUZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, OUT_BF16: tl.constexpr,
                      HW_CVT: tl.constexpr, PDL: tl.constexpr = False):
    """h `[R, 2I]` fp32 -> activation -> MXFP8 `[R, I]` + scales `[R, I/32]`
    (OUT_BF16: the BF16 image of those values into q, no scales), for the
    rows below the device-side padded count that hold a route: padding rows
    are neither read nor written (GEMM2 masks them)."""
    pdl_enter(PDL)
    rows = tl.minimum(tl.load(count_ptr), R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cols < I
    kb = tl.program_id(1) * (BLOCK_C // 32) + tl.arange(0, BLOCK_C // 32)
    for r0 in range(tl.program_id(0) * BLOCK_R, rows, tl.num_programs(0) * BLOCK_R):
        r = (r0 + tl.arange(0, BLOCK_R)).to(tl.int64)
        routed = tl.load(sorted_ptr + r, mask=r < rows, other=num_routes) < num_routes
        m = routed[:, None] & cm[None, :]
        base = h_ptr + r[:, None] * stride_h
        if INTERLEAVED:
            g = tl.load(base + 2 * cols[None, :], mask=m, other=0.0)
            u = tl.load(base + 2 * cols[None, :] + 1, mask=m, other=0.0)
        else:
            g = tl.load(base + cols[None, :], mask=m, other=0.0)
            u = tl.load(base + I + cols[None, :], mask=m, other=0.0)
        y = act_math(g.to(tl.float32), u.to(tl.float32), alpha, limit, ACT)
        if OUT_BF16:
            v = mx_round(y, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_C, HW_CVT)
            tl.store(q_ptr + r[:, None] * I + cols[None, :], v.to(q_ptr.dtype.element_ty), mask=m)
        else:
            q, sb = mx_quantize(y, EMAX, BIAS, FP8_MAX, NAN_BYTE, FNUZ, BLOCK_R, BLOCK_C, HW_CVT)
            tl.store(q_ptr + r[:, None] * I + cols[None, :], q, mask=m)
            tl.store(s_ptr + r[:, None] * (I // 32) + kb[None, :], sb,
                     mask=routed[:, None] & (kb[None, :] < I // 32))


def _fp8_tile(tile: moe_configs.Tile, K: int, factor: int = 2) -> moe_configs.Tile:
    """`tile` with BLOCK_K `factor` times as wide (2: a BF16 tile's bytes per
    weight row per K step), a divisor of K and a multiple of 32."""
    bk = max(32, min(factor * tile.block_k, 256))
    while bk > 32 and K % bk:
        bk //= 2
    return replace(tile, block_k=bk)


def gemm(a, a_s, w, w_s, c, sorted_ids, block_ids, npost, topk_w, *, num_routes: int, top_k: int,
         tile: moe_configs.Tile, a_by_token: bool, atomic_out: bool, dot: str,
         act: Optional[tuple] = None) -> None:
    """One MoE GEMM over the aligned blocks. `act` = (activation, layout,
    alpha, limit) fuses SwiGLU and the MX rounding into GEMM1 (upcast mode;
    c is then BF16 `[rows, I]`)."""
    E_loc, N, K = w.shape
    if K % tile.block_k:   # the K loop has no tail: a partial last step would go unread
        raise ValueError(f"mxfp8 gemm: BLOCK_K {tile.block_k} does not divide K = {K}")
    fused = {}
    if act is not None:
        assert dot == "upcast" and not tile.swap_ab and tile.block_n % 32 == 0 and c.dtype == torch.bfloat16
        activation, layout, alpha, limit = act
        N //= 2
        fused = dict(ACT=ACT_IDS[activation], INTERLEAVED=layout == "interleaved", alpha=float(alpha),
                     limit=float(limit), **{k: v for k, v in flavour_constexprs(w.dtype).items() if k != "FNUZ"})
    progs = persistent_grid(block_ids.shape[0] * triton.cdiv(N, tile.block_n), tile, a.device)
    if dot == "upcast":   # A is the BF16 image of its MXFP8 values, no scales
        assert a.dtype == torch.bfloat16 and a_s is None
        a_s = w_s         # a valid pointer for the unused A-scale argument; never read
    else:
        a = a.view(torch.uint8)
    _mx_gemm_kernel[(progs,)](
        a, a_s, w.view(torch.uint8), w_s, c, sorted_ids, block_ids, npost,
        sorted_ids if topk_w is None else topk_w, num_routes, top_k, N, K, E_loc,
        a.stride(0), a_s.stride(0), w.stride(0), w.stride(1), w_s.stride(0), w_s.stride(1), c.stride(0),
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        A_BY_TOKEN=a_by_token, ATOMIC_OUT=atomic_out, SWAP_AB=tile.swap_ab, DOT_MODE=DOT_MODES[dot],
        FNUZ=w.dtype == torch.float8_e4m3fnuz, DECODE=DECODE,
        PTX=nvidia_capability(a.device) is not None, **fused,
        num_warps=tile.num_warps, num_stages=tile.num_stages)


def act_quant(h: torch.Tensor, sorted_ids: torch.Tensor, npost: torch.Tensor, num_routes: int, activation: str,
              layout: str, alpha: float, limit: float, fp8_dtype: torch.dtype, as_bf16: bool = False
              ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """h `[R, 2I]` -> (fp8 `[R, I]`, e8m0 `[R, I/32]`), or with `as_bf16`
    (BF16 image of the MXFP8 values `[R, I]`, None); only rows holding a
    route (sorted_ids below num_routes, before npost[0]) are read and
    written: GEMM1 writes no others and GEMM2 reads no others."""
    R, two_i = h.shape
    I = two_i // 2
    q = _buffer((R, I), torch.bfloat16 if as_bf16 else torch.uint8, h.device)
    s = _buffer((R, I // 32), torch.uint8, h.device)
    block_r, block_c = 16, 128 if I % 128 == 0 else 32
    col_blocks = triton.cdiv(I, block_c)
    if h.is_cuda:
        progs = max(1, min(triton.cdiv(R, block_r), triton.cdiv(4 * cu_count(h.device), col_blocks)))
    else:
        progs = max(1, min(triton.cdiv(R, block_r), 2))
    _act_quant_kernel[(progs, col_blocks)](
        h, q, s, npost, sorted_ids, num_routes, R, I, h.stride(0), float(alpha), float(limit), ACT=ACT_IDS[activation],
        INTERLEAVED=layout == "interleaved", **flavour_constexprs(fp8_dtype), BLOCK_R=block_r, BLOCK_C=block_c,
        OUT_BF16=as_bf16, HW_CVT=hw_fp8_cvt(h.device, fp8_dtype), num_warps=4, **dependent_launch.launch(h.device))
    return (q, None) if as_bf16 else (q.view(fp8_dtype), s)


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """The per-device stream the rounding pass may run on (created once: a
    stream per call would cost more than the overlap saves)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SIDE_STREAMS:
        _SIDE_STREAMS[idx] = torch.cuda.Stream(device=idx)
    return _SIDE_STREAMS[idx]


def plan(hidden: torch.Tensor, w13_q: torch.Tensor, topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor],
         block_m: Optional[int] = None, dot: Optional[str] = None, tile: Optional[dict] = None,
         fuse_act: Optional[bool] = None, bf16_atomics: Optional[bool] = None,
         overlap_rounding: Optional[bool] = None) -> dict:
    """Tiles, dot mode and activation placement: the per-arch MXFP8 tile
    (moe_configs' mxfp8_tile) below BLOCK_M 64, else the BF16 table's tiles
    at fp8 widths; `tile` overrides Tile fields of both GEMMs (benchmarks,
    sweeps). With the activation fused (upcast mode only) GEMM1's tile covers
    BLOCK_N gate + BLOCK_N up rows, so its BLOCK_N is halved: the same weight
    bytes per K step. `bf16_atomics`: GEMM2 accumulates straight into a BF16
    output (the table's mxfp8_bf16_atomics; BF16 hidden states only).
    `overlap_rounding`: the rounding pass on a side stream beside the
    alignment (the table's mxfp8_overlap_rounding; upcast mode on a GPU)."""
    E_loc, two_i, H = w13_q.shape
    E_glob = E_loc if expert_map is None else expert_map.shape[0]
    return plan_shape(device_arch(hidden.device), cu_count(hidden.device), H=H, I=two_i // 2, E_glob=E_glob,
                      E_loc=E_loc, routes=topk_ids.numel(), dtype=hidden.dtype, on_gpu=hidden.is_cuda,
                      block_m=block_m, dot=dot, tile=tile, fuse_act=fuse_act, bf16_atomics=bf16_atomics,
                      overlap_rounding=overlap_rounding)


def plan_shape(arch: str, cus: int, *, H: int, I: int, E_glob: int, E_loc: int, routes: int,
               dtype: torch.dtype = torch.bfloat16, on_gpu: bool = True, block_m: Optional[int] = None,
               dot: Optional[str] = None, tile: Optional[dict] = None, fuse_act: Optional[bool] = None,
               bf16_atomics: Optional[bool] = None, overlap_rounding: Optional[bool] = None) -> dict:
    """plan() from sizes alone: what `explain` shows for a target."""
    bm = block_m or moe_configs.choose_block_m(arch, routes, E_glob, E_loc)
    ent = moe_configs.arch_entry(arch)
    rows = moe_configs.rows_per_active_expert(routes, E_glob, E_loc)
    prefill = moe_configs.prefill_tile(ent, "gemm1", rows, bm) is not None
    if ent.mxfp8_tile is not None and bm < 64:
        t1 = t2 = replace(ent.mxfp8_tile, block_m=bm)
        f = 1
    elif ent.mxfp8_prefill_tile is not None and prefill:
        t1 = t2 = ent.mxfp8_prefill_tile
        f = 1
    else:
        common = dict(num_routes=routes, num_experts=E_glob, num_local=E_loc, block_m=bm, cu_count=cus)
        t1 = moe_configs.choose(arch, "gemm1", N=2 * I, K=H, **common)
        t2 = moe_configs.choose(arch, "gemm2", N=H, K=I, **common)
        f = ent.mxfp8_block_k_factor
    t1, t2 = _fp8_tile(t1, H, f), _fp8_tile(t2, I, f)
    if tile:
        t1, t2 = replace(t1, **tile), replace(t2, **tile)
    dot = dot or (prefill and ent.mxfp8_prefill_dot) or ent.mxfp8_dot
    fuse = (dot == "upcast" and (ent.mxfp8_fuse_act if fuse_act is None else fuse_act) and I % 32 == 0
            and not t1.swap_ab)
    if fuse:
        t1 = replace(t1, block_n=max(32, t1.block_n // 2))
    # (the interpreter has no BF16 atomics: CPU runs keep fp32)
    b16 = ((ent.mxfp8_bf16_atomics if bf16_atomics is None else bf16_atomics) and dtype == torch.bfloat16
           and not DECODE)
    overlap = ((ent.mxfp8_overlap_rounding if overlap_rounding is None else overlap_rounding) and dot == "upcast"
               and on_gpu)
    return dict(arch=arch, block_m=bm, tile1=t1, tile2=t2, dot=dot, fuse_act=fuse, bf16_atomics=b16,
                overlap_rounding=overlap)


def fused_moe_mxfp8(hidden: torch.Tensor, w13_q: torch.Tensor, w13_s: torch.Tensor, w2_q: torch.Tensor,
                    w2_s: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    expert_map: Optional[torch.Tensor] = None, activation: str = "swiglu_oai",
                    layout: str = "split", alpha: float = reference.SWIGLU_OAI_ALPHA,
                    limit: float = reference.SWIGLU_OAI_LIMIT, block_m: Optional[int] = None,
                    dot: Optional[str] = None, tile: Optional[dict] = None,
                    fuse_act: Optional[bool] = None, bf16_atomics: Optional[bool] = None,
                    overlap_rounding: Optional[bool] = None,
                    quantize: Optional[Callable] = None, align: Optional[Callable] = None) -> torch.Tensor:
    """This rank's partial `[T, H]` (hidden's dtype) from MXFP8 expert weights
    (inputs as the op checks them; w*_q fp8, w*_s uint8 e8m0 `[..., K/32]`).
    `quantize(x, fp8_dtype) -> (q, scales)` quantises the tokens for the fp8
    dots and `align(topk_ids, block_m, expert_map, num_local_experts)` aligns
    the routes: the op layer passes the oracle's choices, the defaults are
    this package's Triton kernels (the quantisers are both bit-exact OCP MX)."""
    T, H = hidden.shape
    if T == 0:
        return hidden.new_empty((0, H))
    from .mxfp8_quant import mxfp8_quant
    quantize, align = quantize or mxfp8_quant, align or moe_align
    E_loc, two_i, _ = w13_q.shape
    k = topk_ids.shape[1]
    routes = topk_ids.numel()
    p = plan(hidden, w13_q, topk_ids, expert_map, block_m, dot, tile, fuse_act, bf16_atomics, overlap_rounding)
    fp8 = w13_q.dtype
    upcast = p["dot"] == "upcast"
    acc_dtype = hidden.dtype if p["bf16_atomics"] else torch.float32
    if upcast:
        # the output that GEMM2 adds into is zeroed by the same pass
        from .mxfp8_quant import mxfp8_round
        x = hidden.contiguous()
        out = torch.empty((T, H), dtype=acc_dtype, device=hidden.device)
        xq, xs = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device), None
        if p["overlap_rounding"]:
            # every tensor is allocated on the main stream, which waits for
            # the side stream before GEMM1 reads xq
            main, side = torch.cuda.current_stream(x.device), _side_stream(x.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                mxfp8_round(x, fp8, zero=out, out=xq)
            sorted_ids, block_ids, npost = align(topk_ids, p["block_m"], expert_map, E_loc)
            main.wait_stream(side)
        else:
            sorted_ids, block_ids, npost = align(topk_ids, p["block_m"], expert_map, E_loc)
            mxfp8_round(x, fp8, zero=out, out=xq)
    else:
        sorted_ids, block_ids, npost = align(topk_ids, p["block_m"], expert_map, E_loc)
        out = torch.zeros((T, H), dtype=acc_dtype, device=hidden.device)
        xq, xs = quantize(hidden.contiguous(), fp8)
    rows = sorted_ids.shape[0]
    g = dict(num_routes=routes, top_k=k, dot=p["dot"])
    if p["fuse_act"]:
        aq, a_s = _buffer((rows, two_i // 2), torch.bfloat16, hidden.device), None
        gemm(xq, xs, w13_q, w13_s, aq, sorted_ids, block_ids, npost, None, tile=p["tile1"], a_by_token=True,
             atomic_out=False, act=(activation, layout, alpha, limit), **g)
    else:
        h = _buffer((rows, two_i), torch.float32, hidden.device)
        gemm(xq, xs, w13_q, w13_s, h, sorted_ids, block_ids, npost, None, tile=p["tile1"], a_by_token=True,
             atomic_out=False, **g)
        aq, a_s = act_quant(h, sorted_ids, npost, routes, activation, layout, alpha, limit, fp8, as_bf16=upcast)
    gemm(aq, a_s, w2_q, w2_s, out, sorted_ids, block_ids, npost, topk_weights.reshape(-1), tile=p["tile2"],
         a_by_token=False, atomic_out=True, **g)
    return out if out.dtype == hidden.dtype else out.to(hidden.dtype)


# --------------------------------------------------------------------------- #
# ahead-of-time compile specs (gfx942: fp8 MFMA on e4m3fnuz; sm90 / gfx950: e4m3fn)
# --------------------------------------------------------------------------- #

_SIG = {"a_ptr": "*u8", "as_ptr": "*u8", "w_ptr": "*u8", "ws_ptr": "*u8", "c_ptr": "*fp32", "sorted_ptr": "*i32",
        "block_ptr": "*i32", "npost_ptr": "*i32", "topk_w_ptr": "*fp32", "num_routes": "i32", "top_k": "i32",
        "N": "i32", "K": "i32", "E_loc": "i32", "stride_am": "i32", "stride_asm": "i32", "stride_we": "i32",
        "stride_wn": "i32", "stride_wse": "i32", "stride_wsn": "i32", "stride_cm": "i32", "alpha": "fp32",
        "limit": "fp32"}
_CONST = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "A_BY_TOKEN", "ATOMIC_OUT", "SWAP_AB", "DOT_MODE", "FNUZ",
          "DECODE", "PTX", "ACT", "INTERLEAVED", "EMAX", "BIAS", "FP8_MAX", "NAN_BYTE")


def aot_specs():
    """One spec per (kernel, target): each target compiles its own table
    entry (tiles, dot mode) and, in upcast mode, BF16 activation operands."""
    from .aot import AotSpec
    act_sig = {"h_ptr": "*fp32", "q_ptr": "*u8", "s_ptr": "*u8", "count_ptr": "*i32", "sorted_ptr": "*i32",
               "num_routes": "i32", "R": "i32", "I": "i32",
               "stride_h": "i32", "alpha": "fp32", "limit": "fp32",
               **{c: "constexpr" for c in ("ACT", "INTERLEAVED", "EMAX", "BIAS", "FP8_MAX", "NAN_BYTE", "FNUZ",
                                           "BLOCK_R", "BLOCK_C", "OUT_BF16", "HW_CVT", "PDL")}}
    specs = []
    for target in ("gfx942", "gfx950", "sm90", "sm100"):
        ent = moe_configs.ARCHS[target]
        fp8 = torch.float8_e4m3fnuz if target == "gfx942" else torch.float8_e4m3fn
        flav = flavour_constexprs(fp8)
        # M3 EP8 rank (GEMM1 N = 2I = 6144, K = 6144; GEMM2 N = 6144, K = I =
        # 3072) at a decode and, where the table has one, a prefill step:
        # the tiles and dot mode plan_shape() gives them
        rank = dict(H=6144, I=3072, E_glob=128, E_loc=16)
        plans = [("", plan_shape(target, ARCHS[target]["cu_count"], routes=216 * 4, **rank))]
        if ent.prefill:
            plans.append(("[prefill]", plan_shape(target, ARCHS[target]["cu_count"], routes=16384 * 4, **rank)))
        for suffix, p in plans:
            sig = {**_SIG, "a_ptr": "*bf16" if p["dot"] == "upcast" else "*u8", **{c: "constexpr" for c in _CONST}}
            for name, t, g in (("mxfp8_moe_gemm1", p["tile1"], dict(A_BY_TOKEN=True, ATOMIC_OUT=False)),
                               ("mxfp8_moe_gemm2[atomic top-k]", p["tile2"], dict(A_BY_TOKEN=False, ATOMIC_OUT=True))):
                sig_g, act = sig, dict(ACT=0, INTERLEAVED=False)
                if not g["A_BY_TOKEN"] and p["bf16_atomics"]:
                    sig_g = {**sig, "c_ptr": "*bf16"}
                if p["fuse_act"] and g["A_BY_TOKEN"]:
                    sig_g, act = {**sig, "c_ptr": "*bf16"}, dict(ACT=2, INTERLEAVED=False)
                specs.append(AotSpec(f"{name}{suffix}[{p['dot']}{',swiglu_oai fused' if act['ACT'] else ''}]",
                                     _mx_gemm_kernel, sig_g,
                                     dict(g, **t.constexprs(), **act, FNUZ=flav["FNUZ"], DECODE=False,
                                          PTX=target.startswith("sm"), DOT_MODE=DOT_MODES[p["dot"]],
                                          **{k: flav[k] for k in ("EMAX", "BIAS", "FP8_MAX", "NAN_BYTE")}),
                                     num_warps=t.num_warps, num_stages=t.num_stages, matmul=True, fp8=True,
                                     targets=(target,)))
        decode = plans[0][1]     # its activation: fused into GEMM1, or a kernel of its own
        if decode["fuse_act"]:
            continue
        upcast = decode["dot"] == "upcast"
        flavour = "e4m3fnuz" if fp8 == torch.float8_e4m3fnuz else "e4m3fn"
        specs.append(AotSpec(f"mxfp8_moe_swiglu_oai_quant[{flavour}{',bf16 out' if upcast else ''}]",
                             _act_quant_kernel, {**act_sig, "q_ptr": "*bf16" if upcast else "*u8"},
                             dict(ACT=2, INTERLEAVED=False, BLOCK_R=16, BLOCK_C=128, OUT_BF16=upcast,
                                  HW_CVT=target.startswith("sm"), **flavour_constexprs(fp8)), targets=(target,)))
    return specs
