"""minimax-rocm: kernels for serving MiniMax-M2 / M2.5 / M3 MoE models on AMD
MI300X (and NVIDIA), with a runtime oracle that picks one backend per op."""
from . import reference
from .ops import (allreduce_rms, allreduce_rms_qk, fused_moe, fused_moe_mxfp8, moe_align, mxfp8_dequant,
                  mxfp8_fn_to_fnuz, mxfp8_quant, router_gemm, swiglu_oai, topk_reduce)
from .oracle import decide, detect_platform

__version__ = "0.1.0"

__all__ = ["allreduce_rms", "allreduce_rms_qk", "decide", "detect_platform", "fused_moe", "fused_moe_mxfp8",
           "moe_align", "mxfp8_dequant", "mxfp8_fn_to_fnuz", "mxfp8_quant", "reference", "router_gemm", "swiglu_oai", "topk_reduce"]
