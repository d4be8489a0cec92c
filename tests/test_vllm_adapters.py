"""The vLLM adapters' own logic, without vLLM: empty batches, strided inputs,
and the QK norm's hand-over to the engine's path."""
import pytest
import torch

from minimax_rocm import reference
from minimax_rocm.integrations.vllm import adapters
from minimax_rocm.ops import Mxfp8Experts
from minimax_rocm.ops._common import LAST_BACKEND


def _qk_reference(qkv, qw, kw, eps):
    q, kv = qw.shape[0], kw.shape[0]
    x = qkv.double()
    ss = x[:, :q].pow(2).sum(-1), x[:, q:q + kv].pow(2).sum(-1)
    return (reference.allreduce_rms_local(x[:, :q], qw.double(), eps, ss[0], q),
            reference.allreduce_rms_local(x[:, q:q + kv], kw.double(), eps, ss[1], kv))


def test_qk_norm_hands_declined_calls_to_the_engine(monkeypatch):
    q, kv, T, eps = 64, 32, 5, 1e-6
    qkv = torch.randn(T, q + 2 * kv).to(torch.bfloat16)
    qw, kw = 1 + 0.1 * torch.randn(q), 1 + 0.1 * torch.randn(kv)
    v_before = qkv[:, q + kv:].clone()
    calls = []

    def engine(x, q_weight, k_weight, e):
        calls.append((x.shape, e))
        rq, rk = _qk_reference(x, q_weight, k_weight, e)
        return rq.to(x.dtype), rk.to(x.dtype)
    monkeypatch.setattr(adapters, "qk_norm_backend", lambda *a: None)
    adapters.register_qk_fallback("layer-a", engine)
    rq, rk = _qk_reference(qkv, qw, kw, eps)
    torch.ops.minimax_rocm.vllm_qk_norm(qkv, qw, kw, eps, "", "layer-a")
    assert calls == [((T, q + 2 * kv), eps)]
    assert LAST_BACKEND["allreduce_rms_qk"] == "engine"
    torch.testing.assert_close(qkv[:, :q].double(), rq, atol=0, rtol=2 ** -7)
    torch.testing.assert_close(qkv[:, q:q + kv].double(), rk, atol=0, rtol=2 ** -7)
    assert torch.equal(qkv[:, q + kv:], v_before)
    with pytest.raises(RuntimeError, match="no engine path registered"):
        torch.ops.minimax_rocm.vllm_qk_norm(qkv, qw, kw, eps, "", "no-such-layer")


def test_qk_norm_takes_our_op_where_it_serves():
    q, kv = 64, 32
    qkv = torch.randn(3, q + 2 * kv).to(torch.bfloat16)
    qw, kw = 1 + 0.1 * torch.randn(q), 1 + 0.1 * torch.randn(kv)
    rq, rk = _qk_reference(qkv, qw, kw, 1e-6)
    torch.ops.minimax_rocm.vllm_qk_norm(qkv, qw, kw, 1e-6, "", "unused")
    assert LAST_BACKEND["allreduce_rms_qk"] == "torch"
    torch.testing.assert_close(qkv[:, :q].double(), rq, atol=0, rtol=2 ** -7)
    torch.testing.assert_close(qkv[:, q:q + kv].double(), rk, atol=0, rtol=2 ** -7)


def test_empty_batches():
    w = torch.randn(8, 64)
    assert adapters.gate(torch.empty(0, 64, dtype=torch.bfloat16), w).shape == (0, 8)
    x = torch.empty(0, 64, dtype=torch.bfloat16)
    w13, w2 = torch.randn(4, 32, 64).to(torch.bfloat16), torch.randn(4, 64, 16).to(torch.bfloat16)
    ids = torch.empty(0, 2, dtype=torch.int32)
    out = adapters.moe(x, w13, w2, torch.empty(0, 2), ids, None, "silu", 1.702, 7.0)
    assert out.shape == (0, 64) and out.dtype == torch.bfloat16
    experts = Mxfp8Experts.quantize(torch.randn(4, 64, 64), torch.randn(4, 64, 32), "e4m3fn")
    out = adapters.moe_mxfp8(x, experts, torch.empty(0, 2), ids, None, "silu", 1.702, 7.0, 4096)
    assert out.shape == (0, 64) and out.dtype == torch.bfloat16
    qkv = torch.empty(0, 128, dtype=torch.bfloat16)
    torch.ops.minimax_rocm.vllm_qk_norm(qkv, torch.ones(64), torch.ones(32), 1e-6, "", "unused")


def test_gate_takes_a_strided_view():
    big = torch.randn(6, 96).to(torch.bfloat16)
    x = big[:, :64]  # rows 96 apart: not contiguous
    w = torch.randn(8, 64)
    out = torch.ops.minimax_rocm.vllm_gate(x, w)
    torch.testing.assert_close(out.double(), reference.router_gemm(x.double(), w.double()), rtol=1e-5, atol=1e-5)
