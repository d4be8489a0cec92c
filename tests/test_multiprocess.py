"""The MiniMax blocks across processes, each rank loading its own weights from
a real safetensors checkpoint: TP2 QK norm, EP2 and EP4 MoE, PP2 over a
two-layer model, PP2 x EP2; outputs equal the single-process float64
reference (and, for EP, the single-process block).

CPU: gloo, the ops' torch backends (one spawn per world size runs several
checks; each check is its own test). Two GPUs (`pytest -m multigpu
tests/test_multiprocess.py`): NCCL and the GPU kernels, plus the fused Lamport
QK norm where the native extension is available.

Each rank runs every check in the same order and records a traceback instead
of raising, so one failing check neither hangs the others nor hides them; a
lost peer surfaces as the process group's timeout.
"""
import datetime
import json
import os
import traceback

import pytest
import torch

from minimax_rocm.parallel import end_spawned_worker, local_init_method
import torch.distributed as dist

from minimax_rocm.models.config import preset

# Shapes of the checks: big enough for the GPU kernels' tiles and the Lamport
# kernel's 16-byte rows at TP2, small enough for a CPU.
# mp-m2: 10 experts top-3 (EP4: 3, 3, 2, 2), q 128 / kv 64; mp-m3: 8 experts top-2, q 128 / kv 32,
# layer 0 dense and layer 1 MoE.
MP_M2 = preset("tiny-m2").with_(name="mp-m2", hidden_size=128, intermediate_size=64, head_dim=16)
MP_M3 = preset("tiny-m3").with_(name="mp-m3", hidden_size=128, intermediate_size=64, shared_intermediate_size=64,
                                dense_intermediate_size=96)
TOKENS = 24
ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
QK_TOL = 4e-3       # bf16 outputs (2^-9 relative rounding); a local-width norm is off by > 1e-2


# --------------------------------------------------------------------------- #
# checks (run on every rank)
# --------------------------------------------------------------------------- #


class Ctx:
    def __init__(self, rank, world, dev, ckpts, seed):
        self.rank, self.world, self.dev, self.ckpts, self.seed = rank, world, dev, ckpts, seed
        self.gpu = dev.type == "cuda"
        # CPU: fp32 weights and activations for tight tolerances; GPU: bf16 (the kernels' dtype).
        self.dtype = torch.bfloat16 if self.gpu else torch.float32
        self.moe_tol = 2e-2 if self.gpu else 1e-5
        self.info = {}


def _x(cfg, moe_w, dtype, seed, router_input=None, margin=1e-4):
    """Identical on every rank; a clear routing margin at the router's input
    (`router_input(x)`, float64; x itself by default), so that the kernels'
    rounding cannot flip a route against the float64 reference."""
    from minimax_rocm.models.moe import route_margin
    g = torch.Generator().manual_seed(seed)
    for _ in range(400):
        x = torch.randn(TOKENS, cfg.hidden_size, generator=g).to(dtype)
        if route_margin(cfg, moe_w, x if router_input is None else router_input(x)) > margin:
            return x
    raise AssertionError("no input with a clear routing margin")


def _rel(a, b):
    from minimax_rocm import reference as R
    return R.rel_error(a, b)


def _qk(ctx, cfg, tp_group, lamport=False):
    from minimax_rocm import reference as R
    from minimax_rocm.parallel.weights import ParallelLayout, load_stage
    from minimax_rocm.models.attention import QKNorm, qk_norm_reference, shard_qkv
    from minimax_rocm.ops import _common
    tp, r = dist.get_world_size(tp_group), dist.get_rank(tp_group)
    layer = load_stage(ctx.ckpts[cfg.name], cfg, ParallelLayout(tp_size=tp, tp_rank=r), device=ctx.dev).layers[0]
    full = load_stage(ctx.ckpts[cfg.name], cfg).layers[0]
    g = torch.Generator().manual_seed(ctx.seed + 7)
    qkv = (torch.randn(TOKENS, cfg.q_size + 2 * cfg.kv_size, generator=g)
           * (torch.rand(TOKENS, 1, generator=g) * 3 + 0.1)).to(torch.bfloat16)
    qkv[0] = -0.0                                           # a zero row: no NaN
    shard = shard_qkv(cfg, qkv, tp, r)
    norm = QKNorm(cfg, layer.q_norm, layer.k_norm, tp, r, tp_group.group_name)
    out = norm(shard.clone().to(ctx.dev)).cpu()
    backend = _common.LAST_BACKEND.get("allreduce_rms_qk") if cfg.qk_norm == "full" else "per-head"
    ref = shard_qkv(cfg, qk_norm_reference(cfg, qkv, full.q_norm, full.k_norm), tp, r)
    v0 = norm.q_local + norm.kv_local
    err = _rel(out[:, :v0], ref[:, :v0])
    assert err < QK_TOL, f"{cfg.name} TP{tp} rank {r}: rel err {err:.2e} (backend {backend})"
    assert torch.isfinite(out).all() and torch.equal(out[:, v0:], shard[:, v0:]), "v changed or NaN"
    if cfg.qk_norm == "full":
        # The check can fail: normalising over the local width only is far off.
        local = R.rms_norm(shard[:, :norm.q_local].double(), layer.q_norm.cpu().double(), cfg.rms_norm_eps)
        assert _rel(local, ref[:, :norm.q_local]) > 1e-2
    return backend


def check_tp2_qk(ctx):
    b = _qk(ctx, MP_M2, dist.group.WORLD)
    _qk(ctx, MP_M3, dist.group.WORLD)
    ctx.info["qk_backend"] = b
    if ctx.gpu:
        assert b.split()[0] in ("triton", "hip", "aiter"), b


def check_tp2_qk_lamport(ctx):
    """The fused one-shot Lamport kernel (GPU, native extension)."""
    from minimax_rocm.native import ext
    from minimax_rocm.parallel.lamport import LamportWorkspace
    ok = torch.tensor([1 if ext.available() and ext.load() is not None else 0], device=ctx.dev)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)         # every rank takes the same branch
    if not int(ok.item()):
        ctx.info["skip"] = f"native extension not loaded (prebuilt, or MINIMAX_ROCM_JIT=1): {ext.load_error()}"
        return
    with LamportWorkspace(dist.group.WORLD, max_tokens=256, device=ctx.dev):
        b = _qk(ctx, MP_M2, dist.group.WORLD)
    assert b == "hip", f"the Lamport kernel did not run: {b}"


def _moe(ctx, cfg, ep_group, layer):
    from minimax_rocm.parallel.weights import ParallelLayout, load_stage
    from minimax_rocm.models.moe import MoEBlock, moe_reference
    from minimax_rocm.ops import _common
    ep, r = dist.get_world_size(ep_group), dist.get_rank(ep_group)
    mine = load_stage(ctx.ckpts[cfg.name], cfg, ParallelLayout(ep_size=ep, ep_rank=r), dtype=ctx.dtype, device=ctx.dev)
    full = load_stage(ctx.ckpts[cfg.name], cfg, dtype=ctx.dtype)                  # CPU: the references
    full_dev = load_stage(ctx.ckpts[cfg.name], cfg, dtype=ctx.dtype, device=ctx.dev) if ctx.gpu else full
    e0, e1 = mine.expert_range
    assert mine.report.loaded_experts[layer] == tuple(range(e0, e1))
    assert not any(f".experts.{e}." in n for n in mine.report.read for e in range(cfg.num_experts)
                   if not e0 <= e < e1), "a remote expert was read"
    x = _x(cfg, full.layers[layer].moe, ctx.dtype, ctx.seed + layer).to(ctx.dev)
    out = MoEBlock(cfg, mine.layers[layer].moe, ep, r, ep_group.group_name)(x)
    ctx.info["fused_moe"] = _common.LAST_BACKEND.get("fused_moe")
    single = MoEBlock(cfg, full_dev.layers[layer].moe)(x)  # the single-process block, same dtype
    ref = moe_reference(cfg, full.layers[layer].moe, x.cpu())
    err, err_single = _rel(out, ref), _rel(out, single)
    assert err < ctx.moe_tol, f"{cfg.name} EP{ep} rank {r}: rel err {err:.2e} vs float64"
    assert err_single < ctx.moe_tol, f"{cfg.name} EP{ep} rank {r}: rel err {err_single:.2e} vs one process"
    outs = [torch.empty_like(out) for _ in range(ep)]
    dist.all_gather(outs, out.contiguous(), group=ep_group)
    assert all(torch.equal(o, outs[0]) for o in outs), "EP ranks disagree on the combined output"
    if ctx.gpu:
        assert ctx.info["fused_moe"].split("/")[0] in ("triton", "hip", "aiter"), ctx.info["fused_moe"]


def check_ep2_moe(ctx):
    _moe(ctx, MP_M3, dist.group.WORLD, layer=1)             # SwiGLU-OAI, shared expert, scaling 2.0
    _moe(ctx, MP_M2, dist.group.WORLD, layer=0)             # silu, 10 experts: 5 + 5


def check_ep4_moe(ctx):
    _moe(ctx, MP_M2, dist.group.WORLD, layer=1)             # 10 experts over 4 ranks: 3, 3, 2, 2
    _moe(ctx, MP_M3, dist.group.WORLD, layer=1)             # 8 experts: 2 each; shared expert 4 x 16 columns


def _pp(ctx, cfg, pp_rank, stage_ranks, ep_group, ep_size, ep_rank):
    from minimax_rocm.parallel.weights import ParallelLayout, load_stage
    from minimax_rocm.models.moe import Stage, ffn_input_reference, stage_reference
    from minimax_rocm.models.pipeline import pipeline_forward
    pp = len(stage_ranks)
    layout = ParallelLayout(pp_size=pp, pp_rank=pp_rank, ep_size=ep_size, ep_rank=ep_rank)
    sw = load_stage(ctx.ckpts[cfg.name], cfg, layout, dtype=ctx.dtype, device=ctx.dev)
    lo, hi = sw.layer_range
    assert sorted(sw.layers) == list(range(lo, hi))
    assert all(lo <= int(n.split("layers.")[1].split(".")[0]) < hi for n in sw.report.read), "read another stage"
    full = load_stage(ctx.ckpts[cfg.name], cfg, dtype=ctx.dtype)
    moe_layer = next(i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i))
    before = {i: full.layers[i] for i in range(moe_layer)}

    def router_input(x):  # the MoE layer's router sees the layers before it, then its own norm
        return ffn_input_reference(cfg, full.layers[moe_layer], stage_reference(cfg, before, x))

    # On the GPU the stage computes that input in bf16: scores move by up to
    # 3e-3 (bf16-rounded h and norm, float64 otherwise, 1200 draws), so the
    # margin there is 1e-2; fp32 on the CPU keeps 1e-4.
    x = _x(cfg, full.layers[moe_layer].moe, ctx.dtype, ctx.seed + 11, router_input, 1e-2 if ctx.gpu else 1e-4)
    stage = Stage(cfg, sw.layers, ep_size, ep_rank, ep_group.group_name if ep_group is not None else "")
    out = pipeline_forward(stage, x.to(ctx.dev) if pp_rank == 0 else None, stage_ranks, pp_rank, x.shape,
                           ctx.dtype, ctx.dev)
    if pp_rank == pp - 1:
        ref = stage_reference(cfg, full.layers, x)
        err = _rel(out, ref)
        assert err < ctx.moe_tol, f"{cfg.name} PP{pp} EP{ep_size}: rel err {err:.2e}"
    else:
        assert out is None


def check_pp2(ctx):
    # two layers, one per stage: M3's dense layer on stage 0, its MoE layer on stage 1
    _pp(ctx, MP_M3, ctx.rank, [0, 1], None, 1, 0)


def check_pp2_ep2(ctx):
    # 4 ranks = PP2 x EP2 (ParallelLayout.from_world_rank with dp=2): stage s on ranks 2s, 2s + 1
    from minimax_rocm.parallel.weights import ParallelLayout
    lay = ParallelLayout.from_world_rank(ctx.rank, pp=2, dp=2)
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]     # collective: every rank creates both
    _pp(ctx, MP_M2, lay.pp_rank, [lay.dp_rank, 2 + lay.dp_rank], groups[lay.pp_rank], lay.ep_size, lay.ep_rank)


CHECKS = {f.__name__[len("check_"):]: f for f in (check_tp2_qk, check_tp2_qk_lamport, check_ep2_moe, check_ep4_moe,
                                                  check_pp2, check_pp2_ep2)}


def _worker(rank, world, use_cuda, init_method, ckpts, out_dir, seed, checks):
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    torch.set_num_threads(1)
    dev = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        from minimax_rocm.native import ext
        if ext.available():
            ext.load()      # before any collective: a JIT build (file-locked) must not outlast a peer's wait
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=300 if use_cuda else 120))
    results = {}
    try:
        for name in checks:
            ctx = Ctx(rank, world, dev, ckpts, seed)
            try:
                CHECKS[name](ctx)
                results[name] = dict(ok=True, info=ctx.info)
            except Exception:
                results[name] = dict(ok=False, error=traceback.format_exc(), info=ctx.info)
            dist.barrier()
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f, default=str)
        dist.destroy_process_group()
    end_spawned_worker()


def _run(tmp, world, use_cuda, checks):
    import torch.multiprocessing as mp

    from minimax_rocm.parallel.weights import random_checkpoint_tensors, save_checkpoint
    seed = int(torch.randint(0, 1 << 30, ()).item())
    ckpts = {}
    for i, cfg in enumerate((MP_M2, MP_M3)):
        t = random_checkpoint_tensors(cfg, torch.Generator().manual_seed(seed + i), dtype=torch.float32)
        ckpts[cfg.name] = save_checkpoint(t, str(tmp / cfg.name), cfg, shards=2)
    out = tmp / "results"
    out.mkdir()
    mp.spawn(_worker, args=(world, use_cuda, local_init_method(), ckpts, str(out), seed, checks), nprocs=world, join=True)
    per_rank = []
    for r in range(world):
        with open(out / f"rank{r}.json") as f:
            per_rank.append(json.load(f))
    return dict(seed=seed, ranks=per_rank)


def _assert_ok(res, check):
    fails = [f"rank {r}:\n{d[check]['error']}" for r, d in enumerate(res["ranks"]) if not d[check]["ok"]]
    assert not fails, f"seed {res['seed']}\n" + "\n".join(fails)
    skip = res["ranks"][0][check]["info"].get("skip")
    if skip:
        pytest.skip(skip)
    return [d[check]["info"] for d in res["ranks"]]


# --------------------------------------------------------------------------- #
# CPU, gloo
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def gloo2(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gloo2"), 2, False, ["tp2_qk", "ep2_moe", "pp2"])


@pytest.fixture(scope="module")
def gloo4(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gloo4"), 4, False, ["ep4_moe", "pp2_ep2"])


def test_tp2_qk_norm_gloo(gloo2):
    info = _assert_ok(gloo2, "tp2_qk")
    assert info[0]["qk_backend"] == "torch"


def test_ep2_moe_gloo(gloo2):
    _assert_ok(gloo2, "ep2_moe")


def test_pp2_two_layers_gloo(gloo2):
    _assert_ok(gloo2, "pp2")


def test_ep4_moe_gloo(gloo4):
    _assert_ok(gloo4, "ep4_moe")


def test_pp2_x_ep2_gloo(gloo4):
    _assert_ok(gloo4, "pp2_ep2")


# --------------------------------------------------------------------------- #
# two GPUs, NCCL, the GPU kernels
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def nccl2(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("nccl2"), 2, True, ["tp2_qk", "tp2_qk_lamport", "ep2_moe", "pp2"])


@pytest.mark.multigpu
def test_tp2_qk_norm_nccl(nccl2):
    _assert_ok(nccl2, "tp2_qk")


@pytest.mark.multigpu
def test_tp2_qk_norm_lamport_kernel(nccl2):
    _assert_ok(nccl2, "tp2_qk_lamport")


@pytest.mark.multigpu
def test_ep2_moe_nccl(nccl2):
    info = _assert_ok(nccl2, "ep2_moe")
    print("fused_moe backend:", info[0].get("fused_moe"))


@pytest.mark.multigpu
def test_pp2_two_layers_nccl(nccl2):
    _assert_ok(nccl2, "pp2")
