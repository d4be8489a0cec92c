"""`python -m minimax_rocm demo --ep N --tp N`: the MiniMax blocks run sharded
across processes, checked against the single-process unsharded reference.

max(ep, tp) processes are spawned: NCCL/RCCL with one GPU each where enough
GPUs are present, else gloo on the CPU. Each rank writes nothing but reads its
own weights from small safetensors checkpoints written for the run (its EP
experts, its TP slices of the q/k norm weights), then runs:

  - the M3-shaped MoE block (router -> biased sigmoid top-k x 2.0 -> its local
    SwiGLU-OAI experts + its slice of the shared expert -> EP combine);
  - the M2-shaped MoE block (silu experts, no shared expert);
  - the M2 QK norm over the TP group (full-width RMSNorm: all-reduced sums of
    squares; the fused Lamport kernel where the native extension is there);
  - the M3 per-head Gemma QK norm on its TP shard (no all-reduce).

Printed per op: the backend that ran (minimax_rocm.ops._common.LAST_BACKEND),
the worst relative error over the ranks against float64, and the slowest
rank's time.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Optional

import torch

from ..parallel import end_spawned_worker, local_init_method
from .config import MiniMaxConfig, preset

# The demo's shapes: the tiny presets, widened so TP8 and EP8 split evenly and
# the Lamport kernel's 16-byte rows hold at every TP size (q 256, kv 128).
DEMO_M3 = preset("tiny-m3").with_(name="demo-m3", hidden_size=256, num_hidden_layers=1, mlp_layer_types=("sparse",),
                                  num_attention_heads=16, num_key_value_heads=8, head_dim=16, num_local_experts=16,
                                  num_experts_per_tok=4, intermediate_size=128, shared_intermediate_size=128)
DEMO_M2 = preset("tiny-m2").with_(name="demo-m2", hidden_size=256, num_hidden_layers=1, num_attention_heads=16,
                                  num_key_value_heads=8, head_dim=16, num_local_experts=16, num_experts_per_tok=4,
                                  intermediate_size=128)

# Against float64 with bf16 weights and activations: bf16 rounding of the
# outputs and intermediates (2^-8 relative); fp32 logits from bf16 inputs.
TOL = {"router_gemm": 1e-5, "fused_moe (local routes)": 2e-2, "MoE block M3 (EP combine)": 2e-2,
       "MoE block M2 (EP combine)": 2e-2, "allreduce_rms_qk M2 (TP)": 1e-2, "QK norm M3 per-head (TP)": 1e-2}


class DemoResult(dict):
    """op -> passed; true only when every op passed. `.rows` holds the details."""
    rows: list

    def __bool__(self) -> bool:
        return len(self) > 0 and all(self.values())


def _timed(fn, dev: torch.device, n: int = 5):
    out = fn()                                   # warm-up: compiles, extension loads
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, (time.perf_counter() - t0) * 1e6 / n


def _groups(world: int, size: int):
    """The groups of `size` consecutive ranks; every rank creates all of them
    (new_group is collective). Returns (group of this rank, its rank in it)."""
    import torch.distributed as dist
    rank = dist.get_rank()
    if size == world:
        return dist.group.WORLD, rank
    mine = None
    for g in range(world // size):
        pg = dist.new_group(list(range(g * size, (g + 1) * size)))
        if g == rank // size:
            mine = pg
    return mine, rank % size


def _inputs(cfg: MiniMaxConfig, moe_w, tokens: int, seed: int) -> torch.Tensor:
    """bf16 hidden states with a clear routing margin (identical on every rank)."""
    from .moe import route_margin
    g = torch.Generator().manual_seed(seed)
    for _ in range(100):
        x = torch.randn(tokens, cfg.hidden_size, generator=g).to(torch.bfloat16)
        if route_margin(cfg, moe_w, x) > 1e-4:
            return x
    return x


def _open_lamport(group, dev: torch.device, log: list):
    """A Lamport workspace for the TP group where the native extension is
    available (prebuilt, or MINIMAX_ROCM_JIT=1); None otherwise."""
    import torch.distributed as dist
    from ..native import ext
    from ..parallel.lamport import SUPPORTED_WORLD_SIZES, LamportWorkspace
    if dev.type != "cuda" or dist.get_world_size(group) not in SUPPORTED_WORLD_SIZES:
        return None
    ok = torch.tensor([1 if ext.available() else 0], device=dev)   # loaded before the group was made
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)   # every rank takes the same decision
    if not int(ok.item()):
        log.append(f"native extension not loaded ({ext.load_error() or 'not prebuilt; MINIMAX_ROCM_JIT=1 builds it'}):"
                   " the QK norm takes the Triton + NCCL path")
        return None
    return LamportWorkspace(group, max_tokens=1024, device=dev)


def _worker(rank: int, world: int, ep: int, tp: int, init_method: str, ckpts: dict, out_path: str, use_cuda: bool,
            tokens: int, seed: int) -> None:
    import torch.distributed as dist

    from .. import ops, reference
    from ..parallel.expert_map import expert_map
    from ..parallel.weights import ParallelLayout, load_stage
    from ..ops import _common
    from .attention import QKNorm, qk_norm_reference, qkv_columns
    from .moe import MoEBlock, moe_reference

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if use_cuda:
        torch.cuda.set_device(rank)
        from ..native import ext
        ext.available()          # loads (or JIT-builds, file-locked) before any collective can time out
    dev = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")   # NVLink multicast stays off on the lent machines
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank,
                            world_size=world)
    rows, log = {}, []
    try:
        ep_group, ep_rank = _groups(world, ep)
        tp_group, tp_rank = _groups(world, tp)
        ep_name, tp_name = ep_group.group_name, tp_group.group_name
        bf = torch.bfloat16

        def row(name, out, ref, us, backend):
            rows[name] = dict(backend=backend, err=reference.rel_error(out, ref), us=us)

        # ---- MoE blocks (M3 then M2) over the EP group
        for cfg, label in ((DEMO_M3, "M3"), (DEMO_M2, "M2")):
            mine = load_stage(ckpts[cfg.name], cfg, ParallelLayout(ep_size=ep, ep_rank=ep_rank), dtype=bf, device=dev)
            full = load_stage(ckpts[cfg.name], cfg)                       # CPU, for the reference
            w, wf = mine.layers[0].moe, full.layers[0].moe
            x = _inputs(cfg, wf, tokens, seed)
            blk = MoEBlock(cfg, w, ep, ep_rank, ep_name)
            xd = x.to(dev)
            if label == "M3":
                logits, us = _timed(lambda: ops.router_gemm(xd, w.gate), dev)
                row("router_gemm", logits, reference.router_gemm(x.double(), wf.gate.double()), us,
                    _common.LAST_BACKEND.get("router_gemm", "?"))
                tw, ids = blk.route(xd)
                emap = expert_map(cfg.num_local_experts, ep, ep_rank)
                part, us = _timed(lambda: ops.fused_moe(xd, w.w13, w.w2, tw, ids, blk.expert_map,
                                                        activation=cfg.activation, layout=cfg.gate_up_layout), dev)
                rtw, rids = reference.minimax_route(reference.router_gemm(x.double(), wf.gate.double()),
                                                    wf.e_score_correction_bias.double(), cfg.top_k, True,
                                                    cfg.routed_scaling_factor)
                ref_part = reference.fused_moe(x.double(), w.w13.cpu().double(), w.w2.cpu().double(), rtw, rids,
                                               emap, cfg.activation, cfg.gate_up_layout)
                row("fused_moe (local routes)", part, ref_part, us, _common.LAST_BACKEND.get("fused_moe", "?"))
            out, us = _timed(lambda: blk(xd), dev)
            row(f"MoE block {label} (EP combine)", out, moe_reference(cfg, wf, x), us,
                f"{_common.LAST_BACKEND.get('fused_moe', '?')} + {'nccl' if use_cuda else 'gloo'} all-reduce")

        # ---- QK norms over the TP group
        ws = _open_lamport(tp_group, dev, log)
        try:
            for cfg, label in ((DEMO_M2, "allreduce_rms_qk M2 (TP)"), (DEMO_M3, "QK norm M3 per-head (TP)")):
                st = load_stage(ckpts[cfg.name], cfg, ParallelLayout(tp_size=tp, tp_rank=tp_rank), device=dev)
                full = load_stage(ckpts[cfg.name], cfg).layers[0]
                lw = st.layers[0]
                g = torch.Generator().manual_seed(seed + 1)
                qkv_full = (torch.randn(tokens, cfg.q_size + 2 * cfg.kv_size, generator=g)
                            * (torch.rand(tokens, 1, generator=g) * 3 + 0.1)).to(bf)
                cols = qkv_columns(cfg, tp, tp_rank)
                shard = torch.cat([qkv_full[:, a:b] for a, b in cols], 1).contiguous().to(dev)
                norm = QKNorm(cfg, lw.q_norm, lw.k_norm, tp, tp_rank, tp_name)
                out, us = _timed(lambda: norm(shard.clone()), dev)
                ref = qk_norm_reference(cfg, qkv_full, full.q_norm, full.k_norm)
                ref_shard = torch.cat([ref[:, a:b] for a, b in cols], 1)
                backend = _common.LAST_BACKEND.get("allreduce_rms_qk", "?") if cfg.qk_norm == "full" else \
                    "torch (per-head Gemma RMSNorm, no all-reduce)"
                row(label, out, ref_shard, us, backend)
        finally:
            if ws is not None:
                ws.close()
        gathered = [None] * world
        dist.all_gather_object(gathered, dict(rows=rows, log=log))
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(gathered, f)
        # every rank past its last collective before any tears its group down
        # (as the other spawned workers end)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    end_spawned_worker()


def run_demo(ep: int = 2, tp: int = 2, device: Optional[str] = None, tokens: int = 32, verbose: bool = True
             ) -> DemoResult:
    """Spawn max(ep, tp) ranks (EP groups of ep consecutive ranks, TP groups of
    tp), run the blocks, compare with the unsharded float64 reference. Returns
    a DemoResult (op -> passed; truthy only when all passed)."""
    import torch.multiprocessing as mp

    from ..parallel.weights import random_checkpoint_tensors, save_checkpoint

    res = DemoResult()
    res.rows = []
    if ep < 1 or tp < 1:
        raise ValueError(f"run_demo: ep {ep} and tp {tp} must be >= 1")
    world = max(ep, tp)
    if world % ep or world % tp:
        raise ValueError(f"run_demo: ep {ep} and tp {tp}: the smaller must divide the larger")
    for cfg in (DEMO_M2, DEMO_M3):
        if cfg.num_key_value_heads % tp or cfg.num_attention_heads % tp:
            raise ValueError(f"run_demo: TP{tp} does not split the demo's {cfg.num_attention_heads} q / "
                             f"{cfg.num_key_value_heads} kv heads (use 1, 2, 4 or 8)")
        if cfg.num_local_experts < ep:
            raise ValueError(f"run_demo: EP{ep} exceeds the demo's {cfg.num_local_experts} experts")
    ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in (None, "auto"):
        use_cuda = ngpu >= world
    elif str(device).startswith("cuda"):
        if ngpu < world:
            print(f"demo --ep {ep} --tp {tp}: {world} ranks need {world} GPUs; found {ngpu} "
                  f"(run with --device cpu for gloo on the CPU)")
            res["launch"] = False
            return res
        use_cuda = True
    elif device == "cpu":
        use_cuda = False
    else:
        raise ValueError(f"run_demo: device {device!r}: expected cpu, cuda or None")
    seed = int(time.time() * 1000) % (1 << 30)
    with tempfile.TemporaryDirectory(prefix="minimax_rocm_demo_") as tmp:
        ckpts = {}
        for i, cfg in enumerate((DEMO_M2, DEMO_M3)):
            t = random_checkpoint_tensors(cfg, torch.Generator().manual_seed(seed + 10 + i))
            ckpts[cfg.name] = save_checkpoint(t, os.path.join(tmp, cfg.name), cfg, shards=2)
        out_path = os.path.join(tmp, "result.json")
        t0 = time.perf_counter()
        mp.spawn(_worker, args=(world, ep, tp, local_init_method(), ckpts, out_path, use_cuda, tokens, seed), nprocs=world,
                 join=True)
        wall = time.perf_counter() - t0
        with open(out_path) as f:
            per_rank = json.load(f)
    for name, tol in TOL.items():
        rs = [r["rows"][name] for r in per_rank]
        err, us = max(r["err"] for r in rs), max(r["us"] for r in rs)
        backend = rs[0]["backend"]
        ok = err <= tol
        res[name] = ok
        res.rows.append(dict(op=name, backend=backend, err=err, tol=tol, us=us, ok=ok))
    if verbose:
        how = "NCCL, one GPU per rank" if use_cuda else "gloo on the CPU"
        print(f"minimax-rocm multi-process demo: {world} ranks ({how}), EP{ep} x TP{tp}, {tokens} tokens; "
              f"MoE: {DEMO_M3.num_local_experts} experts top-{DEMO_M3.top_k}, hidden {DEMO_M3.hidden_size}; "
              f"QK norm: q {DEMO_M2.q_size} / kv {DEMO_M2.kv_size} (seed {seed}, {wall:.1f} s)")
        for line in sorted({ln for r in per_rank for ln in r["log"]}):
            print(f"note: {line}")
        print(f"{'op':<28}{'backend':<44}{'max rel err':>12}{'tol':>9}{'max us':>11}  ok")
        for r in res.rows:
            print(f"{r['op']:<28}{r['backend'][:43]:<44}{r['err']:>12.2e}{r['tol']:>9.0e}{r['us']:>11.1f}  "
                  f"{'yes' if r['ok'] else 'NO'}")
        print("demo: PASS" if res else "demo: FAIL")
    return res
