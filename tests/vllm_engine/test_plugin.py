"""The plugin's register function against vLLM's real registry (in-process;
no engine)."""
from __future__ import annotations

import pytest

import minimax_rocm.integrations.vllm as plugin


@pytest.fixture
def fresh(monkeypatch):
    """register() as if in a new process; every seam removed afterwards."""
    monkeypatch.setattr(plugin, "_state", {"done": False, "installed": False, "why": ""})
    yield
    from minimax_rocm.integrations.vllm import seams
    seams.uninstall()


def _ours_installed():
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.minimax_rms_norm import MiniMaxText01RMSNormTP

    from minimax_rocm.integrations.vllm import seams
    mine = {vcls.__name__: cls for _, vcls, cls in seams._CLASSES}
    present = {k for k, cls in mine.items() if op_registry_oot.get(k) is cls}
    from vllm.model_executor.layers.quantization import modelopt
    mxfp8 = modelopt.ModelOptMxFp8Config.FusedMoEMethodCls is seams.MiniMaxMxfp8MoEMethod
    assert mxfp8 == (modelopt.ModelOptMxFp8FusedMoE is seams.MiniMaxMxfp8MoEMethod)
    patched = MiniMaxText01RMSNormTP.forward_qkv is seams.forward_qkv
    assert patched == mxfp8  # the two non-registry seams go in and out together
    return present, patched, set(mine)


@pytest.mark.parametrize("v,ok", [("0.32.0", True), ("0.32.0+cpu", True), ("0.33.1", True), ("0.31.9", False),
                                  ("0.34.0", False), ("1.0.0", False)])
def test_tested_version_range(v, ok):
    assert plugin.version_supported(v) is ok


def test_register_is_idempotent(fresh):
    plugin.register()
    plugin.register()
    present, patched, names = _ours_installed()
    assert present == names and patched and plugin.installed()
    from minimax_rocm.integrations.vllm import seams
    assert seams.install() is None  # again: nothing changes, no duplicate-name assertion


def test_off_by_env(fresh, monkeypatch):
    monkeypatch.setenv("MINIMAX_ROCM_VLLM", "0")
    plugin.register()
    assert _ours_installed()[:2] == (set(), False) and not plugin.installed()


def test_off_outside_the_tested_versions(fresh, monkeypatch):
    import vllm
    monkeypatch.setattr(vllm, "__version__", "0.40.0")
    plugin.register()
    assert _ours_installed()[:2] == (set(), False)
    assert "outside the tested range" in plugin._state["why"]


def test_never_half_patches(fresh):
    """Another plugin owning one class: none of ours goes in."""
    from vllm.model_executor.custom_op import op_registry_oot

    class Theirs:
        pass
    op_registry_oot["UnquantizedFusedMoEMethod"] = Theirs
    try:
        plugin.register()
        assert _ours_installed()[:2] == (set(), False) and not plugin.installed()
        assert "UnquantizedFusedMoEMethod" in plugin._state["why"]
    finally:
        op_registry_oot.pop("UnquantizedFusedMoEMethod", None)


def test_install_failure_rolls_back(fresh, monkeypatch):
    from vllm.model_executor.custom_op import CustomOp

    from minimax_rocm.integrations.vllm import seams

    def boom(*a, **k):
        raise RuntimeError("registry changed")
    monkeypatch.setattr(CustomOp, "register_oot", classmethod(boom))
    why = seams.install()
    assert why and "registry changed" in why
    assert _ours_installed()[:2] == (set(), False)
