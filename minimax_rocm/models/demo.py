"""`python -m minimax_rocm demo [--ep N --tp N]`: MiniMax-shaped steps on a
reduced config, checked against the unsharded float64 reference.

One demo, two modes, one configuration, tolerance table and report:

  in-process (`demo`): every EP and TP rank simulated in this process, op by
    op: the router GEMM, the sparse-local MoE of each of SIM_EP ranks summed
    as the EP combine would, topk_reduce, SwiGLU-OAI, the M2 QK norm against
    the reference over SIM_TP shards, and an MXFP8 round trip of an expert.
  multi-process (`demo --ep N --tp N`): max(ep, tp) ranks spawned (NCCL/RCCL
    with one GPU each where enough GPUs are present, else gloo on the CPU),
    each reading its own weights from small safetensors checkpoints written
    for the run (its EP experts, its TP slices of the q/k norm weights), then
    running the M3 MoE block (router -> biased sigmoid top-k x 2.0 -> local
    SwiGLU-OAI experts + its slice of the shared expert -> EP combine), the M2
    MoE block, the M2 QK norm over the TP group (the fused Lamport kernel
    where the native extension is there) and the M3 per-head QK norm.

Printed per op: the backend that ran (minimax_rocm.ops._common.LAST_BACKEND),
the relative error against float64 (the worst rank's) and the time (the
slowest rank's).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable, Optional

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

# The layout the in-process mode simulates.
SIM_EP, SIM_TP = 4, 2

# Against float64 with bf16 weights and activations: bf16 rounding of the
# outputs and intermediates (2^-8 relative), fp8's 2^-4 for the MXFP8 round
# trip; fp32 logits from bf16 inputs.
TOL = {
    "router_gemm": 1e-5,
    "fused_moe M3 (EP combine)": 2e-2,          # in-process
    "topk_reduce": 1e-2,                        # in-process
    "swiglu_oai": 1e-2,                         # in-process
    "allreduce_rms_qk M2 (TP)": 1e-2,
    "mxfp8_quant+dequant": 7e-2,                # in-process
    "fused_moe (local routes)": 2e-2,           # multi-process
    "MoE block M3 (EP combine)": 2e-2,          # multi-process
    "MoE block M2 (EP combine)": 2e-2,          # multi-process
    "QK norm M3 per-head (TP)": 1e-2,           # multi-process
}
IN_PROCESS_ROWS = ("router_gemm", "fused_moe M3 (EP combine)", "topk_reduce", "swiglu_oai",
                   "allreduce_rms_qk M2 (TP)", "mxfp8_quant+dequant")
MULTI_PROCESS_ROWS = ("router_gemm", "fused_moe (local routes)", "MoE block M3 (EP combine)",
                      "MoE block M2 (EP combine)", "allreduce_rms_qk M2 (TP)", "QK norm M3 per-head (TP)")


class DemoResult(dict):
    """op -> passed; true only when every op passed. `.rows` holds the details."""
    rows: list

    def __bool__(self) -> bool:
        return len(self) > 0 and all(self.values())


# --------------------------------------------------------------------------- #
# shared by both modes
# --------------------------------------------------------------------------- #


def _timed(fn: Callable[[], object], dev: torch.device, n: int = 5):
    out = fn()                                   # warm-up: compiles, extension loads
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, (time.perf_counter() - t0) * 1e6 / n


def _last_backend(op: str) -> str:
    from ..ops import _common
    return _common.LAST_BACKEND.get(op, "?")


def _result(rows: dict[str, dict]) -> DemoResult:
    """rows: op -> dict(backend, err, us), in the mode's row order."""
    res = DemoResult()
    res.rows = []
    for name, r in rows.items():
        ok = r["err"] <= TOL[name]
        res[name] = ok
        res.rows.append(dict(op=name, backend=r["backend"], err=r["err"], tol=TOL[name], us=r["us"], ok=ok))
    return res


def _report(res: DemoResult, how: str, ep: int, tp: int, tokens: int, seed: int, wall: float,
            notes=()) -> None:
    print(f"minimax-rocm demo: {how}, EP{ep} x TP{tp}, {tokens} tokens; "
          f"MoE: {DEMO_M3.num_local_experts} experts top-{DEMO_M3.top_k}, hidden {DEMO_M3.hidden_size}; "
          f"QK norm: q {DEMO_M2.q_size} / kv {DEMO_M2.kv_size} (seed {seed}, {wall:.1f} s)")
    for line in notes:
        print(f"note: {line}")
    print(f"{'op':<28}{'backend':<44}{'rel err':>10}{'tol':>9}{'us':>11}  ok")
    for r in res.rows:
        print(f"{r['op']:<28}{r['backend'][:43]:<44}{r['err']:>10.2e}{r['tol']:>9.0e}{r['us']:>11.1f}  "
              f"{'yes' if r['ok'] else 'NO'}")
    print("demo: PASS" if res else "demo: FAIL")


def _check_layout(ep: int, tp: int) -> None:
    """Usage errors, raised before anything runs (the CLI reports them as such)."""
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


def run_demo(ep: int = 1, tp: int = 1, device: Optional[str] = None, tokens: int = 64, verbose: bool = True,
             seed: Optional[int] = None) -> DemoResult:
    """The demo: in-process (every rank of EP SIM_EP x TP SIM_TP simulated)
    when ep == tp == 1, else max(ep, tp) ranks as processes (EP groups of ep
    consecutive ranks, TP groups of tp). Returns a DemoResult (op -> passed;
    truthy only when all passed)."""
    _check_layout(ep, tp)
    seed = int(time.time() * 1000) % (1 << 30) if seed is None else seed
    if ep == tp == 1:
        return _run_in_process(device, tokens, seed, verbose)
    return _run_processes(ep, tp, device, tokens, seed, verbose)


# --------------------------------------------------------------------------- #
# in-process mode: every rank simulated, op by op
# --------------------------------------------------------------------------- #


def _in_process_rows(dev: torch.device, tokens: int, seed: int) -> dict[str, dict]:
    from .. import ops, reference
    from ..parallel import expert_map, local_expert_range

    cfg, qcfg = DEMO_M3, DEMO_M2
    g = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale)  # noqa: E731
    H, E, I, k = cfg.hidden_size, cfg.num_experts, cfg.intermediate_size, cfg.top_k
    bf = torch.bfloat16
    rows: dict[str, dict] = {}

    def row(name, op, out, ref, us):
        rows[name] = dict(backend=_last_backend(op), err=reference.rel_error(out, ref), us=us)

    x = rnd(tokens, H).to(bf)
    gate_w = rnd(E, H, scale=H ** -0.5)
    bias = rnd(E, scale=0.1)
    w13 = rnd(E, 2 * I, H, scale=H ** -0.5).to(bf)
    w2 = rnd(E, H, I, scale=I ** -0.5).to(bf)
    xd, gd = x.to(dev), gate_w.to(dev)

    # router: fp32 logits from bf16 activations
    logits, us = _timed(lambda: ops.router_gemm(xd, gd), dev)
    ref_logits = reference.router_gemm(x.double(), gate_w.double())
    row("router_gemm", "router_gemm", logits, ref_logits, us)

    # MiniMax routing on the reference logits, so the kernels below see the
    # reference's routes (no near-tie can send a token elsewhere)
    weights, ids = reference.minimax_route(ref_logits, bias.double(), k,
                                           routed_scaling_factor=cfg.routed_scaling_factor)
    weights = weights.float()

    # the sparse-local MoE on every simulated EP rank, then the combine (a sum)
    def moe_all_ranks():
        total = torch.zeros(tokens, H, dtype=torch.float32, device=dev)
        for r in range(SIM_EP):
            lo, hi = local_expert_range(E, SIM_EP, r)
            part = ops.fused_moe(xd, w13[lo:hi].to(dev), w2[lo:hi].to(dev), weights.to(dev), ids.to(dev),
                                 expert_map(E, SIM_EP, r, device=dev), activation=cfg.activation,
                                 layout=cfg.gate_up_layout)
            total += part.float()
        return total
    moe, us = _timed(moe_all_ranks, dev)
    ref_moe = reference.fused_moe(x.double(), w13.double(), w2.double(), weights.double(), ids, None,
                                  cfg.activation, cfg.gate_up_layout)
    row("fused_moe M3 (EP combine)", "fused_moe", moe, ref_moe, us)

    # topk_reduce on [T, k, H] route rows
    routes = rnd(tokens, k, H).to(bf)
    red, us = _timed(lambda: ops.topk_reduce(routes.to(dev), weights.to(dev)), dev)
    row("topk_reduce", "topk_reduce", red, reference.topk_reduce(routes.double(), weights.double()), us)

    # SwiGLU-OAI on a GEMM1-shaped output (values past the clamp limit included)
    h1 = rnd(tokens, 2 * I, scale=4.0).to(bf)
    act, us = _timed(lambda: ops.swiglu_oai(h1.to(dev)), dev)
    row("swiglu_oai", "swiglu_oai", act, reference.swiglu_oai(h1.double()), us)

    # M2 QK norm: the op over the full width equals the reference over TP shards
    q, kv, eps = qcfg.q_size, qcfg.kv_size, qcfg.rms_norm_eps
    qkv = rnd(tokens, q + 2 * kv).to(bf)
    qw, kw = (1 + 0.1 * rnd(q)), (1 + 0.1 * rnd(kv))
    qs, ks = q // SIM_TP, kv // SIM_TP
    shards = [torch.cat([qkv[:, r * qs:(r + 1) * qs], qkv[:, q + r * ks:q + (r + 1) * ks],
                         qkv[:, q + kv + r * ks:q + kv + (r + 1) * ks]], 1) for r in range(SIM_TP)]
    ref_sh = reference.qk_norm_tp([s.double() for s in shards],
                                  [qw[r * qs:(r + 1) * qs].double() for r in range(SIM_TP)],
                                  [kw[r * ks:(r + 1) * ks].double() for r in range(SIM_TP)], eps)
    ref_qk = torch.cat([torch.cat([s[:, :qs] for s in ref_sh], 1), torch.cat([s[:, qs:qs + ks] for s in ref_sh], 1)],
                       1)
    qkvd, qwd, kwd = qkv.to(dev), qw.to(dev), kw.to(dev)
    out, us = _timed(lambda: ops.allreduce_rms_qk(qkvd.clone(), qwd, kwd, eps), dev)
    row("allreduce_rms_qk M2 (TP)", "allreduce_rms_qk", out[:, :q + kv], ref_qk, us)

    # MXFP8 round trip of an expert's weights (the platform's fp8 flavour)
    wq = w13[0].float().to(dev)
    (qv, sc), us = _timed(lambda: ops.mxfp8_quant(wq), dev)
    row("mxfp8_quant+dequant", "mxfp8_quant", ops.mxfp8_dequant(qv, sc, torch.float32), w13[0].double(), us)
    return rows


def _run_in_process(device: Optional[str], tokens: int, seed: int, verbose: bool) -> DemoResult:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    res = _result(_in_process_rows(dev, tokens, seed))
    if verbose:
        _report(res, f"one process on {dev}, every rank simulated", SIM_EP, SIM_TP, tokens, seed,
                time.perf_counter() - t0)
    return res


# --------------------------------------------------------------------------- #
# multi-process mode: one process per rank
# --------------------------------------------------------------------------- #


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
    from .attention import QKNorm, qk_norm_reference, qkv_columns
    from .moe import MoEBlock, moe_reference

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if use_cuda:
        torch.cuda.set_device(rank)
        from ..native import ext
        ext.available()          # loads (or JIT-builds, file-locked) before any collective can time out
    dev = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")   # NVLink multicast off, as bench.allreduce_rms_qk's ENV
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
                    _last_backend("router_gemm"))
                tw, ids = blk.route(xd)
                emap = expert_map(cfg.num_local_experts, ep, ep_rank)
                part, us = _timed(lambda: ops.fused_moe(xd, w.w13, w.w2, tw, ids, blk.expert_map,
                                                        activation=cfg.activation, layout=cfg.gate_up_layout), dev)
                rtw, rids = reference.minimax_route(reference.router_gemm(x.double(), wf.gate.double()),
                                                    wf.e_score_correction_bias.double(), cfg.top_k, True,
                                                    cfg.routed_scaling_factor)
                ref_part = reference.fused_moe(x.double(), w.w13.cpu().double(), w.w2.cpu().double(), rtw, rids,
                                               emap, cfg.activation, cfg.gate_up_layout)
                row("fused_moe (local routes)", part, ref_part, us, _last_backend("fused_moe"))
            out, us = _timed(lambda: blk(xd), dev)
            row(f"MoE block {label} (EP combine)", out, moe_reference(cfg, wf, x), us,
                f"{_last_backend('fused_moe')} + {'nccl' if use_cuda else 'gloo'} all-reduce")

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
                backend = _last_backend("allreduce_rms_qk") if cfg.qk_norm == "full" else \
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


def _run_processes(ep: int, tp: int, device: Optional[str], tokens: int, seed: int, verbose: bool) -> DemoResult:
    import torch.multiprocessing as mp

    from ..parallel.weights import random_checkpoint_tensors, save_checkpoint

    world = max(ep, tp)
    ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in (None, "auto"):
        use_cuda = ngpu >= world
    elif str(device).startswith("cuda"):
        if ngpu < world:
            print(f"demo --ep {ep} --tp {tp}: {world} ranks need {world} GPUs; found {ngpu} "
                  f"(run with --device cpu for gloo on the CPU)")
            res = DemoResult(launch=False)
            res.rows = []
            return res
        use_cuda = True
    elif device == "cpu":
        use_cuda = False
    else:
        raise ValueError(f"run_demo: device {device!r}: expected cpu, cuda or None")
    with tempfile.TemporaryDirectory(prefix="minimax_rocm_demo_") as tmp:
        ckpts = {}
        for i, cfg in enumerate((DEMO_M2, DEMO_M3)):
            t = random_checkpoint_tensors(cfg, torch.Generator().manual_seed(seed + 10 + i))
            ckpts[cfg.name] = save_checkpoint(t, os.path.join(tmp, cfg.name), cfg, shards=2)
        out_path = os.path.join(tmp, "result.json")
        t0 = time.perf_counter()
        mp.spawn(_worker, args=(world, ep, tp, local_init_method(), ckpts, out_path, use_cuda, tokens, seed),
                 nprocs=world, join=True)
        wall = time.perf_counter() - t0
        with open(out_path) as f:
            per_rank = json.load(f)
    # the worst rank's error, the slowest rank's time, rank 0's backend
    rows = {name: dict(backend=per_rank[0]["rows"][name]["backend"],
                       err=max(r["rows"][name]["err"] for r in per_rank),
                       us=max(r["rows"][name]["us"] for r in per_rank))
            for name in MULTI_PROCESS_ROWS}
    res = _result(rows)
    if verbose:
        how = f"{world} ranks as processes ({'NCCL, one GPU per rank' if use_cuda else 'gloo on the CPU'})"
        _report(res, how, ep, tp, tokens, seed, wall, sorted({ln for r in per_rank for ln in r["log"]}))
    return res
