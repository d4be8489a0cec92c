"""Public ops: each module registers one family as torch.library custom ops
(namespace minimax_rocm) with fake implementations, and its backends with the
oracle."""
from .activation import swiglu_oai
from .moe import fused_moe, moe_align
from .mxfp8 import (Mxfp8Experts, fused_moe_mxfp8, layer_weight_formats, mxfp8_dequant, mxfp8_fn_to_fnuz,
                    mxfp8_quant)
from .norm import allreduce_rms, allreduce_rms_qk
from .router_gemm import router_gemm
from .topk_reduce import topk_reduce

__all__ = ["Mxfp8Experts", "allreduce_rms", "allreduce_rms_qk", "fused_moe", "fused_moe_mxfp8",
           "layer_weight_formats", "moe_align", "mxfp8_dequant", "mxfp8_fn_to_fnuz",
           "mxfp8_quant", "router_gemm", "swiglu_oai", "topk_reduce"]

# AITER adapters register like any backend; the oracle only picks them where
# Platform.aiter holds (ROCm with aiter importable). Importing the adapter
# module imports nothing from AITER.
from ..backends import aiter as _aiter_backend  # noqa: E402

_aiter_backend.register()
