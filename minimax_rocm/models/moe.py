"""The MiniMax MoE block (and the dense MLP of M3's first layers) on one EP rank.

    logits  = ops.router_gemm(x, gate)                   fp32 `[T, E]`, no cast kernel
    w, ids  = reference.minimax_route(logits, bias, k)   sigmoid; top-k on score + bias;
                                                         unbiased scores renormalised,
                                                         x routed_scaling_factor (M3: 2.0)
    partial = ops.fused_moe(x, w13_loc, w2_loc, w, ids, expert_map, activation)
                                                         only the routes to LOCAL experts
            (ops.fused_moe_mxfp8(x, experts, w, ids, ...) where the experts are MXFP8,
             loaded with load_stage(..., mxfp8=True): an Mxfp8Experts)
            (+ this rank's slice of the M3 shared expert, split along its intermediate dim)
    out     = ep_combine(partial, ep_group)              all-reduce over the EP group

Experts: silu (M2) or SwiGLU-OAI with alpha 1.702, limit 7.0 (M3), GEMM1
output in the "split" layout (gate = first I columns, up = last I).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import ops, reference
from ..parallel.combine import ep_combine
from ..parallel.expert_map import expert_map, local_expert_range
from ..parallel.weights import DenseMLPWeights, LayerWeights, MoEWeights
from .config import MiniMaxConfig


def _activation(cfg: MiniMaxConfig, h: torch.Tensor) -> torch.Tensor:
    if cfg.activation == "swiglu_oai":
        return ops.swiglu_oai(h, cfg.swiglu_alpha, cfg.swiglu_limit, cfg.gate_up_layout)
    return reference.silu_and_mul(h, cfg.gate_up_layout)


def swiglu_mlp(cfg: MiniMaxConfig, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A dense gated MLP: (act(x @ w13^T)) @ w2^T with the config's activation."""
    h = F.linear(x, w13.to(x.dtype))
    return F.linear(_activation(cfg, h.contiguous()), w2.to(x.dtype))


class DenseMLP:
    """M3's dense layers (replicated on every rank: no collective)."""

    def __init__(self, cfg: MiniMaxConfig, weights: DenseMLPWeights):
        self.cfg, self.w = cfg, weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu_mlp(self.cfg, x, self.w.w13, self.w.w2)


class MoEBlock:
    """One MoE layer on one EP rank. weights hold this rank's experts
    [expert_start, expert_end) (the contiguous EP split) and, for M3, its
    slice of the shared expert. group_name names the EP group whose
    all-reduce is the combine ("" with ep_size 1)."""

    def __init__(self, cfg: MiniMaxConfig, weights: MoEWeights, ep_size: int = 1, ep_rank: int = 0,
                 group_name: str = ""):
        self.cfg, self.w, self.ep_size, self.ep_rank, self.group_name = cfg, weights, ep_size, ep_rank, group_name
        E = cfg.num_local_experts
        want = local_expert_range(E, ep_size, ep_rank)
        held = weights.num_experts_held
        if (weights.expert_start, weights.expert_end) != want or held != want[1] - want[0]:
            raise ValueError(f"MoEBlock ({cfg.name}): weights hold experts [{weights.expert_start}, "
                             f"{weights.expert_end}) ({held} stacked); EP rank {ep_rank} of "
                             f"{ep_size} owns [{want[0]}, {want[1]})")
        if tuple(weights.gate.shape) != (E, cfg.hidden_size):
            raise ValueError(f"MoEBlock ({cfg.name}): gate has shape {tuple(weights.gate.shape)}; "
                             f"expected ({E}, {cfg.hidden_size})")
        if cfg.has_shared_expert and weights.shared_w13 is None:
            raise ValueError(f"MoEBlock ({cfg.name}): the config has a shared expert; the weights do not")
        # None when every expert is local: the kernels then skip the map lookup.
        self.expert_map = expert_map(E, ep_size, ep_rank, device=weights.device) if ep_size > 1 else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(topk_weights fp32 `[T, k]`, topk_ids int32 `[T, k]`, global ids)."""
        logits = ops.router_gemm(x, self.w.gate)
        weights, ids = reference.minimax_route(logits, self.w.e_score_correction_bias, self.cfg.top_k,
                                               renormalize=True,
                                               routed_scaling_factor=self.cfg.routed_scaling_factor)
        return weights.float(), ids

    def partial(self, x: torch.Tensor, routes: Optional[tuple[torch.Tensor, torch.Tensor]] = None
                ) -> torch.Tensor:
        """This rank's share of the output `[T, H]` float32, before the combine."""
        tw, ids = routes if routes is not None else self.route(x)
        c, w = self.cfg, self.w
        act = dict(activation=c.activation, layout=c.gate_up_layout, alpha=c.swiglu_alpha, limit=c.swiglu_limit)
        if w.mxfp8 is not None:
            out = ops.fused_moe_mxfp8(x, w.mxfp8, tw, ids, self.expert_map, max_model_len=w.max_model_len,
                                      **act).float()
        else:
            out = ops.fused_moe(x, w.w13, w.w2, tw, ids, self.expert_map, **act).float()
        if self.w.shared_w13 is not None:
            out += swiglu_mlp(c, x, self.w.shared_w13, self.w.shared_w2).float()
        return out

    def __call__(self, x: torch.Tensor, combine: bool = True) -> torch.Tensor:
        """The layer's MoE output `[T, H]` in x's dtype (summed over the EP
        group); with combine=False this rank's float32 partial."""
        part = self.partial(x)
        if not combine:
            return part
        if self.ep_size > 1 and not self.group_name:
            raise ValueError(f"MoEBlock: EP{self.ep_size} needs the EP group's name to combine")
        return ep_combine(part, self.group_name, out_dtype=x.dtype)


# --------------------------------------------------------------------------- #
# the post-attention half of a decoder layer, and a pipeline stage of them
# --------------------------------------------------------------------------- #


def layer_norm(cfg: MiniMaxConfig, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The decoder's RMSNorm: plain (M2) or Gemma (M3)."""
    if cfg.gemma_norm:
        return reference.gemma_rms_norm(x, w, cfg.rms_norm_eps)
    return reference.rms_norm(x, w, cfg.rms_norm_eps)


class FeedForwardLayer:
    """x + MLP(post_attention_layernorm(x)) for one decoder layer: the MoE
    block on MoE layers, the dense MLP on M3's dense layers. (Attention itself
    is outside this package; its QK-norm step is models.attention.QKNorm.)"""

    def __init__(self, cfg: MiniMaxConfig, lw: LayerWeights, ep_size: int = 1, ep_rank: int = 0,
                 group_name: str = ""):
        self.cfg, self.lw = cfg, lw
        self.mlp = (MoEBlock(cfg, lw.moe, ep_size, ep_rank, group_name) if lw.moe is not None
                    else DenseMLP(cfg, lw.dense))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(layer_norm(self.cfg, x, self.lw.post_attention_layernorm))


class Stage:
    """A pipeline stage: the feed-forward halves of its layers, in order."""

    def __init__(self, cfg: MiniMaxConfig, layers: dict[int, LayerWeights], ep_size: int = 1, ep_rank: int = 0,
                 group_name: str = ""):
        self.cfg = cfg
        self.indices = sorted(layers)
        self.layers = [FeedForwardLayer(cfg, layers[i], ep_size, ep_rank, group_name) for i in self.indices]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# --------------------------------------------------------------------------- #
# float64 references (unsharded weights)
# --------------------------------------------------------------------------- #


def _mlp_ref(cfg: MiniMaxConfig, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    h = x @ w13.double().t()
    a = reference.activation(h, cfg.activation, cfg.gate_up_layout, cfg.swiglu_alpha, cfg.swiglu_limit)
    return a @ w2.double().t()


def moe_reference(cfg: MiniMaxConfig, w: MoEWeights, x: torch.Tensor) -> torch.Tensor:
    """The unsharded MoE block in float64 (w must hold every expert and the
    whole shared expert). MXFP8 experts enter dequantised: the contract of
    every path of fused_moe_mxfp8 but the native one, which also rounds the
    activations to MXFP8."""
    if w.num_experts_held != cfg.num_local_experts:
        raise ValueError("moe_reference needs the weights of every expert")
    x = x.double()
    logits = reference.router_gemm(x, w.gate.double())
    bias = None if w.e_score_correction_bias is None else w.e_score_correction_bias.double()
    tw, ids = reference.minimax_route(logits, bias, cfg.top_k, True, cfg.routed_scaling_factor)
    if w.mxfp8 is not None:
        m = w.mxfp8
        w13 = reference.mxfp8_dequant(m.w13_q, m.w13_s, torch.float64)
        w2 = reference.mxfp8_dequant(m.w2_q, m.w2_s, torch.float64)
    else:
        w13, w2 = w.w13.double(), w.w2.double()
    out = reference.fused_moe(x, w13, w2, tw, ids, None, cfg.activation, cfg.gate_up_layout,
                              cfg.swiglu_alpha, cfg.swiglu_limit)
    if w.shared_w13 is not None:
        out = out + _mlp_ref(cfg, x, w.shared_w13, w.shared_w2)
    return out


def ffn_input_reference(cfg: MiniMaxConfig, lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """A layer's feed-forward input in float64 (its router's input in a MoE
    layer): x after the post-attention norm."""
    return (reference.gemma_rms_norm if cfg.gemma_norm else reference.rms_norm)(
        x.double(), lw.post_attention_layernorm.double(), cfg.rms_norm_eps)


def stage_reference(cfg: MiniMaxConfig, layers: dict[int, LayerWeights], x: torch.Tensor) -> torch.Tensor:
    """Every given layer's feed-forward half in float64 (unsharded weights)."""
    x = x.double()
    for i in sorted(layers):
        lw = layers[i]
        n = ffn_input_reference(cfg, lw, x)
        x = x + (moe_reference(cfg, lw.moe, n) if lw.moe is not None else _mlp_ref(cfg, n, lw.dense.w13, lw.dense.w2))
    return x


def route_margin(cfg: MiniMaxConfig, w: MoEWeights, x: torch.Tensor) -> float:
    """Smallest gap, over tokens, between the k-th and (k+1)-th choice score
    (float64). Tests pick inputs with a clear margin so that fp32 routing
    cannot legitimately choose another expert than the float64 reference."""
    s = torch.sigmoid(reference.router_gemm(x.double(), w.gate.double()))
    if w.e_score_correction_bias is not None:
        s = s + w.e_score_correction_bias.double()
    k = cfg.top_k
    if k >= s.shape[1]:
        return float("inf")
    top = torch.topk(s, k + 1, dim=-1).values
    return float((top[:, k - 1] - top[:, k]).min())
