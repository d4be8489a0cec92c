"""The seams: vLLM classes whose MiniMax instances call this package's ops.

Imported only by `register`, after vLLM (it subclasses vLLM's classes):

- `GateLinear` -> `MiniMaxGate`: router logits through `router_gemm`.
- `MiniMaxText01RMSNormTP` -> `MiniMaxQKNorm`, and its static `forward_qkv`
  (which vLLM's M2 attention calls directly, so a subclass alone never sees
  it) -> `forward_qkv`: the TP QK norm through `allreduce_rms_qk`, the
  Lamport workspace opened collectively on the TP group as the model is
  built.
- `UnquantizedFusedMoEMethod` -> `MiniMaxMoEMethod`: routed experts through
  `fused_moe` (vLLM's router, shared experts, routed scaling and EP/TP
  reduction stay vLLM's).
- `ModelOptMxFp8FusedMoE` (M3's MXFP8 checkpoint; not a CustomOp: swapped
  as `ModelOptMxFp8Config`'s method class) -> `MiniMaxMxfp8MoEMethod`: the
  same through `fused_moe_mxfp8`, with our memory policy (a BF16 copy per
  `layer_weight_formats` at vLLM's max_model_len) and, on gfx942, the
  e4m3fn -> e4m3fnuz conversion once at load.

vLLM swaps these by class name for every model; each instance asks the
oracle (`oracle.decide_seam`) as it is built and, unless it serves a MiniMax
model, runs exactly its vLLM base class's code.
"""
from __future__ import annotations

import types
from typing import Optional

import torch

from ... import oracle
from . import adapters
from .log import logger

from vllm.config import get_current_vllm_config_or_none  # noqa: E402
from vllm.distributed import parallel_state  # noqa: E402
from vllm.model_executor.custom_op import CustomOp, PluggableLayer, op_registry_oot  # noqa: E402
from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase  # noqa: E402
from vllm.model_executor.layers.fused_moe.router.gate_linear import GateLinear  # noqa: E402
from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod  # noqa: E402
from vllm.model_executor.layers.minimax_rms_norm import MiniMaxText01RMSNormTP  # noqa: E402
from vllm.model_executor.layers.quantization import modelopt  # noqa: E402
from vllm.model_executor.utils import replace_parameter  # noqa: E402


def num_layers() -> int:
    """The built model's decoder layer count (0 where unknown)."""
    cfg = get_current_vllm_config_or_none()
    hf = getattr(getattr(cfg, "model_config", None), "hf_text_config", None)
    return int(getattr(hf, "num_hidden_layers", 0) or 0)


def model_facts() -> dict:
    """model_type, architectures and max_model_len of the model being built."""
    cfg = get_current_vllm_config_or_none()
    mc = getattr(cfg, "model_config", None)
    if mc is None:
        return dict(model_type="", architectures=(), max_model_len=0)
    hf = getattr(mc, "hf_config", None)
    archs = tuple(getattr(mc, "architectures", None) or getattr(hf, "architectures", None) or ())
    return dict(model_type=getattr(hf, "model_type", "") or "", architectures=archs,
                max_model_len=int(getattr(mc, "max_model_len", 0) or 0))


def _dtype(t) -> str:
    return str(t)[6:] if isinstance(t, torch.dtype) else str(t)


def _announce(decision: oracle.SeamDecision, where: str) -> bool:
    logger().info("%s", decision.line(where))
    return decision.take


# --------------------------------------------------------------------------- #
# gate
# --------------------------------------------------------------------------- #


class MiniMaxGate(GateLinear):
    def __init__(self, input_size: int, output_size: int, *args, **kwargs):
        super().__init__(input_size, output_size, *args, **kwargs)
        facts = oracle.SeamFacts("gate", **model_facts(), hidden=input_size, num_experts=output_size,
                                 quantized=not self.is_unquantized, has_bias=self.bias is not None,
                                 weight_dtype=_dtype(self.weight.dtype) if self.is_unquantized else "")
        self.minimax_rocm = _announce(oracle.decide_seam(facts), self.prefix or "gate")
        if self.minimax_rocm:
            # Keep the fp32 weight as it is: vLLM's CPU path would repack and
            # drop it, gfx950's would build a bf16x3 split we never read.
            self._cpu_skip_gemm_dispatch = True
            self.allow_rocm_bf16x3_router_gemm = False

    def forward(self, x: torch.Tensor):
        if not self.minimax_rocm or x.dtype not in (torch.bfloat16, torch.float32):
            return super().forward(x)
        out = torch.ops.minimax_rocm.vllm_gate(x, self.weight)
        if self.out_dtype is not None and self.out_dtype != torch.float32:
            out = out.to(self.out_dtype)
        return self._return(out)


# --------------------------------------------------------------------------- #
# M2 QK norm
# --------------------------------------------------------------------------- #

_original_forward_qkv = MiniMaxText01RMSNormTP.forward_qkv


def _open_lamport(group) -> None:
    """The TP group's Lamport workspace, opened once (collective: every rank
    builds the same layers in the same order)."""
    from ...parallel import LamportWorkspace, lamport_workspace
    if lamport_workspace(group.group_name) is not None:
        return
    cfg = get_current_vllm_config_or_none()
    sched = getattr(cfg, "scheduler_config", None)
    tokens = int(getattr(sched, "max_num_batched_tokens", 0) or oracle.SERVING_LAMPORT_MAX_TOKENS)
    LamportWorkspace(group, max_tokens=min(tokens, oracle.SERVING_LAMPORT_MAX_TOKENS))


class MiniMaxQKNorm(MiniMaxText01RMSNormTP):
    def __init__(self, hidden_size: int, eps: float = 1e-6, **kwargs):
        super().__init__(hidden_size, eps, **kwargs)
        width = self.weight.shape[0]
        facts = oracle.SeamFacts("qk_norm", **model_facts(), hidden=width, tp_size=self.tp_world,
                                 act_dtype=_dtype(torch.get_default_dtype()))
        self.minimax_rocm = _announce(oracle.decide_seam(facts), f"QK norm ({hidden_size} wide)")
        self.minimax_rocm_group = ""
        if not self.minimax_rocm:
            return
        if self.tp_world > 1:
            group = parallel_state.get_tp_group().device_group
            self.minimax_rocm_group = group.group_name
            plat = oracle.detect_platform()  # cpu where torch sees no GPU
            if plat.native_ext and plat.vendor != "cpu":
                _open_lamport(group)
        self.minimax_rocm_key = f"{id(self):x}"
        adapters.register_qk_fallback(self.minimax_rocm_key, self._engine_path)

    def _engine_path(self, qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """vLLM's own QK norm for one call (where ours declines it)."""
        q, kv = q_weight.shape[0], k_weight.shape[0]
        qn = types.SimpleNamespace(weight=q_weight, variance_epsilon=eps)
        kn = types.SimpleNamespace(weight=k_weight, variance_epsilon=eps)
        if self.tp_world == 1:
            return MiniMaxText01RMSNormTP.forward_qk(qn, kn, qkv[:, :q], qkv[:, q:q + kv])
        return torch.ops.vllm.minimax_qk_norm_fusion(qkv, q_weight, k_weight, q, kv, self.tp_rank, self.tp_world,
                                                     eps, self.workspace)


def forward_qkv(q_norm, k_norm, qkv: torch.Tensor, q_size: int, kv_size: int):
    """vLLM's `MiniMaxText01RMSNormTP.forward_qkv`, through our op for the
    norms that took it."""
    if (not getattr(q_norm, "minimax_rocm", False) or not getattr(k_norm, "minimax_rocm", False)
            or qkv.dim() != 2 or q_norm.weight.shape[0] != q_size or k_norm.weight.shape[0] != kv_size
            or qkv.shape[1] != q_size + 2 * kv_size or q_norm.variance_epsilon != k_norm.variance_epsilon):
        return _original_forward_qkv(q_norm, k_norm, qkv, q_size, kv_size)
    torch.ops.minimax_rocm.vllm_qk_norm(qkv, q_norm.weight, k_norm.weight, float(q_norm.variance_epsilon),
                                        q_norm.minimax_rocm_group, q_norm.minimax_rocm_key)
    return qkv.split([q_size, kv_size, kv_size], dim=-1)


# --------------------------------------------------------------------------- #
# BF16 MoE
# --------------------------------------------------------------------------- #


def moe_facts(moe, layer, seam: str, quant_scheme: str = "") -> oracle.SeamFacts:
    pc = moe.moe_parallel_config
    beta = getattr(layer, "swiglu_beta", None)
    return oracle.SeamFacts(
        seam, **model_facts(), hidden=moe.hidden_dim, num_experts=moe.num_experts,
        num_local_experts=moe.num_local_experts, top_k=moe.experts_per_token, tp_size=pc.tp_size,
        ep_size=pc.ep_size, dp_size=pc.dp_size, act_dtype=_dtype(moe.in_dtype),
        quantized=seam == "moe_bf16" and bool(quant_scheme), quant_scheme=quant_scheme, has_bias=moe.has_bias,
        activation=moe.activation.value, swiglu_beta=1.0 if beta is None else float(beta),
        all2all=bool(pc.use_all2all_kernels or pc.sp_size > 1 or pc.pcp_size > 1), eplb=bool(pc.enable_eplb),
        fused_shared_experts=moe.num_experts != moe.num_logical_experts,
        router_weight_on_input=bool(getattr(layer, "apply_router_weight_on_input", False)))


def swiglu_params(layer) -> tuple[float, float]:
    from ...reference import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
    alpha = getattr(layer, "swiglu_alpha", None)
    limit = getattr(layer, "swiglu_limit", None)
    return (SWIGLU_OAI_ALPHA if alpha is None else float(alpha),
            SWIGLU_OAI_LIMIT if limit is None else float(limit))


class _MiniMaxMoE:
    """What both MoE method seams share: the per-layer decision, and vLLM's
    router and shared-expert handling kept outside our op."""
    minimax_rocm = False
    _no_vllm_backend: Optional[Exception] = None  # vLLM had no kernel for this deployment

    def _take(self, layer, seam: str, quant_scheme: str = "") -> oracle.SeamFacts:
        facts = moe_facts(self.moe, layer, seam, quant_scheme=quant_scheme)
        self.minimax_rocm = _announce(oracle.decide_seam(facts), getattr(layer, "layer_name", "") or "MoE")
        if not self.minimax_rocm and self._no_vllm_backend is not None:
            raise self._no_vllm_backend  # declined: vLLM's own error, as without the plugin
        return facts

    @property
    def is_monolithic(self) -> bool:
        # vLLM's router picks the experts; our op takes its topk ids.
        return False if self.minimax_rocm else super().is_monolithic

    @property
    def mk_can_overlap_shared_experts(self) -> bool:
        return False if self.minimax_rocm else super().mk_can_overlap_shared_experts


class MiniMaxMoEMethod(_MiniMaxMoE, UnquantizedFusedMoEMethod):

    def __init__(self, moe):
        try:
            super().__init__(moe)
        except NotImplementedError as e:
            # vLLM has no kernel for this deployment (e.g. swigluoai on its
            # CPU backend). Ours may; `_take` raises vLLM's error if the
            # seam declines the layer.
            FusedMoEMethodBase.__init__(self, moe)
            self.unquantized_backend, self.experts_cls = None, None
            self._no_vllm_backend = e

    def maybe_roundup_sizes(self, hidden_size, intermediate_size_per_partition, act_dtype, moe_parallel_config):
        if self._no_vllm_backend is not None:
            return FusedMoEMethodBase.maybe_roundup_sizes(self, hidden_size, intermediate_size_per_partition,
                                                          act_dtype, moe_parallel_config)
        return super().maybe_roundup_sizes(hidden_size, intermediate_size_per_partition, act_dtype,
                                           moe_parallel_config)

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        self._take(layer, "moe_bf16")
        super().create_weights(layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                               **extra_weight_attrs)

    def process_weights_after_loading(self, layer) -> None:
        if not self.minimax_rocm:
            return super().process_weights_after_loading(layer)
        # Weights stay in the checkpoint layout our kernels read; vLLM's
        # backend would shuffle or repack them for its own kernels.
        FusedMoEMethodBase.process_weights_after_loading(self, layer)

    def apply(self, layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input):
        if not self.minimax_rocm:
            return super().apply(layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input)
        alpha, limit = swiglu_params(layer)
        return adapters.moe(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids, layer.expert_map,
                            layer.activation.value, alpha, limit)


# --------------------------------------------------------------------------- #
# MXFP8 MoE (ModelOpt MXFP8 checkpoints, as MiniMax-M3 ships)
# --------------------------------------------------------------------------- #

_VllmMxfp8Method = modelopt.ModelOptMxFp8FusedMoE


def layer_format(layer_name: str, max_model_len: int) -> str:
    """What our memory policy keeps for this MoE layer: "mxfp8+bf16",
    "mxfp8" or "bf16" (ops.layer_weight_formats, by decoder layer index)."""
    from ...ops import layer_weight_formats
    parts = layer_name.split(".")
    idx = next((int(parts[i + 1]) for i, p in enumerate(parts[:-1]) if p == "layers" and parts[i + 1].isdigit()),
               None)
    n = num_layers()
    if idx is None or not 0 <= idx < n:
        return "mxfp8"
    return layer_weight_formats(n, max_model_len)[idx]


class MiniMaxMxfp8MoEMethod(_MiniMaxMoE, _VllmMxfp8Method):
    minimax_rocm_format = "mxfp8"

    def __init__(self, quant_config, moe_config):
        try:
            super().__init__(quant_config, moe_config)
        except NotImplementedError as e:  # no vLLM MXFP8 kernel here; see MiniMaxMoEMethod
            FusedMoEMethodBase.__init__(self, moe_config)
            self.weight_block_size = [1, 32]
            self.quant_config = quant_config
            self.mxfp8_backend, self.experts_cls = None, None
            self._no_vllm_backend = e

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        facts = self._take(layer, "moe_mxfp8", quant_scheme="mxfp8")
        super().create_weights(layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                               **extra_weight_attrs)
        if self.minimax_rocm:
            self.minimax_rocm_format = layer_format(getattr(layer, "layer_name", ""), facts.max_model_len)
            self.minimax_rocm_max_model_len = facts.max_model_len

    def process_weights_after_loading(self, layer) -> None:
        if not self.minimax_rocm:
            return super().process_weights_after_loading(layer)
        if getattr(layer, "_already_called_process_weights_after_loading", False):
            return
        layer._already_called_process_weights_after_loading = True
        self._check_weight_dtypes(layer)
        from ...ops import Mxfp8Experts
        experts = Mxfp8Experts(layer.w13_weight.data, layer.w13_weight_scale.data, layer.w2_weight.data,
                               layer.w2_weight_scale.data).for_platform()   # gfx942: e4m3fnuz, once
        fmt = self.minimax_rocm_format
        dtype = getattr(layer, "orig_dtype", torch.bfloat16)
        if fmt == "bf16":  # this layer keeps BF16 experts only
            w13, w2 = experts.dequantize(dtype)
            layer.minimax_rocm_experts = None
        else:
            experts = experts.with_format(fmt, dtype)
            w13, w2 = experts.w13_q, experts.w2_q
            # The layer's parameters and this object share the tensors: the
            # copy adds memory, the rest does not.
            layer.minimax_rocm_experts = experts
        replace_parameter(layer, "w13_weight", w13)
        replace_parameter(layer, "w2_weight", w2)
        replace_parameter(layer, "w13_weight_scale", experts.w13_s)
        replace_parameter(layer, "w2_weight_scale", experts.w2_s)

    def apply(self, layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input):
        if not self.minimax_rocm:
            return super().apply(layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input)
        alpha, limit = swiglu_params(layer)
        act = layer.activation.value
        if self.minimax_rocm_format == "bf16":
            return adapters.moe(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids, layer.expert_map, act,
                                alpha, limit)
        return adapters.moe_mxfp8(x, layer.minimax_rocm_experts, topk_weights, topk_ids, layer.expert_map, act,
                                  alpha, limit, self.minimax_rocm_max_model_len)


def _set_mxfp8_method(cls) -> None:
    # ModelOptMxFp8Config builds its MoE method from this class attribute
    # (and the mixed-precision config from the module global).
    modelopt.ModelOptMxFp8Config.FusedMoEMethodCls = cls
    modelopt.ModelOptMxFp8FusedMoE = cls


# --------------------------------------------------------------------------- #
# install: all or nothing
# --------------------------------------------------------------------------- #

_CLASSES = ((PluggableLayer, GateLinear, MiniMaxGate),
            (CustomOp, MiniMaxText01RMSNormTP, MiniMaxQKNorm),
            (CustomOp, UnquantizedFusedMoEMethod, MiniMaxMoEMethod))


def install() -> Optional[str]:
    """Register the seams; None on success, else why nothing was changed."""
    taken = [vcls.__name__ for _, vcls, cls in _CLASSES if op_registry_oot.get(vcls.__name__) not in (None, cls)]
    if modelopt.ModelOptMxFp8Config.FusedMoEMethodCls not in (_VllmMxfp8Method, MiniMaxMxfp8MoEMethod):
        taken.append("ModelOptMxFp8FusedMoE")
    if taken:
        return f"another plugin already replaces {', '.join(taken)}"
    done = []
    try:
        for base, vcls, cls in _CLASSES:
            if op_registry_oot.get(vcls.__name__) is not cls:
                base.register_oot(cls, name=vcls.__name__)
                # register_oot renames the class; keep vLLM's op name, which its
                # compilation config matches custom ops by.
                cls.name = vcls.name
                done.append(vcls.__name__)
        MiniMaxText01RMSNormTP.forward_qkv = staticmethod(forward_qkv)
        _set_mxfp8_method(MiniMaxMxfp8MoEMethod)
    except Exception as e:
        for name in done:
            op_registry_oot.pop(name, None)
        MiniMaxText01RMSNormTP.forward_qkv = staticmethod(_original_forward_qkv)
        _set_mxfp8_method(_VllmMxfp8Method)
        return f"installing the seams failed ({type(e).__name__}: {e})"
    return None


def uninstall() -> None:
    """Undo `install` (tests)."""
    for _, vcls, cls in _CLASSES:
        if op_registry_oot.get(vcls.__name__) is cls:
            op_registry_oot.pop(vcls.__name__)
    MiniMaxText01RMSNormTP.forward_qkv = staticmethod(_original_forward_qkv)
    _set_mxfp8_method(_VllmMxfp8Method)
