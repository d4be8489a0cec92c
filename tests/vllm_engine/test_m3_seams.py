"""MiniMax-M3's MoE through vLLM's real layer classes, on the CPU.

vLLM's CPU build does not serve M3 itself (its model module imports
torchvision for the image processor, which cannot be installed beside this
torch, and its sparse attention has GPU kernels only), so these build vLLM's
own FusedMoE layer (FusedMoEFactory: RoutedExperts, the runner, vLLM's
router, shared experts and routed scaling) the way M3's model does, with the
plugin installed, and check the output against the float64 reference.
"""
from __future__ import annotations

import tempfile

import pytest
import torch

from minimax_rocm import reference

H, I, E, K, T = 128, 64, 8, 2, 7


@pytest.fixture(scope="module")
def vllm_ctx():
    import vllm  # noqa: F401
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    import minimax_rocm.integrations.vllm as plugin
    from minimax_rocm.integrations.vllm import seams
    plugin._state["done"] = False
    plugin.register()
    assert plugin.installed()
    cfg = VllmConfig()
    with set_current_vllm_config(cfg):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method="file://" + tempfile.mktemp())
        initialize_model_parallel(1, 1)
        yield cfg
    seams.uninstall()


@pytest.fixture
def m3(monkeypatch, vllm_ctx):
    """The layers are built as for a MiniMax-M3 config (what model_facts reads
    from vLLM's model config in an engine)."""
    from minimax_rocm.integrations.vllm import seams
    monkeypatch.setattr(seams, "model_facts",
                        lambda: dict(model_type="minimax_m3", architectures=(), max_model_len=4096))
    monkeypatch.setattr(seams, "num_layers", lambda: 4)
    torch.set_default_dtype(torch.bfloat16)
    yield vllm_ctx
    torch.set_default_dtype(torch.float32)


class SharedExpert(torch.nn.Module):
    """A dense SwiGLU-OAI MLP standing for M3's shared expert."""

    def __init__(self, g):
        super().__init__()
        self.w13 = (torch.randn(2 * I, H, generator=g) * H ** -0.5).to(torch.bfloat16)
        self.w2 = (torch.randn(H, I, generator=g) * I ** -0.5).to(torch.bfloat16)

    def forward(self, x):
        return (reference.swiglu_oai(x @ self.w13.t()) @ self.w2.t()).to(x.dtype)


def build(cfg, quant_config=None, alpha=1.702, limit=7.0, beta=1.0, scale=2.0, shared=None, layer=0):
    from vllm.model_executor.layers.fused_moe import FusedMoEFactory
    cfg.compilation_config.static_forward_context.clear()  # one layer at a time under its name
    return FusedMoEFactory(num_experts=E, top_k=K, hidden_size=H, intermediate_size=I, params_dtype=torch.bfloat16,
                           renormalize=True, prefix=f"model.layers.{layer}.block_sparse_moe.experts",
                           activation="swigluoai_uninterleave", swiglu_limit=limit, swiglu_alpha=alpha,
                           swiglu_beta=beta, routed_scaling_factor=scale, apply_routed_scale_to_output=True,
                           scoring_func="softmax",
                           shared_experts=shared, quant_config=quant_config)


def run(cfg, layer, x, logits):
    from vllm.forward_context import set_forward_context
    with set_forward_context(None, cfg), torch.no_grad():
        out = layer(x, logits)
    return out[0] + out[1] if isinstance(out, tuple) else out


def routes(logits):
    p = torch.softmax(logits.double(), dim=-1)
    w, ids = p.topk(K, dim=-1)
    return w / w.sum(-1, keepdim=True), ids


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("alpha,limit,scale", [(1.702, 7.0, 2.0), (1.5, 3.0, 1.0)])
@pytest.mark.parametrize("with_shared", [False, True])
def test_bf16_moe(m3, alpha, limit, scale, with_shared):
    g = torch.Generator().manual_seed(1)
    shared = SharedExpert(g) if with_shared else None
    layer = build(m3, alpha=alpha, limit=limit, scale=scale, shared=shared)
    re_ = layer.routed_experts
    assert type(re_.quant_method).__name__ == "MiniMaxMoEMethod" and re_.quant_method.minimax_rocm
    with torch.no_grad():
        re_.w13_weight.copy_(torch.randn(E, 2 * I, H, generator=g) * H ** -0.5 * 3)
        re_.w2_weight.copy_(torch.randn(E, H, I, generator=g) * I ** -0.5)
    re_.quant_method.process_weights_after_loading(re_)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, generator=g)
    out = run(m3, layer, x, logits)
    w, ids = routes(logits)
    ref = reference.fused_moe(x.double(), re_.w13_weight.double(), re_.w2_weight.double(), w, ids, None,
                              "swiglu_oai", "split", alpha, limit) * scale
    if shared is not None:
        ref = ref + shared(x.double().to(torch.bfloat16)).double()
    assert out.shape == x.shape and out.dtype == x.dtype
    assert rel(out, ref) < 2e-2


def test_beta_other_than_one_stays_vllms(m3):
    # Our kernels compute SwiGLU-OAI with beta 1; vLLM's CPU backend has no
    # kernel for swigluoai at all, so its own error comes back.
    with pytest.raises(NotImplementedError):
        build(m3, beta=0.5)


def _mxfp8_weights(g, fp8=torch.float8_e4m3fn):
    w13 = torch.randn(E, 2 * I, H, generator=g) * H ** -0.5 * 3
    w2 = torch.randn(E, H, I, generator=g) * I ** -0.5
    return reference.mxfp8_quant(w13, fp8) + reference.mxfp8_quant(w2, fp8)


@pytest.mark.parametrize("max_model_len,layer,fmt", [(4096, 0, "mxfp8+bf16"), (65536, 1, "mxfp8"),
                                                     (65536, 4, "bf16")])
def test_mxfp8_moe(m3, monkeypatch, max_model_len, layer, fmt):
    from vllm.model_executor.layers.quantization.modelopt import ModelOptMxFp8Config

    from minimax_rocm.integrations.vllm import seams
    monkeypatch.setattr(seams, "model_facts",
                        lambda: dict(model_type="minimax_m3", architectures=(), max_model_len=max_model_len))
    monkeypatch.setattr(seams, "num_layers", lambda: 5)
    g = torch.Generator().manual_seed(2)
    moe = build(m3, quant_config=ModelOptMxFp8Config(True, None, []), layer=layer)
    re_ = moe.routed_experts
    qm = re_.quant_method
    assert type(qm).__name__ == "MiniMaxMxfp8MoEMethod" and qm.minimax_rocm and qm.minimax_rocm_format == fmt
    q13, s13, q2, s2 = _mxfp8_weights(g)
    with torch.no_grad():
        re_.w13_weight.copy_(q13)
        re_.w13_weight_scale.copy_(s13)
        re_.w2_weight.copy_(q2)
        re_.w2_weight_scale.copy_(s2)
    qm.process_weights_after_loading(re_)
    ex = re_.minimax_rocm_experts
    assert (ex is None) == (fmt == "bf16")
    if ex is not None:   # one Mxfp8Experts, sharing the layer's parameters
        assert ex.has_bf16_copy == (fmt == "mxfp8+bf16")
        assert ex.w13_q.data_ptr() == re_.w13_weight.data_ptr() and ex.w2_s.data_ptr() == re_.w2_weight_scale.data_ptr()
    assert re_.w13_weight.dtype == (torch.bfloat16 if fmt == "bf16" else torch.float8_e4m3fn)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, generator=g)
    out = run(m3, moe, x, logits)
    w, ids = routes(logits)
    ref = reference.fused_moe_mxfp8(x.double(), q13, s13, q2, s2, w, ids, None, "swiglu_oai", "split",
                                    quantize_activations=False) * 2.0
    assert rel(out, ref) < 2e-2


def test_m2_qk_norm_through_vllms_class(monkeypatch, vllm_ctx):
    """vLLM's own MiniMaxText01RMSNormTP (TP1 here): the patched forward_qkv
    runs our op, and the engine path the adapter hands declined calls to is
    vLLM's own, bit for bit."""
    from vllm.model_executor.layers.minimax_rms_norm import MiniMaxText01RMSNormTP

    from minimax_rocm.integrations.vllm import seams
    monkeypatch.setattr(seams, "model_facts",
                        lambda: dict(model_type="minimax_m2", architectures=(), max_model_len=4096))
    q, kv = 4 * 64, 2 * 64
    qn, kn = MiniMaxText01RMSNormTP(q, eps=1e-6), MiniMaxText01RMSNormTP(kv, eps=1e-6)
    assert type(qn).__name__ == "MiniMaxQKNorm" and qn.minimax_rocm and kn.minimax_rocm
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        qn.weight.copy_(1 + 0.1 * torch.randn(q, generator=g))
        kn.weight.copy_(1 + 0.1 * torch.randn(kv, generator=g))
    qkv = torch.randn(5, q + 2 * kv, generator=g).to(torch.bfloat16)
    vq, vk, _ = seams._original_forward_qkv(qn, kn, qkv.clone(), q, kv)
    eq, ek = qn._engine_path(qkv.clone(), qn.weight, kn.weight, 1e-6)
    assert torch.equal(eq, vq) and torch.equal(ek, vk)
    oq, ok, ov = MiniMaxText01RMSNormTP.forward_qkv(qn, kn, qkv.clone(), q, kv)
    assert oq.shape == vq.shape and ok.shape == vk.shape and torch.equal(ov, qkv[:, q + kv:])
    assert rel(oq, vq) < 2 ** -7 and rel(ok, vk) < 2 ** -7
