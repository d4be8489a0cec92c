"""Process groups by name, the registry of open Lamport workspaces, and
helpers for processes spawned on this machine."""
from __future__ import annotations

import os
import sys
from typing import NoReturn, Optional

import torch
import torch.distributed as dist

from ..platform import graph_capturing

# group_name -> LamportWorkspace opened for that group (the fused QK-norm kernel
# needs one; without it the oracle takes the NCCL/RCCL path).
_LAMPORT: dict[str, object] = {}


def resolve_group(group_name: str):
    """The ProcessGroup registered under group_name ("" = none)."""
    if not group_name:
        return None
    from torch.distributed.distributed_c10d import _resolve_process_group
    return _resolve_process_group(group_name)


def group_world_size(group_name: str) -> int:
    if not group_name or not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size(resolve_group(group_name))


def collective_checks_on() -> bool:
    """MINIMAX_ROCM_CHECK_COLLECTIVES=1: every collective op first agrees on
    the call across the group (agree_on_call: one small all-gather more per
    call, a debugging aid, off by default): same token count, every rank's
    input accepted. Without it a rank calling with another count, or whose
    input check raised, gets its error alone: a peer waits until the group's
    timeout (torch.distributed's, or the Lamport workspace's timeout_s), or
    the ranks compute from mismatched sums."""
    return os.environ.get("MINIMAX_ROCM_CHECK_COLLECTIVES", "0") not in ("", "0")


def agree_on_call(op: str, arg: str, tokens: int, error: Optional[Exception], group_name: str, device) -> None:
    """The group's verdict on one call of a collective op, taken before any
    data is exchanged (collective: every rank must call it, with `error` the
    OpInputError its own input check raised, or None). A rank whose input was
    rejected raises its own error; its peers raise OpInputError naming the
    rejecting ranks, rather than waiting for it in the exchange until the
    group's timeout; differing token counts raise on every rank. Skipped
    under CUDA graph capture, where the gathered verdicts could not be read:
    there `error` is raised locally."""
    single = not group_name or group_world_size(group_name) == 1
    if single or graph_capturing():
        if error is not None:
            raise error
        return
    from ..errors import fail
    group = resolve_group(group_name)
    # gloo gathers CPU tensors; NCCL / RCCL tensors on the rank's GPU
    where = "cpu" if dist.get_backend(group) == "gloo" else device
    mine = torch.tensor([int(tokens), int(error is None)], dtype=torch.int64, device=where)
    got = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(got, mine, group=group)
    if error is not None:
        raise error
    rejected = [r for r, g in enumerate(got) if not int(g[1])]
    if rejected:
        fail(op, arg, f"was not exchanged: rank(s) {rejected} of group {group_name!r} rejected their inputs "
                      f"to this call (their errors name the argument); this rank's were valid")
    counts = [int(g[0]) for g in got]
    if len(set(counts)) > 1:
        fail(op, arg, f"has {tokens} tokens on rank {dist.get_rank(group)}; the ranks of group {group_name!r} "
                      f"call with {counts}: every rank must call with the same token count")


def register_lamport_workspace(group_name: str, workspace) -> None:
    _LAMPORT[group_name] = workspace


def unregister_lamport_workspace(group_name: str) -> None:
    _LAMPORT.pop(group_name, None)


def lamport_workspace(group_name: str) -> Optional[object]:
    return _LAMPORT.get(group_name)


def local_init_method() -> str:
    """A torch.distributed init_method for processes spawned on this machine:
    a file store in a fresh temporary directory. Unlike "pick a free TCP
    port", two runs started at once (pytest -n, two demos) cannot collide."""
    import tempfile
    return "file://" + os.path.join(tempfile.mkdtemp(prefix="minimax_rocm_pg_"), "store")


def end_spawned_worker() -> NoReturn:
    """End a process that torch.multiprocessing.spawn started, once it has
    passed its last collective and destroyed its process group, without
    Python's finalization (exit status 0).

    A gloo worker thread can still hold the last reference to a finished
    collective: a barrier keeps the all-gather before it, and its tensors
    need the GIL to be freed. If that happens while the interpreter is being
    torn down, the thread is made to exit inside a C++ destructor and the
    process aborts ("terminate called without an active exception"; torch
    2.11, about one CPU demo run in 20). These workers have nothing left to
    do at exit, so they skip it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
