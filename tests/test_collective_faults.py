"""The QK-norm collectives when ranks disagree (CPU, gloo, two processes):
with MINIMAX_ROCM_CHECK_COLLECTIVES=1 a rank calling with another token count
gets OpInputError naming the argument on every rank, and the next matched
call is right (no state left behind)."""
import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minimax_rocm.parallel import end_spawned_worker, local_init_method


def _worker(rank, world, init_method, out):
    os.environ["MINIMAX_ROCM_CHECK_COLLECTIVES"] = "1"
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    import minimax_rocm as mm
    from minimax_rocm import reference
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
        x = torch.randn(5, 16)
        full = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(full, x)
        ref = reference.rms_norm(torch.cat(full, dim=1).double(), torch.ones(16 * world).double(), 1e-6)
        got = mm.allreduce_rms(x.clone(), torch.ones(16), 1e-6, g)
        res[op + "_next"] = float((got.double() - ref[:, rank * 16:(rank + 1) * 16]).abs().max())
    with open(os.path.join(out, f"{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()
    end_spawned_worker()


def test_mismatched_token_counts_raise_on_every_rank(tmp_path):
    mp.spawn(_worker, args=(2, local_init_method(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"{rank}.json").read_text())
        tokens = 4 if rank == 0 else 3
        assert res["allreduce_rms"].startswith("minimax_rocm.allreduce_rms: argument 'x'"), res
        assert f"has {tokens} tokens on rank {rank}" in res["allreduce_rms"] and "[4, 3]" in res["allreduce_rms"]
        assert res["allreduce_rms_qk"].startswith("minimax_rocm.allreduce_rms_qk: argument 'qkv'"), res
        assert res["allreduce_rms_next"] < 1e-5 and res["allreduce_rms_qk_next"] < 1e-5, res
