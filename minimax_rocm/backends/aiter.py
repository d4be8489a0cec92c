"""AITER adapters (ROCm only). AITER's import fails without ROCm, so nothing
here imports it at module load."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def available() -> bool:
    try:
        import aiter  # noqa: F401
        return True
    except Exception:
        return False
