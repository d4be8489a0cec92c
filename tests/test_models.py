"""MiniMax model blocks in one process: configs (presets, config.json parsing),
the QK-norm step (M2 full width, M3 per-head Gemma), the MoE block (M2 silu;
M3 SwiGLU-OAI + shared expert + routed scaling factor), dense layers, EP
partials summed in-process, against float64 references and an independent
per-token implementation written from the model description."""
import math

import pytest
import torch

from minimax_rocm import reference as R
from minimax_rocm.parallel import weights as W
from minimax_rocm.parallel.combine import ep_combine
from minimax_rocm.models import attention as A
from minimax_rocm.models import moe as M
from minimax_rocm.models.config import ConfigError, MiniMaxConfig, preset

bf = torch.bfloat16


# --------------------------------------------------------------------------- #
# configs
# --------------------------------------------------------------------------- #


def test_presets_carry_the_reference_shapes():
    m2, m25, m3 = preset("minimax-m2"), preset("MiniMax-M2.5"), preset("minimax-m3")
    for c in (m2, m25):
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == \
            (3072, 62, 48, 8, 128)
        assert (c.num_experts, c.top_k, c.intermediate_size, c.activation) == (256, 8, 1536, "silu")
        assert (c.q_size, c.kv_size, c.qk_norm, c.routed_scaling_factor) == (6144, 1024, "full", 1.0)
        assert not c.has_shared_expert and all(c.is_moe_layer(i) for i in range(62))
    assert (m3.hidden_size, m3.num_hidden_layers, m3.num_attention_heads, m3.num_key_value_heads) == (6144, 60, 64, 4)
    assert (m3.num_experts, m3.top_k, m3.intermediate_size, m3.dense_intermediate_size) == (128, 4, 3072, 12288)
    assert (m3.qk_norm, m3.gemma_norm, m3.activation, m3.routed_scaling_factor) == ("per_head", True, "swiglu_oai", 2.0)
    assert (m3.swiglu_alpha, m3.swiglu_limit, m3.shared_intermediate_size) == (1.702, 7.0, 3072)
    assert m3.weight_prefix == "language_model." and m3.vocab_size == 200064
    assert [m3.is_moe_layer(i) for i in range(5)] == [False, False, False, True, True]
    # 128 x 3 x 6144 x 3072 = 7.25B routed parameters per MoE layer
    assert abs(m3.moe_params_per_layer() / 1e9 - 7.25) < 0.01
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("minimax-m9")


@pytest.mark.parametrize("name", ["minimax-m2", "minimax-m2.5", "minimax-m3", "tiny-m2", "tiny-m3"])
def test_config_json_round_trip(name):
    c = preset(name)
    assert MiniMaxConfig.from_hf(c.to_hf(), name=name) == c


def test_from_hf_published_shapes():
    # Flat M2 config.json (the keys MiniMax-M2 ships).
    m2 = MiniMaxConfig.from_hf(dict(model_type="minimax", hidden_size=3072, num_hidden_layers=62,
                                    num_attention_heads=48, num_key_value_heads=8, head_dim=128,
                                    num_local_experts=256, num_experts_per_tok=8, intermediate_size=1536,
                                    hidden_act="silu", qk_norm_type="per_layer", use_qk_norm=True,
                                    scoring_func="sigmoid", use_routing_bias=True, rotary_dim=64))
    assert m2 == preset("minimax-m2").with_(name="custom", num_mtp_modules=0)
    # The multimodal M3 wrapper: text_config with moe_layer_freq, "swigluoai".
    text = dict(hidden_size=6144, intermediate_size=3072, num_hidden_layers=60, num_attention_heads=64,
                num_key_value_heads=4, head_dim=128, vocab_size=200064, rms_norm_eps=1e-6, use_gemma_norm=True,
                hidden_act="swigluoai", use_qk_norm=True, dense_intermediate_size=12288,
                shared_intermediate_size=3072, num_local_experts=128, num_experts_per_tok=4, n_shared_experts=1,
                scoring_func="sigmoid", use_routing_bias=True, moe_layer_freq=[0, 0, 0] + [1] * 57,
                qk_norm_type="per_head", num_mtp_modules=7, swiglu_alpha=1.702, swiglu_limit=7.0,
                routed_scaling_factor=2.0)
    m3 = MiniMaxConfig.from_hf(dict(model_type="minimax_m3_vl", text_config=text), name="minimax-m3")
    assert m3 == preset("minimax-m3")
    # transformers' spelling: mlp_layer_types, and hidden_act rewritten to silu
    t2 = dict(text, hidden_act="silu", mlp_layer_types=["dense"] * 3 + ["sparse"] * 57)
    del t2["moe_layer_freq"]
    assert MiniMaxConfig.from_hf(dict(model_type="minimax_m3", **t2), name="minimax-m3") == \
        preset("minimax-m3").with_(weight_prefix="")


@pytest.mark.parametrize("bad,match", [
    (dict(num_local_experts=None), "lacks 'num_local_experts'"),
    (dict(scoring_func="softmax"), "sigmoid"),
    (dict(n_shared_experts=2), "only 0 or 1"),
    (dict(moe_layer_freq=[0, 1]), "2 entries; num_hidden_layers is 60"),
    (dict(moe_layer_freq=1), "per-layer list"),
    (dict(num_key_value_heads=5), "not a multiple"),
    (dict(use_qk_norm=False), "use_qk_norm"),
])
def test_from_hf_errors_name_the_key(bad, match):
    d = preset("minimax-m3").to_hf()
    for k, v in bad.items():
        if v is None:
            del d["text_config"][k]
        else:
            d["text_config"][k] = v
    with pytest.raises(ConfigError, match=match):
        MiniMaxConfig.from_hf(d)


# --------------------------------------------------------------------------- #
# QK norm
# --------------------------------------------------------------------------- #


def _qkv(cfg, T, dtype=bf):
    x = torch.randn(T, cfg.q_size + 2 * cfg.kv_size) * (torch.rand(T, 1) * 3 + 0.1)
    return x.to(dtype)


def _norm_weights(cfg):
    n = (cfg.q_size, cfg.kv_size) if cfg.qk_norm == "full" else (cfg.head_dim, cfg.head_dim)
    base = 0.0 if cfg.gemma_norm else 1.0
    return torch.randn(n[0]) * 0.2 + base, torch.randn(n[1]) * 0.2 + base


def test_m2_qk_norm_is_one_norm_over_the_full_width():
    cfg = preset("tiny-m2")
    qkv, (qw, kw) = _qkv(cfg, 9), _norm_weights(cfg)
    out = A.QKNorm(cfg, qw, kw)(qkv.clone())
    q, kv = cfg.q_size, cfg.kv_size
    # independent: mean of squares over all q columns (not per head)
    x = qkv.double()
    ref_q = x[:, :q] / torch.sqrt(x[:, :q].pow(2).mean(1, keepdim=True) + cfg.rms_norm_eps) * qw.double()
    ref_k = x[:, q:q + kv] / torch.sqrt(x[:, q:q + kv].pow(2).mean(1, keepdim=True) + cfg.rms_norm_eps) * kw.double()
    assert R.rel_error(out[:, :q], ref_q) < 4e-3 and R.rel_error(out[:, q:q + kv], ref_k) < 4e-3
    assert torch.equal(out[:, q + kv:], qkv[:, q + kv:]), "v must be untouched"
    assert R.rel_error(out, A.qk_norm_reference(cfg, qkv, qw, kw)) < 4e-3


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_m3_qk_norm_per_head_gemma_on_tp_shards(tp):
    cfg = preset("tiny-m3")                   # 8 q heads, 2 kv heads: TP8 replicates each kv head on 4 ranks
    qkv, (qw, kw) = _qkv(cfg, 7), _norm_weights(cfg)
    ref = A.qk_norm_reference(cfg, qkv, qw, kw)
    # independent per-head Gemma norm: fp32 normalise, scale by (1 + w)
    d, q = cfg.head_dim, cfg.q_size
    x = qkv.double()
    for h in range(cfg.num_attention_heads):
        s = x[:, h * d:(h + 1) * d]
        want = s / torch.sqrt(s.pow(2).mean(1, keepdim=True) + cfg.rms_norm_eps) * (1 + qw.double())
        assert torch.allclose(ref[:, h * d:(h + 1) * d], want, rtol=1e-12, atol=1e-12)
    for r in range(tp):
        shard = A.shard_qkv(cfg, qkv, tp, r)
        norm = A.QKNorm(cfg, qw, kw, tp, r)                      # no group: per-head needs no all-reduce
        out = norm(shard.clone())
        assert R.rel_error(out, A.shard_qkv(cfg, ref, tp, r)) < 4e-3, (tp, r)
        v0 = norm.q_local + norm.kv_local
        assert v0 < out.shape[1] and torch.equal(out[:, v0:], shard[:, v0:]), "v must be untouched"


def test_qk_norm_errors():
    cfg = preset("tiny-m2")
    qw, kw = _norm_weights(cfg)
    with pytest.raises(ValueError, match="needs the TP group"):
        A.QKNorm(cfg, qw[:32], kw[:16], tp_size=2, tp_rank=0)
    with pytest.raises(ValueError, match="expected \\(q, k\\) = \\(32, 16\\)"):
        A.QKNorm(cfg, qw, kw, tp_size=2, tp_rank=0, group_name="g")
    with pytest.raises(ValueError, match="cannot be split over TP8"):
        A.QKNorm(cfg, qw[:8], kw[:4], tp_size=8, tp_rank=0, group_name="g")   # full width: no kv replication
    with pytest.raises(ValueError, match="expected \\[T, 128\\]"):
        A.QKNorm(cfg, qw, kw)(torch.zeros(3, 100, dtype=bf))


# --------------------------------------------------------------------------- #
# MoE block
# --------------------------------------------------------------------------- #


def _checkpoint(tmp_path, cfg, dtype):
    t = W.random_checkpoint_tensors(cfg, torch.Generator().manual_seed(int(torch.randint(0, 1 << 30, ()))), dtype)
    return W.save_checkpoint(t, str(tmp_path / cfg.name), cfg), t


def _x(cfg, w, T, dtype):
    for _ in range(100):
        x = torch.randn(T, cfg.hidden_size).to(dtype)
        if M.route_margin(cfg, w, x) > 1e-4:
            return x
    raise AssertionError("no input with a clear routing margin")


def _per_token_moe(cfg, t, layer, x):
    """From the checkpoint's own tensors (w1 gate, w3 up, w2 down), one token
    at a time: sigmoid scores, top-k on score + bias, unbiased scores
    renormalised and scaled, expert MLPs, plus the shared expert."""
    p = f"{cfg.weight_prefix}model.layers.{layer}.block_sparse_moe."
    g, b = t[p + "gate.weight"].double(), t[p + "e_score_correction_bias"].double()
    out = torch.zeros(x.shape[0], cfg.hidden_size, dtype=torch.float64)

    def act(gate, up):
        if cfg.activation == "silu":
            return gate * torch.sigmoid(gate) * up
        gate = gate.clamp(max=cfg.swiglu_limit)
        up = up.clamp(-cfg.swiglu_limit, cfg.swiglu_limit)
        return (up + 1) * gate * torch.sigmoid(cfg.swiglu_alpha * gate)

    for i in range(x.shape[0]):
        xi = x[i].double()
        s = torch.sigmoid(g @ xi)
        ids = sorted(range(cfg.num_experts), key=lambda e: -float(s[e] + b[e]))[:cfg.top_k]
        ws = s[ids] / s[ids].sum() * cfg.routed_scaling_factor
        for e, wgt in zip(ids, ws):
            w1, w3, w2 = (t[f"{p}experts.{e}.{n}.weight"].double() for n in ("w1", "w3", "w2"))
            out[i] += wgt * (w2 @ act(w1 @ xi, w3 @ xi))
        if cfg.has_shared_expert:
            sg, su, sd = (t[f"{p}shared_experts.{n}.weight"].double() for n in ("gate_proj", "up_proj", "down_proj"))
            out[i] += sd @ act(sg @ xi, su @ xi)
    return out


@pytest.mark.parametrize("name", ["tiny-m2", "tiny-m3"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (bf, 2e-2)])
def test_moe_block_matches_references(tmp_path, name, dtype, tol):
    cfg = preset(name)
    path, t = _checkpoint(tmp_path, cfg, dtype)
    sw = W.load_stage(path, cfg)
    layer = 1                                         # MoE in both tiny configs
    w = sw.layers[layer].moe
    x = _x(cfg, w, 12, dtype)
    ref = M.moe_reference(cfg, w, x)
    assert R.rel_error(ref, _per_token_moe(cfg, t, layer, x)) < 1e-12
    out = M.MoEBlock(cfg, w)(x)
    assert out.dtype == dtype and out.shape == x.shape and torch.isfinite(out).all()
    assert R.rel_error(out, ref) < tol
    # the routed scaling factor and the shared expert are real code paths (M3)
    if cfg.family == "m3":
        plain = cfg.with_(routed_scaling_factor=1.0)
        assert R.rel_error(M.moe_reference(plain, w, x), ref) > 0.1
        no_shared = cfg.with_(n_shared_experts=0, shared_intermediate_size=0)
        assert R.rel_error(M.MoEBlock(no_shared, W.MoEWeights(w.gate, w.e_score_correction_bias, w.w13, w.w2))(x),
                           ref) > 0.05


@pytest.mark.parametrize("name,ep", [("tiny-m2", 4), ("tiny-m3", 2), ("tiny-m3", 4)])
def test_ep_partials_sum_to_the_unsharded_block(tmp_path, name, ep):
    cfg = preset(name)
    path, _ = _checkpoint(tmp_path, cfg, torch.float32)
    full = W.load_stage(path, cfg).layers[1].moe
    x = _x(cfg, full, 10, torch.float32)
    parts = []
    for r in range(ep):
        mine = W.load_stage(path, cfg, W.ParallelLayout(ep_size=ep, ep_rank=r)).layers[1].moe
        blk = M.MoEBlock(cfg, mine, ep, r)
        assert blk.expert_map is not None and int((blk.expert_map >= 0).sum()) == mine.w13.shape[0]
        part = blk(x, combine=False)
        assert part.dtype == torch.float32
        parts.append(part)
        with pytest.raises(ValueError, match="needs the EP group's name"):
            blk(x)
    ref = M.moe_reference(cfg, full, x)
    assert R.rel_error(sum(parts), ref) < 1e-5
    assert all(R.rel_error(p, ref) > 0.05 for p in parts), "each rank holds only a share"


@pytest.mark.parametrize("name,ep", [("tiny-m2", 1), ("tiny-m3", 2)])
@pytest.mark.parametrize("max_model_len", [4096, 1 << 20])
def test_moe_block_on_mxfp8_experts(tmp_path, name, ep, max_model_len):
    """Experts loaded as MXFP8 (with the BF16 copy at short context, without
    at long): the block runs fused_moe_mxfp8, and its EP partials sum to the
    unsharded block on the dequantised weights."""
    from minimax_rocm.ops._common import LAST_BACKEND
    cfg = preset(name)
    path, _ = _checkpoint(tmp_path, cfg, bf)
    load = dict(mxfp8=True, max_model_len=max_model_len)
    full = W.load_stage(path, cfg, **load).layers[1].moe
    x = _x(cfg, full, 10, bf)
    ref = M.moe_reference(cfg, full, x)
    parts = []
    for r in range(ep):
        mine = W.load_stage(path, cfg, W.ParallelLayout(ep_size=ep, ep_rank=r), **load).layers[1].moe
        assert mine.w13 is None and mine.mxfp8.has_bf16_copy == (max_model_len <= 4096)
        LAST_BACKEND.pop("fused_moe_mxfp8", None)
        parts.append(M.MoEBlock(cfg, mine, ep, r)(x, combine=False))
        assert LAST_BACKEND["fused_moe_mxfp8"] == "torch/reference"
    assert R.rel_error(sum(parts), ref) < 2e-2


def test_moe_block_rejects_mismatched_weights(tmp_path):
    cfg = preset("tiny-m2")
    path, _ = _checkpoint(tmp_path, cfg, torch.float32)
    mine = W.load_stage(path, cfg, W.ParallelLayout(ep_size=4, ep_rank=1)).layers[0].moe
    with pytest.raises(ValueError, match=r"EP rank 2 of 4 owns \[6, 8\)"):
        M.MoEBlock(cfg, mine, 4, 2)
    m3 = preset("tiny-m3")
    path, _ = _checkpoint(tmp_path, m3, torch.float32)
    w = W.load_stage(path, m3).layers[1].moe
    with pytest.raises(ValueError, match="shared expert"):
        M.MoEBlock(m3, W.MoEWeights(w.gate, w.e_score_correction_bias, w.w13, w.w2))


def test_stage_of_dense_and_moe_layers(tmp_path):
    cfg = preset("tiny-m3")
    path, t = _checkpoint(tmp_path, cfg, torch.float32)
    layers = W.load_stage(path, cfg).layers
    x = _x(cfg, layers[1].moe, 8, torch.float32)
    st = M.Stage(cfg, layers)
    assert isinstance(st.layers[0].mlp, M.DenseMLP) and isinstance(st.layers[1].mlp, M.MoEBlock)
    # independent dense layer: SwiGLU-OAI on gate_proj / up_proj, then down_proj, Gemma post-attention norm
    p = "language_model.model.layers.0."
    xd = x.double()
    n = xd / torch.sqrt(xd.pow(2).mean(1, keepdim=True) + cfg.rms_norm_eps) * (
        1 + t[p + "post_attention_layernorm.weight"].double())
    gate, up = n @ t[p + "mlp.gate_proj.weight"].double().t(), n @ t[p + "mlp.up_proj.weight"].double().t()
    a = (up.clamp(-7, 7) + 1) * gate.clamp(max=7) * torch.sigmoid(1.702 * gate.clamp(max=7))
    h0 = xd + a @ t[p + "mlp.down_proj.weight"].double().t()
    ref = M.stage_reference(cfg, layers, x)
    assert R.rel_error(M.stage_reference(cfg, {0: layers[0]}, x), h0) < 1e-12
    assert R.rel_error(st(x), ref) < 1e-5


def test_ep_combine_without_a_group_is_a_cast():
    x = torch.randn(4, 8)
    y = ep_combine(x, "", out_dtype=bf)
    assert y.dtype == bf and torch.equal(y, x.to(bf))
    assert ep_combine(x, "") is x


# --------------------------------------------------------------------------- #
# on one GPU: the same blocks on the GPU kernels
# --------------------------------------------------------------------------- #


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny-m2", "tiny-m3"])
def test_moe_block_gpu_kernels(tmp_path, name, device):
    from minimax_rocm.ops._common import LAST_BACKEND
    cfg = preset(name).with_(hidden_size=256, intermediate_size=128)
    if cfg.has_shared_expert:
        cfg = cfg.with_(shared_intermediate_size=128, dense_intermediate_size=128)
    path, _ = _checkpoint(tmp_path, cfg, bf)
    full = W.load_stage(path, cfg).layers[1].moe
    x = _x(cfg, full, 40, bf)
    ref = M.moe_reference(cfg, full, x)
    for ep in (1, 2):
        parts = []
        for r in range(ep):
            mine = W.load_stage(path, cfg, W.ParallelLayout(ep_size=ep, ep_rank=r), device=device).layers[1].moe
            out = M.MoEBlock(cfg, mine, ep, r)(x.to(device), combine=False)
            assert LAST_BACKEND["fused_moe"].split("/")[0] in ("triton", "hip", "aiter"), LAST_BACKEND["fused_moe"]
            parts.append(out.cpu())
        assert R.rel_error(sum(parts), ref) < 2e-2, (ep, LAST_BACKEND)


@pytest.mark.gpu
def test_qk_norm_gpu(device):
    for name in ("tiny-m2", "tiny-m3"):
        cfg = preset(name)
        qkv, (qw, kw) = _qkv(cfg, 33), _norm_weights(cfg)
        out = A.QKNorm(cfg, qw.to(device), kw.to(device))(qkv.to(device).clone())
        assert R.rel_error(out, A.qk_norm_reference(cfg, qkv, qw, kw)) < 4e-3, name
        assert math.isfinite(float(out.float().abs().max()))
