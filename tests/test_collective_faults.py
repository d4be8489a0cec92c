"""The QK-norm collectives when ranks disagree (CPU, gloo, two processes):
with MINIMAX_ROCM_CHECK_COLLECTIVES=1 a rank calling with another token count,
or one rank's rejected input, gets OpInputError naming the argument on every
rank, and the next matched call is right (no state left behind). A rank that
never arrives leaves its peers an error after the group's timeout, and a new
group then serves a matched call."""
import datetime
import json
import os
import time

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
