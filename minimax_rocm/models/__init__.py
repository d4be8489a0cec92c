"""MiniMax-M2 / M2.5 / M3 blocks built from the package's ops: configuration
(config.py), the QK-norm step (attention.py), the MoE block and the dense MLP
(moe.py), pipeline stages (pipeline.py), and the demo (demo.py: every rank in
one process, or one process per rank).

Submodules load on first use (`minimax_rocm.models.moe`, ...): the weight
loader in minimax_rocm.parallel imports models.config, and the blocks import the
loader's weight containers, so nothing is imported eagerly here.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MiniMaxConfig": "config", "ConfigError": "config", "PRESETS": "config", "preset": "config",
    "QKNorm": "attention", "shard_qkv": "attention", "qk_norm_reference": "attention",
    "MoEBlock": "moe", "DenseMLP": "moe", "FeedForwardLayer": "moe", "Stage": "moe",
    "moe_reference": "moe", "stage_reference": "moe",
    "pipeline_forward": "pipeline",
    "run_demo": "demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'minimax_rocm.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
