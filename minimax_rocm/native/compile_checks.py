"""Compile the hip/ kernels for targets this machine does not have, and read
what the compiler made of them.

- gfx942 (MI300X): Debian's clang-19 + ROCm device libraries. Those libraries
  (ROCm 5.2) predate gfx942 and lack `oclc_isa_version_942.bc`: a copy of the
  bitcode folder gets one copied from the gfx940 file. The result is for
  compile checks and ISA reports only, never to run.
- sm90 (Hopper): the translated .cu with nvcc.

Kernels are compiled with MMR_DEVICE_ONLY for AMD (no torch headers in the
device-only pass); the nvcc check compiles the whole translated file, launcher
and torch registration included.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
HIP_DIR = REPO / "hip"
CACHE = Path(os.environ.get("MINIMAX_ROCM_CACHE", Path.home() / ".cache" / "minimax_rocm"))
CLANG = "clang++-19"
READOBJ = "llvm-readobj-19"
OBJDUMP = "llvm-objdump-19"
SYSTEM_BITCODE = Path("/usr/lib/x86_64-linux-gnu/amdgcn/bitcode")


def hip_sources() -> list[Path]:
    return sorted(HIP_DIR.glob("*.hip"))


def missing_amd_tools() -> Optional[str]:
    for tool in (CLANG, READOBJ, OBJDUMP):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install clang-19 llvm-19 lld-19 libamdhip64-dev rocm-device-libs)"
    if not (SYSTEM_BITCODE / "ockl.bc").exists():
        return f"ROCm device libraries not found under {SYSTEM_BITCODE} (apt-get install rocm-device-libs)"
    if not Path("/usr/include/hip/hip_runtime.h").exists():
        return "HIP headers not found (apt-get install libamdhip64-dev)"
    return None


def device_libs(arch: str = "gfx942") -> Path:
    """A bitcode folder that has an oclc_isa_version file for `arch`."""
    num = arch[3:]
    dst = CACHE / "amdgcn-bitcode"
    isa = dst / f"oclc_isa_version_{num}.bc"
    if not isa.exists():
        dst.mkdir(parents=True, exist_ok=True)
        for f in SYSTEM_BITCODE.glob("*.bc"):
            if not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)
        if not isa.exists():
            shutil.copy2(SYSTEM_BITCODE / "oclc_isa_version_940.bc", isa)
    return dst


def compile_amd(src: Path, arch: str = "gfx942", out_dir: Optional[Path] = None) -> Path:
    out_dir = out_dir or CACHE / "co" / arch
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (src.stem + ".co")
    cmd = [CLANG, "-x", "hip", f"--offload-arch={arch}", "--cuda-device-only", "--no-gpu-bundle-output", "-O3",
           "-std=c++17", "--rocm-path=/usr", f"--rocm-device-lib-path={device_libs(arch)}",
           f"-I{HIP_DIR / 'include'}", "-DMMR_DEVICE_ONLY", "-c", str(src), "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"gfx942 compile of {src.name} failed:\n{' '.join(cmd)}\n{p.stderr[-6000:]}")
    return out


@dataclass
class KernelIsa:
    name: str
    vgprs: int = -1
    agprs: int = 0
    sgprs: int = -1
    lds_bytes: int = 0
    scratch_bytes: int = 0
    mfma: int = 0
    load_x4: int = 0           # 16-byte global loads
    instructions: int = 0
    extra: dict = field(default_factory=dict)


def isa_report(code_object: Path) -> list[KernelIsa]:
    notes = subprocess.run([READOBJ, "--notes", str(code_object)], capture_output=True, text=True, check=True).stdout
    # Kernel metadata: every ".name:" after ".kernels:" starts a kernel; read the
    # fields that follow it up to the next kernel.
    kernels: list[KernelIsa] = []
    section = notes[notes.find("amdhsa.kernels"):] if "amdhsa.kernels" in notes else notes
    chunks = re.split(r"\n\s*-\s+\.agpr_count:", section)
    for ch in chunks[1:]:
        ch = ".agpr_count:" + ch
        def field_(name, default=-1):
            m = re.search(rf"\.{name}:\s+([^\s]+)", ch)
            return m.group(1) if m else default
        name = field_(r"name", "?")
        if name == "?" or name.endswith(".kd"):
            name = field_(r"symbol", "?").removesuffix(".kd")
        kernels.append(KernelIsa(name=name, vgprs=int(field_("vgpr_count")), agprs=int(field_("agpr_count", 0)),
                                 sgprs=int(field_("sgpr_count")),
                                 lds_bytes=int(field_("group_segment_fixed_size", 0)),
                                 scratch_bytes=int(field_("private_segment_fixed_size", 0))))
    dis = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(code_object)], capture_output=True, text=True,
                         check=True).stdout
    by_name = {k.name: k for k in kernels}
    cur = None
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            cur = by_name.get(m.group(1))
            continue
        if cur is None or not line.startswith("\t") and not line.startswith(" "):
            continue
        ins = line.strip().split()
        if not ins:
            continue
        op = ins[0]
        cur.instructions += 1
        if op.startswith("v_mfma"):
            cur.mfma += 1
        if op in ("global_load_dwordx4", "buffer_load_dwordx4", "flat_load_dwordx4"):
            cur.load_x4 += 1
    return kernels


def _cpu_torch_cuda_stubs() -> Path:
    """A CPU build of torch ships c10/cuda headers but not the one its CMake
    generates (cuda_cmake_macros.h); compile checks get a stand-in that says
    what a shared-library build says. Never used for a real build."""
    d = CACHE / "torch-cpu-stubs"
    f = d / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    return d


def compile_nvcc(src: Path, out_dir: Optional[Path] = None, arch: str = "90a", device_only: bool = False) -> Path:
    """Translate src (and the portability layer) to CUDA and compile it with nvcc."""
    from . import hip2cuda
    out_dir = out_dir or CACHE / "cu"
    hip2cuda.translate_tree(HIP_DIR / "include", out_dir / "include")
    cu = hip2cuda.translate_file(src, out_dir)
    obj = out_dir / (src.stem + f".sm{arch}.o")
    cmd = ["nvcc", "-std=c++17", "-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-I{out_dir / 'include'}",
           "-c", str(cu), "-o", str(obj)]
    if device_only:
        cmd.insert(1, "-DMMR_DEVICE_ONLY")
    else:
        import sysconfig

        from torch.utils.cpp_extension import include_paths
        cmd[1:1] = [f"-I{p}" for p in include_paths()] + [f"-I{_cpu_torch_cuda_stubs()}",
                                                           f"-I{sysconfig.get_paths()['include']}",
                                                           "-DTORCH_EXTENSION_NAME=minimax_rocm_ext",
                                                           "-D_GLIBCXX_USE_CXX11_ABI=1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"nvcc sm_{arch} compile of {cu.name} failed:\n{' '.join(cmd)}\n{p.stderr[-6000:]}")
    return obj


def main(argv=None) -> int:
    """Print the gfx942 ISA report of every hip/*.hip (scripts/isa_report.py)."""
    import argparse
    import json
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("sources", nargs="*", help="default: every hip/*.hip")
    ap.add_argument("--arch", default="gfx942")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    why = missing_amd_tools()
    if why:
        print(f"isa_report: {why}")
        return 2
    rows = []
    for src in map(Path, a.sources) if a.sources else hip_sources():
        for k in isa_report(compile_amd(src, a.arch)):
            rows.append(dict(file=src.name, **asdict(k)))
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = f"{'file':<28}{'kernel':<52}{'VGPR':>6}{'AGPR':>6}{'SGPR':>6}{'LDS':>8}{'scratch':>9}{'MFMA':>6}{'ld x4':>7}"
    print(f"# {a.arch} ISA report")
    print(head)
    for r in rows:
        name = r["name"] if len(r["name"]) < 50 else r["name"][:47] + "..."
        print(f"{r['file']:<28}{name:<52}{r['vgprs']:>6}{r['agprs']:>6}{r['sgprs']:>6}{r['lds_bytes']:>8}"
              f"{r['scratch_bytes']:>9}{r['mfma']:>6}{r['load_x4']:>7}")
    return 1 if any(r["scratch_bytes"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
