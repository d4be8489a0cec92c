"""Ahead-of-time compiles of the Triton kernels for targets this machine lacks
(gfx942, gfx950, sm90, sm100), and what their ISA says: matrix instructions, scratch
(spills), registers, shared memory.

Every module in minimax_rocm/triton that defines `aot_specs()` is picked up by
`all_specs()`, so a new kernel is checked without touching the tests.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

TARGETS = {
    "gfx942": ("hip", "gfx942", 64),
    "gfx950": ("hip", "gfx950", 64),
    "sm90": ("cuda", 90, 32),
    "sm100": ("cuda", 100, 32),
}
# what a spec compiles for unless it names its targets (sm100: the specs of
# kernels whose table entries differ from sm90's)
DEFAULT_TARGETS = ("gfx942", "gfx950", "sm90")


@dataclass
class AotSpec:
    name: str                               # e.g. "router_gemm[M=32,H=3072,E=256]"
    fn: Any                                 # the @triton.jit function
    signature: dict[str, str]               # arg -> "*bf16" | "i32" | "fp32" | "constexpr" ...
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 2
    matmul: bool = False                    # a GEMM: must show MFMA (AMD) / wgmma (sm90)
    fp8: bool = False                       # an fp8 GEMM: must show fp8 MFMA on gfx942
    tma: bool = False                       # loads through a tensor descriptor: must show TMA copies (NVIDIA)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    # per-target overrides of constexprs / num_warps (tile tables differ per arch)
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    # arguments compiled as multiples of 16, as the JIT specialises them when
    # they are (None: every pointer and every stride_* argument): without it
    # the report would show scalar loads and no cp.async pipelining that the
    # production launch does not have
    divisible_by_16: Any = None

    def attrs(self) -> dict:
        names = list(self.signature)
        div = self.divisible_by_16
        if div is None:
            div = [n for n, t in self.signature.items() if t.startswith("*") or n.startswith("stride")]
        return {(names.index(n),): [["tt.divisibility", 16]] for n in div}


@dataclass
class AotResult:
    spec: str
    target: str
    vgprs: int = -1
    sgprs: int = -1
    regs: int = -1               # NVIDIA registers per thread
    shared: int = 0
    scratch: int = 0             # private segment (AMD) / spill stores + loads (NVIDIA)
    mfma: int = 0                # v_mfma* (AMD)
    mfma_fp8: int = 0            # v_mfma*fp8* / *f8f6f4* (AMD)
    mfma_scale: int = 0          # v_mfma_scale* (AMD gfx950: MX block scales inside the instruction)
    wgmma: int = 0               # wgmma.mma_async (sm90 PTX)
    tcgen05: int = 0             # tcgen05.mma (sm100 PTX)
    block_scaled: int = 0        # tcgen05.mma ... block_scale (sm100: MX scales inside the instruction)
    mma: int = 0                 # mma.sync (NVIDIA, the pre-Hopper path)
    grid_dep: int = 0            # griddepcontrol.wait (NVIDIA: programmatic dependent launch)
    tma_copies: int = 0          # cp.async.bulk.tensor (NVIDIA: TMA)


def all_specs() -> list[AotSpec]:
    from .. import triton as pkg
    specs = []
    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name == "aot":
            continue
        mod = importlib.import_module(f"{pkg.__name__}.{m.name}")
        if hasattr(mod, "aot_specs"):
            specs += mod.aot_specs()
    return specs


def _int(pattern: str, text: str, default: int = -1) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else default


def compile_spec(spec: AotSpec, target: str) -> AotResult:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    over = dict(spec.per_target.get(target, {}))
    num_warps = over.pop("num_warps", spec.num_warps)
    num_stages = over.pop("num_stages", spec.num_stages)
    constexprs = {**spec.constexprs, **over}
    if "PDL" in spec.signature:      # the launch choice of triton/dependent_launch.py per target
        constexprs.setdefault("PDL", TARGETS[target][0] == "cuda")
    src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=constexprs, attrs=spec.attrs())
    compiled = triton.compile(src, target=GPUTarget(*TARGETS[target]),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    r = AotResult(spec.name, target, shared=int(getattr(compiled.metadata, "shared", 0) or 0))
    if "amdgcn" in compiled.asm:
        isa = compiled.asm["amdgcn"]
        r.vgprs = _int(r"\.vgpr_count:\s+(\d+)", isa)
        r.sgprs = _int(r"\.sgpr_count:\s+(\d+)", isa)
        r.scratch = _int(r"ScratchSize:\s+(\d+)", isa, 0)
        mfma = re.findall(r"^\s*(v_mfma\S*)", isa, re.M)
        r.mfma = len(mfma)
        r.mfma_fp8 = sum(1 for m in mfma if "fp8" in m or "f8" in m or "bf8" in m)
        r.mfma_scale = sum(1 for m in mfma if m.startswith("v_mfma_scale"))
    else:
        ptx = compiled.asm["ptx"]
        r.wgmma = len(re.findall(r"wgmma\.mma_async", ptx))
        r.tcgen05 = len(re.findall(r"tcgen05\.mma", ptx))
        r.block_scaled = len(re.findall(r"tcgen05\.mma\S*block_scale", ptx))
        r.mma = len(re.findall(r"\bmma\.sync", ptx))
        r.grid_dep = len(re.findall(r"griddepcontrol\.wait", ptx))
        r.tma_copies = len(re.findall(r"cp\.async\.bulk\.tensor", ptx))
        r.regs, r.scratch = _nvidia_resources(compiled.asm.get("cubin"))
    return r


def _nvidia_resources(cubin) -> tuple[int, int]:
    """(registers per thread, stack + local bytes per thread) of a cubin, read
    by the cuobjdump that Triton ships (the compile metadata only has them
    after a load on a GPU); (-1, 0) where that tool is missing."""
    import os
    import subprocess
    import tempfile

    import triton.backends.nvidia as nv
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    if not cubin or not os.path.exists(tool):
        return -1, 0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return _int(r"REG:(\d+)", out), _int(r"STACK:(\d+)", out, 0) + _int(r"LOCAL:(\d+)", out, 0)


def _compile_all_json() -> None:
    """Compile every spec for its targets; one JSON line per (spec, target).

    The tests run this in a subprocess: under TRITON_INTERPRET=1 (the CPU test
    default) @triton.jit yields interpreter functions that cannot be compiled.
    """
    import dataclasses
    import json
    import sys
    import traceback
    for spec in all_specs():
        for t in spec.targets:
            try:
                row = dataclasses.asdict(compile_spec(spec, t))
            except Exception:
                row = dict(spec=spec.name, target=t, error=traceback.format_exc(limit=3))
            print(json.dumps(row), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    _compile_all_json()
