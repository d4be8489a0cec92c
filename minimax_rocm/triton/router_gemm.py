"""Triton router GEMM: logits[M, E] fp32 = x[M, H] @ W[E, H]^T, fp32 math.

The portable path for shapes the native kernel does not take. Each program
owns BLOCK_E rows of W over one K slice and all M rows of x; K slices add
into the zeroed output with atomics. The dot runs in exact fp32
(input_precision="ieee"): the gate must not be computed in tf32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .aot import AotSpec


@triton.jit
def router_gemm_kernel(x_ptr, w_ptr, out_ptr, M, H, E, k_per_split,
                       BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_e = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    re = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    rk = tl.arange(0, BLOCK_K)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, H)
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        k = k0 + rk
        xk = tl.load(x_ptr + rm[:, None] * H + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < k_end), other=0.0)
        wk = tl.load(w_ptr + re[:, None] * H + k[None, :], mask=(re[:, None] < E) & (k[None, :] < k_end), other=0.0)
        acc += tl.dot(xk.to(tl.float32), tl.trans(wk), input_precision="ieee")
    mask = (rm[:, None] < M) & (re[None, :] < E)
    tl.atomic_add(out_ptr + rm[:, None] * E + re[None, :], acc, mask=mask)


def _blocks(M: int) -> int:
    return max(16, triton.next_power_of_2(M))


def router_gemm(x: torch.Tensor, w: torch.Tensor, splits: int = 0) -> torch.Tensor:
    """x [M, H] bf16/fp32 contiguous, w [E, H] fp32 contiguous -> [M, E] fp32."""
    M, H = x.shape
    E = w.shape[0]
    out = torch.zeros((M, E), dtype=torch.float32, device=x.device)
    if M == 0:
        return out
    BLOCK_M, BLOCK_E, BLOCK_K = _blocks(M), 32, 64
    e_tiles = triton.cdiv(E, BLOCK_E)
    if splits <= 0:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
        splits = max(1, min(triton.cdiv(2 * sms, e_tiles), triton.cdiv(H, 4 * BLOCK_K)))
    k_per_split = triton.cdiv(triton.cdiv(H, splits), BLOCK_K) * BLOCK_K
    splits = triton.cdiv(H, k_per_split)
    router_gemm_kernel[(e_tiles, splits)](x, w, out, M, H, E, k_per_split, BLOCK_M=BLOCK_M, BLOCK_E=BLOCK_E,
                                          BLOCK_K=BLOCK_K, num_warps=4)
    return out


def aot_specs() -> list[AotSpec]:
    sig = {"x_ptr": "*bf16", "w_ptr": "*fp32", "out_ptr": "*fp32", "M": "i32", "H": "i32", "E": "i32",
           "k_per_split": "i32", "BLOCK_M": "constexpr", "BLOCK_E": "constexpr", "BLOCK_K": "constexpr"}
    return [AotSpec("router_gemm[M=32,H=3072,E=256]", router_gemm_kernel, sig,
                    dict(BLOCK_M=32, BLOCK_E=32, BLOCK_K=64), num_warps=4)]
