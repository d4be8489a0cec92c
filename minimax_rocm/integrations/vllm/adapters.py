"""What vLLM's MiniMax layers hand over, turned into this package's op calls.

Nothing here imports vLLM: the functions take the tensors a layer holds (an
MXFP8 layer's as one `Mxfp8Experts`), so the same code runs inside the
engine and in `replay` on a machine without vLLM. Two of them are custom ops (`minimax_rocm::vllm_gate`,
`minimax_rocm::vllm_qk_norm`) because vLLM calls them from compiled model
code, where a Python branch on the token count would be frozen at the first
trace; the MoE runs inside vLLM's own opaque MoE op and needs no wrapper.

With MINIMAX_ROCM_VLLM_RECORD=PATH each adapter appends, once per distinct
call signature and process, one JSON line to PATH: the seam, the process id,
the backend our op took, and every argument's shape, dtype, strides and
storage offset (values only for the expert map). `replay` rebuilds those
calls.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Callable, Optional

import torch

from ... import oracle
from ...ops import Mxfp8Experts, allreduce_rms_qk, fused_moe, fused_moe_mxfp8, router_gemm
from ...ops._common import LAST_BACKEND
from ...parallel import group_world_size, lamport_workspace
from ...platform import graph_capturing

RECORD_ENV = "MINIMAX_ROCM_VLLM_RECORD"

# --------------------------------------------------------------------------- #
# argument records
# --------------------------------------------------------------------------- #

_seen: set = set()
_lock = threading.Lock()


def describe(t) -> object:
    """A tensor's geometry (or a scalar as it is), as JSON."""
    if isinstance(t, torch.Tensor):
        return dict(shape=list(t.shape), dtype=str(t.dtype)[6:], stride=list(t.stride()),
                    offset=t.storage_offset(), device=t.device.type)
    return t


def recording() -> bool:
    """Whether calls are recorded now (never inside CUDA-graph capture, where
    reading a value would synchronise)."""
    return bool(os.environ.get(RECORD_ENV)) and not graph_capturing()


def record(seam: str, op: str, args: dict, values: Optional[dict] = None) -> None:
    """Append this call's signature to the record file (callers check
    `recording()` first)."""
    path = os.environ[RECORD_ENV]
    entry = dict(seam=seam, op=op, backend=LAST_BACKEND.get(op, ""),
                 args={k: describe(v) for k, v in args.items()}, values=values or {})
    key = json.dumps(entry, sort_keys=True)
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
        entry["pid"] = os.getpid()
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


# --------------------------------------------------------------------------- #
# gate
# --------------------------------------------------------------------------- #


def gate(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 router logits `[T, E]` for x `[T, H]` and the gate's fp32 weight."""
    if x.shape[0] == 0:
        return x.new_empty((0, weight.shape[0]), dtype=torch.float32)
    copied = not x.is_contiguous()
    if copied:  # vLLM hands a contiguous view; never seen otherwise, but never fail on it
        x = x.contiguous()
    out = router_gemm(x, weight)
    if recording():
        record("gate", "router_gemm", dict(x=x, weight=weight), dict(copied=copied))
    return out


@torch.library.custom_op("minimax_rocm::vllm_gate", mutates_args=())
def _vllm_gate(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return gate(x, weight)


@_vllm_gate.register_fake
def _(x, weight):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.float32)


# --------------------------------------------------------------------------- #
# M2 QK norm across the TP group
# --------------------------------------------------------------------------- #

# layer key -> the engine's own norm for that layer,
# `fn(qkv, q_weight, k_weight, eps) -> (q, k)`: what
# runs where our op does not (above the Lamport workspace's token bound, or
# where no fused backend serves the call).
QKFallback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
_QK_FALLBACKS: dict[str, QKFallback] = {}


def register_qk_fallback(key: str, fn: QKFallback) -> None:
    _QK_FALLBACKS[key] = fn


def qk_norm_backend(tokens: int, width: int, dtype: torch.dtype, group_name: str, on_gpu: bool) -> Optional[str]:
    """The backend our op takes for this call, or None where the engine's own
    path should run: across GPUs only a fused backend (Lamport kernel,
    AITER) within the workspace's token bound, since vLLM's path all-reduces
    with its own graph-safe communicator; on the CPU the reference."""
    ws = lamport_workspace(group_name)
    problem = oracle.Problem("allreduce_rms_qk", tokens=tokens, hidden=width, dtype=str(dtype)[6:],
                             tp_size=group_world_size(group_name), on_gpu=on_gpu,
                             peer_access=ws is not None)
    chosen = oracle.decide(problem).chosen.backend
    if not on_gpu or problem.tp_size == 1:  # no all-reduce in the call
        return chosen
    if chosen not in oracle.FUSED_ALLREDUCE_BACKENDS or (ws is not None and tokens > ws.max_tokens):
        return None
    return chosen


def qk_norm_(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float, group_name: str,
             fallback_key: str) -> None:
    """Normalise q and k of this rank's qkv `[T, q + 2 kv]` in place over their
    full widths across the TP group named `group_name`."""
    T = qkv.shape[0]
    if T == 0:
        return
    q, kv = q_weight.shape[0], k_weight.shape[0]
    backend = qk_norm_backend(T, qkv.shape[1], qkv.dtype, group_name, qkv.is_cuda)
    if backend is None:
        fallback = _QK_FALLBACKS.get(fallback_key)
        if fallback is None:
            raise RuntimeError(f"minimax_rocm.vllm_qk_norm: no engine path registered for {fallback_key!r}")
        q_out, k_out = fallback(qkv, q_weight, k_weight, eps)
        qkv[:, :q].copy_(q_out)
        qkv[:, q:q + kv].copy_(k_out)
        LAST_BACKEND["allreduce_rms_qk"] = "engine"
    else:
        allreduce_rms_qk(qkv, q_weight, k_weight, eps, group_name)
    if recording():
        record("qk_norm", "allreduce_rms_qk", dict(qkv=qkv, q_weight=q_weight, k_weight=k_weight, eps=eps),
               dict(tp_size=group_world_size(group_name)))


@torch.library.custom_op("minimax_rocm::vllm_qk_norm", mutates_args=("qkv",))
def _vllm_qk_norm(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float, group_name: str,
                  fallback_key: str) -> None:
    qk_norm_(qkv, q_weight, k_weight, eps, group_name, fallback_key)


@_vllm_qk_norm.register_fake
def _(qkv, q_weight, k_weight, eps, group_name, fallback_key):
    return None


# --------------------------------------------------------------------------- #
# MoE (BF16 experts)
# --------------------------------------------------------------------------- #


def moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
        expert_map: Optional[torch.Tensor], activation: str, alpha: float, limit: float) -> torch.Tensor:
    """This rank's routed-expert output `[T, H]` (before routed scaling, the
    shared expert and the EP/TP reduction, which vLLM's runner does).
    `activation` is vLLM's name (oracle.SERVING_ACTIVATIONS)."""
    kind, layout = oracle.SERVING_ACTIVATIONS[activation]
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    out = fused_moe(x, w13, w2, topk_weights, topk_ids, expert_map, kind, layout, alpha, limit)
    if recording():
        record("moe_bf16", "fused_moe",
               dict(x=x, w13=w13, w2=w2, topk_weights=topk_weights, topk_ids=topk_ids, expert_map=expert_map,
                    activation=activation, alpha=alpha, limit=limit),
               dict(expert_map=None if expert_map is None else expert_map.tolist()))
    return out


# --------------------------------------------------------------------------- #
# MoE (MXFP8 experts)
# --------------------------------------------------------------------------- #


def moe_mxfp8(x: torch.Tensor, experts: Mxfp8Experts, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              expert_map: Optional[torch.Tensor], activation: str, alpha: float, limit: float,
              max_model_len: int) -> torch.Tensor:
    """`moe` over the layer's MXFP8 experts (fp8 values, e8m0 scales per 32
    along K, and the BF16 copy where the memory policy kept one); our oracle
    picks native MXFP8, the copy or emulation per call."""
    kind, layout = oracle.SERVING_ACTIVATIONS[activation]
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    out = fused_moe_mxfp8(x, experts, topk_weights, topk_ids, expert_map, kind, layout, alpha, limit, max_model_len)
    if recording():
        e = experts
        record("moe_mxfp8", "fused_moe_mxfp8",
               dict(x=x, w13_q=e.w13_q, w13_s=e.w13_s, w2_q=e.w2_q, w2_s=e.w2_s, topk_weights=topk_weights,
                    topk_ids=topk_ids, expert_map=expert_map, activation=activation, alpha=alpha, limit=limit,
                    max_model_len=max_model_len, bf16_copy=e.has_bf16_copy),
               dict(expert_map=None if expert_map is None else expert_map.tolist()))
    return out
