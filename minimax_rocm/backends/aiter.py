"""AITER adapters (ROCm only).

AITER (`amd-aiter` on PyPI, import name `aiter`) cannot be imported without
ROCm, so nothing here imports it at module load: every `import aiter...` sits
inside a function that only runs on ROCm, when the oracle picked "aiter"
(Platform.aiter is true only where `available()` is). Importing this module is
safe everywhere, and so is `register()`.

What is adapted, and what is not (checked against amd-aiter PINNED_VERSION; the
contract test tests/test_aiter_contract.py parses that wheel's sources):

- fused_moe (BF16/FP16 weights): AITER's `aiter.fused_moe.fused_moe` with an
  expert mask. Only where AITER computes our contract exactly:
  * activation "silu" with the "split" gate|up layout (AITER's CK 2-stage MoE is
    generated for silu and gelu only; its Swiglu enum value serves the MXFP4
    per-1x32 path alone, so SwiGLU-OAI (alpha, limit) is declined);
  * weights in AITER's pre-shuffled (16, 16) layout. Our op takes row-major
    `[E, N, K]` weights; the CK kernels read `[e, nr, kr, w]` tiles. So a model
    that wants this backend calls `prepare_moe_weights(w13, w2)` once at load
    (a shuffled copy: it DOUBLES the expert-weight memory of that layer, which
    is why it is opt-in); calls with unprepared weights are declined.
  Expert parallelism: AITER's sorting maps a global id g to local id
  (number of masked-in experts below g), which equals our expert_map only for
  a monotone map. So the adapter remaps ids itself (local id, or E_loc for
  remote) and passes the mask `[1]*E_loc + [0]`: exact for ANY expert_map,
  and the sorting buffers are sized by E_loc + 1 rather than the global count.
- allreduce_rms_qk / allreduce_rms: AITER's fused all-reduce + RMSNorm
  (`fused_allreduce_rmsnorm`) all-reduces the whole activation and normalises
  it; our op normalises a column SHARD over the full width, so it does not
  fit. What does fit is AITER's custom (IPC) all-reduce for the per-token sums
  of squares, in place of NCCL/RCCL: sums of squares -> CustomAllreduce ->
  normalise. A communicator must be opened per group with `open_allreduce`.
- mxfp8_quant: not adapted. The pinned AITER's per-1x32 quantisers emit fp4
  (MXFP4); its only MX fp8 quantiser (`aiter.ops.triton.quant_moe.
  downcast_to_mxfp`) chooses the scale as 2^ceil/floor(log2(amax / 448)), not
  the OCP rule 2^(floor(log2 amax) - 8) our op must match bit for bit, and has
  no e4m3fnuz output for gfx942.
- fused_moe_mxfp8: not adapted. The pinned AITER's fp8 MoE kernels take
  per-token or 128x128-block fp32 scales, not per-32 e8m0 scales (AITER later
  added MXFP8 MoE on gfx950 only), and M3's experts are SwiGLU-OAI.

A call the adapter cannot serve exactly is declined: it runs the oracle's next
backend instead (or raises if the environment forced "aiter"), and
ops._common.LAST_BACKEND records why.
"""
from __future__ import annotations

import functools
import os
import weakref
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..platform import cached_outside_capture, graph_capturing

# The AITER release the contract was checked against (the only amd-aiter on
# PyPI when written). Bump it together with a green tests/test_aiter_contract.py.
PINNED_VERSION = "0.1.7.post2.dev18"

# --------------------------------------------------------------------------- #
# the contract: every AITER function the adapters call, with every keyword
# they pass ("module:qualname"; a class name means its constructor). The
# contract test checks each against the pinned wheel's sources (AST, no
# import); `_kw` makes the adapters pass nothing outside it.
# --------------------------------------------------------------------------- #

_CAR = "aiter.dist.device_communicators.custom_all_reduce"

CONTRACT: dict[str, tuple[str, ...]] = {
    "aiter.fused_moe:fused_moe": ("hidden_states", "w1", "w2", "topk_weight", "topk_ids", "expert_mask",
                                  "activation", "quant_type"),
    "aiter.ops.shuffle:shuffle_weight": ("x", "layout"),
    f"{_CAR}:CustomAllreduce": ("group", "device", "max_size"),
    f"{_CAR}:CustomAllreduce.all_reduce": ("inp", "out", "registered"),
    f"{_CAR}:CustomAllreduce.close": (),
}

# Module-level names the adapters import, and instance attributes they read.
NAMES: tuple[str, ...] = ("aiter.ops.enum:ActivationType", "aiter.ops.enum:QuantType")
ATTRIBUTES: dict[str, tuple[str, ...]] = {f"{_CAR}:CustomAllreduce": ("disabled", "world_size", "max_size")}

# Enum members used; ActivationType / QuantType are pybind enums defined in C++.
ENUMS: dict[str, tuple[str, ...]] = {
    "aiter_meta/csrc/include/aiter_enum.h:ActivationType": ("Silu",),
    "aiter_meta/csrc/include/aiter_enum.h:QuantType": ("No",),
}

# Facts the declines rest on, re-checked by the contract test so a new pin
# that changes them is noticed: the CK 2-stage MoE codegen's activations.
CK_MOE_CODEGEN = "aiter_meta/csrc/ck_gemm_moe_2stages_codegen/gen_instances.py"
CK_MOE_ACTIVATIONS = ("silu", "gelu")


def _kw(entry: str, **kw):
    """kw, after checking that it stays inside CONTRACT[entry]."""
    extra = set(kw) - set(CONTRACT[entry])
    if extra:
        raise AssertionError(f"aiter adapter passes {sorted(extra)} to {entry}, outside its CONTRACT")
    return kw


@functools.lru_cache(maxsize=1)
def available() -> bool:
    try:
        import aiter  # noqa: F401
        return True
    except Exception:
        return False


def _fall_through(op: str, problem, why: str, args: tuple):
    """Run the oracle's next non-aiter backend for `problem` (aiter declined)."""
    from .. import oracle
    from ..ops import _common
    d = oracle.decide(problem)
    if d.forced:
        raise oracle.BackendUnavailable(f"{op}: forced backend 'aiter' cannot run this call: {why}")
    nxt = next((c for c in (d.chosen, *d.fallbacks) if c.backend != "aiter"), None)
    if nxt is None:  # unreachable: the table ends with torch
        raise oracle.BackendUnavailable(f"{op}: aiter declined ({why}) and no other backend is usable")
    _common.LAST_BACKEND[op] = f"{nxt.backend}{'/' + nxt.path if nxt.path else ''} (aiter declined: {why})"
    return oracle.impl(op, nxt.backend)(*args)


# --------------------------------------------------------------------------- #
# fused_moe
# --------------------------------------------------------------------------- #

# Our activation -> AITER ActivationType member, where AITER computes exactly
# ours. Gate is the first half of GEMM1's output in both ("split").
MOE_ACTIVATIONS = {"silu": "Silu"}
MOE_LAYOUTS = ("split",)
MOE_DTYPES = (torch.bfloat16, torch.float16)     # AITER's fused_moe asserts a bf16/fp16 output
# Conservative shape limits: shuffle_weight needs N % 16 and K % 32 (bf16);
# the CK tiles (KPerBlock 64/128) are taken as H % 128, I % 64 (every MiniMax
# shape at EP and TP 2/4/8 meets both).
MOE_HIDDEN_MULTIPLE = 128
MOE_INTER_MULTIPLE = 64
SHUFFLE_LAYOUT = (16, 16)
# Opt-in: prepare (shuffle) weights on first use instead of declining. Doubles
# the expert-weight memory of every layer that runs here.
AUTO_PREPARE_ENV = "MINIMAX_ROCM_AITER_AUTO_PREPARE"


def moe_problem_declines(p) -> Optional[str]:
    """Why the oracle must not route this fused_moe Problem to AITER (None: it
    may). Only what Problem carries; the call itself is checked again by
    `moe_call_declines` (activation, layout and weight preparation are not in
    Problem)."""
    if p.weight_format != "bf16":
        return f"weight format {p.weight_format}"
    if p.dtype not in ("bfloat16", "float16"):
        return f"activations {p.dtype}: AITER's fused_moe writes bf16/fp16 only"
    if p.tokens <= 0:
        return "no tokens"
    if p.hidden % MOE_HIDDEN_MULTIPLE:
        return f"hidden {p.hidden} is not a multiple of {MOE_HIDDEN_MULTIPLE}"
    return None


@dataclass
class _Prepared:
    ref13: weakref.ref
    ref2: weakref.ref
    version13: int
    version2: int
    w13: torch.Tensor     # AITER layout copies
    w2: torch.Tensor


# (data_ptr, shape, dtype, device) of the originals -> their AITER-layout copies.
# Weak references: an entry dies with its original weights.
_PREPARED: dict[tuple, _Prepared] = {}


def _weights_key(w13: torch.Tensor, w2: torch.Tensor) -> tuple:
    return (w13.data_ptr(), w2.data_ptr(), tuple(w13.shape), tuple(w2.shape), w13.dtype, str(w13.device))


def prepare_moe_weights(w13: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make AITER-layout (pre-shuffled) copies of one layer's expert weights so
    fused_moe calls with these exact tensors may run on AITER. Call once after
    loading (not during graph capture); the copies live as long as the
    originals. Treat the originals as read-only afterwards (an in-place update
    seen by their version counter declines the copies; prepare again)."""
    if not available():
        raise RuntimeError("prepare_moe_weights: AITER is not importable here (ROCm only)")
    from aiter.ops.shuffle import shuffle_weight
    key = _weights_key(w13, w2)
    s13 = shuffle_weight(**_kw("aiter.ops.shuffle:shuffle_weight", x=w13, layout=SHUFFLE_LAYOUT))
    s2 = shuffle_weight(**_kw("aiter.ops.shuffle:shuffle_weight", x=w2, layout=SHUFFLE_LAYOUT))
    drop = lambda _ref, key=key: _PREPARED.pop(key, None)  # noqa: E731
    _PREPARED[key] = _Prepared(weakref.ref(w13, drop), weakref.ref(w2, drop), w13._version, w2._version, s13, s2)
    return s13, s2


def release_moe_weights(w13: torch.Tensor, w2: torch.Tensor) -> None:
    _PREPARED.pop(_weights_key(w13, w2), None)


def _prepared(w13: torch.Tensor, w2: torch.Tensor) -> Optional[_Prepared]:
    e = _PREPARED.get(_weights_key(w13, w2))
    if e is None:
        return None
    o13, o2 = e.ref13(), e.ref2()
    if o13 is None or o2 is None or o13._version != e.version13 or o2._version != e.version2:
        return None
    return e


def moe_call_declines(hidden, w13, w2, activation, layout, variant) -> Optional[str]:
    """Why this fused_moe call cannot run on AITER exactly (None: it can)."""
    if variant != "auto":
        return f"variant {variant!r} selects a Triton configuration"
    if activation not in MOE_ACTIVATIONS:
        return (f"activation {activation!r}: AITER's CK MoE computes {'/'.join(CK_MOE_ACTIVATIONS)} only "
                f"(no SwiGLU-OAI alpha/limit)")
    if layout not in MOE_LAYOUTS:
        return f"gate/up layout {layout!r}: AITER splits GEMM1's output into gate|up halves"
    if hidden.dtype not in MOE_DTYPES:
        return f"dtype {hidden.dtype}"
    if hidden.shape[0] == 0:
        return "no tokens"
    H, inter = hidden.shape[1], w2.shape[2]
    if H % MOE_HIDDEN_MULTIPLE or inter % MOE_INTER_MULTIPLE:
        return f"hidden {H} / intermediate {inter} not multiples of {MOE_HIDDEN_MULTIPLE} / {MOE_INTER_MULTIPLE}"
    if _prepared(w13, w2) is None:
        if os.environ.get(AUTO_PREPARE_ENV) == "1" and not graph_capturing() and available():
            prepare_moe_weights(w13, w2)
        else:
            return "weights not in AITER's shuffled layout (call backends.aiter.prepare_moe_weights at load)"
    return None


# [E_loc + 1] int32 masks: E_loc local experts on, one "remote" slot off.
_MASKS: dict[tuple, torch.Tensor] = {}


def local_routes(topk_ids: torch.Tensor, expert_map: Optional[torch.Tensor],
                 num_local: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(ids, expert_mask) in AITER's terms for our global ids + expert_map.

    AITER numbers a masked-in expert by how many masked-in experts precede it.
    We hand it ids already local (remote routes -> num_local, a masked-off
    slot), so that numbering is the identity for any expert_map."""
    if expert_map is None:
        return topk_ids.to(torch.int32), None
    local = expert_map.long()[topk_ids.long()]
    ids = torch.where(local >= 0, local, num_local).to(torch.int32)

    def make_mask():
        mask = torch.ones(num_local + 1, dtype=torch.int32, device=topk_ids.device)
        mask[num_local] = 0
        return mask
    return ids, cached_outside_capture(_MASKS, (num_local, str(topk_ids.device)), make_mask)


def fused_moe(hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit, variant):
    """oracle impl of fused_moe on AITER (same arguments as the op)."""
    args = (hidden, w13, w2, topk_weights, topk_ids, expert_map, activation, layout, alpha, limit, variant)
    why = moe_call_declines(hidden, w13, w2, activation, layout, variant)
    if why:
        from ..ops.moe import moe_problem
        return _fall_through("fused_moe", moe_problem("fused_moe", hidden, w13, topk_ids, expert_map), why, args)
    prep = _prepared(w13, w2)
    ids, mask = local_routes(topk_ids, expert_map, w13.shape[0])
    from aiter.fused_moe import fused_moe as aiter_fused_moe
    from aiter.ops.enum import ActivationType, QuantType
    return aiter_fused_moe(**_kw(
        "aiter.fused_moe:fused_moe", hidden_states=hidden, w1=prep.w13, w2=prep.w2,
        topk_weight=topk_weights.to(torch.float32), topk_ids=ids, expert_mask=mask,
        activation=getattr(ActivationType, MOE_ACTIVATIONS[activation]), quant_type=QuantType.No))


# --------------------------------------------------------------------------- #
# allreduce_rms_qk / allreduce_rms: AITER custom all-reduce of the sums of squares
# --------------------------------------------------------------------------- #

AR_WORLD_SIZES = (2, 4, 6, 8)     # CustomAllreduce._SUPPORTED_WORLD_SIZES
# Per token: q and k sums of squares + 2 fp32 of padding, so every message is
# a multiple of 16 bytes (the custom all-reduce's requirement) for any T.
AR_SLOTS = 4


@dataclass
class _Comm:
    comm: object           # aiter CustomAllreduce
    world: int
    max_tokens: int


_COMMS: dict[str, _Comm] = {}


def open_allreduce(group_name: str, max_tokens: int, cpu_group=None, device=None) -> None:
    """Open an AITER custom all-reduce for the group registered as group_name,
    sized for max_tokens tokens. Call on every rank of the group (collective).
    AITER exchanges IPC handles over a non-NCCL group: pass the gloo group over
    the same ranks as cpu_group, or None to create one (dist.new_group is
    collective over the WORLD: then every rank of the job must call)."""
    import torch.distributed as dist
    from ..parallel import resolve_group
    if not available():
        raise RuntimeError("open_allreduce: AITER is not importable here (ROCm only)")
    group = resolve_group(group_name)
    if cpu_group is None:
        cpu_group = dist.new_group(dist.get_process_group_ranks(group), backend="gloo")
    from aiter.dist.device_communicators.custom_all_reduce import CustomAllreduce
    dev = device if device is not None else torch.device("cuda", torch.cuda.current_device())
    nbytes = -(-max_tokens * AR_SLOTS * 4 // 4096) * 4096
    comm = CustomAllreduce(**_kw(f"{_CAR}:CustomAllreduce", group=cpu_group, device=dev, max_size=nbytes))
    if comm.disabled:
        raise RuntimeError(f"open_allreduce({group_name!r}): AITER disabled its custom all-reduce here "
                           f"(world size, multi-node, or the library; see AITER's log)")
    _COMMS[group_name] = _Comm(comm, comm.world_size, max_tokens)


def close_allreduce(group_name: str) -> None:
    c = _COMMS.pop(group_name, None)
    if c is not None:
        c.comm.close()


def allreduce_ready(world: int) -> bool:
    """An AITER communicator of this world size is open (the oracle's rule:
    Problem carries the world size, not the group)."""
    return any(c.world == world for c in _COMMS.values())


def allreduce_problem_declines(p) -> Optional[str]:
    if p.tp_size not in AR_WORLD_SIZES:
        return f"world size {p.tp_size} (AITER: {AR_WORLD_SIZES})"
    if not allreduce_ready(p.tp_size):
        return f"no AITER all-reduce open for a group of {p.tp_size}"
    return None


def _comm_for(group_name: str, tokens: int) -> tuple[Optional[_Comm], str]:
    c = _COMMS.get(group_name)
    if c is None:
        return None, f"no AITER all-reduce open for group {group_name!r}"
    if tokens > c.max_tokens:  # every rank sees the same T, so every rank declines alike
        return None, f"{tokens} tokens exceed the {c.max_tokens} the AITER all-reduce was opened for"
    return c, ""


def _all_reduce_sums(c: _Comm, parts: list[torch.Tensor]) -> torch.Tensor:
    """`[T, AR_SLOTS]` fp32: all-reduced per-token sums of squares of parts."""
    sums = torch.zeros((parts[0].shape[0], AR_SLOTS), dtype=torch.float32, device=parts[0].device)
    for i, p in enumerate(parts):
        sums[:, i] = p.float().pow(2).sum(dim=-1)
    out = torch.empty_like(sums)
    # registered=False: AITER copies the input into its pre-registered IPC
    # buffer first, which is valid both eagerly and under graph capture.
    c.comm.all_reduce(**_kw(f"{_CAR}:CustomAllreduce.all_reduce", inp=sums, out=out, registered=False))
    return out


def allreduce_rms_qk(qkv, q_weight, k_weight, eps, group_name):
    """oracle impl of allreduce_rms_qk on AITER's custom all-reduce."""
    from .. import reference
    c, why = _comm_for(group_name, qkv.shape[0])
    if c is None:
        from ..ops.norm import norm_problem
        return _fall_through("allreduce_rms_qk", norm_problem("allreduce_rms_qk", qkv, group_name), why,
                             (qkv, q_weight, k_weight, eps, group_name))
    if qkv.shape[0] == 0:
        return None
    q, kv = q_weight.shape[0], k_weight.shape[0]
    sums = _all_reduce_sums(c, [qkv[:, :q], qkv[:, q:q + kv]])
    qkv[:, :q] = reference.allreduce_rms_local(qkv[:, :q], q_weight, eps, sums[:, 0], q * c.world)
    qkv[:, q:q + kv] = reference.allreduce_rms_local(qkv[:, q:q + kv], k_weight, eps, sums[:, 1], kv * c.world)
    return None


def allreduce_rms(x, weight, eps, group_name):
    """oracle impl of allreduce_rms on AITER's custom all-reduce."""
    from .. import reference
    c, why = _comm_for(group_name, x.shape[0])
    if c is None:
        from ..ops.norm import norm_problem
        return _fall_through("allreduce_rms", norm_problem("allreduce_rms", x, group_name), why,
                             (x, weight, eps, group_name))
    if x.shape[0] == 0:
        return None
    sums = _all_reduce_sums(c, [x])
    x.copy_(reference.allreduce_rms_local(x, weight, eps, sums[:, 0], x.shape[1] * c.world))
    return None


# --------------------------------------------------------------------------- #
# registration with the oracle
# --------------------------------------------------------------------------- #

IMPLS: dict[str, Callable] = {
    "fused_moe": fused_moe,
    "allreduce_rms_qk": allreduce_rms_qk,
    "allreduce_rms": allreduce_rms,
}


def register() -> None:
    """Register the adapters as the "aiter" backend of their ops. Safe on any
    platform (nothing is imported): the oracle only picks "aiter" where
    Platform.aiter is true. Idempotent."""
    from .. import oracle
    for op, fn in IMPLS.items():
        oracle.register_impl(op, "aiter")(fn)
    oracle.register_backend_limits("aiter", available=available, fused_moe=moe_problem_declines,
                                   allreduce=allreduce_problem_declines)
