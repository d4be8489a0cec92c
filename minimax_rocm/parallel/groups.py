"""Process groups by name, the registry of open Lamport workspaces, and
helpers for processes spawned on this machine."""
from __future__ import annotations

import os
import sys
from typing import NoReturn, Optional

import torch.distributed as dist

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
    """MINIMAX_ROCM_CHECK_COLLECTIVES=1: every collective op first checks that
    the group's ranks call it with the same token count (one small all-gather
    more per call: a debugging aid, off by default). Without it a rank calling
    with another count gets no error: a peer waits until the group's timeout
    (torch.distributed's, or the Lamport workspace's timeout_s), or the
    ranks compute from mismatched sums."""
    return os.environ.get("MINIMAX_ROCM_CHECK_COLLECTIVES", "0") not in ("", "0")


def check_same_tokens(op: str, arg: str, tokens: int, group_name: str, device) -> None:
    """Raise OpInputError on every rank of the group when its ranks' token
    counts differ (collective: every rank must call it). Skipped under CUDA
    graph capture, where the gathered counts could not be read."""
    if not group_name or group_world_size(group_name) == 1:
        return
    import torch
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return
    from ..errors import fail
    group = resolve_group(group_name)
    # gloo gathers CPU tensors; NCCL / RCCL tensors on the rank's GPU
    where = "cpu" if dist.get_backend(group) == "gloo" else device
    mine = torch.tensor([int(tokens)], dtype=torch.int64, device=where)
    counts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, mine, group=group)
    counts = [int(c) for c in counts]
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
