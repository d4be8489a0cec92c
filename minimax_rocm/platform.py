"""What a device is: its arch, the arch families the per-arch tables key on,
and the Platform record the oracle decides on.

The bottom of the package: it imports nothing from it, so the kernels may ask
it which arch a tensor lives on (their tile tables) without asking the oracle.

Environment:
  MINIMAX_ROCM_ARCH=gfx942|gfx950|sm90|sm100|cpu   simulate an arch (explain, CI,
                                                   AMD tile tables on an NVIDIA GPU)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional

import torch

BACKENDS = ("hip", "aiter", "triton", "torch")

# What each arch has. cu_count is the production part (MI300X 304 CUs, MI355X
# 256, H100/H200 132 SMs, B200 148).
ARCHS = {
    "gfx942": dict(vendor="amd", wave_size=64, cu_count=304, fp8_dtype="e4m3fnuz", mx_hw=False),
    "gfx950": dict(vendor="amd", wave_size=64, cu_count=256, fp8_dtype="e4m3fn", mx_hw=True),
    "sm90": dict(vendor="nvidia", wave_size=32, cu_count=132, fp8_dtype="e4m3fn", mx_hw=False),
    "sm100": dict(vendor="nvidia", wave_size=32, cu_count=148, fp8_dtype="e4m3fn", mx_hw=True),
    "cpu": dict(vendor="cpu", wave_size=1, cu_count=0, fp8_dtype="e4m3fn", mx_hw=False),
}


@dataclass(frozen=True)
class Platform:
    vendor: str                 # amd | nvidia | cpu
    arch: str                   # gfx942, gfx950, sm90, sm100, sm89, ..., cpu
    wave_size: int
    cu_count: int
    fp8_dtype: str              # e4m3fnuz (gfx942) | e4m3fn
    mx_hw: bool                 # native MX matrix instructions (gfx950, sm100)
    native_ext: bool            # the hip/ extension loaded (HIP or translated CUDA)
    aiter: bool                 # AITER importable (ROCm only)
    triton: bool                # Triton importable and a GPU to run it on
    simulated: bool = False

    @property
    def backends(self) -> tuple[str, ...]:
        have = {"hip": self.native_ext, "aiter": self.aiter, "triton": self.triton, "torch": True}
        return tuple(b for b in BACKENDS if have[b])

    @property
    def torch_fp8_dtype(self) -> torch.dtype:
        return torch.float8_e4m3fnuz if self.fp8_dtype == "e4m3fnuz" else torch.float8_e4m3fn

    @property
    def clusters(self) -> bool:
        """Thread-block clusters (NVIDIA sm90 and later)."""
        return self.vendor == "nvidia" and self.arch.startswith("sm") and self.arch[2:].isdigit() \
            and int(self.arch[2:]) >= 90


def simulated_arch() -> Optional[str]:
    return os.environ.get("MINIMAX_ROCM_ARCH") or None


def simulated_platform(arch: str, native_ext: bool = True, aiter: Optional[bool] = None,
                       triton: bool = True) -> Platform:
    """A platform as a full install on `arch` would see it (for explain and tests)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    a = ARCHS[arch]
    gpu = a["vendor"] != "cpu"
    return Platform(arch=arch, native_ext=native_ext and gpu,
                    aiter=(a["vendor"] == "amd") if aiter is None else (aiter and a["vendor"] == "amd"),
                    triton=triton and gpu, simulated=True, **a)


def gpu_arch(index: int) -> str:
    """The arch of CUDA/ROCm device `index`: gfx942, sm90, sm89, ..."""
    if torch.version.hip:
        name = torch.cuda.get_device_properties(index).gcnArchName
        return name.split(":")[0]
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm{major}{minor}" if minor else f"sm{major}0"


def nvidia_capability(device: torch.device) -> Optional[tuple[int, int]]:
    """(major, minor) of `device` when it is an NVIDIA GPU; None on a ROCm
    build and off the GPU (CPU tensors, Triton's interpreter). The one test behind the
    NVIDIA-only instructions (wgmma, TMA, PDL, PTX fp8 conversions)."""
    if device.type != "cuda" or torch.version.hip:
        return None
    return _cuda_capability(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_capability(index: int) -> tuple[int, int]:
    # asked at kernel launches; a device's capability never changes
    return torch.cuda.get_device_capability(index)


def graph_capturing() -> bool:
    """Whether the current CUDA/HIP stream is capturing a graph: no host syncs
    then, and a tensor made now lives in the graph's memory pool."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def cached_outside_capture(cache: dict, key, make):
    """cache[key], made by make() where missing and kept only when no graph
    is being captured (a tensor made during capture belongs to that graph's
    pool and must not serve later calls)."""
    value = cache.get(key)
    if value is None:
        value = make()
        if not graph_capturing():
            cache[key] = value
    return value


def device_arch(device: torch.device) -> str:
    """The arch whose tables serve tensors on `device`: "cpu" off the GPU
    (Triton's interpreter), else MINIMAX_ROCM_ARCH where set, else the GPU's."""
    if device.type != "cuda":
        return "cpu"
    return simulated_arch() or gpu_arch(device.index if device.index is not None else torch.cuda.current_device())


def arch_family(arch: str) -> str:
    """The key of the per-arch tables: gfx942 also serves gfx940/941; unknown
    NVIDIA archs use sm90's entries, unknown AMD ones gfx942's."""
    if arch in ARCHS:
        return arch
    if arch.startswith("gfx94"):
        return "gfx942"
    if arch.startswith("gfx95"):
        return "gfx950"
    if arch.startswith("sm1"):
        return "sm100"
    if arch.startswith("sm"):
        return "sm90"
    return "cpu"
