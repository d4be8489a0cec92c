"""MXFP8 ops: quantise / dequantise (OCP MX, block 32, e8m0 scales) and the
MoE over MXFP8 expert weights."""
from __future__ import annotations

from typing import Optional

import torch

from .. import oracle, reference
from ._common import check_choice, check_tensor, check_types, fail, on_gpu, run
from .moe import FLOAT_DTYPES, align_routes, check_moe, moe_problem
from .spec import Dtype, Str, Tensor, declare_op

FP8_DTYPES = {"e4m3fn": torch.float8_e4m3fn, "e4m3fnuz": torch.float8_e4m3fnuz}
QUANT, DEQUANT, MOE = "mxfp8_quant", "mxfp8_dequant", "fused_moe_mxfp8"


def resolve_fp8(fp8: str) -> str:
    """"auto" -> the platform's flavour (e4m3fnuz on gfx942, e4m3fn elsewhere)."""
    return oracle.detect_platform().fp8_dtype if fp8 == "auto" else fp8


def check_quant(x, fp8):
    check_choice(QUANT, "fp8_dtype", fp8, tuple(FP8_DTYPES))
    check_tensor(QUANT, "x", x, dtype=FLOAT_DTYPES, last_multiple=reference.MX_BLOCK)
    if x.dim() < 1:
        fail(QUANT, "x", "must have at least one dim")


def quant_problem(x, fp8_dtype) -> oracle.Problem:
    return oracle.Problem(QUANT, tokens=x.numel() // max(1, x.shape[-1]), hidden=x.shape[-1],
                          dtype=str(x.dtype)[6:], on_gpu=on_gpu(x))


# "auto" is resolved before the op: the op itself takes a flavour.
MXFP8_QUANT = declare_op(
    QUANT,
    params=(Tensor("x"), Str("fp8_dtype", default="auto", convert=resolve_fp8)),
    check=check_quant, problem=quant_problem, returns=2,
    fake=lambda x, fp8_dtype: (x.new_empty(x.shape, dtype=FP8_DTYPES[fp8_dtype]),
                               x.new_empty((*x.shape[:-1], x.shape[-1] // reference.MX_BLOCK), dtype=torch.uint8)),
    doc="x `[..., K]` -> (fp8 values `[..., K]`, e8m0 scales uint8 `[..., K/32]`).")
mxfp8_quant = MXFP8_QUANT.public


@MXFP8_QUANT.impl("torch")
def _quant_torch(x, fp8_dtype):
    return reference.mxfp8_quant(x, FP8_DTYPES[fp8_dtype])


@MXFP8_QUANT.impl("triton")
def _quant_triton(x, fp8_dtype):
    from ..triton import mxfp8_quant as tri
    return tri.mxfp8_quant(x, FP8_DTYPES[fp8_dtype])


@MXFP8_QUANT.impl("hip")
def _quant_hip(x, fp8_dtype):
    # bf16 input only (the oracle's rule says so); the kernel writes bytes, the
    # fp8 flavour is a view.
    from ..native import ext
    q = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    s = torch.empty((*x.shape[:-1], x.shape[-1] // reference.MX_BLOCK), dtype=torch.uint8, device=x.device)
    ext.ops().mxfp8_quant(x, fp8_dtype == "e4m3fnuz", q, s)
    return q.view(FP8_DTYPES[fp8_dtype]), s


OUT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def check_dequant(q, scales, out_dtype):
    check_choice(DEQUANT, "out_dtype", out_dtype, tuple(OUT_DTYPES))
    check_tensor(DEQUANT, "q", q, dtype=tuple(FP8_DTYPES.values()), last_multiple=reference.MX_BLOCK)
    check_tensor(DEQUANT, "scales", scales, dtype=torch.uint8,
                 shape=(*q.shape[:-1], q.shape[-1] // reference.MX_BLOCK), device=q.device)


def dequant_problem(q, scales, out_dtype) -> oracle.Problem:
    return oracle.Problem(DEQUANT, tokens=q.numel() // max(1, q.shape[-1]), hidden=q.shape[-1],
                          on_gpu=on_gpu(q, scales))


# out_dtype is a torch.dtype to callers and its name in the op's schema.
MXFP8_DEQUANT = declare_op(
    DEQUANT,
    params=(Tensor("q"), Tensor("scales"), Dtype("out_dtype", default=torch.bfloat16)),
    check=check_dequant, problem=dequant_problem,
    fake=lambda q, scales, out_dtype: q.new_empty(q.shape, dtype=OUT_DTYPES[out_dtype]),
    doc="q fp8 `[..., K]`, e8m0 scales `[..., K/32]` -> q x 2^(scale - 127) in out_dtype.")
mxfp8_dequant = MXFP8_DEQUANT.public


@MXFP8_DEQUANT.impl("torch")
def _dequant_torch(q, scales, out_dtype):
    return reference.mxfp8_dequant(q, scales, OUT_DTYPES[out_dtype])


@MXFP8_DEQUANT.impl("triton")
def _dequant_triton(q, scales, out_dtype):
    from ..triton import mxfp8_quant as tri
    return tri.mxfp8_dequant(q, scales, OUT_DTYPES[out_dtype])


# --------------------------------------------------------------------------- #
# fused_moe_mxfp8
# --------------------------------------------------------------------------- #


def check_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                    w13_bf16, w2_bf16, alpha=None, limit=None):
    check_moe(hidden, w13_q, w2_q, topk_weights, topk_ids, expert_map, activation, layout, op=MOE,
              weight_dtypes=tuple(FP8_DTYPES.values()), names=("w13_q", "w2_q"), alpha=alpha, limit=limit)
    for name, q, s in (("w13_s", w13_q, w13_s), ("w2_s", w2_q, w2_s)):
        if q.shape[-1] % reference.MX_BLOCK:
            fail(MOE, name.replace("_s", "_q"), f"K = {q.shape[-1]} is not a multiple of {reference.MX_BLOCK}")
        check_tensor(MOE, name, s, dtype=torch.uint8,
                     shape=(*q.shape[:-1], q.shape[-1] // reference.MX_BLOCK), device=hidden.device)
    if (w13_bf16 is None) != (w2_bf16 is None):
        fail(MOE, "w13_bf16", "and w2_bf16 must be given together")
    if w13_bf16 is not None:
        check_tensor(MOE, "w13_bf16", w13_bf16, dtype=hidden.dtype, shape=tuple(w13_q.shape), device=hidden.device)
        check_tensor(MOE, "w2_bf16", w2_bf16, dtype=hidden.dtype, shape=tuple(w2_q.shape), device=hidden.device)


@torch.library.custom_op("minimax_rocm::fused_moe_mxfp8", mutates_args=())
def _fused_moe_mxfp8(hidden: torch.Tensor, w13_q: torch.Tensor, w13_s: torch.Tensor, w2_q: torch.Tensor,
                     w2_s: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                     expert_map: Optional[torch.Tensor], activation: str, layout: str, alpha: float,
                     limit: float, max_model_len: int, w13_bf16: Optional[torch.Tensor],
                     w2_bf16: Optional[torch.Tensor]) -> torch.Tensor:
    check_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                    w13_bf16, w2_bf16, alpha, limit)
    p = moe_problem(MOE, hidden, w13_q, topk_ids, expert_map, weight_format="mxfp8",
                    max_model_len=max_model_len, has_bf16_copy=w13_bf16 is not None)
    return run(p, hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
               alpha, limit, w13_bf16, w2_bf16, with_path=True)


@_fused_moe_mxfp8.register_fake
def _(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit,
      max_model_len, w13_bf16, w2_bf16):
    check_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                    w13_bf16, w2_bf16, alpha, limit)
    return torch.empty_like(hidden)


@oracle.register_impl(MOE, "torch")
def _moe_torch(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
               alpha, limit, w13_bf16, w2_bf16, path=""):
    # The reference's emulation contract (dequantised weights, activations
    # not quantised) whatever the path.
    return reference.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map,
                                     activation, layout, alpha, limit,
                                     quantize_activations=False).to(hidden.dtype)


def quantize_tokens(x: torch.Tensor, fp8_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The native MXFP8 MoE's token quantisation: mxfp8_quant by the oracle's choice."""
    return mxfp8_quant(x, "e4m3fnuz" if fp8_dtype == torch.float8_e4m3fnuz else "e4m3fn")


@oracle.register_impl(MOE, "triton")
def _moe_triton(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                alpha, limit, w13_bf16, w2_bf16, path=""):
    from ..triton import fused_moe as bf16_moe
    if path == "native_mxfp8":
        from ..triton import fused_moe_mxfp8 as tri
        return tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map,
                                   activation, layout, alpha, limit, quantize=quantize_tokens, align=align_routes)
    if path == "bf16_copy":
        w13, w2 = w13_bf16, w2_bf16
    else:   # emulation: dequantise, then the sparse-local BF16 path
        from ..triton import mxfp8_quant as tq
        w13 = tq.mxfp8_dequant(w13_q, w13_s, hidden.dtype)
        w2 = tq.mxfp8_dequant(w2_q, w2_s, hidden.dtype)
    return bf16_moe.fused_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha,
                              limit, align=align_routes)


def fused_moe_mxfp8(hidden: torch.Tensor, w13_q: torch.Tensor, w13_s: torch.Tensor, w2_q: torch.Tensor,
                    w2_s: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    expert_map: Optional[torch.Tensor] = None, activation: str = "swiglu_oai",
                    layout: str = "split", alpha: float = reference.SWIGLU_OAI_ALPHA,
                    limit: float = reference.SWIGLU_OAI_LIMIT, max_model_len: int = 0,
                    w13_bf16: Optional[torch.Tensor] = None, w2_bf16: Optional[torch.Tensor] = None) -> torch.Tensor:
    """fused_moe over MXFP8 expert weights (fp8 values + e8m0 scales per 32 along K).

    The oracle picks native MXFP8, the BF16 copy (mixed policy, when w13_bf16 and
    w2_bf16 are given) or emulation from the token count and max_model_len.
    """
    check_types(MOE, tensors=dict(hidden=hidden, w13_q=w13_q, w13_s=w13_s, w2_q=w2_q, w2_s=w2_s,
                                  topk_weights=topk_weights, topk_ids=topk_ids),
                optional=dict(expert_map=expert_map, w13_bf16=w13_bf16, w2_bf16=w2_bf16),
                numbers=dict(alpha=alpha, limit=limit), ints=dict(max_model_len=max_model_len),
                strings=dict(activation=activation, layout=layout))
    return torch.ops.minimax_rocm.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids,
                                                  expert_map, activation, layout, alpha, limit, max_model_len,
                                                  w13_bf16, w2_bf16)


# --------------------------------------------------------------------------- #
# mixed policy (memory side) and the one-time fnuz conversion
# --------------------------------------------------------------------------- #


def layer_weight_formats(num_layers: int, max_model_len: int, arch: Optional[str] = None) -> list[str]:
    """Which expert weights each MoE layer of an MXFP8 checkpoint keeps:
    "mxfp8+bf16" (both; the per-call policy of the oracle picks native MXFP8
    or the BF16 copy by token count), "mxfp8" (only; native or, at long
    context, emulation), "bf16" (only; the BF16 MoE). Up to the oracle's
    mxfp8_native_max_model_len every layer keeps both; above it every n-th
    layer (mxfp8_bf16_only_every) keeps BF16 only and the rest MXFP8 only."""
    op = "layer_weight_formats"
    if not isinstance(num_layers, int) or num_layers < 0:
        fail(op, "num_layers", f"is {num_layers!r}; expected an int >= 0")
    if not isinstance(max_model_len, int) or max_model_len < 0:
        fail(op, "max_model_len", f"is {max_model_len!r}; expected an int >= 0")
    if arch is not None and oracle.arch_family(arch) == "cpu" and arch != "cpu":
        fail(op, "arch", f"is {arch!r}; expected a gfx9xx or smNN arch, or cpu")
    arch = arch or oracle.detect_platform().arch
    if max_model_len <= oracle.threshold("mxfp8_native_max_model_len", arch):
        return ["mxfp8+bf16"] * num_layers
    every = int(oracle.threshold("mxfp8_bf16_only_every", arch))
    return ["bf16" if i % every == every - 1 else "mxfp8" for i in range(num_layers)]


FN_TO_FNUZ = "mxfp8_fn_to_fnuz"


def check_fn_to_fnuz(q, scales):
    check_tensor(FN_TO_FNUZ, "q", q, dtype=torch.float8_e4m3fn, contiguous=False, last_multiple=reference.MX_BLOCK)
    if q.dim() < 1:
        fail(FN_TO_FNUZ, "q", "must have at least one dim")
    check_tensor(FN_TO_FNUZ, "scales", scales, dtype=torch.uint8, contiguous=False,
                 shape=(*q.shape[:-1], q.shape[-1] // reference.MX_BLOCK), device=q.device)
    # 2^127 (0xFE) has no e8m0 successor: raising it would change the value
    if scales.numel() and bool((scales == reference.E8M0_NAN - 1).any()):
        fail(FN_TO_FNUZ, "scales", "holds 2^127 (0xFE), which cannot be raised by one for e4m3fnuz")


def mxfp8_fn_to_fnuz(q: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-time checkpoint conversion e4m3fn -> e4m3fnuz for gfx942 (same
    bytes, scale exponent + 1, 0x80 -> +0; see reference.mxfp8_fn_to_fnuz).
    Runs on the tensors' device; a load-time step, not a per-call op.
    Bad input raises OpInputError naming the argument."""
    check_fn_to_fnuz(q, scales)
    return reference.mxfp8_fn_to_fnuz(q, scales)
