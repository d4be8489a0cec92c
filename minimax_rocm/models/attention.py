"""The MiniMax attention QK-norm step on one TP rank's qkv shard.

qkv `[T, q_loc + 2 kv_loc]` is this rank's slice of the QKV projection output
(its q heads | its k heads | its v heads). The step normalises q and k in
place; v is untouched.

  M2 (family "m2"): ONE RMSNorm over the FULL q width (heads x head_dim of all
      ranks) and one over the full k width, each with its own weight vector.
      Under TP the per-token sums of squares are summed across the TP group:
      `ops.allreduce_rms_qk` (the fused Lamport kernel where a workspace is
      open for the group, else sum-of-squares + NCCL/RCCL/gloo all-reduce).
  M3 (family "m3"): a Gemma RMSNorm per head (normalise in fp32, scale by
      1 + w, one `[head_dim]` weight shared by all heads): local to the rank,
      no all-reduce.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import ops, reference
from .config import MiniMaxConfig


def tp_heads(num_heads: int, tp_size: int, tp_rank: int, what: str, allow_replication: bool) -> tuple[int, int]:
    """Heads [start, end) of a TP rank. With fewer heads than ranks (M3's 4 KV
    heads at TP8) each head is replicated on tp_size / num_heads ranks when
    allowed; a full-width norm cannot allow that (it would count a head twice)."""
    if num_heads % tp_size == 0:
        per = num_heads // tp_size
        return tp_rank * per, (tp_rank + 1) * per
    if allow_replication and tp_size % num_heads == 0:
        h = tp_rank // (tp_size // num_heads)
        return h, h + 1
    raise ValueError(f"{what}: {num_heads} heads cannot be split over TP{tp_size}")


def qkv_columns(cfg: MiniMaxConfig, tp_size: int, tp_rank: int) -> tuple[tuple[int, int], ...]:
    """Columns of the FULL `[T, q + 2 kv]` projection that TP rank tp_rank
    holds: (q range, k range, v range)."""
    d = cfg.head_dim
    q0, q1 = tp_heads(cfg.num_attention_heads, tp_size, tp_rank, "q heads", False)
    k0, k1 = tp_heads(cfg.num_key_value_heads, tp_size, tp_rank, "kv heads", cfg.qk_norm == "per_head")
    q, kv = cfg.q_size, cfg.kv_size
    return (q0 * d, q1 * d), (q + k0 * d, q + k1 * d), (q + kv + k0 * d, q + kv + k1 * d)


def shard_qkv(cfg: MiniMaxConfig, qkv_full: torch.Tensor, tp_size: int, tp_rank: int) -> torch.Tensor:
    """This TP rank's `[T, q_loc + 2 kv_loc]` slice of a full qkv."""
    return torch.cat([qkv_full[:, a:b] for a, b in qkv_columns(cfg, tp_size, tp_rank)], dim=1).contiguous()


class QKNorm:
    """The QK-norm step of one layer on one TP rank.

    q_weight / k_weight: M2, this rank's slices of the `[q]` and `[kv]` norm
    weights (minimax_rocm.parallel.weights loads them so); M3, the `[head_dim]`
    per-head weights. group_name names the TP group (M2 only; "" = TP1).
    """

    def __init__(self, cfg: MiniMaxConfig, q_weight: torch.Tensor, k_weight: torch.Tensor,
                 tp_size: int = 1, tp_rank: int = 0, group_name: str = ""):
        self.cfg, self.tp_size, self.tp_rank, self.group_name = cfg, tp_size, tp_rank, group_name
        (q0, q1), (k0, k1), _ = qkv_columns(cfg, tp_size, tp_rank)
        self.q_local, self.kv_local = q1 - q0, k1 - k0
        want = (self.q_local, self.kv_local) if cfg.qk_norm == "full" else (cfg.head_dim, cfg.head_dim)
        got = (q_weight.numel(), k_weight.numel())
        if got != want:
            raise ValueError(f"QKNorm ({cfg.name}, {cfg.qk_norm} norm, TP{tp_size}): weights have {got} elements; "
                             f"expected (q, k) = {want}")
        if cfg.qk_norm == "full" and tp_size > 1 and not group_name:
            raise ValueError(f"QKNorm ({cfg.name}): the full-width QK norm at TP{tp_size} needs the TP group's name")
        self.q_weight, self.k_weight = q_weight, k_weight

    @property
    def width(self) -> int:
        return self.q_local + 2 * self.kv_local

    def __call__(self, qkv: torch.Tensor) -> torch.Tensor:
        """Normalise q and k of qkv `[T, q_loc + 2 kv_loc]` in place; returns qkv."""
        if qkv.dim() != 2 or qkv.shape[1] != self.width:
            raise ValueError(f"QKNorm: qkv has shape {tuple(qkv.shape)}; expected [T, {self.width}]")
        if self.cfg.qk_norm == "full":
            return ops.allreduce_rms_qk(qkv, self.q_weight, self.k_weight, self.cfg.rms_norm_eps, self.group_name)
        T, d, eps = qkv.shape[0], self.cfg.head_dim, self.cfg.rms_norm_eps
        q, k = qkv[:, :self.q_local], qkv[:, self.q_local:self.q_local + self.kv_local]
        q.copy_(reference.gemma_rms_norm(q.reshape(T, -1, d), self.q_weight, eps).reshape(T, -1))
        k.copy_(reference.gemma_rms_norm(k.reshape(T, -1, d), self.k_weight, eps).reshape(T, -1))
        return qkv


def qk_norm_reference(cfg: MiniMaxConfig, qkv_full: torch.Tensor, q_weight_full: torch.Tensor,
                      k_weight_full: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
    """The unsharded QK norm in float64: `[T, q + 2 kv]` -> same, q and k normalised."""
    eps = cfg.rms_norm_eps if eps is None else eps
    x = qkv_full.double().clone()
    T, q, kv, d = x.shape[0], cfg.q_size, cfg.kv_size, cfg.head_dim
    if cfg.qk_norm == "full":
        x[:, :q] = reference.rms_norm(x[:, :q], q_weight_full.double(), eps)
        x[:, q:q + kv] = reference.rms_norm(x[:, q:q + kv], k_weight_full.double(), eps)
    else:
        x[:, :q] = reference.gemma_rms_norm(x[:, :q].reshape(T, -1, d), q_weight_full.double(), eps).reshape(T, q)
        x[:, q:q + kv] = reference.gemma_rms_norm(x[:, q:q + kv].reshape(T, -1, d), k_weight_full.double(),
                                                  eps).reshape(T, kv)
    return x
