"""The public ops: torch.library registration, fake impls under torch.compile,
dispatch through the oracle, and input checks that name the op and argument."""
import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map
from minimax_rocm.ops import Mxfp8Experts
from minimax_rocm.ops._common import LAST_BACKEND, OpInputError

bf = torch.bfloat16
ALL_OPS = ["topk_reduce", "router_gemm", "moe_align", "fused_moe", "swiglu_oai", "mxfp8_quant", "mxfp8_dequant",
           "fused_moe_mxfp8", "allreduce_rms_qk", "allreduce_rms"]


@pytest.mark.parametrize("name", ALL_OPS)
def test_registered_as_torch_library_op(name):
    op = getattr(torch.ops.minimax_rocm, name)
    assert op.default._schema.name == f"minimax_rocm::{name}"


def _moe_args(T=6, H=32, I=16, E=8, k=2, ep=2, rank=1):
    hidden = torch.randn(T, H).to(bf)
    w13 = (torch.randn(E // ep, 2 * I, H) / H ** 0.5).to(bf)
    w2 = (torch.randn(E // ep, H, I) / I ** 0.5).to(bf)
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(torch.int32)
    w = torch.rand(T, k)
    return hidden, w13, w2, w, ids, expert_map(E, ep, rank)


def _mx_args(T=6, H=64, I=32, E=4, k=2):
    """(hidden, Mxfp8Experts, topk_weights, topk_ids): fused_moe_mxfp8's positional arguments."""
    hidden = torch.randn(T, H).to(bf)
    w13q, w13s = R.mxfp8_quant(torch.randn(E, 2 * I, H) / H ** 0.5, torch.float8_e4m3fn)
    w2q, w2s = R.mxfp8_quant(torch.randn(E, H, I) / I ** 0.5, torch.float8_e4m3fn)
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(torch.int32)
    return hidden, Mxfp8Experts(w13q, w13s, w2q, w2s), torch.rand(T, k), ids


def all_ops(x, rows, w_router, moe, mx, qkv, qw, kw):
    """Calls every public op once (used eagerly and under torch.compile)."""
    hidden, w13, w2, tw, ids, emap = moe
    out = mm.router_gemm(x, w_router).sum()
    out = out + mm.topk_reduce(rows, tw).float().sum()
    s, b, n = mm.moe_align(ids, 16, emap, w13.shape[0])
    out = out + n.float().sum()
    out = out + mm.fused_moe(hidden, w13, w2, tw, ids, emap, activation="swiglu_oai").float().sum()
    out = out + mm.swiglu_oai(rows[:, 0].contiguous()).float().sum()
    q, sc = mm.mxfp8_quant(x, "e4m3fn")
    out = out + mm.mxfp8_dequant(q, sc, torch.float32).sum()
    out = out + mm.fused_moe_mxfp8(*mx).float().sum()
    qkv = mm.allreduce_rms_qk(qkv, qw, kw, 1e-6)
    return out + qkv.float().sum()


def _inputs():
    moe = _moe_args()
    T = moe[0].shape[0]
    return (torch.randn(T, 64).to(bf), torch.randn(T, 2, 64).to(bf), torch.randn(8, 64), moe, _mx_args(T=T),
            torch.randn(T, 48).to(bf), torch.rand(32) + 0.5, torch.rand(8) + 0.5)


def test_torch_compile_fullgraph_over_every_op():
    args = _inputs()
    eager = all_ops(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    compiled = torch.compile(all_ops, fullgraph=True, backend="aot_eager")
    got = compiled(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-2)


def test_cpu_dispatch_runs_the_reference_and_records_it():
    x = torch.randn(3, 2, 16).to(bf)
    torch.testing.assert_close(mm.topk_reduce(x), R.topk_reduce(x))
    assert LAST_BACKEND["topk_reduce"] == "torch"


def test_allreduce_rms_qk_single_rank_matches_reference_and_keeps_v():
    qkv = torch.randn(5, 32 + 2 * 8).to(bf)
    qw, kw = torch.rand(32) + 0.5, torch.rand(8) + 0.5
    orig = qkv.clone()
    mm.allreduce_rms_qk(qkv, qw, kw, 1e-6)
    ref = R.qk_norm_tp([orig.double()], [qw.double()], [kw.double()], 1e-6)[0]
    assert R.rel_error(qkv[:, :40], ref[:, :40]) < 1e-2
    assert torch.equal(qkv[:, 40:], orig[:, 40:])
    x = torch.randn(4, 24).to(bf)
    w = torch.rand(24)
    ref1 = R.rms_norm(x.double(), w.double(), 1e-6)
    assert R.rel_error(mm.allreduce_rms(x, w), ref1) < 1e-2


def test_fused_moe_mxfp8_reference_path_matches_dequantised_moe():
    hidden, ex, tw, ids = _mx_args()
    out = mm.fused_moe_mxfp8(hidden, ex, tw, ids)
    ref = R.fused_moe(hidden.double(), R.mxfp8_dequant(ex.w13_q, ex.w13_s, torch.float64),
                      R.mxfp8_dequant(ex.w2_q, ex.w2_s, torch.float64), tw.double(), ids, None, "swiglu_oai")
    assert R.rel_error(out, ref) < 1e-2


def test_fused_moe_empty_batch_and_empty_rank():
    hidden, w13, w2, tw, ids, emap = _moe_args()
    out = mm.fused_moe(hidden[:0], w13, w2, tw[:0], ids[:0], emap)
    assert out.shape == (0, hidden.shape[1])
    ids_rank0 = ids % 4  # every route on EP2 rank 0's experts
    assert torch.count_nonzero(mm.fused_moe(hidden, w13, w2, tw, ids_rank0, emap)) == 0


# ----------------------------------------------------------------------------- input checks


def _expect(op, arg, fn):
    with pytest.raises(OpInputError) as e:
        fn()
    msg = str(e.value)
    assert f"minimax_rocm.{op}" in msg and f"'{arg}'" in msg, msg


def test_checks_topk_reduce():
    x = torch.randn(3, 2, 16).to(bf)
    _expect("topk_reduce", "x", lambda: mm.topk_reduce(x.to(torch.int32)))
    _expect("topk_reduce", "x", lambda: mm.topk_reduce(x[0]))
    _expect("topk_reduce", "x", lambda: mm.topk_reduce(x.transpose(0, 1)))
    _expect("topk_reduce", "weights", lambda: mm.topk_reduce(x, torch.rand(3, 3)))
    _expect("topk_reduce", "weights", lambda: mm.topk_reduce(x, torch.rand(3, 2, device="meta")))


def test_checks_router_gemm():
    x, w = torch.randn(4, 64).to(bf), torch.randn(8, 64)
    _expect("router_gemm", "x", lambda: mm.router_gemm(x.half(), w))
    _expect("router_gemm", "w", lambda: mm.router_gemm(x, w.to(bf)))
    _expect("router_gemm", "w", lambda: mm.router_gemm(x, torch.randn(8, 32)))
    _expect("router_gemm", "x", lambda: mm.router_gemm(torch.randn(64, 4).to(bf).t(), w))
    _expect("router_gemm", "bias", lambda: mm.router_gemm(x, w, torch.randn(7)))
    _expect("router_gemm", "w", lambda: mm.router_gemm(x, w.to("meta")))


def test_checks_moe_align():
    _, w13, _, _, ids, emap = _moe_args()
    _expect("moe_align", "block_m", lambda: mm.moe_align(ids, 12, emap, 4))
    _expect("moe_align", "topk_ids", lambda: mm.moe_align(ids.float(), 16, emap, 4))
    _expect("moe_align", "topk_ids", lambda: mm.moe_align(ids + 100, 16, emap, 4))
    _expect("moe_align", "expert_map", lambda: mm.moe_align(ids, 16, emap[:2], 4))
    _expect("moe_align", "expert_map", lambda: mm.moe_align(ids, 16, emap + 3, 4))


def test_checks_fused_moe():
    hidden, w13, w2, tw, ids, emap = _moe_args()
    f = mm.fused_moe
    _expect("fused_moe", "hidden", lambda: f(hidden.to(torch.int8), w13, w2, tw, ids, emap))
    _expect("fused_moe", "w13", lambda: f(hidden, w13.float(), w2, tw, ids, emap))
    _expect("fused_moe", "w13", lambda: f(hidden, w13[:, :, :16], w2, tw, ids, emap))
    _expect("fused_moe", "w2", lambda: f(hidden, w13, w2[:, :, :8], tw, ids, emap))
    _expect("fused_moe", "w2", lambda: f(hidden, w13, w2.transpose(1, 2).contiguous().transpose(1, 2), tw, ids, emap))
    _expect("fused_moe", "topk_weights", lambda: f(hidden, w13, w2, tw[:, :1], ids, emap))
    _expect("fused_moe", "topk_ids", lambda: f(hidden, w13, w2, tw, ids[:-1], emap))
    neg = ids.clone()
    neg[0, 0] = -1  # below the range
    _expect("fused_moe", "topk_ids", lambda: f(hidden, w13, w2, tw, neg, emap))
    _expect("fused_moe", "topk_ids", lambda: f(hidden, w13, w2, tw, ids + 8, emap))
    _expect("fused_moe", "activation", lambda: f(hidden, w13, w2, tw, ids, emap, activation="gelu"))
    _expect("fused_moe", "layout", lambda: f(hidden, w13, w2, tw, ids, emap, layout="blocked"))
    _expect("fused_moe", "w13", lambda: f(hidden.to("meta"), w13, w2, tw, ids, emap))


def test_checks_swiglu_and_mxfp8():
    _expect("swiglu_oai", "x", lambda: mm.swiglu_oai(torch.randn(3, 5)))
    _expect("swiglu_oai", "layout", lambda: mm.swiglu_oai(torch.randn(3, 4), layout="x"))
    _expect("swiglu_oai", "limit", lambda: mm.swiglu_oai(torch.randn(3, 4), limit=0.0))
    _expect("mxfp8_quant", "x", lambda: mm.mxfp8_quant(torch.randn(3, 48), "e4m3fn"))
    _expect("mxfp8_quant", "x", lambda: mm.mxfp8_quant(torch.randn(64, 3).t(), "e4m3fn"))
    _expect("mxfp8_quant", "fp8_dtype", lambda: mm.mxfp8_quant(torch.randn(3, 64), "e5m2"))
    q, s = mm.mxfp8_quant(torch.randn(3, 64), "e4m3fn")
    _expect("mxfp8_dequant", "scales", lambda: mm.mxfp8_dequant(q, s[:, :1]))
    _expect("mxfp8_dequant", "scales", lambda: mm.mxfp8_dequant(q, s.float()))
    _expect("mxfp8_dequant", "q", lambda: mm.mxfp8_dequant(q.float(), s))


def test_checks_fused_moe_mxfp8():
    hidden, ex, tw, ids = _mx_args()
    w13q, w13s, w2q, w2s = ex.w13_q, ex.w13_s, ex.w2_q, ex.w2_s
    f = mm.fused_moe_mxfp8
    # the experts' own checks run as the object is built, with the op's messages
    _expect("fused_moe_mxfp8", "w13_q", lambda: f(hidden, Mxfp8Experts(w13q.float(), w13s, w2q, w2s), tw, ids))
    _expect("fused_moe_mxfp8", "w13_s", lambda: f(hidden, Mxfp8Experts(w13q, w13s[..., :1], w2q, w2s), tw, ids))
    _expect("fused_moe_mxfp8", "w2_q", lambda: f(hidden, Mxfp8Experts(w13q, w13s, w2q[:, :, :16], w2s), tw, ids))
    _expect("fused_moe_mxfp8", "w13_bf16", lambda: Mxfp8Experts(w13q, w13s, w2q, w2s,
                                                                w13_bf16=torch.randn(w13q.shape).to(bf)))
    _expect("fused_moe_mxfp8", "w2_s", lambda: Mxfp8Experts(w13q, w13s, w2q, None))
    # the call's: routing, hidden against the experts, the copy's dtype against hidden's
    _expect("fused_moe_mxfp8", "topk_ids", lambda: f(hidden, ex, tw, ids + 4))
    _expect("fused_moe_mxfp8", "w13_q", lambda: f(hidden[:, :32].contiguous(), ex, tw, ids))
    _expect("fused_moe_mxfp8", "w13_bf16", lambda: f(hidden, ex.with_bf16_copy(torch.float32), tw, ids))
    _expect("fused_moe_mxfp8", "experts", lambda: f(hidden, (w13q, w13s, w2q, w2s), tw, ids))
    # the custom op over loose tensors checks them all itself
    op = torch.ops.minimax_rocm.fused_moe_mxfp8
    _expect("fused_moe_mxfp8", "w13_s", lambda: op(hidden, w13q, w13s[..., :1].contiguous(), w2q, w2s, tw, ids, None,
                                                   "swiglu_oai", "split", 1.702, 7.0, 0, None, None))
    _expect("fused_moe_mxfp8", "w2_bf16", lambda: op(hidden, w13q, w13s, w2q, w2s, tw, ids, None, "swiglu_oai",
                                                     "split", 1.702, 7.0, 0, w13q.to(bf), w13q.to(bf)))


def test_mxfp8_experts():
    w13, w2 = torch.randn(4, 64, 64) / 8, torch.randn(4, 64, 32) / 8
    ex = Mxfp8Experts.quantize(w13.to(bf), w2, "e4m3fn")
    assert (ex.num_local_experts, ex.hidden_size, ex.intermediate_size) == (4, 64, 32)
    assert ex.fp8_dtype == torch.float8_e4m3fn and not ex.has_bf16_copy and ex.device == w13.device
    assert repr(ex) == "Mxfp8Experts(E=4, H=64, I=32, float8_e4m3fn, cpu)"
    rq, rs = R.mxfp8_quant(w13.to(bf), torch.float8_e4m3fn)
    assert torch.equal(ex.w13_q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(ex.w13_s, rs)
    # the memory policy's three formats
    both = ex.with_format("mxfp8+bf16")
    assert both.has_bf16_copy and both.w13_q is ex.w13_q and both.w2_bf16.dtype == bf
    assert torch.equal(both.w13_bf16, R.mxfp8_dequant(ex.w13_q, ex.w13_s, bf))
    assert both.with_format("mxfp8+bf16") is both and both.with_format("mxfp8").w13_bf16 is None
    assert ex.with_format("mxfp8") is ex
    w13_b, w2_b = ex.dequantize(torch.float32)
    assert torch.equal(w2_b, R.mxfp8_dequant(ex.w2_q, ex.w2_s, torch.float32))
    _expect("Mxfp8Experts.with_format", "fmt", lambda: ex.with_format("bf16"))
    # e4m3fn -> e4m3fnuz keeps every value and the copy
    nuz = both.to_fnuz()
    assert nuz.fp8_dtype == torch.float8_e4m3fnuz and nuz.w13_bf16 is both.w13_bf16 and nuz.to_fnuz() is nuz
    for q, s, qz, sz in ((ex.w13_q, ex.w13_s, nuz.w13_q, nuz.w13_s), (ex.w2_q, ex.w2_s, nuz.w2_q, nuz.w2_s)):
        assert torch.equal(R.mxfp8_dequant(q, s, torch.float64), R.mxfp8_dequant(qz, sz, torch.float64))
    # immutable, and compared by identity (tensors have no truth value)
    with pytest.raises(AttributeError):
        ex.w13_q = ex.w2_q
    assert ex != Mxfp8Experts(ex.w13_q, ex.w13_s, ex.w2_q, ex.w2_s)
    _expect("Mxfp8Experts.quantize", "w2", lambda: Mxfp8Experts.quantize(w13, w2[:, :32]))
    _expect("Mxfp8Experts.quantize", "w13", lambda: Mxfp8Experts.quantize(w13[:, :, :48], w2))


def test_mxfp8_experts_for_platform(monkeypatch):
    ex = Mxfp8Experts(*R.mxfp8_quant(torch.randn(2, 64, 32), torch.float8_e4m3fn),
                      *R.mxfp8_quant(torch.randn(2, 32, 32), torch.float8_e4m3fn))
    monkeypatch.setenv("MINIMAX_ROCM_ARCH", "gfx942")
    assert ex.for_platform().fp8_dtype == torch.float8_e4m3fnuz
    monkeypatch.setenv("MINIMAX_ROCM_ARCH", "sm90")
    assert ex.for_platform() is ex


def test_checks_allreduce_rms():
    qkv = torch.randn(4, 48).to(bf)
    qw, kw = torch.rand(32), torch.rand(8)
    _expect("allreduce_rms_qk", "qkv", lambda: mm.allreduce_rms_qk(qkv[:, :40], qw, kw))
    _expect("allreduce_rms_qk", "qkv", lambda: mm.allreduce_rms_qk(qkv.to(torch.int32), qw, kw))
    _expect("allreduce_rms_qk", "q_weight", lambda: mm.allreduce_rms_qk(qkv, qw.double(), kw))
    _expect("allreduce_rms_qk", "eps", lambda: mm.allreduce_rms_qk(qkv, qw, kw, eps=0.0))
    _expect("allreduce_rms", "weight", lambda: mm.allreduce_rms(qkv, torch.rand(47)))
    _expect("allreduce_rms", "x", lambda: mm.allreduce_rms(torch.randn(48, 4).to(bf).t(), torch.rand(48)))
