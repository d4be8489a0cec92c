"""MXFP8 ops: quantise / dequantise (OCP MX, block 32, e8m0 scales) and the
MoE over MXFP8 expert weights.

One MoE layer's MXFP8 experts travel as one `Mxfp8Experts`: the fp8 values
and e8m0 scales of w13 and w2, and the mixed policy's BF16 copy where the
layer keeps one. Quantising, the gfx942 e4m3fnuz conversion and the memory
policy act on it whole, and the public `fused_moe_mxfp8(hidden, experts,
...)` takes it. The custom op `minimax_rocm::fused_moe_mxfp8` takes the six
tensors one by one, since a schema carries only tensors and scalars: it is
declared with `declare_op` like the other ops (schema, fake, check, oracle
problem, backends), and the function that declaration generates,
`FUSED_MOE_MXFP8.public`, is the internal step the public function calls
with the object's fields. The object checks its tensors when built and the
op at every call (against hidden and the routing as well), with the same
messages naming fused_moe_mxfp8 and the tensor's argument.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .. import oracle, reference
from ._common import check_choice, check_tensor, fail, on_gpu
from .moe import FLOAT_DTYPES, align_routes, check_moe, moe_problem
from .spec import Dtype, Float, Int, Str, Tensor, declare_op, dtype_name

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
# mixed policy (memory side) and the one-time fnuz conversion
# --------------------------------------------------------------------------- #


def layer_weight_formats(num_layers: int, max_model_len: int, arch: Optional[str] = None) -> list[str]:
    """Which expert weights each MoE layer of an MXFP8 checkpoint keeps:
    "mxfp8+bf16" (both; the per-call policy of the oracle picks native MXFP8
    or the BF16 copy by token count), "mxfp8" (only; native or, at long
    context, emulation), "bf16" (only; the BF16 MoE). Up to the oracle's
    mxfp8_native_max_model_len every layer keeps both; above it every n-th
    layer (mxfp8_bf16_only_every) keeps BF16 only and the rest MXFP8 only.
    `Mxfp8Experts.with_format` applies the first two, `dequantize` the last."""
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


def check_fn_to_fnuz(q, scales, names: tuple[str, str] = ("q", "scales")):
    check_tensor(FN_TO_FNUZ, names[0], q, dtype=torch.float8_e4m3fn, contiguous=False,
                 last_multiple=reference.MX_BLOCK)
    if q.dim() < 1:
        fail(FN_TO_FNUZ, names[0], "must have at least one dim")
    check_tensor(FN_TO_FNUZ, names[1], scales, dtype=torch.uint8, contiguous=False,
                 shape=(*q.shape[:-1], q.shape[-1] // reference.MX_BLOCK), device=q.device)
    # 2^127 (0xFE) has no e8m0 successor: raising it would change the value
    if scales.numel() and bool((scales == reference.E8M0_NAN - 1).any()):
        fail(FN_TO_FNUZ, names[1], "holds 2^127 (0xFE), which cannot be raised by one for e4m3fnuz")


def mxfp8_fn_to_fnuz(q: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-time checkpoint conversion e4m3fn -> e4m3fnuz for gfx942 (same
    bytes, scale exponent + 1, 0x80 -> +0; see reference.mxfp8_fn_to_fnuz).
    Runs on the tensors' device; a load-time step, not a per-call op.
    Bad input raises OpInputError naming the argument."""
    check_fn_to_fnuz(q, scales)
    return reference.mxfp8_fn_to_fnuz(q, scales)


# --------------------------------------------------------------------------- #
# Mxfp8Experts: one MoE layer's MXFP8 expert weights
# --------------------------------------------------------------------------- #


def check_expert_weights(w13_q, w2_q) -> None:
    """The fp8 weights on their own (the op checks them against hidden in
    moe.check_moe, with the same messages)."""
    check_tensor(MOE, "w13_q", w13_q, dtype=tuple(FP8_DTYPES.values()), dim=3)
    E, two_i, H = w13_q.shape
    if two_i % 2:
        fail(MOE, "w13_q", f"has {two_i} rows per expert; expected 2 * intermediate (even)")
    check_tensor(MOE, "w2_q", w2_q, dtype=w13_q.dtype, shape=(E, H, two_i // 2), device=w13_q.device)


def check_scales_and_copies(w13_q, w13_s, w2_q, w2_s, w13_bf16, w2_bf16,
                            copy_dtype: Optional[torch.dtype] = None) -> None:
    """Scales and BF16 copies against checked fp8 weights. copy_dtype: the
    copies' dtype (hidden's, in the op); None takes any float dtype."""
    for name, q, s in (("w13", w13_q, w13_s), ("w2", w2_q, w2_s)):
        if q.shape[-1] % reference.MX_BLOCK:
            fail(MOE, f"{name}_q", f"K = {q.shape[-1]} is not a multiple of {reference.MX_BLOCK}")
        check_tensor(MOE, f"{name}_s", s, dtype=torch.uint8,
                     shape=(*q.shape[:-1], q.shape[-1] // reference.MX_BLOCK), device=q.device)
    if (w13_bf16 is None) != (w2_bf16 is None):
        fail(MOE, "w13_bf16", "and w2_bf16 must be given together")
    if w13_bf16 is not None:
        check_tensor(MOE, "w13_bf16", w13_bf16, dtype=copy_dtype or FLOAT_DTYPES, shape=tuple(w13_q.shape),
                     device=w13_q.device)
        check_tensor(MOE, "w2_bf16", w2_bf16, dtype=w13_bf16.dtype, shape=tuple(w2_q.shape), device=w13_q.device)


# eq=False: tensors have no truth value to compare by; repr=False: the default
# would print every weight.
@dataclass(frozen=True, eq=False, repr=False)
class Mxfp8Experts:
    """One MoE layer's local experts in MXFP8 (OCP MX: fp8 values, one e8m0
    scale per 32 along K), as fused_moe_mxfp8 takes them:

        w13_q     fp8 `[E, 2I, H]`: gate and up rows (the op's `layout`)
        w13_s     uint8 e8m0 `[E, 2I, H/32]`
        w2_q      fp8 `[E, H, I]`
        w2_s      uint8 e8m0 `[E, H, I/32]`
        w13_bf16, w2_bf16   the mixed policy's BF16 copy, both or neither
                  (same shapes; the op wants hidden's dtype)

    fp8 is e4m3fn, or e4m3fnuz on gfx942 (`for_platform`). Building one checks
    the tensors and raises OpInputError naming fused_moe_mxfp8 and the tensor,
    as the op would. Immutable: the conversions return a new object sharing
    the tensors they leave alone."""
    w13_q: torch.Tensor
    w13_s: torch.Tensor
    w2_q: torch.Tensor
    w2_s: torch.Tensor
    w13_bf16: Optional[torch.Tensor] = None
    w2_bf16: Optional[torch.Tensor] = None

    def __post_init__(self):
        check_expert_weights(self.w13_q, self.w2_q)
        check_scales_and_copies(self.w13_q, self.w13_s, self.w2_q, self.w2_s, self.w13_bf16, self.w2_bf16)

    @classmethod
    def quantize(cls, w13: torch.Tensor, w2: torch.Tensor, fp8_dtype: str = "auto") -> "Mxfp8Experts":
        """From float weights w13 `[E, 2I, H]` and w2 `[E, H, I]` (mxfp8_quant
        on their device; fp8_dtype "auto" is the platform's flavour)."""
        op = "Mxfp8Experts.quantize"
        check_tensor(op, "w13", w13, dtype=FLOAT_DTYPES, dim=3, contiguous=False, last_multiple=reference.MX_BLOCK)
        E, two_i, H = w13.shape
        if two_i % 2:
            fail(op, "w13", f"has {two_i} rows per expert; expected 2 * intermediate (even)")
        check_tensor(op, "w2", w2, dtype=FLOAT_DTYPES, shape=(E, H, two_i // 2), device=w13.device,
                     contiguous=False, last_multiple=reference.MX_BLOCK)
        return cls(*mxfp8_quant(w13.contiguous(), fp8_dtype), *mxfp8_quant(w2.contiguous(), fp8_dtype))

    @property
    def num_local_experts(self) -> int:
        return self.w13_q.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.w13_q.shape[2]

    @property
    def intermediate_size(self) -> int:
        return self.w2_q.shape[2]

    @property
    def fp8_dtype(self) -> torch.dtype:
        return self.w13_q.dtype

    @property
    def has_bf16_copy(self) -> bool:
        return self.w13_bf16 is not None

    @property
    def device(self) -> torch.device:
        return self.w13_q.device

    def dequantize(self, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
        """(w13, w2) dequantised to dtype (mxfp8_dequant): what a layer that
        keeps BF16 only holds, and what the BF16 copy holds."""
        return mxfp8_dequant(self.w13_q, self.w13_s, dtype), mxfp8_dequant(self.w2_q, self.w2_s, dtype)

    def with_bf16_copy(self, dtype: torch.dtype = torch.bfloat16) -> "Mxfp8Experts":
        """These experts plus a BF16 copy (the dequantised weights, so every
        path of the op computes the same model)."""
        if self.has_bf16_copy and self.w13_bf16.dtype == dtype:
            return self
        w13, w2 = self.dequantize(dtype)
        return replace(self, w13_bf16=w13, w2_bf16=w2)

    def without_bf16_copy(self) -> "Mxfp8Experts":
        return replace(self, w13_bf16=None, w2_bf16=None) if self.has_bf16_copy else self

    def with_format(self, fmt: str, dtype: torch.dtype = torch.bfloat16) -> "Mxfp8Experts":
        """Keep what the memory policy says for this layer (one of
        layer_weight_formats): "mxfp8+bf16" adds the copy, "mxfp8" drops it.
        A "bf16" layer holds no MXFP8 experts: it keeps `dequantize(dtype)`."""
        check_choice("Mxfp8Experts.with_format", "fmt", fmt, ("mxfp8+bf16", "mxfp8"))
        return self.with_bf16_copy(dtype) if fmt == "mxfp8+bf16" else self.without_bf16_copy()

    def to_fnuz(self) -> "Mxfp8Experts":
        """e4m3fn -> e4m3fnuz (mxfp8_fn_to_fnuz on both weights; the BF16 copy
        keeps its values). Already e4m3fnuz: itself."""
        if self.fp8_dtype == torch.float8_e4m3fnuz:
            return self
        check_fn_to_fnuz(self.w13_q, self.w13_s, ("w13_q", "w13_s"))
        check_fn_to_fnuz(self.w2_q, self.w2_s, ("w2_q", "w2_s"))
        q13, s13 = reference.mxfp8_fn_to_fnuz(self.w13_q, self.w13_s)
        q2, s2 = reference.mxfp8_fn_to_fnuz(self.w2_q, self.w2_s)
        return replace(self, w13_q=q13, w13_s=s13, w2_q=q2, w2_s=s2)

    def for_platform(self) -> "Mxfp8Experts":
        """In the fp8 flavour this platform computes in: e4m3fn checkpoints
        become e4m3fnuz on gfx942, once at load."""
        return self.to_fnuz() if oracle.detect_platform().fp8_dtype == "e4m3fnuz" else self

    def __repr__(self) -> str:
        copy = f", bf16 copy {dtype_name(self.w13_bf16.dtype)}" if self.has_bf16_copy else ""
        return (f"Mxfp8Experts(E={self.num_local_experts}, H={self.hidden_size}, I={self.intermediate_size}, "
                f"{dtype_name(self.fp8_dtype)}{copy}, {self.device})")


# --------------------------------------------------------------------------- #
# fused_moe_mxfp8
# --------------------------------------------------------------------------- #


def check_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                    alpha, limit, max_model_len, w13_bf16, w2_bf16):
    check_moe(hidden, w13_q, w2_q, topk_weights, topk_ids, expert_map, activation, layout, op=MOE,
              weight_dtypes=tuple(FP8_DTYPES.values()), names=("w13_q", "w2_q"), alpha=alpha, limit=limit)
    check_scales_and_copies(w13_q, w13_s, w2_q, w2_s, w13_bf16, w2_bf16, copy_dtype=hidden.dtype)


def moe_mxfp8_problem(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids, expert_map, activation, layout,
                      alpha, limit, max_model_len, w13_bf16, w2_bf16) -> oracle.Problem:
    return moe_problem(MOE, hidden, w13_q, topk_ids, expert_map, weight_format="mxfp8",
                       max_model_len=max_model_len, has_bf16_copy=w13_bf16 is not None)


# The schema's loose tensors; the public fused_moe_mxfp8 below passes them
# from an Mxfp8Experts. max_model_len reaches the oracle, not the backends.
FUSED_MOE_MXFP8 = declare_op(
    MOE,
    params=(Tensor("hidden"), Tensor("w13_q"), Tensor("w13_s"), Tensor("w2_q"), Tensor("w2_s"),
            Tensor("topk_weights"), Tensor("topk_ids"), Tensor("expert_map", optional=True, default=None),
            Str("activation", default="swiglu_oai"), Str("layout", default="split"),
            Float("alpha", default=reference.SWIGLU_OAI_ALPHA), Float("limit", default=reference.SWIGLU_OAI_LIMIT),
            Int("max_model_len", default=0, to_backend=False),
            Tensor("w13_bf16", optional=True, default=None), Tensor("w2_bf16", optional=True, default=None)),
    check=check_moe_mxfp8, problem=moe_mxfp8_problem, with_path=True,
    fake=lambda hidden, *_: torch.empty_like(hidden),
    doc="""fused_moe_mxfp8 over the expert tensors one by one, as the custom op
    takes them (an Mxfp8Experts' fields); callers use fused_moe_mxfp8.""")


@FUSED_MOE_MXFP8.impl("torch")
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


@FUSED_MOE_MXFP8.impl("triton")
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


def fused_moe_mxfp8(hidden: torch.Tensor, experts: Mxfp8Experts, topk_weights: torch.Tensor,
                    topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor] = None,
                    activation: str = "swiglu_oai", layout: str = "split",
                    alpha: float = reference.SWIGLU_OAI_ALPHA, limit: float = reference.SWIGLU_OAI_LIMIT,
                    max_model_len: int = 0) -> torch.Tensor:
    """fused_moe over MXFP8 expert weights: this EP rank's partial output
    `[T, H]` over its local routes, the experts one Mxfp8Experts.

    The oracle picks native MXFP8, the BF16 copy (mixed policy, where experts
    has one) or emulation from the token count and max_model_len (the
    serving context length; only that choice reads it).
    """
    if not isinstance(experts, Mxfp8Experts):
        fail(MOE, "experts", f"must be an Mxfp8Experts, got {type(experts).__name__}")
    return FUSED_MOE_MXFP8.public(hidden, experts.w13_q, experts.w13_s, experts.w2_q, experts.w2_s, topk_weights,
                                  topk_ids, expert_map, activation, layout, alpha, limit, max_model_len,
                                  experts.w13_bf16, experts.w2_bf16)
