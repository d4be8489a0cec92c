"""QK norm across tensor-parallel ranks: allreduce_rms_qk (q and k of a qkv
shard, in place) and allreduce_rms (one tensor, in place).

MiniMax-M2 normalises q over its FULL width (48 x 128) and k over its full
width, but each TP rank holds a column slice. The per-token sums of squares are
all-reduced across the group, then each rank normalises its slice. The group is
named by its `group_name` ("" = no group: a single rank), so the ops stay
torch.library ops that torch.compile and graph capture can see.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .. import oracle, reference
from ..dist import group_world_size, lamport_workspace, resolve_group
from ._common import check_tensor, fail, on_gpu, run

QK, ONE = "allreduce_rms_qk", "allreduce_rms"
ACT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def check_qk(qkv, q_weight, k_weight, eps):
    check_tensor(QK, "qkv", qkv, dtype=ACT_DTYPES, dim=2)
    check_tensor(QK, "q_weight", q_weight, dtype=(qkv.dtype, torch.float32), dim=1, device=qkv.device)
    check_tensor(QK, "k_weight", k_weight, dtype=(qkv.dtype, torch.float32), dim=1, device=qkv.device)
    q, kv = q_weight.shape[0], k_weight.shape[0]
    if qkv.shape[1] != q + 2 * kv:
        fail(QK, "qkv", f"has {qkv.shape[1]} columns; q_weight and k_weight imply q + 2 kv = {q + 2 * kv}")
    if not eps > 0:
        fail(QK, "eps", f"is {eps}; expected > 0")


def check_one(x, weight, eps):
    check_tensor(ONE, "x", x, dtype=ACT_DTYPES, dim=2)
    check_tensor(ONE, "weight", weight, dtype=(x.dtype, torch.float32), shape=(x.shape[1],), device=x.device)
    if not eps > 0:
        fail(ONE, "eps", f"is {eps}; expected > 0")


def norm_problem(op, x, group_name) -> oracle.Problem:
    return oracle.Problem(op, tokens=x.shape[0], hidden=x.shape[1], dtype=str(x.dtype)[6:],
                          tp_size=group_world_size(group_name), on_gpu=on_gpu(x),
                          peer_access=lamport_workspace(group_name) is not None)


@torch.library.custom_op("minimax_rocm::allreduce_rms_qk", mutates_args=("qkv",))
def _allreduce_rms_qk(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float,
                      group_name: str) -> None:
    check_qk(qkv, q_weight, k_weight, eps)
    run(norm_problem(QK, qkv, group_name), qkv, q_weight, k_weight, eps, group_name)


@_allreduce_rms_qk.register_fake
def _(qkv, q_weight, k_weight, eps, group_name):
    check_qk(qkv, q_weight, k_weight, eps)


@torch.library.custom_op("minimax_rocm::allreduce_rms", mutates_args=("x",))
def _allreduce_rms(x: torch.Tensor, weight: torch.Tensor, eps: float, group_name: str) -> None:
    check_one(x, weight, eps)
    run(norm_problem(ONE, x, group_name), x, weight, eps, group_name)


@_allreduce_rms.register_fake
def _(x, weight, eps, group_name):
    check_one(x, weight, eps)


def _sum_squares(parts: list[torch.Tensor]) -> torch.Tensor:
    """`[T, len(parts)]` fp32 per-token sums of squares of each part."""
    return torch.stack([p.float().pow(2).sum(dim=-1) for p in parts], dim=-1)


def all_reduce_sums(sums: torch.Tensor, group_name: str) -> torch.Tensor:
    if group_name:
        dist.all_reduce(sums, group=resolve_group(group_name))
    return sums


@oracle.register_impl(QK, "torch")
def _qk_torch(qkv, q_weight, k_weight, eps, group_name):
    q, kv = q_weight.shape[0], k_weight.shape[0]
    world = group_world_size(group_name)
    sums = all_reduce_sums(_sum_squares([qkv[:, :q], qkv[:, q:q + kv]]), group_name)
    qkv[:, :q] = reference.allreduce_rms_local(qkv[:, :q], q_weight, eps, sums[:, 0], q * world)
    qkv[:, q:q + kv] = reference.allreduce_rms_local(qkv[:, q:q + kv], k_weight, eps, sums[:, 1], kv * world)


@oracle.register_impl(ONE, "torch")
def _one_torch(x, weight, eps, group_name):
    world = group_world_size(group_name)
    sums = all_reduce_sums(_sum_squares([x]), group_name)
    x.copy_(reference.allreduce_rms_local(x, weight, eps, sums[:, 0], x.shape[1] * world))


def allreduce_rms_qk(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float = 1e-6,
                     group_name: str = "") -> torch.Tensor:
    """Normalise q and k of this rank's qkv shard `[T, q + 2 kv]` in place over
    their full widths across the TP group; v is untouched. Returns qkv."""
    torch.ops.minimax_rocm.allreduce_rms_qk(qkv, q_weight, k_weight, eps, group_name)
    return qkv


def allreduce_rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, group_name: str = "") -> torch.Tensor:
    """Normalise this rank's shard `[T, D]` in place over the full width across the group."""
    torch.ops.minimax_rocm.allreduce_rms(x, weight, eps, group_name)
    return x
