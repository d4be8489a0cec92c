"""allreduce_rms_qk / allreduce_rms on the CPU: the reference, the Triton
fallback (interpreter) on one rank, the oracle's rules, the workspace's size
formula and host-side checks, and the fallback across processes with gloo
(world 4, then two groups of 2, in one spawn). The fused Lamport kernel runs
in tests/test_lamport_multigpu.py (two GPUs)."""
import os

import pytest
import torch

from minimax_rocm.parallel import end_spawned_worker, local_init_method
import torch.distributed as dist

import minimax_rocm as mm
from minimax_rocm import oracle
from minimax_rocm import reference as R
from minimax_rocm.parallel import lamport
from minimax_rocm.ops._common import OpInputError

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)

bf = torch.bfloat16
EPS = 1e-6
# bf16 outputs: rounding alone gives a relative error near 2^-9 / sqrt(3); a
# norm over the local instead of the full width is off by tens of percent.
# The Triton interpreter truncates fp32 -> bf16 (see ULP_FRACTION below),
# which alone averages near 2^-8 and crossed 4e-3 on a 112-element slice.
TOL = 8e-3 if os.environ.get("TRITON_INTERPRET") == "1" else 4e-3


def _make(T, q_full, kv_full, world, gen=None, dtype=bf, w_dtype=torch.float32):
    """Full-width inputs and their per-rank shards (q | k | v column slices)."""
    x = torch.randn(T, q_full + 2 * kv_full, generator=gen) * (torch.rand(T, 1, generator=gen) * 4 + 0.1)
    qw = torch.rand(q_full, generator=gen) + 0.5
    kw = torch.rand(kv_full, generator=gen) + 0.5
    x, qw, kw = x.to(dtype), qw.to(w_dtype), kw.to(w_dtype)
    ql, kl = q_full // world, kv_full // world
    q, k, v = x[:, :q_full], x[:, q_full:q_full + kv_full], x[:, q_full + kv_full:]
    shards = [torch.cat([q[:, r * ql:(r + 1) * ql], k[:, r * kl:(r + 1) * kl], v[:, r * kl:(r + 1) * kl]], 1)
              .contiguous() for r in range(world)]
    return shards, [qw[r * ql:(r + 1) * ql].contiguous() for r in range(world)], \
        [kw[r * kl:(r + 1) * kl].contiguous() for r in range(world)]


# Half a bf16 ulp (relative), plus fp32 noise. The Triton interpreter (3.9)
# truncates fp32 -> bf16 instead of rounding to nearest: a whole ulp there.
ULP_FRACTION = 2.0 ** -7 if os.environ.get("TRITON_INTERPRET") == "1" else 2.0 ** -8


def assert_bf16_rounded(out, ref, what=""):
    """Every element is the reference rounded to bf16 (within ULP_FRACTION
    plus fp32 noise): an element never written, or normalised with the wrong
    sum, is far outside."""
    bad = (out.double() - ref).abs() > ref.abs() * (ULP_FRACTION * 1.001) + 1e-37
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.numel()} elements off, first at {bad.nonzero()[0].tolist()}"


def _reference(shards, qws, kws):
    return R.qk_norm_tp([s.double() for s in shards], [w.double() for w in qws], [w.double() for w in kws], EPS)


# --------------------------------------------------------------------------- #
# reference and single-rank backends
# --------------------------------------------------------------------------- #


def test_reference_over_shards_is_the_full_width_norm():
    shards, qws, kws = _make(6, 64, 16, 4, dtype=torch.float64, w_dtype=torch.float64)
    got = _reference(shards, qws, kws)
    full_q = torch.cat([s[:, :16] for s in shards], 1)
    full_k = torch.cat([s[:, 16:20] for s in shards], 1)
    ref_q = R.rms_norm(full_q, torch.cat(qws), EPS)
    ref_k = R.rms_norm(full_k, torch.cat(kws), EPS)
    torch.testing.assert_close(torch.cat([g[:, :16] for g in got], 1), ref_q, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat([g[:, 16:20] for g in got], 1), ref_k, rtol=1e-12, atol=0)
    for g, s in zip(got, shards):
        assert torch.equal(g[:, 20:], s[:, 20:])


@pytest.mark.parametrize("w_dtype", [torch.float32, bf])
@pytest.mark.parametrize("T,q,kv", [(5, 48, 16), (3, 1040, 24), (0, 32, 8)])
def test_triton_single_rank_matches_reference(T, q, kv, w_dtype):
    (qkv,), (qw,), (kw,) = _make(T, q, kv, 1, w_dtype=w_dtype)
    if T:
        qkv[0] = -0.0           # a row of -0.0: sum 0, output (-)0, no NaN
        qkv[-1, : q // 2] = 0.0
    orig = qkv.clone()
    ref = _reference([orig], [qw], [kw])[0]
    oracle.impl("allreduce_rms_qk", "triton")(qkv, qw, kw, EPS, "")
    assert torch.isfinite(qkv.float()).all()
    if T:
        assert R.rel_error(qkv[:, :q + kv], ref[:, :q + kv]) < TOL
        assert_bf16_rounded(qkv[:, :q + kv], ref[:, :q + kv], "q|k")
    assert torch.equal(qkv[:, q + kv:], orig[:, q + kv:])                      # v untouched, bit for bit


def test_triton_one_tensor_matches_reference():
    x = torch.randn(4, 72).to(bf)
    w = (torch.rand(72) + 0.5).to(bf)
    ref = R.rms_norm(x.double(), w.double(), EPS)
    oracle.impl("allreduce_rms", "triton")(x, w, EPS, "")
    assert R.rel_error(x, ref) < TOL
    assert_bf16_rounded(x, ref, "x")


def test_triton_sum_squares_is_exact_enough_for_huge_and_tiny_rows():
    from minimax_rocm.triton import rms_norm as tri
    x = torch.randn(3, 40, dtype=torch.float64)
    x[0] *= 1e15
    x[1] *= 1e-15
    got = tri.sum_squares(x.to(bf), 24, 16)
    xb = x.to(bf).double()
    ref = torch.stack([xb[:, :24].pow(2).sum(1), xb[:, 24:].pow(2).sum(1)], 1)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------- #
# oracle, workspace formula, host-side checks
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("arch", ["sm90", "gfx942"])
def test_oracle_takes_lamport_only_where_it_applies(arch):
    plat = oracle.simulated_platform(arch, aiter=False)
    P = oracle.Problem
    for op in ("allreduce_rms_qk", "allreduce_rms"):
        for tp in (2, 4, 8):
            assert oracle.decide(P(op, tokens=64, hidden=4096, tp_size=tp), plat, False).chosen.backend == "hip"
        for p in (P(op, tokens=64, hidden=4096, tp_size=3), P(op, tokens=64, hidden=4096, tp_size=16),
                  P(op, tokens=64, hidden=4096, tp_size=2, peer_access=False),
                  P(op, tokens=64, hidden=4096, tp_size=2, dtype="float16"),
                  P(op, tokens=64, hidden=4100, tp_size=2)):
            d = oracle.decide(p, plat, False)
            assert d.chosen.backend == "triton" and "NCCL" in d.chosen.reason, (p, d)


def test_workspace_size_formula():
    # one pair per rank and token would be 3 MiB at TP8, 16384 tokens; the kernel sends one pair
    # per wave (SLOTS_PER_RANK slots), 8x that (DESIGN.md, section 7)
    assert lamport.SLOTS_PER_RANK == 8
    assert lamport.size_bytes(8, 16384) == 24 << 20
    assert lamport.size_bytes(2, 1000) == 3 * 1000 * 2 * 8 * 2 * 4
    assert lamport.NUM_BUFFERS >= 3


def _fake_workspace(max_tokens):
    ws = object.__new__(lamport.LamportWorkspace)
    ws.max_tokens, ws.group_name, ws.device, ws._ptr = max_tokens, "fake", torch.device("cpu"), 1
    return ws


def test_hip_backend_refuses_more_tokens_than_the_workspace_holds():
    from minimax_rocm.parallel import register_lamport_workspace, unregister_lamport_workspace
    register_lamport_workspace("fake", _fake_workspace(4))
    try:
        qkv = torch.randn(5, 48).to(bf)
        before = qkv.clone()
        with pytest.raises(OpInputError, match=r"allreduce_rms_qk.*'qkv'.*5 tokens.*at most 4"):
            oracle.impl("allreduce_rms_qk", "hip")(qkv, torch.ones(32), torch.ones(8), EPS, "fake")
        with pytest.raises(OpInputError, match=r"allreduce_rms.*'x'.*5 tokens.*at most 4"):
            oracle.impl("allreduce_rms", "hip")(qkv, torch.ones(48), EPS, "fake")
        assert torch.equal(qkv, before)
    finally:
        unregister_lamport_workspace("fake")


def test_workspace_needs_a_supported_world_size():
    # A gloo world of one process: refused before any device work.
    init_method = local_init_method()
    dist.init_process_group("gloo", init_method=init_method, rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="world size 1"):
            lamport.LamportWorkspace(max_tokens=16)
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- #
# the fallback across processes (gloo)
# --------------------------------------------------------------------------- #


def _check_group(group, seed, T, q_full, kv_full):
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    gen = torch.Generator().manual_seed(seed)   # every rank builds the same full inputs
    shards, qws, kws = _make(T, q_full, kv_full, world, gen)
    shards[0][1] = -0.0                          # -0.0 inputs on one rank
    ref = _reference(shards, qws, kws)
    ql, kl = q_full // world, kv_full // world
    name = group.group_name
    for backend in ("torch", "triton"):
        qkv = shards[rank].clone()
        if backend == "torch":
            mm.allreduce_rms_qk(qkv, qws[rank], kws[rank], EPS, name)      # public op: CPU -> torch backend
        else:
            oracle.impl("allreduce_rms_qk", "triton")(qkv, qws[rank], kws[rank], EPS, name)
        err = R.rel_error(qkv[:, :ql + kl], ref[rank][:, :ql + kl])
        assert err < TOL, (backend, world, rank, err)
        assert_bf16_rounded(qkv[:, :ql + kl], ref[rank][:, :ql + kl], f"{backend} world {world} rank {rank}")
        assert torch.equal(qkv[:, ql + kl:], shards[rank][:, ql + kl:]), (backend, "v changed")
        # one tensor: the q slices only
        x = shards[rank][:, :ql].contiguous()
        full_ref = R.rms_norm(torch.cat([s[:, :ql] for s in shards], 1).double(), torch.cat(qws).double(), EPS)
        if backend == "torch":
            mm.allreduce_rms(x, qws[rank], EPS, name)
        else:
            oracle.impl("allreduce_rms", "triton")(x, qws[rank], EPS, name)
        err = R.rel_error(x, full_ref[:, rank * ql:(rank + 1) * ql])
        assert err < TOL, (backend, "one tensor", world, rank, err)
        assert_bf16_rounded(x, full_ref[:, rank * ql:(rank + 1) * ql], f"{backend} one tensor")


def _gloo_worker(rank, world, init_method, seed):
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        _check_group(dist.group.WORLD, seed, T=7, q_full=64, kv_full=32)
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]      # collective: every rank creates both
        _check_group(pairs[rank // 2], seed + 1 + rank // 2, T=5, q_full=96, kv_full=16)
    finally:
        dist.destroy_process_group()
    end_spawned_worker()


def test_fallback_across_processes_gloo_world_4_and_2():
    import torch.multiprocessing as mp
    assert os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    mp.spawn(_gloo_worker, args=(4, local_init_method(), int(torch.randint(0, 1 << 30, ()).item())), nprocs=4, join=True)
