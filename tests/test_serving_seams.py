"""The oracle's seam table: which layers of a served model take our ops."""
import dataclasses

import pytest

from minimax_rocm import oracle

M2 = oracle.SeamFacts("gate", model_type="minimax_m2", hidden=3072, num_experts=256, num_local_experts=32,
                      top_k=8, tp_size=8, ep_size=8, weight_dtype="float32")


def decide(arch, **changes):
    return oracle.decide_seam(dataclasses.replace(M2, **changes), oracle.simulated_platform(arch))


@pytest.mark.parametrize("arch", ["gfx942", "gfx950", "sm90", "sm100", "cpu"])
@pytest.mark.parametrize("seam", ["gate", "qk_norm", "moe_bf16"])
def test_minimax_m2_takes_every_seam(arch, seam):
    d = decide(arch, seam=seam)
    assert d.take, d.reason
    assert d.line("L").startswith(f"minimax_rocm: L: {seam} -> minimax_rocm.{oracle.SEAM_OPS[seam]} (")


@pytest.mark.parametrize("arch", ["gfx942", "sm90"])
def test_gpu_picks(arch):
    # the gate's line names the native kernel: M2's hidden size at one token
    rows = {"gfx942": 1, "sm90": 4}[arch]
    assert decide(arch, seam="gate").reason.startswith(f"hip onepass(rows={rows}) at decode")
    assert decide(arch, seam="qk_norm").reason.startswith("hip at decode: one-shot Lamport")
    assert decide(arch, seam="moe_bf16").reason.startswith("triton/sparse_local_bf16")


@pytest.mark.parametrize("changes,seam,why", [
    (dict(model_type="qwen3_moe"), "gate", "not a MiniMax"),
    (dict(model_type="minimax_text_01"), "qk_norm", "not a MiniMax"),
    (dict(model_type="", architectures=("MiniMaxM3SparseForCausalLM",)), None, None),
    (dict(quantized=True), "gate", "quantised or biased gate"),
    (dict(weight_dtype="bfloat16"), "gate", "gate weight not fp32"),
    (dict(tp_size=1), "qk_norm", "TP1"),
    (dict(tp_size=16), "qk_norm", "no fused all-reduce"),
    (dict(all2all=True), "moe_bf16", "all-to-all"),
    (dict(dp_size=2), "moe_bf16", "all-to-all"),
    (dict(eplb=True), "moe_bf16", "load balancing"),
    (dict(fused_shared_experts=True), "moe_bf16", "shared experts fused"),
    (dict(activation="swigluoai_uninterleave", swiglu_beta=0.5), "moe_bf16", "beta 1"),
    (dict(activation="gelu"), "moe_bf16", "activation"),
    (dict(quantized=True, quant_scheme="fp8"), "moe_bf16", "quantised expert weights"),
    (dict(act_dtype="float32"), "moe_bf16", "not bf16/fp16"),
])
def test_declines_name_the_reason(changes, seam, why):
    for s in ([seam] if seam else ["gate", "qk_norm", "moe_bf16"]):
        d = decide("sm90", seam=s, **changes)
        if why is None:
            assert d.take, d.reason
        else:
            assert not d.take and why in d.reason, d.reason
            assert "-> engine's own (" in d.line("L")


@pytest.mark.parametrize("arch", ["gfx942", "sm90"])
def test_gpu_without_native_extension_keeps_vllms_gate_and_norm(arch):
    # (the AITER all-reduce would need a communicator opened for the group,
    # which the plugin does not open)
    plat = oracle.simulated_platform(arch, native_ext=False)
    for seam in ("gate", "qk_norm"):
        assert not oracle.decide_seam(dataclasses.replace(M2, seam=seam), plat).take
    assert oracle.decide_seam(dataclasses.replace(M2, seam="moe_bf16"), plat).take


def test_m3_swigluoai_split_is_taken():
    d = decide("gfx942", seam="moe_bf16", model_type="minimax_m3", activation="swigluoai_uninterleave")
    assert d.take
    assert oracle.SERVING_ACTIVATIONS["swigluoai_uninterleave"] == ("swiglu_oai", "split")


def test_unknown_seam():
    with pytest.raises(ValueError, match="unknown seam"):
        decide("sm90", seam="attention")
