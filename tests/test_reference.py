"""The references against hand-worked cases and independent float64 math."""
import math

import pytest
import torch

from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map


def test_rms_norm_hand_case():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    out = R.rms_norm(x, torch.tensor([1.0, 2.0], dtype=torch.float64), eps=0.0)
    s = math.sqrt(12.5)
    torch.testing.assert_close(out, torch.tensor([[3 / s, 8 / s]], dtype=torch.float64))


def test_rms_norm_sharded_equals_full_width():
    x = torch.randn(7, 96, dtype=torch.float64)
    w = torch.randn(96, dtype=torch.float64)
    full = R.rms_norm(x, w, 1e-6)
    for world in (2, 4, 8):
        parts = R.rms_norm_sharded(list(x.chunk(world, 1)), list(w.chunk(world)), 1e-6)
        torch.testing.assert_close(torch.cat(parts, 1), full)
    # the bug the fused kernel must not have: normalising each shard alone
    alone = torch.cat([R.rms_norm(a, b, 1e-6) for a, b in zip(x.chunk(4, 1), w.chunk(4))], 1)
    assert R.rel_error(alone, full) > 1e-3


def test_qk_norm_tp_normalises_q_and_k_over_full_width_and_leaves_v():
    T, q, kv, world = 5, 64, 16, 4
    qkv_full_q = torch.randn(T, q, dtype=torch.float64)
    k_full = torch.randn(T, kv, dtype=torch.float64)
    v_full = torch.randn(T, kv, dtype=torch.float64)
    qw, kw = torch.randn(q, dtype=torch.float64), torch.randn(kv, dtype=torch.float64)
    shards = [torch.cat([a, b, c], 1) for a, b, c in
              zip(qkv_full_q.chunk(world, 1), k_full.chunk(world, 1), v_full.chunk(world, 1))]
    out = R.qk_norm_tp(shards, list(qw.chunk(world)), list(kw.chunk(world)), 1e-6)
    ql, kl = q // world, kv // world
    torch.testing.assert_close(torch.cat([o[:, :ql] for o in out], 1), R.rms_norm(qkv_full_q, qw, 1e-6))
    torch.testing.assert_close(torch.cat([o[:, ql:ql + kl] for o in out], 1), R.rms_norm(k_full, kw, 1e-6))
    torch.testing.assert_close(torch.cat([o[:, ql + kl:] for o in out], 1), v_full)


def test_gemma_rms_norm_scales_by_one_plus_w():
    x = torch.randn(3, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(R.gemma_rms_norm(x, w, 1e-6), R.rms_norm(x, 1 + w, 1e-6))


def test_router_gemm_matches_float64_matmul():
    x = torch.randn(4, 64).to(torch.bfloat16)
    w = torch.randn(8, 64)
    out = R.router_gemm(x, w)
    assert out.dtype == torch.float32
    ref = x.double() @ w.double().t()
    assert R.rel_error(out, ref) < 1e-6


def test_minimax_route_hand_case():
    # expert 2 has the highest score, expert 0 the lowest; the bias lifts 0 above 1.
    logits = torch.tensor([[-1.0, 0.5, 2.0, 0.0]], dtype=torch.float64)
    bias = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    w, ids = R.minimax_route(logits, bias, top_k=2)
    assert ids.tolist() == [[0, 2]]  # chosen on biased scores: 0 -> sigmoid(-1)+2 = 2.27 > sigmoid(2) = 0.88
    s = torch.sigmoid(logits[0])
    expect = torch.tensor([s[0], s[2]]) / (s[0] + s[2])  # weights from UNBIASED scores, renormalised
    torch.testing.assert_close(w[0], expect.double())
    w2, _ = R.minimax_route(logits, bias, top_k=2, routed_scaling_factor=2.0)
    torch.testing.assert_close(w2, 2 * w)
    assert ids.dtype == torch.int32


def test_swiglu_oai_hand_case_and_clamps():
    a, lim = 1.702, 7.0
    x = torch.tensor([[1.0, 10.0, 0.5, -10.0]], dtype=torch.float64)  # split: gate [1, 10], up [0.5, -10]
    out = R.swiglu_oai(x, a, lim, "split")
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expect = [(0.5 + 1) * 1.0 * sig(a * 1.0), (-7.0 + 1) * 7.0 * sig(a * 7.0)]
    torch.testing.assert_close(out[0], torch.tensor(expect, dtype=torch.float64))
    # the gate is clamped only from above: a very negative gate passes through
    neg = R.swiglu_oai(torch.tensor([[-20.0, 1.0]], dtype=torch.float64), a, lim)
    torch.testing.assert_close(neg[0, 0], torch.tensor(2 * -20.0 * sig(-20 * a), dtype=torch.float64))


def test_swiglu_layouts_agree_up_to_column_order():
    x = torch.randn(6, 2 * 12, dtype=torch.float64) * 5
    inter = torch.stack([x[:, :12], x[:, 12:]], dim=-1).reshape(6, 24)  # g0 u0 g1 u1 ...
    for kind in ("swiglu_oai", "silu"):
        torch.testing.assert_close(R.activation(x, kind, "split"), R.activation(inter, kind, "interleaved"))


def test_silu_and_mul():
    x = torch.randn(3, 8, dtype=torch.float64)
    g, u = x[:, :4], x[:, 4:]
    torch.testing.assert_close(R.silu_and_mul(x), g / (1 + torch.exp(-g)) * u)


def test_topk_reduce_hand_case():
    x = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)
    w = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(R.topk_reduce(x, w), torch.tensor([[2.0, 3.5, 5.0, 6.5]], dtype=torch.float64))
    torch.testing.assert_close(R.topk_reduce(x), x.sum(1))


def test_moe_align_hand_case():
    # 3 tokens top-2 over 4 global experts, EP2 rank 1 owns experts 2, 3 (local 0, 1).
    ids = torch.tensor([[2, 0], [3, 2], [1, 3]])
    emap = expert_map(4, 2, 1)
    sorted_ids, blocks, n = R.moe_align(ids, 4, emap, 2)
    pad = ids.numel()
    # local expert 0 (global 2): routes 0 and 3; local 1 (global 3): routes 2 and 5
    assert sorted_ids[:8].tolist() == [0, 3, pad, pad, 2, 5, pad, pad]
    assert blocks[:2].tolist() == [0, 1] and (blocks[2:] == -1).all()
    assert n.item() == 8
    assert sorted_ids.numel() == R.align_buffer_size(6, 4, 2)


def test_align_buffer_is_sized_by_local_experts():
    # 864 routes, 16 local experts, 16-row tiles: at most 864 + 16*15 rows, not 128 experts' worth
    assert R.align_buffer_size(864, 16, 16) == 1104
    assert R.align_buffer_size(864, 16, 16) < R.align_buffer_size(864, 16, 128)


def _moe_inputs(T=9, H=32, I=16, E=8, k=3):
    hidden = torch.randn(T, H, dtype=torch.float64)
    w13 = torch.randn(E, 2 * I, H, dtype=torch.float64) / H ** 0.5
    w2 = torch.randn(E, H, I, dtype=torch.float64) / I ** 0.5
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(torch.int32)
    w = torch.rand(T, k, dtype=torch.float64)
    return hidden, w13, w2, w, ids


@pytest.mark.parametrize("act,layout", [("silu", "split"), ("swiglu_oai", "split"), ("swiglu_oai", "interleaved")])
def test_fused_moe_matches_per_token_loop(act, layout):
    hidden, w13, w2, w, ids = _moe_inputs()
    out = R.fused_moe(hidden, w13, w2, w, ids, None, act, layout)
    for t in range(hidden.shape[0]):
        acc = torch.zeros(hidden.shape[1], dtype=torch.float64)
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            a = R.activation(w13[e] @ hidden[t], act, layout)
            acc += w[t, j] * (w2[e] @ a)
        torch.testing.assert_close(out[t], acc)


@pytest.mark.parametrize("ep", [2, 3, 4, 8])
def test_sum_over_ep_ranks_equals_unsharded_moe(ep):
    hidden, w13, w2, w, ids = _moe_inputs(E=8)
    full = R.fused_moe(hidden, w13, w2, w, ids, None, "swiglu_oai")
    total = torch.zeros_like(full)
    from minimax_rocm.parallel import local_expert_range
    for r in range(ep):
        lo, hi = local_expert_range(8, ep, r)
        total += R.fused_moe(hidden, w13[lo:hi], w2[lo:hi], w, ids, expert_map(8, ep, r), "swiglu_oai")
    torch.testing.assert_close(total, full)


def test_fused_moe_rank_without_routes_is_zero():
    hidden, w13, w2, w, ids = _moe_inputs(E=8)
    ids = ids % 4  # every route lands on experts 0..3, i.e. EP2 rank 0
    out = R.fused_moe(hidden, w13[4:], w2[4:], w, ids, expert_map(8, 2, 1), "silu")
    assert torch.count_nonzero(out) == 0


# ----------------------------------------------------------------------------- MXFP8

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz


def test_mxfp8_hand_cases_e4m3fn():
    x = torch.ones(1, 32)
    q, s = R.mxfp8_quant(x, FN)
    assert s.item() == 127 - 8  # floor(log2(1)) - emax(8) = -8
    assert (q.float() == 256).all()  # 1 / 2^-8
    x = torch.full((1, 32), 480.0)  # floor(log2 480) = 8 -> scale 2^0; 480 > 448 saturates
    q, s = R.mxfp8_quant(x, FN)
    assert s.item() == 127 and (q.float() == 448).all()
    q, s = R.mxfp8_quant(torch.zeros(1, 32), FN)  # all-zero block: smallest scale
    assert s.item() == 0 and (q.float() == 0).all()
    x = torch.randn(1, 64)
    x[0, 3] = float("nan")
    q, s = R.mxfp8_quant(x, FN)
    assert s[0, 0].item() == 0xFF and torch.isnan(q[0, :32].float()).all()
    assert s[0, 1].item() != 0xFF and not torch.isnan(q[0, 32:].float()).any()


def test_mxfp8_hand_cases_e4m3fnuz():
    q, s = R.mxfp8_quant(torch.ones(1, 32), FNUZ)
    assert s.item() == 127 - 7 and (q.float() == 128).all()
    q, s = R.mxfp8_quant(torch.full((1, 32), 250.0), FNUZ)  # 250 / 2^0 > 240 saturates
    assert s.item() == 127 and (q.float() == 240).all()


@pytest.mark.parametrize("dtype", [FN, FNUZ])
def test_mxfp8_round_trip_within_half_ulp(dtype):
    x = torch.randn(16, 256, dtype=torch.float64) * torch.logspace(-3, 3, 16, dtype=torch.float64)[:, None]
    q, s = R.mxfp8_quant(x.float(), dtype)
    back = R.mxfp8_dequant(q, s, torch.float64)
    # Scale puts the block amax in [2^emax, 2^(emax+1)); with 3 mantissa bits an
    # element within 2^-9 of the amax is rounded to half an ulp: |err| <= 2^-4 * |x|
    # for normals, and <= half the smallest subnormal step below them. OCP's
    # scale rule lets the top of a block land above the format's max (448 / 240),
    # where it saturates: there the error is |x| - max * scale.
    scale = R.e8m0_to_float(s).double().repeat_interleave(32, -1)
    min_normal = 2.0 ** (-6 if dtype == FN else -7)
    sub_step = 2.0 ** (-9 if dtype == FN else -10)
    bound = torch.where(x.abs() / scale >= min_normal, x.abs() * 2 ** -4, scale * sub_step / 2)
    bound = torch.maximum(bound, x.abs() - R.fp8_max(dtype) * scale)
    assert ((back - x).abs() <= bound * (1 + 1e-12)).all()


def test_mxfp8_scale_matches_independent_log2_rule():
    x = torch.randn(64, 128, dtype=torch.float64) * 10
    _, s = R.mxfp8_quant(x.float(), FN)
    amax = x.float().double().reshape(64, 4, 32).abs().amax(-1)
    expect = torch.floor(torch.log2(amax)) - 8 + 127
    assert torch.equal(s.to(torch.float64), expect)


def test_mxfp8_fn_to_fnuz_preserves_values_and_maps_specials():
    x = torch.randn(8, 64) * 3
    q, s = R.mxfp8_quant(x, FN)
    qz, sz = R.mxfp8_fn_to_fnuz(q, s)
    torch.testing.assert_close(R.mxfp8_dequant(qz, sz), R.mxfp8_dequant(q, s), rtol=0, atol=0)
    raw = torch.tensor([[0x80, 0x7F, 0xFF, 0x01] + [0x10] * 28], dtype=torch.uint8)
    qz, sz = R.mxfp8_fn_to_fnuz(raw.view(FN), torch.tensor([[127]], dtype=torch.uint8))
    b = qz.view(torch.uint8)[0]
    assert b[0].item() == 0x00  # -0 -> +0, never fnuz's NaN
    assert b[1].item() == 0x80 and b[2].item() == 0x80  # fn NaNs -> fnuz NaN
    assert sz.item() == 128
    with pytest.raises(ValueError, match="2\\^127"):
        R.mxfp8_fn_to_fnuz(q, torch.full_like(s, 254))


def test_rel_error_flags_nan():
    assert R.rel_error(torch.tensor([float("nan")]), torch.tensor([1.0])) == math.inf
