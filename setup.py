"""minimax-rocm: builds the native extension when a GPU toolkit is present.

- ROCm torch: the HIP sources in hip/ (PYTORCH_ROCM_ARCH, default gfx942;gfx950).
- CUDA torch + nvcc: hip/ translated to CUDA first (minimax_rocm/native/hip2cuda.py),
  TORCH_CUDA_ARCH_LIST default 9.0;10.0.
- Otherwise: pure Python (Triton and torch backends). A missing toolkit is
  never a build failure. MINIMAX_ROCM_BUILD_EXT=0|1 forces the choice (1 makes
  a missing toolkit an error).

Install with `pip install --no-build-isolation .` so this file sees the torch
that is installed (an isolated build would fetch its own).
"""
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
HIP = ROOT / "hip"


def native_extension():
    flag = os.environ.get("MINIMAX_ROCM_BUILD_EXT")
    if flag == "0":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        if flag == "1":
            raise SystemExit("MINIMAX_ROCM_BUILD_EXT=1 but torch is not importable (use --no-build-isolation)")
        return [], {}
    sources = sorted(HIP.glob("*.hip")) + [HIP / "bindings.cpp"]
    if torch.version.hip:
        os.environ.setdefault("PYTORCH_ROCM_ARCH", "gfx942;gfx950")
        include = HIP / "include"
    elif torch.version.cuda and cpp_extension.CUDA_HOME:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0;10.0")
        sys.path.insert(0, str(ROOT))
        from minimax_rocm.native import hip2cuda
        out = ROOT / "build" / "cuda_src"
        hip2cuda.translate_tree(HIP / "include", out / "include")
        sources = [hip2cuda.translate_file(s, out) for s in sources]
        include = out / "include"
    else:
        if flag == "1":
            raise SystemExit("MINIMAX_ROCM_BUILD_EXT=1 but neither ROCm nor CUDA torch with nvcc is present")
        return [], {}
    ext = cpp_extension.CUDAExtension(
        "minimax_rocm._C", [os.path.relpath(s, ROOT) for s in sources], include_dirs=[str(include)],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17"]})
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = native_extension()

setup(
    name="minimax-rocm",
    version="0.1.0",
    description="Kernels for serving MiniMax-M2/M2.5/M3 MoE models on AMD MI300X (and NVIDIA)",
    packages=find_packages(include=["minimax_rocm", "minimax_rocm.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.11,<2.15", "numpy", "safetensors"],
    extras_require={
        "triton": ["triton>=3.6"],
        "test": ["pytest", "pytest-xdist", "safetensors", "hypothesis"],
        "bench": ["matplotlib"],
        # The engine itself: on ROCm and in the docker images vLLM is already
        # installed (its ROCm build), and an installed release in range is kept.
        "vllm": ["vllm>=0.32,<0.34"],
    },
    # vLLM runs this in every process it starts (minimax_rocm/integrations/vllm).
    entry_points={"vllm.general_plugins": ["minimax_rocm = minimax_rocm.integrations.vllm:register"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
