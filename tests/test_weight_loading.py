"""Safetensors weight loading for PP / DP / EP / TP ranks (minimax_rocm.parallel.weights),
on real small checkpoints written to tmp_path: what each rank loads equals the
right slice of the checkpoint, remote experts and other stages' layers are
never read (counted through a wrapper around safetensors' safe_open), and
missing / unexpected / mis-shaped tensors raise errors that name them."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from minimax_rocm import reference as R
from minimax_rocm.ops import Mxfp8Experts, layer_weight_formats
from minimax_rocm.parallel import weights as W
from minimax_rocm.parallel.expert_map import local_expert_range
from minimax_rocm.models.config import preset

bf = torch.bfloat16


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


class _CountingSlice:
    def __init__(self, sl, name, log):
        self._sl, self._name, self._log = sl, name, log

    def get_shape(self):
        return self._sl.get_shape()

    def get_dtype(self):
        return self._sl.get_dtype()

    def __getitem__(self, key):
        self._log.append(("slice", self._name))
        return self._sl[key]


class _CountingHandle:
    """safe_open's handle, logging every tensor materialised (get_tensor, or
    indexing a get_slice); headers (keys, shapes, dtypes) are not reads."""

    def __init__(self, h, log):
        self._h, self._log = h, log

    def keys(self):
        return self._h.keys()

    def get_tensor(self, name):
        self._log.append(("tensor", name))
        return self._h.get_tensor(name)

    def get_slice(self, name):
        return _CountingSlice(self._h.get_slice(name), name, self._log)


@pytest.fixture
def read_log(monkeypatch):
    log = []
    real = W.safe_open
    monkeypatch.setattr(W, "safe_open", lambda *a, **k: _CountingHandle(real(*a, **k), log))
    return log


def _write(tmp_path, cfg, moe_module="block_sparse_moe", dtype=bf, shards=3, extra=None, drop=(), seed=0):
    t = W.random_checkpoint_tensors(cfg, torch.Generator().manual_seed(seed), dtype=dtype, moe_module=moe_module)
    for n in drop:
        del t[n]
    t.update(extra or {})
    path = W.save_checkpoint(t, str(tmp_path / f"ck_{cfg.name}_{moe_module}_{len(os.listdir(tmp_path))}"), cfg,
                             shards=shards)
    return path, t


def _layer(cfg, i, moe="block_sparse_moe"):
    return f"{cfg.weight_prefix}model.layers.{i}.", moe


# --------------------------------------------------------------------------- #
# layout arithmetic
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n,parts,want", [(62, 4, [(0, 16), (16, 32), (32, 47), (47, 62)]),
                                          (3, 2, [(0, 2), (2, 3)]), (60, 3, [(0, 20), (20, 40), (40, 60)]),
                                          (5, 5, [(i, i + 1) for i in range(5)])])
def test_stage_layers_contiguous_and_uneven(n, parts, want):
    got = [W.stage_layers(n, parts, r) for r in range(parts)]
    assert got == want
    assert got[0][0] == 0 and got[-1][1] == n and all(a[1] == b[0] for a, b in zip(got, got[1:]))


def test_stage_layers_errors():
    with pytest.raises(ValueError, match="2 layers cannot be split over 3"):
        W.stage_layers(2, 3, 0)
    with pytest.raises(ValueError, match="part 3 not in"):
        W.stage_layers(8, 3, 3)


def test_layout_from_world_rank_pp_dp_tp():
    # 8 ranks: PP2 x DP2 x TP2, expert parallel over DP x TP within a stage.
    lays = [W.ParallelLayout.from_world_rank(r, pp=2, dp=2, tp=2) for r in range(8)]
    assert [(l.pp_rank, l.dp_rank, l.tp_rank) for l in lays] == \
        [(p, d, t) for p in range(2) for d in range(2) for t in range(2)]
    assert all(l.ep_size == 4 for l in lays)
    assert [l.ep_rank for l in lays] == [0, 1, 2, 3, 0, 1, 2, 3]
    cfg = preset("minimax-m3")
    # within a stage, the EP ranks cover every expert exactly once
    cover = sorted(e for l in lays[:4] for e in range(*l.experts(cfg)))
    assert cover == list(range(128))
    assert lays[5].layers(cfg) == (30, 60) and lays[1].layers(cfg) == (0, 30)
    # without expert parallelism every rank holds every expert
    assert W.ParallelLayout.from_world_rank(3, dp=2, tp=2, expert_parallel=False).experts(cfg) == (0, 128)
    with pytest.raises(ValueError, match="rank 8 not in"):
        W.ParallelLayout.from_world_rank(8, pp=2, dp=2, tp=2)
    with pytest.raises(ValueError, match="ep_rank 2 not in"):
        W.ParallelLayout(ep_size=2, ep_rank=2)


# --------------------------------------------------------------------------- #
# what a rank loads
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("layout_kind", ["split", "interleaved"])
def test_full_load_equals_checkpoint(tmp_path, layout_kind):
    cfg = preset("tiny-m2").with_(gate_up_layout=layout_kind)
    path, t = _write(tmp_path, cfg)
    sw = W.load_stage(path, cfg)
    I = cfg.intermediate_size
    for i in range(cfg.num_hidden_layers):
        p, m = _layer(cfg, i)
        lw = sw.layers[i]
        assert torch.equal(lw.q_norm, t[p + "self_attn.q_norm.weight"])
        assert torch.equal(lw.k_norm, t[p + "self_attn.k_norm.weight"])
        assert torch.equal(lw.post_attention_layernorm, t[p + "post_attention_layernorm.weight"])
        assert lw.moe.gate.dtype == torch.float32 and torch.equal(lw.moe.gate, t[p + m + ".gate.weight"])
        assert torch.equal(lw.moe.e_score_correction_bias, t[p + m + ".e_score_correction_bias"])
        assert lw.moe.w13.shape == (10, 2 * I, cfg.hidden_size) and lw.moe.w13.dtype == bf
        assert lw.moe.w2.shape == (10, cfg.hidden_size, I)
        for e in range(10):
            g, u = t[f"{p}{m}.experts.{e}.w1.weight"], t[f"{p}{m}.experts.{e}.w3.weight"]
            if layout_kind == "split":   # gate rows, then up rows
                assert torch.equal(lw.moe.w13[e, :I], g) and torch.equal(lw.moe.w13[e, I:], u)
            else:
                assert torch.equal(lw.moe.w13[e, 0::2], g) and torch.equal(lw.moe.w13[e, 1::2], u)
            assert torch.equal(lw.moe.w2[e], t[f"{p}{m}.experts.{e}.w2.weight"])
        assert sw.report.loaded_experts[i] == tuple(range(10))
    assert sw.report.skipped_remote_experts == 0 and sw.report.skipped_other_layers == 0


@pytest.mark.parametrize("ep", [2, 4])
def test_ep_rank_reads_only_its_experts(tmp_path, read_log, ep):
    cfg = preset("tiny-m2")                       # 10 experts: EP4 holds 3, 3, 2, 2
    path, t = _write(tmp_path, cfg)
    for r in range(ep):
        read_log.clear()
        sw = W.load_stage(path, cfg, W.ParallelLayout(ep_size=ep, ep_rank=r))
        e0, e1 = local_expert_range(10, ep, r)
        assert sw.expert_range == (e0, e1)
        read = [n for _, n in read_log]
        assert read == sw.report.read, "the report lists exactly what was read"
        assert len(read) == len(set(read)), "nothing read twice"
        for i in range(cfg.num_hidden_layers):
            p, m = _layer(cfg, i)
            assert sw.report.loaded_experts[i] == tuple(range(e0, e1))
            for e in range(10):
                names = [f"{p}{m}.experts.{e}.{w}.weight" for w in ("w1", "w2", "w3")]
                if e0 <= e < e1:
                    assert all(n in read for n in names)
                    j = e - e0
                    assert torch.equal(sw.layers[i].moe.w13[j, :cfg.intermediate_size], t[names[0]])
                    assert torch.equal(sw.layers[i].moe.w2[j], t[names[1]])
                else:
                    assert not any(n in read for n in names), f"remote expert {e} read on EP rank {r}"
        # per layer: 4 norms + gate + bias + 3 per local expert
        assert len(read) == cfg.num_hidden_layers * (6 + 3 * (e1 - e0))
        assert sw.report.skipped_remote_experts == cfg.num_hidden_layers * 3 * (10 - (e1 - e0))


def test_pp_stage_reads_only_its_layers(tmp_path, read_log):
    cfg = preset("tiny-m2").with_(num_hidden_layers=3)
    path, t = _write(tmp_path, cfg)
    stages = {}
    for s in range(2):
        read_log.clear()
        stages[s] = W.load_stage(path, cfg, W.ParallelLayout(pp_size=2, pp_rank=s))
        layers = (0, 2) if s == 0 else (2, 3)     # uneven: the first stage holds the extra layer
        assert stages[s].layer_range == layers and sorted(stages[s].layers) == list(range(*layers))
        for _, n in read_log:
            i = int(n.split(".")[2])
            assert layers[0] <= i < layers[1], f"stage {s} read {n}"
        assert stages[s].report.skipped_other_layers == sum(
            1 for n in t if "layers." in n and not layers[0] <= int(n.split(".")[2]) < layers[1])
    assert torch.equal(stages[1].layers[2].moe.w2[4], t["model.layers.2.block_sparse_moe.experts.4.w2.weight"])


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_slices_of_full_width_qk_norm_weights(tmp_path, read_log, tp):
    cfg = preset("tiny-m2")                       # q 8 heads x 8, kv 4 heads x 8
    path, t = _write(tmp_path, cfg)
    q, kv = cfg.q_size, cfg.kv_size
    for r in range(tp):
        read_log.clear()
        sw = W.load_stage(path, cfg, W.ParallelLayout(tp_size=tp, tp_rank=r))
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            assert torch.equal(sw.layers[i].q_norm, t[p + "self_attn.q_norm.weight"][r * q // tp:(r + 1) * q // tp])
            assert torch.equal(sw.layers[i].k_norm, t[p + "self_attn.k_norm.weight"][r * kv // tp:(r + 1) * kv // tp])
            # read as slices, not whole tensors
            assert ("slice", p + "self_attn.q_norm.weight") in read_log
            assert ("tensor", p + "self_attn.q_norm.weight") not in read_log
    with pytest.raises(ValueError, match="4 heads do not split evenly over TP8"):
        W.load_stage(path, cfg, W.ParallelLayout(tp_size=8, tp_rank=0))


@pytest.mark.parametrize("moe_module", ["mlp", "block_sparse_moe"])
def test_m3_checkpoint_prefix_shared_expert_dense_layer(tmp_path, read_log, moe_module):
    cfg = preset("tiny-m3")                       # layer 0 dense, layer 1 MoE; names under language_model.
    extra = {"vision_tower.blocks.0.attn.qkv.weight": torch.zeros(2, 2),
             "multi_modal_projector.linear_1.weight": torch.zeros(2, 2),
             "language_model.model.embed_tokens.weight": torch.zeros(4, 2),
             "language_model.lm_head.weight": torch.zeros(4, 2),
             "language_model.model.norm.weight": torch.zeros(2),
             "language_model.model.layers.1.self_attn.q_proj.weight": torch.zeros(2, 2),
             "language_model.model.layers.1.self_attn.index_q_proj.weight": torch.zeros(2, 2),
             "language_model.model.mtp.0.proj.weight": torch.zeros(2, 2)}
    path, t = _write(tmp_path, cfg, moe_module=moe_module, extra=extra)
    Is, I, H = cfg.shared_intermediate_size, cfg.intermediate_size, cfg.hidden_size
    p0, p1 = "language_model.model.layers.0.", "language_model.model.layers.1."
    m = moe_module
    for ep in (1, 2):
        for r in range(ep):
            read_log.clear()
            sw = W.load_stage(path, cfg, W.ParallelLayout(ep_size=ep, ep_rank=r))
            assert sw.report.moe_module == moe_module
            assert sorted(sw.report.ignored) == sorted(extra)
            assert not any(n in extra for _, n in read_log), "known-unused names are never read"
            d = sw.layers[0].dense
            assert sw.layers[0].moe is None and d.w13.shape == (2 * cfg.dense_intermediate_size, H)
            assert torch.equal(d.w13[:cfg.dense_intermediate_size], t[p0 + "mlp.gate_proj.weight"])
            assert torch.equal(d.w13[cfg.dense_intermediate_size:], t[p0 + "mlp.up_proj.weight"])
            assert torch.equal(d.w2, t[p0 + "mlp.down_proj.weight"])
            assert sw.layers[1].q_norm.shape == (cfg.head_dim,)      # per-head: no TP slice
            mw = sw.layers[1].moe
            s0, s1 = r * Is // ep, (r + 1) * Is // ep                 # this rank's shared-expert columns
            assert torch.equal(mw.shared_w13[:s1 - s0], t[f"{p1}{m}.shared_experts.gate_proj.weight"][s0:s1])
            assert torch.equal(mw.shared_w13[s1 - s0:], t[f"{p1}{m}.shared_experts.up_proj.weight"][s0:s1])
            assert torch.equal(mw.shared_w2, t[f"{p1}{m}.shared_experts.down_proj.weight"][:, s0:s1])
            e0, e1 = local_expert_range(8, ep, r)
            assert torch.equal(mw.w13[0, I:], t[f"{p1}{m}.experts.{e0}.w3.weight"])
            assert sw.report.loaded_experts == {1: tuple(range(e0, e1))}   # the dense layer has no experts


def test_dtype_conversion_and_device(tmp_path):
    cfg = preset("tiny-m2")
    path, t = _write(tmp_path, cfg, dtype=bf)
    sw = W.load_stage(path, cfg, dtype=torch.float32)
    assert sw.layers[0].moe.w13.dtype == torch.float32
    assert torch.equal(sw.layers[0].moe.w2[3], t["model.layers.0.block_sparse_moe.experts.3.w2.weight"].float())


@pytest.mark.parametrize("arch,fp8", [("cpu", torch.float8_e4m3fn), ("gfx942", torch.float8_e4m3fnuz)])
@pytest.mark.parametrize("max_model_len", [4096, 1 << 20])
def test_mxfp8_load_keeps_each_layer_as_the_memory_policy_says(tmp_path, monkeypatch, max_model_len, arch, fp8):
    """mxfp8=True: the local experts quantised in the platform's fp8 flavour,
    each layer kept as layer_weight_formats says (MXFP8 with or without the
    BF16 copy, or the dequantised weights alone)."""
    monkeypatch.setenv("MINIMAX_ROCM_ARCH", arch)
    cfg = preset("tiny-m2").with_(num_hidden_layers=5)     # one layer in 5 keeps BF16 only at long context
    path, t = _write(tmp_path, cfg)
    sw = W.load_stage(path, cfg, W.ParallelLayout(ep_size=2, ep_rank=1), mxfp8=True, max_model_len=max_model_len)
    formats = layer_weight_formats(5, max_model_len)
    assert sw.report.expert_formats == dict(enumerate(formats)) and len(set(formats)) == 1 + (max_model_len > 4096)
    e0, e1 = local_expert_range(cfg.num_local_experts, 2, 1)
    for i, fmt in enumerate(formats):
        mw = sw.layers[i].moe
        p, m = _layer(cfg, i)
        w13 = torch.stack([torch.cat([t[f"{p}{m}.experts.{e}.w1.weight"], t[f"{p}{m}.experts.{e}.w3.weight"]])
                           for e in range(e0, e1)])
        w2 = torch.stack([t[f"{p}{m}.experts.{e}.w2.weight"] for e in range(e0, e1)])
        (q13, s13), (q2, s2) = R.mxfp8_quant(w13, fp8), R.mxfp8_quant(w2, fp8)
        assert mw.max_model_len == max_model_len and mw.num_experts_held == e1 - e0 == mw.expert_end - mw.expert_start
        if fmt == "bf16":
            assert mw.mxfp8 is None
            assert torch.equal(mw.w13, R.mxfp8_dequant(q13, s13, bf))
            assert torch.equal(mw.w2, R.mxfp8_dequant(q2, s2, bf))
            continue
        ex = mw.mxfp8
        assert mw.w13 is None and mw.w2 is None and ex.has_bf16_copy == (fmt == "mxfp8+bf16")
        for got, want in ((ex.w13_q, q13), (ex.w13_s, s13), (ex.w2_q, q2), (ex.w2_s, s2)):
            assert got.dtype == want.dtype and torch.equal(got.view(torch.uint8), want.view(torch.uint8))
        if ex.has_bf16_copy:
            assert ex.w13_bf16.dtype == bf and torch.equal(ex.w2_bf16, R.mxfp8_dequant(q2, s2, bf))


def test_moe_weights_hold_float_or_mxfp8_experts():
    gate, w13, w2 = torch.randn(4, 64), torch.randn(4, 64, 64), torch.randn(4, 64, 32)
    ex = Mxfp8Experts.quantize(w13, w2, "e4m3fn")
    assert W.MoEWeights(gate, None, None, None, expert_start=2, mxfp8=ex).expert_end == 6
    for bad in (dict(w13=None, w2=None), dict(w13=w13, w2=w2, mxfp8=ex), dict(w13=w13, w2=None)):
        with pytest.raises(ValueError, match="MoEWeights"):
            W.MoEWeights(gate, None, **bad)


def test_single_file_and_unindexed_directory(tmp_path):
    cfg = preset("tiny-m2")
    t = W.random_checkpoint_tensors(cfg)
    f = tmp_path / "one.safetensors"
    save_file(t, str(f))
    a = W.load_stage(str(f), cfg, W.ParallelLayout(ep_size=2, ep_rank=1))
    d = tmp_path / "unindexed"
    d.mkdir()
    names = sorted(t)
    save_file({n: t[n] for n in names[:40]}, str(d / "a.safetensors"))
    save_file({n: t[n] for n in names[40:]}, str(d / "b.safetensors"))
    b = W.load_stage(str(d), cfg, W.ParallelLayout(ep_size=2, ep_rank=1))
    assert torch.equal(a.layers[1].moe.w13, b.layers[1].moe.w13)
    with pytest.raises(W.CheckpointError, match="no such checkpoint"):
        W.load_stage(str(tmp_path / "nope"), cfg)


def test_dp_replicas_load_the_same_tensors(tmp_path):
    cfg = preset("tiny-m2")
    path, _ = _write(tmp_path, cfg)
    # DP2 x TP1 without expert parallelism: both replicas hold every expert.
    a, b = (W.load_stage(path, cfg, W.ParallelLayout.from_world_rank(r, dp=2, expert_parallel=False)) for r in (0, 1))
    assert a.expert_range == b.expert_range == (0, 10)
    assert torch.equal(a.layers[1].moe.w13, b.layers[1].moe.w13)
    # with expert parallelism the DP ranks split the experts
    a, b = (W.load_stage(path, cfg, W.ParallelLayout.from_world_rank(r, dp=2)) for r in (0, 1))
    assert (a.expert_range, b.expert_range) == ((0, 5), (5, 10))


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #


def test_missing_tensors_are_named(tmp_path):
    cfg = preset("tiny-m2")
    gone = ["model.layers.1.block_sparse_moe.experts.7.w2.weight", "model.layers.0.self_attn.k_norm.weight"]
    path, _ = _write(tmp_path, cfg, drop=gone)
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, cfg, W.ParallelLayout(ep_size=2, ep_rank=1))       # owns experts 5..9
    assert sorted(ei.value.missing) == sorted(gone)
    assert all(n in str(ei.value) for n in gone) and "2 missing tensors" in str(ei.value)
    # EP rank 0 does not need expert 7: only the k norm is missing for it...
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, cfg, W.ParallelLayout(ep_size=2, ep_rank=0))
    assert ei.value.missing == [gone[1]]
    # ...and a stage without layer 0 needs neither of them except expert 7
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, cfg, W.ParallelLayout(pp_size=2, pp_rank=1, ep_size=2, ep_rank=1))
    assert ei.value.missing == [gone[0]]
    W.load_stage(path, cfg, W.ParallelLayout(pp_size=2, pp_rank=1, ep_size=2, ep_rank=0))
    # check_all: the whole model's names are checked (names only)
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, cfg, W.ParallelLayout(pp_size=2, pp_rank=1, ep_size=2, ep_rank=0), check_all=True)
    assert sorted(ei.value.missing) == sorted(gone)


def test_unexpected_tensors_are_named(tmp_path):
    cfg = preset("tiny-m2")
    odd = {"model.layers.0.block_sparse_moe.experts.10.w1.weight": torch.zeros(32, 64),   # expert id 10 of 10
           "model.layers.0.block_sparse_moe.experts.3.w1.weight_scale_inv": torch.zeros(1, 1),
           "model.layers.1.block_sparse_moe.experts.2.w4.weight": torch.zeros(2, 2),
           "model.layers.9.self_attn.q_norm.weight": torch.zeros(64),                 # beyond layers + MTP
           "model.layers.0.mlp.gate_proj.weight": torch.zeros(2, 2),                  # dense MLP on a MoE layer
           "something.else": torch.zeros(1)}
    path, _ = _write(tmp_path, cfg, extra=odd)
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, cfg)
    assert sorted(ei.value.unexpected) == sorted(odd)
    assert all(n in str(ei.value) for n in odd)
    sw = W.load_stage(path, cfg, strict=False)
    assert sorted(sw.report.unexpected) == sorted(odd)
    sw = W.load_stage(path, cfg, ignore=[r"weight_scale_inv$", r"experts\.(10|2\.w4)", r"layers\.9\.",
                                         r"mlp\.gate_proj", r"^something"])
    assert sw.report.unexpected == []
    # M2 stores 3 MTP modules as layers num_hidden_layers .. +2: known, skipped
    mtp = preset("tiny-m2").with_(num_mtp_modules=3)
    path, _ = _write(tmp_path, mtp, extra={"model.layers.2.self_attn.q_norm.weight": torch.zeros(64),
                                           "model.layers.4.eh_proj.weight": torch.zeros(2, 2)})
    assert len(W.load_stage(path, mtp).report.ignored) == 2


def test_shape_mismatch_and_fp8_are_refused(tmp_path):
    cfg = preset("tiny-m2")
    path, t = _write(tmp_path, cfg, extra={"model.layers.0.block_sparse_moe.experts.1.w2.weight": torch.zeros(64, 31)})
    with pytest.raises(W.CheckpointError, match=r"experts\.1\.w2\.weight: shape \(64, 31\), config expects \(64, 32\)"):
        W.load_stage(path, cfg)
    W.load_stage(path, cfg, W.ParallelLayout(ep_size=2, ep_rank=1))   # the bad expert is not this rank's
    fp8 = t["model.layers.1.block_sparse_moe.experts.0.w1.weight"].float().to(torch.float8_e4m3fn)
    path, _ = _write(tmp_path, cfg, extra={"model.layers.1.block_sparse_moe.experts.0.w1.weight": fp8})
    with pytest.raises(W.CheckpointError, match="fp8 tensors"):
        W.load_stage(path, cfg)


def test_wrong_prefix_reports_every_needed_tensor_missing(tmp_path):
    m3 = preset("tiny-m3")
    plain = m3.with_(weight_prefix="")                               # names without language_model.
    path, _ = _write(tmp_path, plain)
    with pytest.raises(W.CheckpointError) as ei:
        W.load_stage(path, m3)
    assert ei.value.missing and all(n.startswith("language_model.") for n in ei.value.missing)
    assert ei.value.unexpected and all(n.startswith("model.layers.") for n in ei.value.unexpected)


def test_mixed_moe_module_names_refused(tmp_path):
    cfg = preset("tiny-m2")
    path, _ = _write(tmp_path, cfg, extra={"model.layers.0.mlp.experts.0.w1.weight": torch.zeros(32, 64)})
    with pytest.raises(W.CheckpointError, match="mixes"):
        W.load_stage(path, cfg)


def test_index_json_and_config_written(tmp_path):
    cfg = preset("tiny-m3")
    path, t = _write(tmp_path, cfg, shards=4)
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    assert sorted(wm) == sorted(t) and len(set(wm.values())) == 4
    from minimax_rocm.models.config import MiniMaxConfig
    assert MiniMaxConfig.from_pretrained(path, name=cfg.name) == cfg
    os.remove(os.path.join(path, sorted(set(wm.values()))[2]))
    with pytest.raises(W.CheckpointError, match="names files that are not there: .*model-00003-of-00004"):
        W.load_stage(path, cfg)
