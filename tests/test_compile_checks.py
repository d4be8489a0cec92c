"""Every hip/*.hip compiles for gfx942 (clang-19) with no scratch in any kernel,
and its CUDA translation compiles with nvcc for sm_90. Parametrised over the
hip/ folder, so a new kernel is checked without touching this file."""
import shutil

import pytest

from minimax_rocm.native import compile_checks as cc

SOURCES = cc.hip_sources()
AMD_MISSING = cc.missing_amd_tools()


@pytest.mark.skipif(AMD_MISSING is not None, reason=f"gfx942 toolchain: {AMD_MISSING}")
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_gfx942_compile_and_isa_report(src, tmp_path):
    co = cc.compile_amd(src, "gfx942", tmp_path)
    kernels = cc.isa_report(co)
    for k in kernels:
        print(f"{src.name}: {k}")
    assert kernels, f"{src.name}: no kernels in the code object"
    for k in kernels:
        assert k.scratch_bytes == 0, f"{k.name} spills to scratch on gfx942: {k}"
        assert 0 < k.vgprs <= 512 and k.sgprs > 0, k


@pytest.mark.skipif(AMD_MISSING is not None, reason=f"gfx942 toolchain: {AMD_MISSING}")
def test_topk_reduce_uses_16_byte_loads_on_gfx942(tmp_path):
    (k,) = cc.isa_report(cc.compile_amd(cc.HIP_DIR / "topk_reduce.hip", "gfx942", tmp_path))
    assert k.load_x4 >= 1, k


@pytest.mark.skipif(AMD_MISSING is not None, reason=f"gfx942 toolchain: {AMD_MISSING}")
def test_isa_report_cli_exit_status(capsys):
    assert cc.main([]) == 0
    out = capsys.readouterr().out
    assert "gfx942 ISA report" in out and "topk_reduce" in out


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_translated_cuda_compiles_for_sm90(src, tmp_path):
    obj = cc.compile_nvcc(src, tmp_path)
    assert obj.stat().st_size > 0
