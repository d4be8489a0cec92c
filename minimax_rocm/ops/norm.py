"""QK norm across tensor-parallel ranks: allreduce_rms_qk (q and k of a qkv
shard, in place) and allreduce_rms (one tensor, in place).

MiniMax-M2 normalises q over its FULL width (48 x 128) and k over its full
width, but each TP rank holds a column slice. The per-token sums of squares are
all-reduced across the group, then each rank normalises its slice. The group is
named by its `group_name` ("" = no group: a single rank), so the ops stay
torch.library ops that torch.compile and graph capture can see.

Every rank of the group must call with the same token count and valid
inputs; with MINIMAX_ROCM_CHECK_COLLECTIVES=1 a mismatch, or one rank's
rejected input, raises OpInputError on every rank before any exchange
(parallel.groups.collective_checks_on says what happens without it).

Huge rows: the torch and Triton backends sum and all-reduce the squares in
float64, so a row whose sum of squares passes fp32's range (|x| above about
1.8e19 / sqrt(width)) normalises like the float64 reference instead of
coming out as zeros. The native Lamport kernel (hip) exchanges fp32 sums:
there such a row still becomes zeros (rsqrt(inf) = 0), as in vLLM's and
TensorRT-LLM's fused norms.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .. import oracle, reference
from ..parallel import agree_on_call, collective_checks_on, group_world_size, lamport_workspace, resolve_group
from ._common import check_tensor, fail, on_gpu
from .spec import Float, Str, Tensor, declare_op

QK, ONE = "allreduce_rms_qk", "allreduce_rms"
ACT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def check_qk(qkv, q_weight, k_weight, eps):
    check_tensor(QK, "qkv", qkv, dtype=ACT_DTYPES, dim=2)
    check_tensor(QK, "q_weight", q_weight, dtype=(qkv.dtype, torch.float32), dim=1, device=qkv.device)
    check_tensor(QK, "k_weight", k_weight, dtype=(qkv.dtype, torch.float32), dim=1, device=qkv.device)
    q, kv = q_weight.shape[0], k_weight.shape[0]
    if qkv.shape[1] != q + 2 * kv:
        fail(QK, "qkv", f"has {qkv.shape[1]} columns; q_weight and k_weight imply q + 2 kv = {q + 2 * kv}")
    if not (eps > 0 and math.isfinite(eps)):
        fail(QK, "eps", f"is {eps}; expected a finite number > 0")


def check_one(x, weight, eps):
    check_tensor(ONE, "x", x, dtype=ACT_DTYPES, dim=2)
    check_tensor(ONE, "weight", weight, dtype=(x.dtype, torch.float32), shape=(x.shape[1],), device=x.device)
    if not (eps > 0 and math.isfinite(eps)):
        fail(ONE, "eps", f"is {eps}; expected a finite number > 0")


def norm_problem(op, x, group_name) -> oracle.Problem:
    return oracle.Problem(op, tokens=x.shape[0], hidden=x.shape[1], dtype=str(x.dtype)[6:],
                          tp_size=group_world_size(group_name), on_gpu=on_gpu(x),
                          peer_access=lamport_workspace(group_name) is not None)


def agree_hook(op: str, arg: str):
    """The ops' `agree`: with MINIMAX_ROCM_CHECK_COLLECTIVES set, the group
    agrees on each call (same token count, every rank's input accepted)
    before the sums are exchanged; without it a rank's input error is its
    own."""
    def agree(error, x, *args):
        if collective_checks_on():
            agree_on_call(op, arg, x.shape[0] if x.dim() else -1, error, args[-1], x.device)
        elif error is not None:
            raise error
    return agree


# Both write their first argument in place and return it.
ALLREDUCE_RMS_QK = declare_op(
    QK,
    params=(Tensor("qkv", mutable=True), Tensor("q_weight"), Tensor("k_weight"), Float("eps", default=1e-6),
            Str("group_name", default="")),
    check=lambda qkv, q_weight, k_weight, eps, group_name: check_qk(qkv, q_weight, k_weight, eps),
    problem=lambda qkv, q_weight, k_weight, eps, group_name: norm_problem(QK, qkv, group_name),
    agree=agree_hook(QK, "qkv"),
    returns=0,
    doc="""Normalise q and k of this rank's qkv shard `[T, q + 2 kv]` in place over
    their full widths across the TP group; v is untouched. Returns qkv.""")
allreduce_rms_qk = ALLREDUCE_RMS_QK.public

ALLREDUCE_RMS = declare_op(
    ONE,
    params=(Tensor("x", mutable=True), Tensor("weight"), Float("eps", default=1e-6), Str("group_name", default="")),
    check=lambda x, weight, eps, group_name: check_one(x, weight, eps),
    problem=lambda x, weight, eps, group_name: norm_problem(ONE, x, group_name),
    agree=agree_hook(ONE, "x"),
    returns=0,
    doc="Normalise this rank's shard `[T, D]` in place over the full width across the group.")
allreduce_rms = ALLREDUCE_RMS.public


def _sum_squares(parts: list[torch.Tensor]) -> torch.Tensor:
    """`[T, len(parts)]` float64 per-token sums of squares of each part
    (float64: the square of a large finite fp32 overflows fp32)."""
    return torch.stack([p.double().pow(2).sum(dim=-1) for p in parts], dim=-1)


def all_reduce_sums(sums: torch.Tensor, group_name: str) -> torch.Tensor:
    if group_name:
        dist.all_reduce(sums, group=resolve_group(group_name))
    return sums


@ALLREDUCE_RMS_QK.impl("torch")
def _qk_torch(qkv, q_weight, k_weight, eps, group_name):
    q, kv = q_weight.shape[0], k_weight.shape[0]
    world = group_world_size(group_name)
    sums = all_reduce_sums(_sum_squares([qkv[:, :q], qkv[:, q:q + kv]]), group_name)
    qkv[:, :q] = reference.allreduce_rms_local(qkv[:, :q], q_weight, eps, sums[:, 0], q * world)
    qkv[:, q:q + kv] = reference.allreduce_rms_local(qkv[:, q:q + kv], k_weight, eps, sums[:, 1], kv * world)


@ALLREDUCE_RMS.impl("torch")
def _one_torch(x, weight, eps, group_name):
    world = group_world_size(group_name)
    sums = all_reduce_sums(_sum_squares([x]), group_name)
    x.copy_(reference.allreduce_rms_local(x, weight, eps, sums[:, 0], x.shape[1] * world))


# --------------------------------------------------------------------------- #
# triton: sum-of-squares kernel + all-reduce of [T, 2] + normalise kernel
# --------------------------------------------------------------------------- #


@ALLREDUCE_RMS_QK.impl("triton")
def _qk_triton(qkv, q_weight, k_weight, eps, group_name):
    from ..triton import rms_norm as tri
    q, kv = q_weight.shape[0], k_weight.shape[0]
    world = group_world_size(group_name)
    sums = all_reduce_sums(tri.sum_squares(qkv, q, kv), group_name)
    tri.rms_scale(qkv, sums, q_weight, k_weight, q, kv, q * world, kv * world, eps)


@ALLREDUCE_RMS.impl("triton")
def _one_triton(x, weight, eps, group_name):
    from ..triton import rms_norm as tri
    world = group_world_size(group_name)
    sums = all_reduce_sums(tri.sum_squares(x, x.shape[1]), group_name)
    tri.rms_scale(x, sums, weight, None, x.shape[1], 0, x.shape[1] * world, 1, eps)


# --------------------------------------------------------------------------- #
# hip: the fused one-shot Lamport kernel (hip/lamport_allreduce_rms.hip)
# --------------------------------------------------------------------------- #


def _aligned16(t: torch.Tensor) -> bool:
    return t.data_ptr() % 16 == 0


def _lamport_declines(x: torch.Tensor, widths: tuple[int, ...], weights: tuple[torch.Tensor, ...]):
    """Why the fused kernel cannot take these inputs (None: it can). The
    oracle's rule already checked dtype, world size and the workspace."""
    if x.dtype != torch.bfloat16:
        return f"activations are {x.dtype}, the kernel takes bfloat16"
    if any(w % 8 for w in widths) or x.shape[1] % 8 or not _aligned16(x):
        return "slice widths or row not in 16-byte vectors"
    if weights[0].dtype not in (torch.bfloat16, torch.float32) or any(w.dtype != weights[0].dtype for w in weights):
        return "weights must be all bf16 or all fp32"
    if not all(_aligned16(w) for w in weights):
        return "weights not 16-byte aligned"
    return None


def _workspace_for(op: str, arg: str, x: torch.Tensor, group_name: str):
    ws = lamport_workspace(group_name)
    if ws is None or ws.closed:
        raise oracle.BackendUnavailable(f"{op}: no open LamportWorkspace for group {group_name!r}")
    if ws.device != x.device:
        fail(op, arg, f"is on {x.device}; the Lamport workspace of group {group_name!r} is on {ws.device}")
    ws.check_tokens(op, arg, x.shape[0])
    return ws


def _fall_through(op: str, problem: oracle.Problem, why: str, args: tuple):
    """Run the oracle's next non-hip backend (the kernel declined the inputs)."""
    from . import _common
    d = oracle.decide(problem)
    if d.forced:
        raise oracle.BackendUnavailable(f"{op}: forced backend 'hip' cannot run this call: {why}")
    nxt = next(c for c in (d.chosen, *d.fallbacks) if c.backend != "hip")
    _common.LAST_BACKEND[op] = f"{nxt.backend} (hip declined: {why})"
    return oracle.impl(op, nxt.backend)(*args)


@ALLREDUCE_RMS_QK.impl("hip")
def _qk_hip(qkv, q_weight, k_weight, eps, group_name):
    ws = _workspace_for(QK, "qkv", qkv, group_name)
    q, kv = q_weight.shape[0], k_weight.shape[0]
    why = _lamport_declines(qkv, (q, kv), (q_weight, k_weight))
    if why:
        return _fall_through(QK, norm_problem(QK, qkv, group_name), why, (qkv, q_weight, k_weight, eps, group_name))
    ws.allreduce_rms_qk(qkv, q_weight, k_weight, eps)


@ALLREDUCE_RMS.impl("hip")
def _one_hip(x, weight, eps, group_name):
    ws = _workspace_for(ONE, "x", x, group_name)
    why = _lamport_declines(x, (x.shape[1],), (weight,))
    if why:
        return _fall_through(ONE, norm_problem(ONE, x, group_name), why, (x, weight, eps, group_name))
    ws.allreduce_rms(x, weight, eps)
