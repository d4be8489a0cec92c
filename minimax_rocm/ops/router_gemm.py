"""router_gemm: MoE gate logits in fp32 from bf16 or fp32 activations."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import oracle
from ..platform import graph_capturing, nvidia_capability
from ._common import aligned16, check_tensor, fail, on_gpu
from .spec import Tensor, declare_op

OP = "router_gemm"


def check(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    # Non-contiguous x is rejected rather than copied: a hidden copy would
    # double the op's launches on the decode path this op exists to shorten.
    check_tensor(OP, "x", x, dtype=(torch.bfloat16, torch.float32), dim=2)
    check_tensor(OP, "w", w, dtype=torch.float32, dim=2, device=x.device)
    if w.shape[1] != x.shape[1]:
        fail(OP, "w", f"has {w.shape[1]} columns; x has hidden size {x.shape[1]}")
    if bias is not None:
        check_tensor(OP, "bias", bias, dtype=torch.float32, shape=(w.shape[0],), device=x.device)


def problem(x, w, bias) -> oracle.Problem:
    return oracle.Problem(OP, tokens=x.shape[0], hidden=x.shape[1], num_experts=w.shape[0],
                          dtype=str(x.dtype)[6:], has_bias=bias is not None, on_gpu=on_gpu(x, w, bias),
                          aligned16=aligned16(x, w))


ROUTER_GEMM = declare_op(
    OP,
    params=(Tensor("x"), Tensor("w"), Tensor("bias", optional=True, default=None)),
    check=check, problem=problem,
    fake=lambda x, w, bias: x.new_empty((x.shape[0], w.shape[0]), dtype=torch.float32),
    doc="logits `[M, E]` fp32 = x `[M, H]` (bf16/fp32) @ w `[E, H]` (fp32)^T (+ bias).")
router_gemm = ROUTER_GEMM.public


@ROUTER_GEMM.impl("torch")
def _torch(x, w, bias):
    # The baseline the fast paths replace: cast, then a BLAS GEMM.
    return F.linear(x.float(), w, bias)


@ROUTER_GEMM.impl("triton")
def _triton(x, w, bias):
    from ..triton.router_gemm import router_gemm as kernel
    out = kernel(x, w)
    # the oracle sends bias to torch; a forced backend must still add it
    return out if bias is None else out.add_(bias)


# Workspaces of the split-K kernel: per-tile partial sums and arrival counters
# that every call leaves at zero. Allocated on first use and kept for the
# process' life, one per (device, E, stream): two router calls that may run at
# the same time (two streams) must not share one. A CUDA graph captured on a
# stream that has none borrows the one last used eagerly for (device, E) (the
# warm-up's, typically on another stream): its replays must then not overlap
# eager calls on that stream, as replays of graphs sharing a workspace must
# not overlap each other.
# (device index, E, stream) -> [partials, counters, zeroed_in_graph]
_SPLITK_WORKSPACES: dict[tuple, list] = {}
# (device index, E) -> key of the workspace last used eagerly
_SPLITK_LAST_EAGER: dict[tuple, tuple] = {}


def splitk_workspace(device: torch.device, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partials fp32, counters int32) for router_gemm_splitk on the current stream."""
    from ..native import ext
    stream = torch.cuda.current_stream(device)
    key = (device.index, num_experts, stream.cuda_stream)
    capturing = graph_capturing()
    ws = _SPLITK_WORKSPACES.get(key)
    if ws is None and capturing and key[:2] in _SPLITK_LAST_EAGER:
        # Zeroed already; one made now would be zeroed by a node of this graph only.
        ws = _SPLITK_WORKSPACES[key] = _SPLITK_WORKSPACES[_SPLITK_LAST_EAGER[key[:2]]]
    if ws is None:
        # Sizes come from the kernel file (tile height, most K slices).
        n_partials, n_counters = ext.ops().router_gemm_splitk_workspace(num_experts)
        partials = torch.empty(n_partials, dtype=torch.float32, device=device)
        # Inside a capture this fill is a node of that graph: the counters are
        # zero once that graph has run, hence the flag.
        counters = torch.zeros(n_counters, dtype=torch.int32, device=device)
        ws = _SPLITK_WORKSPACES.setdefault(key, [partials, counters, capturing])
    elif ws[2]:
        # Made inside a graph: zero again in this graph too, or now (eager,
        # after which every call leaves them zero).
        ws[1].zero_()
        ws[2] = capturing
    if not capturing:
        _SPLITK_LAST_EAGER[key[:2]] = key
    return ws[0], ws[1]


def tc_available(device: torch.device) -> bool:
    """router_gemm_tc runs here: NVIDIA sm90+ (thread-block clusters)."""
    return (nvidia_capability(device) or (0, 0)) >= (9, 0)


@ROUTER_GEMM.impl("hip")
def _hip(x, w, bias, kernel: Optional[oracle.Kernel] = None):
    """The native kernel the oracle's KERNEL_RULES name (asked here when
    called directly, without the op's dispatch)."""
    from ..native import ext
    from ..triton import dependent_launch
    kernel = kernel or oracle.kernel_for(problem(x, w, bias), "hip", oracle.detect_platform())
    out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.float32, device=x.device)
    # PDL (NVIDIA sm90+): in a chain of short kernels the launch hides behind
    # the previous kernel's tail
    pdl = dependent_launch.enabled(x.device, triton_kernel=False)
    if kernel.name == "tc":
        ext.ops().router_gemm_tc(x, w, out, 0, pdl)
    elif kernel.name == "splitk":
        partials, counters = splitk_workspace(x.device, w.shape[0])
        ext.ops().router_gemm_splitk(x, w, out, partials, counters, 0, pdl)
    else:
        ext.ops().router_gemm(x, w, out, kernel.arg("rows"), pdl)
    return out if bias is None else out.add_(bias)
