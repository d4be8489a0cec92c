"""The oracle: platforms, the rule table, forcing, MoE paths; never an
unavailable backend."""
import itertools

import pytest

from minimax_rocm import oracle
from minimax_rocm.oracle import Problem, decide, simulated_platform

ARCHS = ["gfx942", "gfx950", "sm90", "sm100", "cpu"]


@pytest.mark.parametrize("arch", ARCHS)
def test_simulated_platform_facts(arch):
    p = simulated_platform(arch)
    assert p.arch == arch and p.simulated
    assert p.wave_size == {"gfx942": 64, "gfx950": 64, "sm90": 32, "sm100": 32, "cpu": 1}[arch]
    assert p.fp8_dtype == ("e4m3fnuz" if arch == "gfx942" else "e4m3fn")
    assert p.mx_hw == (arch in ("gfx950", "sm100"))
    assert ("aiter" in p.backends) == arch.startswith("gfx")
    assert "torch" in p.backends
    if arch == "cpu":
        assert p.backends == ("torch",)


def test_env_override_simulates_arch(monkeypatch):
    monkeypatch.setenv("MINIMAX_ROCM_ARCH", "gfx942")
    assert oracle.detect_platform().arch == "gfx942"
    monkeypatch.setenv("MINIMAX_ROCM_ARCH", "gfx999")
    with pytest.raises(ValueError, match="unknown arch"):
        oracle.detect_platform()


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown op"):
        decide(Problem("not_an_op"), simulated_platform("sm90"))


def _all_problems():
    for op in oracle.OPS:
        for tokens, ep, tp, wf, mml, bias, copy in itertools.product(
                (1, 16, 64, 216, 1024), (1, 8), (1, 3, 4), ("bf16", "mxfp8"), (4096, 8192), (False, True),
                (False, True)):
            yield Problem(op, tokens=tokens, hidden=3072, num_experts=128, num_local_experts=128 // ep, top_k=4,
                          ep_size=ep, tp_size=tp, weight_format=wf, max_model_len=mml, has_bias=bias,
                          has_bf16_copy=copy)


@pytest.mark.parametrize("arch", ARCHS)
def test_never_picks_an_unavailable_backend(arch):
    flags = list(itertools.product((False, True), repeat=3))
    problems = list(_all_problems())
    for native, aiter, triton in flags:
        plat = simulated_platform(arch, native_ext=native, aiter=aiter, triton=triton)
        for p in problems:
            for check_impl in (False, True):
                d = decide(p, plat, check_impl)
                for c in (d.chosen, *d.fallbacks):
                    assert c.backend in plat.backends, (p, plat, d)
                    if check_impl:
                        assert c.backend in oracle.implemented(p.op), (p, d)
                assert d.fallbacks == () or d.fallbacks[-1].backend == "torch" or d.chosen.backend == "torch"


def test_cpu_inputs_always_run_the_reference():
    plat = simulated_platform("sm90")
    for op in oracle.OPS:
        assert decide(Problem(op, on_gpu=False, tokens=4), plat).chosen.backend == "torch"


def test_router_threshold_and_bias_fall_back():
    plat = simulated_platform("sm90")
    small = decide(Problem("router_gemm", tokens=8), plat, check_impl=False)
    assert small.chosen.backend == "hip"
    limit = oracle.threshold("router_native_max_m", "sm90")
    big = decide(Problem("router_gemm", tokens=int(limit) + 1), plat, check_impl=False)
    assert big.chosen.backend == "torch" and "BLAS" in big.chosen.reason
    biased = decide(Problem("router_gemm", tokens=1, has_bias=True), plat, check_impl=False)
    assert biased.chosen.backend == "torch"


def test_threshold_is_table_data(monkeypatch):
    monkeypatch.setitem(oracle.THRESHOLDS["router_native_max_m"], "sm90", 4)
    assert decide(Problem("router_gemm", tokens=8), simulated_platform("sm90"), False).chosen.backend == "torch"


def _moe(**kw):
    base = dict(tokens=216, hidden=6144, num_experts=128, num_local_experts=16, top_k=4, ep_size=8,
                max_model_len=4096)
    base.update(kw)
    op = "fused_moe_mxfp8" if base.get("weight_format") == "mxfp8" else "fused_moe"
    return Problem(op, **base)


@pytest.mark.parametrize("arch", ["gfx942", "gfx950", "sm90", "sm100"])
def test_moe_paths(arch):
    plat = simulated_platform(arch)
    path = lambda p: oracle.moe_path(p, plat, check_impl=False)  # noqa: E731
    assert path(_moe()) == "sparse_local_bf16"
    assert path(_moe(ep_size=1, num_local_experts=128)) == "generic"
    assert path(_moe(weight_format="mxfp8")) == "native_mxfp8"
    assert path(_moe(weight_format="mxfp8", max_model_len=8192)) == "emulation"
    # mixed policy: tiny and large batches use the BF16 copy when one is kept
    lo, hi = (oracle.threshold(n, arch) for n in ("mxfp8_bf16_max_tokens", "mxfp8_bf16_min_tokens"))
    assert path(_moe(weight_format="mxfp8", tokens=1, has_bf16_copy=True)) == "bf16_copy"
    assert path(_moe(weight_format="mxfp8", tokens=lo, has_bf16_copy=True)) == "bf16_copy"
    assert path(_moe(weight_format="mxfp8", tokens=min(hi, 4096), has_bf16_copy=True)) == "bf16_copy"
    # the native band (strictly between the two thresholds); empty where the
    # benchmark found the BF16 copy never slower (the sm100 entry)
    for t in (lo + 1, 64, hi - 1):
        assert path(_moe(weight_format="mxfp8", tokens=t, has_bf16_copy=True)) == (
            "native_mxfp8" if lo < t < hi else "bf16_copy"), t
    assert path(_moe(weight_format="mxfp8", tokens=4)) == "native_mxfp8"  # no copy kept: fewest bytes
    assert path(_moe(weight_format="mxfp8", tokens=2048)) == "native_mxfp8"
    # no copy, prefill sizes: emulation from where the arch's native GEMMs lose (sm90: no MX MMA)
    emu = oracle.threshold("mxfp8_emulation_min_tokens", arch)
    assert path(_moe(weight_format="mxfp8", tokens=8192)) == ("native_mxfp8" if emu > 8192 else "emulation")
    assert path(_moe(weight_format="mxfp8", tokens=16384)) == ("emulation" if arch == "sm90" else "native_mxfp8")
    assert path(_moe(weight_format="mxfp8", tokens=16384, has_bf16_copy=True)) == (
        "native_mxfp8" if lo < 16384 < hi else "bf16_copy")
    assert path(_moe(weight_format="mxfp8", tokens=4, max_model_len=8192, has_bf16_copy=True)) == "emulation"


def test_lamport_needs_supported_world_and_peer_access():
    plat = simulated_platform("gfx942")
    ok = decide(Problem("allreduce_rms_qk", tokens=16, tp_size=4), plat, False)
    assert ok.chosen.backend == "hip"
    for p in (Problem("allreduce_rms_qk", tokens=16, tp_size=3), Problem("allreduce_rms_qk", tokens=16, tp_size=16),
              Problem("allreduce_rms_qk", tokens=16, tp_size=4, peer_access=False)):
        assert decide(p, plat, False).chosen.backend not in ("hip", "aiter")
    no_ext = simulated_platform("sm90", native_ext=False)
    assert decide(Problem("allreduce_rms_qk", tokens=16, tp_size=2), no_ext, False).chosen.backend == "triton"


def test_force_override(monkeypatch):
    plat = simulated_platform("sm90")
    monkeypatch.setenv("MINIMAX_ROCM_FORCE", "router_gemm=torch, fused_moe=torch")
    d = decide(Problem("router_gemm", tokens=1), plat, False)
    assert d.forced and d.chosen.backend == "torch"
    monkeypatch.delenv("MINIMAX_ROCM_FORCE")
    monkeypatch.setenv("MINIMAX_ROCM_FORCE_TOPK_REDUCE", "aiter")
    with pytest.raises(oracle.BackendUnavailable, match="topk_reduce.*aiter"):
        decide(Problem("topk_reduce", tokens=1), plat, False)
    monkeypatch.setenv("MINIMAX_ROCM_FORCE_TOPK_REDUCE", "cuda")
    with pytest.raises(ValueError, match="not one of"):
        decide(Problem("topk_reduce", tokens=1), plat, False)


def test_force_on_cpu_inputs_of_a_gpu_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("MINIMAX_ROCM_FORCE_ROUTER_GEMM", "triton")
    with pytest.raises(oracle.BackendUnavailable, match="CPU"):
        decide(Problem("router_gemm", tokens=1, on_gpu=False), simulated_platform("sm90"), False)


def test_every_rule_names_a_known_backend_and_op_has_a_reference():
    for r in oracle.RULES:
        assert r.backend in oracle.BACKENDS and r.reason
    for op in oracle.OPS:
        assert [r for r in oracle.RULES if r.op == op][-1].backend == "torch", op
        assert "torch" in oracle.implemented(op)


def test_arch_family_maps_relatives():
    assert oracle.arch_family("gfx940") == "gfx942"
    assert oracle.arch_family("sm89") == "sm90"
    assert oracle.arch_family("sm120") == "sm100"


def test_nvidia_capability_only_for_an_nvidia_gpu(monkeypatch, request):
    import torch
    from minimax_rocm import platform
    from minimax_rocm.platform import nvidia_capability
    assert nvidia_capability(torch.device("cpu")) is None
    # the fake capability below must neither meet a cached one nor outlive the test
    platform._cuda_capability.cache_clear()
    request.addfinalizer(platform._cuda_capability.cache_clear)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.version, "hip", None)
    assert nvidia_capability(torch.device("cuda", 0)) == (9, 0)
    monkeypatch.setattr(torch.version, "hip", "7.0")
    assert nvidia_capability(torch.device("cuda", 0)) is None


@pytest.mark.parametrize("arch", ["gfx942", "sm90"])
def test_moe_align_native_only_for_many_experts_and_few_routes(arch):
    plat = oracle.simulated_platform(arch)
    routes = int(oracle.threshold("align_native_max_routes", arch))
    experts = int(oracle.threshold("align_native_min_local_experts", arch))
    for tokens, k, e_loc, want in ((routes // 8, 8, experts, "hip"), (routes // 8 + 1, 8, experts, "triton"),
                                   (1, 8, experts - 1, "triton"), (216, 4, 16, "triton")):
        p = oracle.Problem("moe_align", tokens=tokens, top_k=k, num_local_experts=e_loc)
        assert oracle.decide(p, plat).chosen.backend == want, (arch, tokens, k, e_loc)


@pytest.mark.parametrize("m,backend", [(1, "torch"), (4, "torch"), (8, "triton"), (16, "triton"), (17, "torch"),
                                       (32, "torch")])
def test_router_without_extension_takes_triton_only_where_it_was_faster(m, backend):
    plat = oracle.simulated_platform("sm90", native_ext=False)
    p = oracle.Problem("router_gemm", tokens=m, hidden=3072, num_experts=256)
    assert oracle.decide(p, plat, check_impl=False).chosen.backend == backend
