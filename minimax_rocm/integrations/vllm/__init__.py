"""vLLM plugin: MiniMax-M2 / M3 layers in vLLM call this package's ops.

`register` is the `vllm.general_plugins` entry point (`minimax_rocm`): vLLM
calls it in every process it starts, possibly more than once. It does
nothing, with one log line, outside the tested vLLM versions or with
MINIMAX_ROCM_VLLM=0; otherwise it installs every seam or none (`seams`).
Which layers then take our ops is the oracle's call (`oracle.decide_seam`),
one log line per layer.
"""
from __future__ import annotations

import os

from .log import logger

# vLLM releases whose layer classes and call signatures the seams were built
# and tested against: [first, end).
TESTED_VLLM = ((0, 32), (0, 34))
ENV_SWITCH = "MINIMAX_ROCM_VLLM"

_state = {"done": False, "installed": False, "why": ""}


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def version_supported(v: str) -> bool:
    lo, hi = TESTED_VLLM
    return lo <= _version_tuple(v)[:2] < hi


def register() -> None:
    """Install the seams into vLLM (idempotent; all or nothing)."""
    if _state["done"]:
        return
    _state["done"] = True
    log = logger()
    if os.environ.get(ENV_SWITCH, "1") == "0":
        _state["why"] = f"{ENV_SWITCH}=0"
        log.info("minimax_rocm: vLLM plugin off (%s)", _state["why"])
        return
    try:
        import vllm
    except ImportError as e:  # pragma: no cover - vLLM itself calls us
        _state["why"] = f"vLLM not importable: {e}"
        log.warning("minimax_rocm: vLLM plugin off (%s)", _state["why"])
        return
    version = getattr(vllm, "__version__", "0")
    if not version_supported(version):
        lo, hi = TESTED_VLLM
        _state["why"] = (f"vLLM {version} is outside the tested range "
                         f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}")
        log.warning("minimax_rocm: vLLM plugin off (%s)", _state["why"])
        return
    from . import seams
    why = seams.install()
    if why:
        _state["why"] = why
        log.warning("minimax_rocm: vLLM plugin off (%s); vLLM's classes are unchanged", why)
        return
    _state["installed"] = True
    log.info("minimax_rocm: vLLM %s plugin installed (gate, QK norm, BF16 and MXFP8 MoE seams); "
             "MiniMax layers log their choice as they are built", version)


def installed() -> bool:
    return _state["installed"]
