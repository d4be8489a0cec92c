"""Every Triton kernel compiles ahead of time for gfx942, gfx950 and sm90 at its
production shapes (each kernel module's aot_specs()); GEMMs show the matrix
instructions (v_mfma / wgmma) and no kernel spills to scratch on AMD."""
import pytest

from minimax_rocm.triton import aot

CASES = [(s, t) for s in aot.all_specs() for t in s.targets]


def test_some_kernels_are_checked():
    assert CASES, "no Triton kernel declares aot_specs(): the compile check would check nothing"


@pytest.mark.parametrize("spec,target", CASES, ids=[f"{s.name}-{t}" for s, t in CASES])
def test_aot_compile(spec, target):
    r = aot.compile_spec(spec, target)
    print(r)
    if target.startswith("gfx"):
        assert r.scratch == 0, f"{spec.name} spills to scratch on {target}: {r}"
        assert r.vgprs > 0
        if spec.matmul:
            assert r.mfma > 0, f"{spec.name}: no v_mfma on {target}: {r}"
        if spec.fp8 and target == "gfx942":
            assert r.mfma_fp8 > 0, f"{spec.name}: no fp8 MFMA on gfx942: {r}"
    elif spec.matmul:
        assert r.wgmma > 0 or r.mma > 0, f"{spec.name}: no tensor-core instruction on {target}: {r}"
