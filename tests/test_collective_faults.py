"""The QK-norm collectives when ranks disagree (CPU, gloo, two processes):
with MINIMAX_ROCM_CHECK_COLLECTIVES=1 a rank calling with another token count,
or one rank's rejected input, gets OpInputError naming the argument on every
rank, and the next matched call is right (no state left behind). A rank that
never arrives leaves its peers an error after the group's timeout, and a new
group then serves a matched call.

On a GPU the same faults reach the native Lamport kernel: two processes share
the one GPU (time-sliced, the buffers mapped across them by CUDA IPC) over a
gloo group. Checked calls refuse without launching and leave no stale slot; a
rank that never arrives, or unchecked differing token counts, make the waiting
kernel trap after the workspace's timeout_s; new processes then recover."""
import datetime
import json
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minimax_rocm.parallel import end_spawned_worker, local_init_method


def _matched_error(x_world: torch.Tensor, got: torch.Tensor, rank: int, world: int) -> float:
    """Max error of allreduce_rms's output on this rank against float64 over
    the gathered full width (x_world: every rank's input, gathered)."""
    from minimax_rocm import reference
    D = got.shape[1]
    ref = reference.rms_norm(x_world.double(), torch.ones(D * world).double(), 1e-6)
    return float((got.double() - ref[:, rank * D:(rank + 1) * D]).abs().max())


def _matched_call(group) -> float:
    import minimax_rocm as mm
    x = torch.randn(5, 16)
    full = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(full, x, group=group)
    got = mm.allreduce_rms(x.clone(), torch.ones(16), 1e-6, group.group_name)
    return _matched_error(torch.cat(full, dim=1), got, dist.get_rank(group), dist.get_world_size(group))


def _finish(rank: int, out: str, res: dict) -> None:
    """Write this rank's results, then leave the group together."""
    with open(os.path.join(out, f"{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()
    end_spawned_worker()


def _worker(rank, world, init_method, out):
    os.environ["MINIMAX_ROCM_CHECK_COLLECTIVES"] = "1"
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    import minimax_rocm as mm
    from minimax_rocm.ops._common import OpInputError
    g = dist.group.WORLD.group_name
    res = {}
    torch.manual_seed(rank)
    for op in ("allreduce_rms", "allreduce_rms_qk"):
        T = 4 if rank == 0 else 3                       # rank 1 disagrees
        try:
            if op == "allreduce_rms":
                mm.allreduce_rms(torch.randn(T, 16), torch.ones(16), 1e-6, g)
            else:
                mm.allreduce_rms_qk(torch.randn(T, 32), torch.ones(16), torch.ones(8), 1e-6, g)
            res[op] = "no error"
        except OpInputError as e:
            res[op] = str(e)
        # recovery: a matched call, against float64 over the gathered full width
        res[op + "_next"] = _matched_call(dist.group.WORLD)
    # rank 0's input is rejected (eps < 0); rank 1's is valid: both hear of it
    try:
        mm.allreduce_rms(torch.randn(4, 16), torch.ones(16), -1.0 if rank == 0 else 1e-6, g)
        res["rejected"] = "no error"
    except OpInputError as e:
        res["rejected"] = str(e)
    res["rejected_next"] = _matched_call(dist.group.WORLD)
    _finish(rank, out, res)


def test_mismatched_token_counts_raise_on_every_rank(tmp_path):
    mp.spawn(_worker, args=(2, local_init_method(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"{rank}.json").read_text())
        tokens = 4 if rank == 0 else 3
        assert res["allreduce_rms"].startswith("minimax_rocm.allreduce_rms: argument 'x'"), res
        assert f"has {tokens} tokens on rank {rank}" in res["allreduce_rms"] and "[4, 3]" in res["allreduce_rms"]
        assert res["allreduce_rms_qk"].startswith("minimax_rocm.allreduce_rms_qk: argument 'qkv'"), res
        assert res["allreduce_rms_next"] < 1e-5 and res["allreduce_rms_qk_next"] < 1e-5, res
    rank0 = json.loads((tmp_path / "0.json").read_text())["rejected"]
    rank1 = json.loads((tmp_path / "1.json").read_text())["rejected"]
    assert rank0.startswith("minimax_rocm.allreduce_rms: argument 'eps' is -1.0"), rank0
    assert rank1.startswith("minimax_rocm.allreduce_rms: argument 'x' was not exchanged: rank(s) [0]"), rank1
    for rank in (0, 1):
        assert json.loads((tmp_path / f"{rank}.json").read_text())["rejected_next"] < 1e-5


TIMEOUT_S = 3


def _absent_worker(rank, world, init_method, out):
    # rank 1 never calls: rank 0 fails after the group's timeout; a new group
    # (the documented recovery: the timed-out one is not reused) serves a matched call
    os.environ["MINIMAX_ROCM_CHECK_COLLECTIVES"] = "0"
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    import minimax_rocm as mm
    res = {}
    sub = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=TIMEOUT_S))
    if rank == 0:
        t0 = time.monotonic()
        try:
            mm.allreduce_rms(torch.randn(4, 16), torch.ones(16), 1e-6, sub.group_name)
            res["absent"] = "no error"
        except RuntimeError as e:
            res["absent"] = f"{type(e).__name__}: {str(e)[:200]}"
        res["absent_s"] = time.monotonic() - t0
    dist.barrier()                      # on the default group: rank 1 waits here meanwhile
    fresh = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=60))
    res["fresh_next"] = _matched_call(fresh)
    _finish(rank, out, res)


def test_a_rank_that_never_arrives_times_out_and_a_new_group_recovers(tmp_path):
    mp.spawn(_absent_worker, args=(2, local_init_method(), str(tmp_path)), nprocs=2, join=True)
    res0 = json.loads((tmp_path / "0.json").read_text())
    assert res0["absent"] != "no error" and TIMEOUT_S * 0.5 <= res0["absent_s"] < TIMEOUT_S + 30, res0
    for rank in (0, 1):
        assert json.loads((tmp_path / f"{rank}.json").read_text())["fresh_next"] < 1e-5


# --------------------------------------------------------------------------- #
# The native Lamport kernel under the same faults: two processes share one GPU
# (time-sliced contexts, buffers mapped across them by CUDA IPC), a gloo group.
# --------------------------------------------------------------------------- #

KERNEL_TIMEOUT_S = 2.0
LAMPORT_MAX_T = 64


def _lamport_call(rank: int, world: int, T: int, seed: int, qk: bool = True, eps: float = 1e-6) -> float:
    """One matched Lamport call on cuda:0 (identical full-width inputs on every
    rank from the seed; each rank normalises its slice); the max error of this
    rank's slice against float64, inf where the native kernel did not run."""
    import minimax_rocm as mm
    from minimax_rocm import reference
    from minimax_rocm.ops import _common
    g = torch.Generator().manual_seed(seed)
    q, kv = 64, 16                                   # per rank: 16-byte bf16 rows
    x = torch.randn(T, world * (q + 2 * kv), generator=g).bfloat16()
    qw, kw = torch.rand(world * q, generator=g) + 0.5, torch.rand(world * kv, generator=g) + 0.5
    Q, K = x[:, :world * q], x[:, world * q:world * (q + kv)]
    mine = lambda t, n: t[..., rank * n:(rank + 1) * n]  # noqa: E731
    name = dist.group.WORLD.group_name
    if qk:
        qkv = torch.cat([mine(Q, q), mine(K, kv), torch.zeros(T, kv, dtype=torch.bfloat16)], 1).cuda()
        mm.allreduce_rms_qk(qkv, mine(qw, q).cuda(), mine(kw, kv).cuda(), eps, name)
        ref = torch.cat([mine(reference.rms_norm(Q.double(), qw.double(), 1e-6), q),
                         mine(reference.rms_norm(K.double(), kw.double(), 1e-6), kv)], 1)
        got = qkv[:, :q + kv]
    else:
        got = mine(Q, q).contiguous().cuda()
        mm.allreduce_rms(got, mine(qw, q).cuda(), 1e-6, name)
        ref = mine(reference.rms_norm(Q.double(), qw.double(), 1e-6), q)
    if _common.LAST_BACKEND["allreduce_rms_qk" if qk else "allreduce_rms"] != "hip":
        return float("inf")
    return float((got.double().cpu() - ref).abs().max() / ref.abs().max())


def _lamport_worker(rank, world, init_method, out, scenario):
    os.environ["MINIMAX_ROCM_CHECK_COLLECTIVES"] = "1" if scenario == "checked" else "0"
    torch.cuda.set_device(0)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    from minimax_rocm.ops._common import OpInputError
    from minimax_rocm.parallel import LamportWorkspace, lamport
    ws = LamportWorkspace(max_tokens=LAMPORT_MAX_T, timeout_s=KERNEL_TIMEOUT_S)
    res = {"matched": max(_lamport_call(rank, world, 5, 1), _lamport_call(rank, world, LAMPORT_MAX_T, 2, qk=False))}
    if scenario == "checked":
        calls = ws.calls()
        cases = (("tokens", 4 if rank == 0 else 3, 1e-6), ("rejected", 5, -1.0 if rank == 0 else 1e-6),
                 ("too_many", LAMPORT_MAX_T + 1, 1e-6))
        for case, T, eps in cases:
            try:
                _lamport_call(rank, world, T, 3, eps=eps)
                res[case] = "no error"
            except OpInputError as e:
                res[case] = str(e)
            res[case + "_next"] = _lamport_call(rank, world, 7 + len(res), 10 + len(res))
        # nothing launched for the refused calls: three matched calls since, and
        # the buffers the last call did not use are all empty (no stale slots)
        res["launches"] = ws.calls() - calls
        b = ws.buffers()
        cur = (ws.calls() - 1) % lamport.NUM_BUFFERS
        res["stale_slots"] = int(sum((b[i] != lamport.SENTINEL_I32).sum() for i in range(lamport.NUM_BUFFERS)
                                     if i != cur))
        ws.close()
    elif scenario == "absent" and rank == 0:         # rank 1 never calls
        res.update(_timed_trap(lambda: _lamport_call(rank, world, 6, 4)))
    elif scenario == "mismatched":                   # unchecked: rank 1 waits for tokens rank 0 never sends
        res.update(_timed_trap(lambda: _lamport_call(rank, world, 4 if rank == 0 else 8, 5)))
    with open(os.path.join(out, f"{scenario}{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.barrier()                                   # gloo: on the CPU, whatever the GPU's state
    end_spawned_worker()                             # a trapped context cannot close its workspace


def _timed_trap(call) -> dict:
    t0 = time.monotonic()
    try:
        err = call()
        torch.cuda.synchronize()
        return {"error": None, "max_err": err, "seconds": time.monotonic() - t0}
    except RuntimeError as e:
        return {"error": f"{type(e).__name__}: {str(e)[:300]}", "seconds": time.monotonic() - t0}


def _spawn_lamport(tmp_path, scenario) -> list:
    os.environ.setdefault("MINIMAX_ROCM_JIT", "1")
    mp.spawn(_lamport_worker, args=(2, local_init_method(), str(tmp_path), scenario), nprocs=2, join=True)
    return [json.loads((tmp_path / f"{scenario}{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.gpu
def test_lamport_kernel_refuses_mismatched_calls_and_keeps_its_rotation(tmp_path):
    for rank, res in enumerate(_spawn_lamport(tmp_path, "checked")):
        assert res["matched"] < 2 ** -7, res                  # the native kernel ran, within a bf16 ulp
        assert "[4, 3]" in res["tokens"] and "qkv" in res["tokens"], res
        assert max(res[c + "_next"] for c in ("tokens", "rejected", "too_many")) < 2 ** -7, res
        assert res["rejected"].startswith("minimax_rocm.allreduce_rms_qk: argument " +
                                          ("'eps' is -1.0" if rank == 0 else "'qkv' was not exchanged")), res
        assert "at most 64" in res["too_many"] and "'qkv'" in res["too_many"], res
        assert res["launches"] == 3 and res["stale_slots"] == 0, res


@pytest.mark.gpu
def test_lamport_kernel_traps_after_its_timeout_and_new_processes_recover(tmp_path):
    absent = _spawn_lamport(tmp_path, "absent")
    assert absent[0]["error"] and KERNEL_TIMEOUT_S <= absent[0]["seconds"] < KERNEL_TIMEOUT_S + 20, absent[0]
    # unchecked, differing token counts: the rank with more tokens traps; its
    # peer returns (the check above is what turns this into an error on both)
    short, long_ = _spawn_lamport(tmp_path, "mismatched")
    assert short["error"] is None and long_["error"] and long_["seconds"] >= KERNEL_TIMEOUT_S, (short, long_)
    # recovery is a new workspace in new processes: it serves matched calls
    assert all(r["matched"] < 2 ** -7 for r in _spawn_lamport(tmp_path, "fresh")), "fresh"
