"""The Triton sparse-local MoE (and its "before" configuration) against the
float64 reference.

CPU: the interpreter at tiny shapes, fp32 operands (full-precision dots), so
the tolerance is fp32's (rel 1e-5); one bf16 case runs the interpreter's
upcast path. Every intermediate buffer is poisoned with NaN, so a row the
kernels never wrote (remote routes, padding) cannot reach the output unseen.
GPU: the M3 and M2 EP8-rank shapes at T in {1, 16, 64, 216, 512, 2048} in
bf16: rel error <= 1e-2 (bf16 operands, fp32 accumulation, the activation and
each route row rounded to bf16 once; measured ~3e-3).
"""
import os

import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map
from minimax_rocm.ops._common import LAST_BACKEND, OpInputError
from minimax_rocm.triton import fused_moe as tri
from minimax_rocm.triton.moe_configs import Tile

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)

FP32_TOL = R.REL_TOL[torch.float32]
BF16_TOL = R.REL_TOL[torch.bfloat16]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    def nan_buffer(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(tri, "_buffer", nan_buffer)


def _args(T=5, H=32, I=16, E=8, k=2, dtype=torch.float32, device="cpu", gate_scale=3.0, E_loc=None):
    """Random MoE inputs; gate_scale > 1 makes |gate/up| exceed SwiGLU-OAI's
    limit often, so the clamps are exercised."""
    E_loc = E if E_loc is None else E_loc
    hidden = torch.randn(T, H, device=device).to(dtype)
    w13 = (torch.randn(E_loc, 2 * I, H, device=device) * gate_scale / H ** 0.5).to(dtype)
    w2 = (torch.randn(E_loc, H, I, device=device) / I ** 0.5).to(dtype)
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(torch.int32).to(device) if T else \
        torch.zeros(0, k, dtype=torch.int32, device=device)
    tw = torch.rand(T, k, device=device)
    return hidden, w13, w2, tw, ids


def _ref(hidden, w13, w2, tw, ids, emap, act, layout="split"):
    return R.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ids, emap, act, layout)


@pytest.mark.parametrize("variant", ["sparse_local", "before"])
@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("act,layout", [("swiglu_oai", "split"), ("swiglu_oai", "interleaved"),
                                        ("silu", "split"), ("silu", "interleaved")])
def test_matches_float64_reference(variant, fuse, act, layout):
    E, ep = 8, 2
    emap = expert_map(E, ep, 1)
    hidden, w13, w2, tw, ids = _args(T=5, E=E, E_loc=E // ep)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, act, layout, variant=variant, fuse_act=fuse)
    assert out.shape == hidden.shape and out.dtype == hidden.dtype
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, emap, act, layout)) < FP32_TOL


def test_ep_ranks_sum_to_unsharded_moe():
    E, ep, H, I = 8, 4, 32, 16
    hidden, w13, w2, tw, ids = _args(T=6, H=H, I=I, E=E, k=3)
    total = torch.zeros(hidden.shape, dtype=torch.float64)
    for rank in range(ep):
        emap = expert_map(E, ep, rank)
        own = torch.nonzero(emap >= 0).reshape(-1)
        out = tri.fused_moe(hidden, w13[own].contiguous(), w2[own].contiguous(), tw, ids, emap, "swiglu_oai")
        total += out.double()
    assert R.rel_error(total, _ref(hidden, w13, w2, tw, ids, None, "swiglu_oai")) < FP32_TOL


@pytest.mark.parametrize("variant", ["sparse_local", "before"])
def test_rank_without_local_routes_returns_zeros(variant):
    E = 8
    emap = expert_map(E, 2, 1)                          # local: 4..7
    hidden, w13, w2, tw, _ = _args(T=4, E=E, E_loc=4)
    ids = torch.tensor([[0, 1], [2, 3], [3, 0], [1, 2]], dtype=torch.int32)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "silu", variant=variant)
    assert torch.equal(out, torch.zeros_like(hidden))


def test_empty_batch():
    hidden, w13, w2, tw, ids = _args(T=0, E_loc=4)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, expert_map(8, 2, 0), "swiglu_oai")
    assert out.shape == (0, hidden.shape[1])


def test_out_of_range_ids_rejected_by_op_and_harmless_in_kernels():
    E = 8
    emap = expert_map(E, 2, 1)
    hidden, w13, w2, tw, ids = _args(T=4, E=E, E_loc=4)
    bf = torch.bfloat16
    with pytest.raises(OpInputError, match="topk_ids"):
        mm.fused_moe(hidden.to(bf), w13.to(bf), w2.to(bf), tw, ids + E, emap)
    # The kernels (reached without the op's value checks under graph capture)
    # treat bad ids as remote routes: never an index, never garbage.
    bad = ids.clone()
    bad[0, 0], bad[1, 1], bad[2, 0] = -1, E + 5, 1 << 20
    clean = bad.clone()
    clean[0, 0] = clean[1, 1] = clean[2, 0] = 0            # expert 0 is remote on rank 1
    for variant in ("sparse_local", "before"):
        out = tri.fused_moe(hidden, w13, w2, tw, bad, emap, "silu", variant=variant)
        assert R.rel_error(out, _ref(hidden, w13, w2, tw, clean, emap, "silu")) < FP32_TOL


def _no_alignment(*args):
    raise AssertionError("one token: the routes must not be aligned")


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("ep,rank", [(1, 0), (2, 1), (4, 3)])
def test_one_token_each_route_its_own_block(fuse, ep, rank):
    # T = 1: no alignment; the GEMMs map the global ids (remote routes skipped)
    E, k = 8, 3
    emap = expert_map(E, ep, rank) if ep > 1 else None
    hidden, w13, w2, tw, ids = _args(T=1, E=E, k=k, E_loc=E // ep)
    assert tri.plan(hidden, w13, ids, emap)["per_route"]
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai", fuse_act=fuse, align=_no_alignment)
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai")) < FP32_TOL
    # an expert named twice (not from a top-k router, but valid) and ids no
    # expert has are each their own block too: read twice / skipped
    for bad in ([[5, 5, 6]], [[-1, 7, 1 << 20]]):
        bad = torch.tensor(bad, dtype=torch.int32)
        clean = bad.clamp(0, E - 1)
        keep = ((bad >= 0) & (bad < E)).double()
        out = tri.fused_moe(hidden, w13, w2, tw, bad, emap, "silu", fuse_act=fuse, align=_no_alignment)
        assert R.rel_error(out, _ref(hidden, w13, w2, tw * keep, clean, emap, "silu")) < FP32_TOL


def test_two_tokens_are_aligned_unless_told():
    hidden, w13, w2, tw, ids = _args(T=2, E=8, k=2)
    assert not tri.plan(hidden, w13, ids, None)["per_route"]
    with pytest.raises(AssertionError, match="must not be aligned"):
        tri.fused_moe(hidden, w13, w2, tw, ids, None, "silu", align=_no_alignment)
    assert not tri.plan(hidden[:1], w13, ids[:1], None, variant="before")["per_route"]
    assert not tri.plan(hidden[:1], w13, ids[:1], None, per_route=False)["per_route"]
    # told to, several tokens run per-route too (an expert two tokens share is read twice)
    ids[1] = ids[0]
    out = tri.fused_moe(hidden, w13, w2, tw, ids, None, "silu", per_route=True, align=_no_alignment)
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, None, "silu")) < FP32_TOL


def test_tiles_uneven_shapes_swap_ab_and_block_m():
    # K = 40 and N = I = 24 are not multiples of the 16-wide tiles: masked
    # edges; swap_ab computes C^T; BLOCK_M 32 and 64 regroup the rows.
    E, ep = 8, 2
    emap = expert_map(E, ep, 0)
    hidden, w13, w2, tw, ids = _args(T=9, H=40, I=24, E=E, k=3, E_loc=4)
    ref = _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai")
    for bm, swap in ((16, True), (32, False), (64, True)):
        t = Tile(block_m=bm, block_n=16, block_k=16, swap_ab=swap, progs_per_cu=1)
        out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai", block_m=bm, tile1=t, tile2=t)
        assert R.rel_error(out, ref) < FP32_TOL, (bm, swap)


def test_prefill_tiles_by_rows_per_expert():
    # The table's prefill regime: 128-row tiles once an active expert expects
    # prefill_min_rows rows, by tier (sm90 measured; gfx942, gfx950 reasoned).
    from minimax_rocm.triton import moe_configs as mc
    E, E_loc, k = 128, 16, 4                                   # the M3 EP8 rank: 128 experts, top-4
    for arch, cus in (("sm90", 132), ("sm100", 148), ("gfx942", 304), ("gfx950", 256)):
        ent = mc.arch_entry(arch)
        mins = [p.min_rows for p in ent.prefill]
        assert mins == sorted(mins) and len({p.gemm1.block_m for p in ent.prefill} |
                                            {p.gemm2.block_m for p in ent.prefill}) == 1, arch
        for T in (216, 1024, 2048, 4096, 16384):
            routes = T * k
            rows = mc.rows_per_active_expert(routes, E, E_loc)
            tier = [p for p in ent.prefill if rows >= p.min_rows]
            bm = mc.choose_block_m(arch, routes, E, E_loc)
            common = dict(num_routes=routes, num_experts=E, num_local=E_loc, block_m=bm, cu_count=cus)
            t1 = mc.choose(arch, "gemm1", N=3072, K=6144, **common)
            t2 = mc.choose(arch, "gemm2", N=6144, K=3072, **common)
            if tier:
                assert bm == 128 and (t1, t2) == (tier[-1].gemm1, tier[-1].gemm2), (arch, T)
            else:
                assert bm <= 64 and t1.block_m == bm and t1.group_m == 0, (arch, T)
    # sm90 (measured): decode tiles to T = 1024, the first tier at 2048 and 4096 (64, 128 rows per expert), the
    # second from 8192 (256)
    sm90 = mc.ARCHS["sm90"]
    tier_of = {T: sum(mc.rows_per_active_expert(T * k, E, E_loc) >= p.min_rows for p in sm90.prefill)
               for T in (1024, 2048, 4096, 8192, 16384)}
    assert tier_of == {1024: 0, 2048: 1, 4096: 1, 8192: 2, 16384: 2}, tier_of


def test_prefill_sized_tiles_in_the_interpreter():
    # 128-row blocks: each local expert fills one and part of a second
    E, ep = 4, 2
    emap = expert_map(E, ep, 1)
    hidden, w13, w2, tw, ids = _args(T=300, H=32, I=16, E=E, k=2, E_loc=2)   # ~150 rows per local expert
    ref = _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai")
    t = Tile(block_m=128, block_n=16, block_k=16, progs_per_cu=1)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai", block_m=128, tile1=t, tile2=t)
    assert R.rel_error(out, ref) < FP32_TOL


def test_weight_tiles_through_a_tensor_descriptor():
    # tma_w: weight tiles by descriptor (split layout, whole N tiles); K = 40
    # is not a multiple of BLOCK_K (the descriptor reads zeros past K);
    # interleaved and a ragged N fall back to pointer loads
    E, ep = 4, 2
    emap = expert_map(E, ep, 1)
    for I, layout in ((32, "split"), (32, "interleaved"), (24, "split")):
        hidden, w13, w2, tw, ids = _args(T=30, H=40, I=I, E=E, k=2, E_loc=2)
        ref = _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai", layout)
        t = Tile(block_m=16, block_n=16, block_k=16, progs_per_cu=1, group_m=2, tma_w=True)
        for fuse in (True, False):
            out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai", layout, fuse_act=fuse, block_m=16,
                                tile1=t, tile2=t)
            assert R.rel_error(out, ref) < FP32_TOL, (I, layout, fuse)


@pytest.mark.parametrize("group_m", [1, 3, 4, 64])
def test_grouped_item_order(group_m):
    # Groups of group_m M blocks sweep every N tile in turn (prefill's L2
    # order): ~9 blocks of 16 rows over 2 (GEMM1) and 3 (GEMM2) N tiles, a
    # last group that is partial for 3 and 4, one group holding all for 64.
    E, ep = 4, 2
    emap = expert_map(E, ep, 0)
    hidden, w13, w2, tw, ids = _args(T=60, H=48, I=32, E=E, k=2, E_loc=2)
    ref = _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai")
    t = Tile(block_m=16, block_n=16, block_k=16, progs_per_cu=1, group_m=group_m)
    for fuse in (True, False):
        out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai", fuse_act=fuse, block_m=16, tile1=t,
                            tile2=t)
        assert R.rel_error(out, ref) < FP32_TOL, (group_m, fuse)


def _bf16_truncated(t: torch.Tensor) -> torch.Tensor:
    """t rounded toward zero to bf16 (as float64): how the Triton interpreter
    converts fp32 to bf16 (GPUs round to nearest even)."""
    return (t.float().contiguous().view(torch.int32) & -65536).view(torch.float32).double()


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the interpreter's bf16 path (GPUs: the bf16 tests below)")
def test_bf16_operands_interpreter_upcast():
    """bf16 operands through the interpreter's upcast dots. The kernels round
    to bf16 at three points: GEMM1's activated output, each weighted route row
    (GEMM2's store) and the reduced output. The float64 reference with those
    points and the interpreter's conversion (toward zero) is matched to well
    under one bf16 step. Against the exact reference the truncations add up to
    0.3-1.3% at this tiny shape, so that check is only a loose bound."""
    emap = expert_map(8, 2, 1)
    hidden, w13, w2, tw, ids = _args(T=5, E=8, E_loc=4, dtype=torch.bfloat16)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, "swiglu_oai")
    assert out.dtype == torch.bfloat16
    ref = _bf16_truncated(R.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ids, emap,
                                      "swiglu_oai", activation_quant=_bf16_truncated, route_quant=_bf16_truncated))
    assert R.rel_error(out, ref) < 1e-3
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, emap, "swiglu_oai")) < 3e-2


# --------------------------------------------------------------------------- #
# GPU: production shapes of one EP8 rank
# --------------------------------------------------------------------------- #

GPU_SHAPES = {  # H, I, E_glob, top_k, activation
    "M3": (6144, 3072, 128, 4, "swiglu_oai"),
    "M2": (3072, 1536, 256, 8, "silu"),
}


@pytest.fixture(scope="module")
def gpu_weights():
    cache = {}

    def get(model):
        if model not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            H, I, E, k, act = GPU_SHAPES[model]
            E_loc = E // 8
            g = torch.Generator(device="cuda").manual_seed(1234)
            w13 = (torch.randn(E_loc, 2 * I, H, device="cuda", generator=g) * (3.0 / H ** 0.5)).to(torch.bfloat16)
            w2 = (torch.randn(E_loc, H, I, device="cuda", generator=g) / I ** 0.5).to(torch.bfloat16)
            cache[model] = (w13, w2)
        return cache[model]
    yield get
    cache.clear()
    torch.cuda.empty_cache()


def _gpu_case(model, T, rank, get):
    H, I, E, k, act = GPU_SHAPES[model]
    w13, w2 = get(model)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    logits = torch.randn(T, E, device="cuda")
    tw, ids = R.minimax_route(logits, None, k)
    emap = expert_map(E, 8, rank, device="cuda")
    return hidden, w13, w2, tw.float(), ids, emap, act


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["M3", "M2"])
@pytest.mark.parametrize("T", [1, 16, 64, 216, 512, 2048, 4096, 8192])   # decode tiles, prefill tiers 1 and 2
def test_gpu_ep8_rank_matches_float64(model, T, gpu_weights):
    hidden, w13, w2, tw, ids, emap, act = _gpu_case(model, T, rank=T % 8, get=gpu_weights)
    out = mm.fused_moe(hidden, w13, w2, tw, ids, emap, activation=act)      # through the op and the oracle
    assert LAST_BACKEND["fused_moe"].startswith("triton"), LAST_BACKEND
    ref = _ref(hidden, w13, w2, tw, ids, emap, act)
    assert not torch.isnan(out).any()
    if ref.abs().max() == 0:                     # no local route on this rank at T = 1
        assert torch.equal(out, torch.zeros_like(out))
    else:
        assert R.rel_error(out, ref) < BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("model,T", [("M3", 216), ("M2", 64)])
@pytest.mark.parametrize("variant,fuse", [("sparse_local", False), ("before", False), ("before", True)])
def test_gpu_other_configurations(model, T, variant, fuse, gpu_weights):
    hidden, w13, w2, tw, ids, emap, act = _gpu_case(model, T, rank=3, get=gpu_weights)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, emap, act, variant=variant, fuse_act=fuse)
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, emap, act)) < BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 216, 8192])    # per-route blocks; decode; the second prefill tier (TMA GEMM2)
def test_gpu_m3_tp8_shape_all_experts_local(T):
    H, I, E, k = 6144, 384, 128, 4
    g = torch.Generator(device="cuda").manual_seed(7)
    w13 = (torch.randn(E, 2 * I, H, device="cuda", generator=g) * (3.0 / H ** 0.5)).to(torch.bfloat16)
    w2 = (torch.randn(E, H, I, device="cuda", generator=g) / I ** 0.5).to(torch.bfloat16)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    tw, ids = R.minimax_route(torch.randn(T, E, device="cuda"), None, k)
    out = tri.fused_moe(hidden, w13, w2, tw.float(), ids, None, "swiglu_oai", per_route=T == 1)
    assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, None, "swiglu_oai")) < BF16_TOL


@pytest.mark.gpu
def test_gpu_one_token_captured_in_a_cuda_graph():
    # Per-route index tensors made during a capture belong to that graph: not
    # cached, and the replays (new inputs copied in) still match float64.
    H, I, E, k = 256, 128, 16, 4
    hidden, w13, w2, tw, ids = _args(T=1, H=H, I=I, E=E, k=k, dtype=torch.bfloat16, device="cuda")
    tw = tw.float()
    run = lambda: tri.fused_moe(hidden, w13, w2, tw, ids, None, "swiglu_oai", per_route=True)   # noqa: E731
    run()                                              # compiles outside the capture
    tri._PER_ROUTE_INDEX.clear()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    assert not tri._PER_ROUTE_INDEX
    for _ in range(2):
        fresh = _args(T=1, H=H, I=I, E=E, k=k, dtype=torch.bfloat16, device="cuda")
        hidden.copy_(fresh[0])
        ids.copy_(fresh[4])
        graph.replay()
        torch.cuda.synchronize()
        assert R.rel_error(out, _ref(hidden, w13, w2, tw, ids, None, "swiglu_oai")) < BF16_TOL
    run()
    assert len(tri._PER_ROUTE_INDEX) == 1
