"""Plain-torch ground truth for every op in DESIGN.md section 2.

Every function here is written for clarity, not speed, and runs on any device
and dtype. Tests call them on float64 copies of the inputs; the `torch` backend
of each op calls them on the op's own inputs (computing in float32 at least and
casting the result to the op's output dtype).

Nothing in this module may import a kernel: it is what the kernels are checked
against.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64 (the reference mode), else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# --------------------------------------------------------------------------- #
# RMS norms (QK norm across tensor-parallel shards)
#
# Sums of squares are taken in float64 in every mode: the square of a finite
# value above ~1.8e19 overflows fp32, and rsqrt(inf) = 0 would turn such a row
# into zeros. The inverse RMS of a finite row is at least 2^-128, which fp32
# still holds (as a subnormal), so the rest runs in the compute dtype.
# --------------------------------------------------------------------------- #


def _inv_rms(sumsq: torch.Tensor, width: int, eps: float, cd: torch.dtype) -> torch.Tensor:
    return torch.rsqrt(sumsq.double() / width + eps).to(cd)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim: x * rsqrt(mean(x^2) + eps) * weight."""
    cd = compute_dtype(x, weight)
    xf = x.to(cd)
    inv = _inv_rms(x.double().pow(2).sum(dim=-1, keepdim=True), x.shape[-1], eps, cd)
    return (xf * inv * weight.to(cd)).to(x.dtype)


def rms_norm_sharded(shards: Sequence[torch.Tensor], weight_shards: Sequence[torch.Tensor],
                     eps: float) -> list[torch.Tensor]:
    """RMSNorm over the FULL width of a tensor split column-wise across TP ranks.

    Each rank holds shards[r] `[T, D/R]`; the mean of squares is over the full D,
    which is what the cross-rank all-reduce of per-token sums of squares gives.
    """
    cd = compute_dtype(*shards, *weight_shards)
    full_width = sum(s.shape[-1] for s in shards)
    sumsq = sum(s.double().pow(2).sum(dim=-1, keepdim=True) for s in shards)
    inv = _inv_rms(sumsq, full_width, eps, cd)
    return [(s.to(cd) * inv * w.to(cd)).to(s.dtype) for s, w in zip(shards, weight_shards)]


def allreduce_rms_local(x: torch.Tensor, weight: torch.Tensor, eps: float,
                        sumsq_total: torch.Tensor, full_width: int) -> torch.Tensor:
    """Normalise one rank's shard given the all-reduced per-token sum of squares
    (float64 sums keep rows past fp32's range finite; see above)."""
    cd = compute_dtype(x, weight, sumsq_total)
    inv = _inv_rms(sumsq_total.reshape(-1, 1), full_width, eps, cd)
    return (x.to(cd) * inv * weight.to(cd)).to(x.dtype)


def qk_norm_tp(qkv_shards: Sequence[torch.Tensor], q_weight_shards: Sequence[torch.Tensor],
               k_weight_shards: Sequence[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """MiniMax-M2 QK norm over simulated TP shards.

    qkv_shards[r] is rank r's `[T, q_loc + 2 kv_loc]` slice (q | k | v). q is
    normalised over the full q width, k over the full k width, v is untouched.
    Returns the per-rank qkv with q and k normalised.
    """
    q_loc = q_weight_shards[0].shape[0]
    kv_loc = k_weight_shards[0].shape[0]
    qs = [s[:, :q_loc] for s in qkv_shards]
    ks = [s[:, q_loc:q_loc + kv_loc] for s in qkv_shards]
    qn = rms_norm_sharded(qs, q_weight_shards, eps)
    kn = rms_norm_sharded(ks, k_weight_shards, eps)
    out = []
    for s, q, k in zip(qkv_shards, qn, kn):
        o = s.clone()
        o[:, :q_loc] = q
        o[:, q_loc:q_loc + kv_loc] = k
        out.append(o)
    return out


def gemma_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma-style RMSNorm (M3): normalise in fp32 and scale by (1 + w)."""
    cd = compute_dtype(x, weight)
    xf = x.to(cd)
    inv = _inv_rms(x.double().pow(2).sum(dim=-1, keepdim=True), x.shape[-1], eps, cd)
    return (xf * inv * (1.0 + weight.to(cd))).to(x.dtype)


# --------------------------------------------------------------------------- #
# router
# --------------------------------------------------------------------------- #


def router_gemm(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MoE gate logits in fp32 (float64 in reference mode): x @ w^T (+ bias)."""
    cd = compute_dtype(x, w)
    out = x.to(cd) @ w.to(cd).t()
    if bias is not None:
        out = out + bias.to(cd)
    return out


def minimax_route(logits: torch.Tensor, correction_bias: Optional[torch.Tensor], top_k: int,
                  renormalize: bool = True, routed_scaling_factor: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniMax routing: sigmoid scores; top-k chosen on scores + correction bias;
    weights are the chosen UNBIASED scores, renormalised to sum 1, times the
    routed scaling factor (M3: 2.0, M2: 1.0).

    Returns (weights `[T, k]` float32 (float64 in reference mode), ids `[T, k]` int32).
    """
    cd = compute_dtype(logits)
    scores = torch.sigmoid(logits.to(cd))
    choice = scores if correction_bias is None else scores + correction_bias.to(cd)
    ids = torch.topk(choice, top_k, dim=-1, sorted=True).indices
    weights = scores.gather(-1, ids)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    weights = weights * routed_scaling_factor
    return weights, ids.to(torch.int32)


# --------------------------------------------------------------------------- #
# activations
# --------------------------------------------------------------------------- #

SWIGLU_OAI_ALPHA = 1.702
SWIGLU_OAI_LIMIT = 7.0


def split_gate_up(x: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate and up halves of a `[..., 2I]` GEMM1 output.

    layout "split": gate = first I columns, up = last I; "interleaved": gate =
    even columns, up = odd columns.
    """
    if layout == "split":
        i = x.shape[-1] // 2
        return x[..., :i], x[..., i:]
    if layout == "interleaved":
        return x[..., 0::2], x[..., 1::2]
    raise ValueError(f"unknown gate/up layout {layout!r} (expected 'split' or 'interleaved')")


def swiglu_oai(x: torch.Tensor, alpha: float = SWIGLU_OAI_ALPHA, limit: float = SWIGLU_OAI_LIMIT,
               layout: str = "split") -> torch.Tensor:
    """SwiGLU-OAI: gate = min(g, limit); up = clamp(u, -limit, limit);
    out = (up + 1) * gate * sigmoid(alpha * gate)."""
    cd = compute_dtype(x)
    g, u = split_gate_up(x.to(cd), layout)
    g = g.clamp(max=limit)
    u = u.clamp(min=-limit, max=limit)
    # g * sigmoid(alpha g) is bounded by limit; (u + 1) * g first would
    # overflow fp32 for a huge negative gate (inf * 0 = NaN, not -0)
    return ((u + 1.0) * (g * torch.sigmoid(alpha * g))).to(x.dtype)


def silu_and_mul(x: torch.Tensor, layout: str = "split") -> torch.Tensor:
    """SwiGLU (MiniMax-M2 experts): silu(gate) * up."""
    cd = compute_dtype(x)
    g, u = split_gate_up(x.to(cd), layout)
    return (torch.nn.functional.silu(g) * u).to(x.dtype)


def activation(x: torch.Tensor, kind: str, layout: str = "split", alpha: float = SWIGLU_OAI_ALPHA,
               limit: float = SWIGLU_OAI_LIMIT) -> torch.Tensor:
    """The expert activation by name: "swiglu_oai" or "silu"."""
    if kind == "swiglu_oai":
        return swiglu_oai(x, alpha, limit, layout)
    if kind == "silu":
        return silu_and_mul(x, layout)
    raise ValueError(f"unknown activation {kind!r} (expected 'swiglu_oai' or 'silu')")


# --------------------------------------------------------------------------- #
# MoE
# --------------------------------------------------------------------------- #


def topk_reduce(x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`[T, k, H]` -> `[T, H]`: sum over routes, optionally weighted by `[T, k]`."""
    cd = compute_dtype(x)
    xf = x.to(cd)
    if weights is not None:
        xf = xf * weights.to(cd).unsqueeze(-1)
    return xf.sum(dim=1).to(x.dtype)


def local_expert_ids(topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor]) -> torch.Tensor:
    """Global expert ids -> this rank's local ids (-1 for remote experts)."""
    ids = topk_ids.long()
    if expert_map is None:
        return ids
    return expert_map.long()[ids]


def moe_align(topk_ids: torch.Tensor, block_m: int, expert_map: Optional[torch.Tensor],
              num_local_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group this rank's routes by local expert, each group padded to block_m.

    Routes are flat indices t * k + j into topk_ids. Remote routes (expert_map
    gives -1) are dropped. Within a group, routes keep their flat order (the
    kernels may order a group differently; the set per block is the contract).

    Returns:
      sorted_route_ids `[max_padded]` int32: route ids, padding = topk_ids.numel()
      block_expert_ids `[max_padded // block_m]` int32: local expert per block, -1 unused
      num_routes_post_padded `[1]` int32: rows actually used (a multiple of block_m)
    where max_padded = align_buffer_size(topk_ids.numel(), block_m, num_local_experts).
    """
    numel = topk_ids.numel()
    dev = topk_ids.device
    max_padded = align_buffer_size(numel, block_m, num_local_experts)
    local = local_expert_ids(topk_ids, expert_map).reshape(-1)
    sorted_ids = torch.full((max_padded,), numel, dtype=torch.int32, device=dev)
    block_ids = torch.full((max_padded // block_m,), -1, dtype=torch.int32, device=dev)
    pos = 0
    for e in range(num_local_experts):
        routes = torch.nonzero(local == e).reshape(-1)
        n = routes.numel()
        if n == 0:
            continue
        sorted_ids[pos:pos + n] = routes.to(torch.int32)
        nblocks = -(-n // block_m)
        block_ids[pos // block_m:pos // block_m + nblocks] = e
        pos += nblocks * block_m
    return sorted_ids, block_ids, torch.tensor([pos], dtype=torch.int32, device=dev)


def align_buffer_size(num_routes: int, block_m: int, num_local_experts: int) -> int:
    """Rows of the alignment buffer: every route, plus at most block_m - 1 padding
    rows per local expert that has routes, rounded up to a block. Sized by the
    LOCAL expert count (an expert with no routes adds no padding)."""
    worst = num_routes + min(num_local_experts, num_routes) * (block_m - 1)
    return max(block_m, -(-worst // block_m) * block_m)


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              expert_map: Optional[torch.Tensor] = None, activation_kind: str = "silu",
              layout: str = "split", alpha: float = SWIGLU_OAI_ALPHA,
              limit: float = SWIGLU_OAI_LIMIT,
              activation_quant: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
              route_quant: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """This EP rank's partial MoE output.

    hidden `[T, H]`; w13 `[E_loc, 2I, H]`; w2 `[E_loc, H, I]`; topk_* `[T, k]`
    with GLOBAL expert ids; expert_map `[E_glob]` global -> local (-1 = remote),
    None when every expert is local. Only routes to local experts contribute.
    activation_quant, when given, is applied to the GEMM inputs (the hidden
    states and the activated GEMM1 output): the quantisation points of the
    native MXFP8 path. route_quant, when given, is applied to each route's
    weighted GEMM2 row before the routes are summed (where the kernels store
    that row in the activations' dtype).
    """
    cd = compute_dtype(hidden, w13, w2)
    T, H = hidden.shape
    out = torch.zeros((T, H), dtype=cd, device=hidden.device)
    local = local_expert_ids(topk_ids, expert_map)
    q = activation_quant or (lambda t: t)
    hf = q(hidden.to(cd))
    wf = topk_weights.to(cd)
    for e in range(w13.shape[0]):
        tok, slot = torch.nonzero(local == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        h1 = hf[tok] @ w13[e].to(cd).t()
        a = q(activation(h1, activation_kind, layout, alpha, limit))
        y = (a @ w2[e].to(cd).t()) * wf[tok, slot].unsqueeze(-1)
        out.index_add_(0, tok, y if route_quant is None else route_quant(y))
    return out.to(hidden.dtype)


# --------------------------------------------------------------------------- #
# MXFP8 (OCP microscaling, block 32, e8m0 scales)
# --------------------------------------------------------------------------- #

MX_BLOCK = 32
E8M0_BIAS = 127
E8M0_NAN = 0xFF

# Largest power-of-two exponent of each element format: OCP's emax_elem.
# e4m3fnuz has bias 8, so its largest power of two is 2^7: the same element
# bits as e4m3fn at a scale twice as large ("scale adjusted for its bias").
_FP8_EMAX = {torch.float8_e4m3fn: 8, torch.float8_e4m3fnuz: 7}


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def mxfp8_quant(x: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MXFP8 quantisation along the last dim (a multiple of 32).

    scale exponent = floor(log2(amax)) - emax_elem, clamped to e8m0's range
    [-127, 127]; an all-zero block gets the smallest scale (byte 0); a block
    holding NaN or Inf gets the NaN scale (0xFF) and NaN elements. Elements are
    x / 2^exp, saturated to the format's largest finite value, rounded to
    nearest even. Returns (values fp8_dtype `[..., K]`, scales uint8 `[..., K/32]`).
    """
    if fp8_dtype not in _FP8_EMAX:
        raise ValueError(f"mxfp8_quant: unsupported fp8 dtype {fp8_dtype}")
    K = x.shape[-1]
    if K % MX_BLOCK:
        raise ValueError(f"mxfp8_quant: last dim {K} is not a multiple of {MX_BLOCK}")
    xb = x.float().reshape(*x.shape[:-1], K // MX_BLOCK, MX_BLOCK)
    amax = xb.abs().amax(dim=-1)
    bad = ~torch.isfinite(amax)
    # frexp: amax = m * 2^e with m in [0.5, 1) -> floor(log2(amax)) = e - 1, exactly.
    _, e = torch.frexp(torch.where(bad | (amax == 0), torch.ones_like(amax), amax))
    exp = (e - 1 - _FP8_EMAX[fp8_dtype]).clamp(-E8M0_BIAS, E8M0_BIAS)
    exp = torch.where(amax == 0, torch.full_like(exp, -E8M0_BIAS), exp)
    scale_bytes = torch.where(bad, torch.full_like(exp, E8M0_NAN), exp + E8M0_BIAS).to(torch.uint8)
    # Dividing by a power of two is exact (ldexp), so the only rounding is the cast.
    scaled = torch.ldexp(xb, -exp.unsqueeze(-1).float())
    mx = fp8_max(fp8_dtype)
    scaled = scaled.clamp(-mx, mx)
    scaled = torch.where(bad.unsqueeze(-1), torch.full_like(scaled, float("nan")), scaled)
    q = scaled.reshape(x.shape).to(fp8_dtype)
    return q, scale_bytes


def e8m0_to_float(scales: torch.Tensor) -> torch.Tensor:
    """uint8 e8m0 -> float32 2^(s - 127); 0xFF -> NaN."""
    s = scales.to(torch.int32)
    val = torch.ldexp(torch.ones_like(s, dtype=torch.float32), (s - E8M0_BIAS).float())
    return torch.where(s == E8M0_NAN, torch.full_like(val, float("nan")), val)


def mxfp8_dequant(q: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """values `[..., K]` fp8 + e8m0 scales `[..., K/32]` -> out_dtype `[..., K]`
    (products in float64 for a float64 result: 448 * 2^127 overflows fp32)."""
    K = q.shape[-1]
    cd = torch.float64 if out_dtype == torch.float64 else torch.float32
    qf = q.to(cd).reshape(*q.shape[:-1], K // MX_BLOCK, MX_BLOCK)
    return (qf * e8m0_to_float(scales).to(cd).unsqueeze(-1)).reshape(q.shape).to(out_dtype)


def mxfp8_fn_to_fnuz(q: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-time checkpoint conversion e4m3fn -> e4m3fnuz (gfx942), value preserving.

    The same bits are worth half in fnuz (bias 8 vs 7), so each scale exponent
    goes up by one. fn's -0 (0x80) is NaN in fnuz and becomes +0; fn's NaNs
    (0x7F, 0xFF) become fnuz's NaN (0x80). A scale already at 2^127 cannot be
    raised: that is an error, never a silent change of value.
    """
    if q.dtype != torch.float8_e4m3fn:
        raise ValueError(f"mxfp8_fn_to_fnuz: q must be float8_e4m3fn, got {q.dtype}")
    if scales.dtype != torch.uint8:
        raise ValueError(f"mxfp8_fn_to_fnuz: scales must be uint8 e8m0 bytes, got {scales.dtype}")
    b = q.view(torch.uint8)
    b = torch.where(b == 0x80, torch.zeros_like(b), b)
    b = torch.where((b & 0x7F) == 0x7F, torch.full_like(b, 0x80), b)
    s = scales.to(torch.int32)
    if bool(((s == E8M0_NAN - 1)).any()):
        raise ValueError("mxfp8_fn_to_fnuz: a scale of 2^127 cannot be raised for e4m3fnuz")
    s = torch.where(s == E8M0_NAN, s, s + 1).to(torch.uint8)
    return b.view(torch.float8_e4m3fnuz), s


def fused_moe_mxfp8(hidden: torch.Tensor, w13_q: torch.Tensor, w13_s: torch.Tensor, w2_q: torch.Tensor,
                    w2_s: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    expert_map: Optional[torch.Tensor] = None, activation_kind: str = "swiglu_oai",
                    layout: str = "split", alpha: float = SWIGLU_OAI_ALPHA, limit: float = SWIGLU_OAI_LIMIT,
                    quantize_activations: bool = True) -> torch.Tensor:
    """The MoE over MXFP8 expert weights, in float64 between quantisation points.

    quantize_activations=True is what native MXFP8 computes: the tokens'
    hidden states are quantised per token in 1x32 blocks to the weights' fp8
    flavour before GEMM1, and GEMM1's activated output likewise before GEMM2.
    False is the emulation's contract: dequantised weights, unquantised
    activations.
    """
    cd = torch.float64

    def quant(x):
        return mxfp8_dequant(*mxfp8_quant(x, w13_q.dtype), cd)

    return fused_moe(hidden.to(cd), mxfp8_dequant(w13_q, w13_s, cd), mxfp8_dequant(w2_q, w2_s, cd), topk_weights,
                     topk_ids, expert_map, activation_kind, layout, alpha, limit,
                     quant if quantize_activations else None)


# --------------------------------------------------------------------------- #
# numerics helpers used by tests and the demo
# --------------------------------------------------------------------------- #

# rel_error bounds of a kernel's output against these float64 formulas, by the
# output's precision: fp32 differs by accumulation order only, 16-bit outputs by
# their final rounding (the tests and minimax_rocm.sanitize_cases check these).
REL_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# the native MXFP8 MoE against the reference quantising at the same points
MXFP8_REL_TOL = 1.2e-2


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out has NaN where ref has none."""
    o = out.detach().double().cpu()
    r = ref.detach().double().cpu()
    if bool(torch.isnan(o).any()) and not bool(torch.isnan(r).any()):
        return math.inf
    denom = r.norm().item()
    num = (o - r).norm().item()
    return num / denom if denom > 0 else num
