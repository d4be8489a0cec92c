"""Every Triton kernel compiles ahead of time for gfx942, gfx950 and sm90 at its
production shapes (each kernel module's aot_specs()); GEMMs show the matrix
instructions (v_mfma / wgmma) and no kernel spills (scratch on AMD, stack or
local memory on NVIDIA).

The compiles run in one subprocess without TRITON_INTERPRET (interpreter
functions cannot be compiled)."""
import json
import os
import subprocess
import sys

import pytest

from minimax_rocm.triton import aot

# (name, target) -> spec: per-target specs of one kernel may share a name
SPECS = {(s.name, t): s for s in aot.all_specs() for t in s.targets}
CASES = list(SPECS)


def test_spec_targets_are_unique():
    pairs = [(s.name, t) for s in aot.all_specs() for t in s.targets]
    assert len(pairs) == len(set(pairs)), "two specs compile under one (name, target): one would hide the other"


@pytest.fixture(scope="module")
def results():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    p = subprocess.run([sys.executable, "-m", "minimax_rocm.triton.aot"], env=env, capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-4000:]
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return {(r["spec"], r["target"]): r for r in rows}


def test_some_kernels_are_checked():
    assert CASES, "no Triton kernel declares aot_specs(): the compile check would check nothing"


@pytest.mark.parametrize("name,target", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_aot_compile(results, name, target):
    spec = SPECS[(name, target)]
    r = results[(name, target)]
    assert "error" not in r, r.get("error")
    print(r)
    if target.startswith("gfx"):
        assert r["scratch"] == 0, f"{name} spills to scratch on {target}: {r}"
        assert r["vgprs"] > 0
        if spec.matmul:
            assert r["mfma"] > 0, f"{name}: no v_mfma on {target}: {r}"
        if spec.fp8 and target == "gfx942":
            assert r["mfma_fp8"] > 0, f"{name}: no fp8 MFMA on gfx942: {r}"
        if spec.fp8 and spec.constexprs.get("DOT_MODE") == 2 and target == "gfx950":
            assert r["mfma_scale"] > 0, f"{name}: tl.dot_scaled without MX-scaled MFMA on gfx950: {r}"
    else:
        # registers and stack / local bytes come from cuobjdump (-1: tool missing)
        assert r["regs"] == -1 or r["scratch"] == 0, f"{name} uses local memory (spills) on {target}: {r}"
        if spec.matmul:
            assert r["wgmma"] > 0 or r["mma"] > 0 or r["tcgen05"] > 0, \
                f"{name}: no tensor-core instruction on {target}: {r}"
        if spec.tma:
            assert r["tma_copies"] > 0, f"{name}: a tensor-descriptor load without TMA copies on {target}: {r}"
        if spec.fp8 and spec.constexprs.get("DOT_MODE") == 2 and target == "sm100":
            assert r["block_scaled"] > 0, f"{name}: tl.dot_scaled without block-scaled tcgen05.mma on sm100: {r}"
        if "PDL" in spec.signature and spec.constexprs.get("PDL", True):
            # the kernel launches with the PDL attribute on sm90, so it must wait first
            assert r["grid_dep"] > 0, f"{name}: PDL kernel without griddepcontrol.wait on {target}: {r}"
