"""Loading the native extension (the kernels in hip/).

Order: a prebuilt `minimax_rocm._C` (from `pip install .` on a ROCm or CUDA
torch); else, when asked (`load()` called, or MINIMAX_ROCM_JIT=1), a JIT build
with torch.utils.cpp_extension: on ROCm from hip/ directly, on CUDA from the
translated sources (hip2cuda) in the build directory. Never raises: a failure
leaves `load_error()` saying why, and the oracle then never picks "hip".

MINIMAX_ROCM_BUILD_EXT=0 disables the extension entirely.
MINIMAX_ROCM_BUILD_DIR sets the JIT build directory (default ~/.cache/minimax_rocm/ext).
"""
from __future__ import annotations

import os
import threading
import traceback
from pathlib import Path
from typing import Optional

HIP_DIR = Path(__file__).resolve().parents[2] / "hip"
NAME = "minimax_rocm_ext"

_lock = threading.Lock()
_state: dict = {"tried": False, "ok": False, "error": None}


def sources() -> list[Path]:
    """Every kernel file plus the module binding: a new hip/*.hip is built
    without touching this list."""
    return sorted(HIP_DIR.glob("*.hip")) + [HIP_DIR / "bindings.cpp"]


def load_error() -> Optional[str]:
    return _state["error"]


def _build_dir() -> Path:
    d = Path(os.environ.get("MINIMAX_ROCM_BUILD_DIR", Path.home() / ".cache" / "minimax_rocm" / "ext"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _try_prebuilt() -> bool:
    try:
        import minimax_rocm._C  # noqa: F401  (registers torch.ops.minimax_rocm_ext)
        return True
    except ImportError:
        return False


def _jit(verbose: bool) -> None:
    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise RuntimeError("no GPU: nothing to build the extension for")
    if not HIP_DIR.is_dir():
        raise RuntimeError(f"hip sources not found at {HIP_DIR} (JIT builds need a source checkout)")
    build = _build_dir()
    if torch.version.hip:
        srcs = [str(s) for s in sources()]
        include = HIP_DIR / "include"
    else:
        from . import hip2cuda
        out = build / "cuda_src"
        hip2cuda.translate_tree(HIP_DIR / "include", out / "include")
        srcs = [str(hip2cuda.translate_file(s, out)) for s in sources()]
        include = out / "include"
    cpp_extension.load(name=NAME, sources=srcs, extra_include_paths=[str(include)],
                       extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=["-O3", "-std=c++17"],
                       build_directory=str(build), is_python_module=False, verbose=verbose)


def load(verbose: bool = False):
    """torch.ops.minimax_rocm_ext after loading the extension, or None."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            if os.environ.get("MINIMAX_ROCM_BUILD_EXT") == "0":
                _state["error"] = "disabled by MINIMAX_ROCM_BUILD_EXT=0"
            elif _try_prebuilt():
                _state["ok"] = True
            else:
                try:
                    _jit(verbose)
                    _state["ok"] = True
                except Exception as e:  # a missing toolkit is never fatal
                    _state["error"] = f"{type(e).__name__}: {e}".strip()[:2000]
                    if verbose:
                        traceback.print_exc()
    return ops() if _state["ok"] else None


def available() -> bool:
    """Loaded already, prebuilt, or JIT-buildable with MINIMAX_ROCM_JIT=1."""
    if _state["ok"]:
        return True
    if _state["tried"]:
        return False
    if os.environ.get("MINIMAX_ROCM_BUILD_EXT") == "0":
        return False
    if _try_prebuilt() or os.environ.get("MINIMAX_ROCM_JIT") == "1":
        return load() is not None
    return False


def ops():
    import torch
    return torch.ops.minimax_rocm_ext
