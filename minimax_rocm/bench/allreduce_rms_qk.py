"""bench --op allreduce_rms_qk (two GPUs, or MINIMAX_ROCM_TP of them): the fused Lamport kernel vs the
NCCL path (Triton sum of squares + NCCL all-reduce of `[T, 2]` + Triton
normalise) vs the same path with torch's symmetric-memory one-shot all-reduce,
MiniMax-M2 at TP2 (q 3072, k 512, v 512 per rank), all under CUDA graphs.

    python -m minimax_rocm.bench.allreduce_rms_qk [--quick] [--json PATH]

spawns one process per GPU (2); rank 0 prints the table. The registered bench
(`python -m minimax_rocm bench --op allreduce_rms_qk`) spawns the same ranks
and returns rank 0's rows; with fewer than two GPUs it returns none.
NVLink multicast stays off in every process (ENV).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import warnings

import torch
import torch.distributed as dist

from ..models.config import preset
from ..parallel import end_spawned_worker, local_init_method
from .harness import Context, Row, register_bench

OP = "allreduce_rms_qk"
TOKENS = (1, 16, 64, 128, 512, 1024)
# ranks (TP size): 2 by default; MINIMAX_ROCM_TP=4 or 8 on a machine with that many GPUs
WORLD = int(os.environ.get("MINIMAX_ROCM_TP", "2"))
# per rank: MiniMax-M2's full q and kv widths (48 x 128, 8 x 128) split over the TP ranks
Q, KV = preset("minimax-m2").q_size // WORLD, preset("minimax-m2").kv_size // WORLD
EPS = 1e-6
# graph replays per timed sample, the same on every rank: each call waits for
# the peers' calls, so ranks must replay the same number of times
REPLAYS = 10
ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}



def _agree(ok: bool) -> bool:
    """True on every rank iff true on every rank (so the ranks never diverge)."""
    t = torch.tensor([0 if ok else 1], device="cuda")
    dist.all_reduce(t)
    return int(t.item()) == 0


def _symm_mem_all_reduce(group_name: str, max_tokens: int):
    """A function `[T, 2]` fp32 sums -> all-reduced sums through
    torch.ops.symm_mem.one_shot_all_reduce, or (None, why)."""
    try:
        import torch.distributed._symmetric_memory as symm_mem
        if hasattr(symm_mem, "enable_symm_mem_for_group"):  # needed before torch 2.9, deprecated since
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    symm_mem.enable_symm_mem_for_group(group_name)
                except Exception:
                    pass
        buf = symm_mem.empty((max_tokens, 2), dtype=torch.float32, device=torch.device("cuda"))
        symm_mem.rendezvous(buf, group_name)

        def reduce(sums_fn, T):
            sums_fn(buf[:T])
            return torch.ops.symm_mem.one_shot_all_reduce(buf[:T], "sum", group_name)
        # one trial call
        x = torch.ones(4, 2, device="cuda")
        out = reduce(lambda b: b.copy_(x), 4)
        torch.cuda.synchronize()
        if not torch.allclose(out, x * dist.get_world_size()):
            return None, "symm_mem one-shot gave a wrong sum"
        return reduce, ""
    except Exception as e:  # not built in, no P2P, ...
        return None, f"symm_mem unavailable: {type(e).__name__}: {str(e)[:160]}"


def measure(rank: int, world: int, quick: bool = False) -> tuple[list[Row], list[str]]:
    """Rows of this rank (every rank runs the same timings in the same order)."""
    import minimax_rocm as mm
    from ..parallel import LamportWorkspace
    from ..ops import _common
    from ..triton import dependent_launch
    from ..triton import rms_norm as tri
    from .harness import time_us, time_us_behind_plain_kernel

    dev = torch.device("cuda", torch.cuda.current_device())
    name = dist.group.WORLD.group_name
    tokens = (1, 128, 1024) if quick else TOKENS
    notes: list[str] = []
    ws = LamportWorkspace(max_tokens=max(tokens), timeout_s=60.0)
    symm, why = _symm_mem_all_reduce(name, max(tokens))
    if not _agree(symm is not None):
        symm = None
        notes.append(why or "symm_mem failed on a peer")
    qw = (torch.rand(Q, device=dev) + 0.5).to(torch.bfloat16)
    kw = (torch.rand(KV, device=dev) + 0.5).to(torch.bfloat16)
    rows = []
    try:
        for T in tokens:
            qkv = torch.randn(T, Q + 2 * KV, device=dev).to(torch.bfloat16)
            sums = torch.empty(T, 2, dtype=torch.float32, device=dev)
            case = f"T={T} q={Q} k={KV} TP{world}"
            nbytes = 2 * T * (Q + KV) * 2 + (Q + KV) * 2

            def nccl_path():
                tri.sum_squares(qkv, Q, KV, out=sums)
                dist.all_reduce(sums)
                tri.rms_scale(qkv, sums, qw, kw, Q, KV, Q * world, KV * world, EPS)

            def nccl_only():
                dist.all_reduce(sums)

            def fused():
                mm.allreduce_rms_qk(qkv, qw, kw, EPS, name)

            dist.barrier()
            rows.append(Row(OP, case, "NCCL path: triton sumsq + NCCL AR [T,2] + triton norm",
                            time_us(nccl_path, replays=REPLAYS), nbytes, baseline=True))
            dist.barrier()
            rows.append(Row(OP, case, "NCCL all-reduce [T,2] alone", time_us(nccl_only, replays=REPLAYS), T * 8,
                            note="part of the NCCL path"))
            if symm is not None:
                def symm_path():
                    s = symm(lambda b: tri.sum_squares(qkv, Q, KV, out=b), T)
                    tri.rms_scale(qkv, s, qw, kw, Q, KV, Q * world, KV * world, EPS)
                dist.barrier()
                rows.append(Row(OP, case, "symm-mem path: sumsq + one_shot_all_reduce + norm",
                                time_us(symm_path, replays=REPLAYS),
                                nbytes))
            dist.barrier()
            fused()
            backend = _common.LAST_BACKEND[OP]
            pdl = dependent_launch.enabled(dev, triton_kernel=False)
            rows.append(Row(OP, case, f"ours ({backend}: one-shot Lamport, fused{', PDL' if pdl else ''})",
                            time_us(fused, replays=REPLAYS), nbytes))
            if pdl:
                # what PDL is worth: the same calls launched plainly, and
                # (as after a GEMM that does not signal early) each call
                # behind a plain one-element kernel, that kernel's time taken off
                dist.barrier()
                with dependent_launch.forced(False):
                    rows.append(Row(OP, case, "ours without PDL", time_us(fused, replays=REPLAYS), nbytes))

                us, note = time_us_behind_plain_kernel(fused, dev, between=dist.barrier, replays=REPLAYS)
                rows.append(Row(OP, case, "ours (PDL) behind a plain kernel", us, nbytes, note=note))
    finally:
        torch.cuda.synchronize()
        ws.close()
    return rows, notes


def _rank_main(rank: int, world: int, init_method: str, quick: bool, out_path: str, print_table: bool) -> None:
    os.environ.update(ENV)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=init_method, rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank), timeout=datetime.timedelta(seconds=180))
    try:
        from ..native import ext
        if ext.load() is None:
            raise RuntimeError(f"native extension not available: {ext.load_error()}")
        rows, notes = measure(rank, world, quick)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(dict(rows=[r.as_dict() for r in rows], notes=notes), f)
        if print_table:
            from . import harness
            rows = harness.finish(rows)
            print(harness.env_summary())
            if notes:
                print("notes:", "; ".join(notes))
            print(harness.format_table(rows), flush=True)
            with open(out_path, "w") as f:
                json.dump(dict(env=harness.env_summary(), rows=[r.as_dict() for r in rows], notes=notes), f,
                          indent=1)
    end_spawned_worker()


def spawn(quick: bool = False, print_table: bool = False, out_path: str = "") -> list[Row]:
    """Run the two ranks; rank 0's rows (not yet `finish`ed unless printed)."""
    import torch.multiprocessing as mp
    os.environ.update(ENV)
    os.environ.setdefault("MINIMAX_ROCM_JIT", "1")
    tmp = None
    if not out_path:
        tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
        tmp.close()
        out_path = tmp.name
    try:
        mp.spawn(_rank_main, args=(WORLD, local_init_method(), quick, out_path, print_table), nprocs=WORLD, join=True)
        with open(out_path) as f:
            data = json.load(f)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    for n in data.get("notes", []):
        print(f"bench {OP}: {n}")
    return [Row(**r) for r in data["rows"]]


@register_bench(OP)
def bench(ctx: Context) -> list[Row]:
    n = torch.cuda.device_count() if ctx.gpu else 0
    if n < WORLD:
        print(f"bench {OP}: needs {WORLD} GPUs (the exchange is across ranks), found {n}: no rows")
        return []
    return spawn(quick=ctx.quick)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="", help="also write rank 0's rows here")
    a = ap.parse_args(argv)
    if torch.cuda.device_count() < WORLD:
        print(f"{OP} bench: needs {WORLD} GPUs, found {torch.cuda.device_count()}")
        return 2
    spawn(quick=a.quick, print_table=True, out_path=a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
