"""Programmatic dependent launch (PDL) for the Triton kernels of a decode step
(and the switch the native kernels follow: the Lamport QK norm, the router GEMM).

A decode MoE step is a chain of launches (alignment, activation rounding,
GEMM1, SwiGLU + rounding, GEMM2), several of them a few microseconds long;
between two of them the GPU drains one grid and only then starts launching the
next. On NVIDIA sm90+ a kernel launched with the programmatic-serialization
attribute may start as soon as every program of its predecessor has signalled
(`griddepcontrol.launch_dependents`), and waits in `griddepcontrol.wait` until
the predecessor has completed and its writes are visible. CUDA graphs keep the
edge (a programmatic dependency), so the launch latency of each step hides
behind the tail of the one before.

The rule that keeps this as safe as plain stream order: a PDL kernel waits
FIRST, before it touches any memory, and signals only after its wait. So the
kernel after it starts only once this one's predecessor has completed, and no
kernel reads or overwrites memory (even memory the caching allocator just
recycled) before everything earlier on the stream is done. `launch()` hands a
kernel both halves together (the PDL constexpr and the launch attribute);
launching with the attribute a kernel that does not call `pdl_enter` would
race, so nothing else sets one without the other.

Only short kernels take it. The MoE GEMMs launch plainly: PDL-launched (their
persistent programs made resident while the short kernel before them still
ran, the short kernel after them resident and waiting from their start, or
from their last item) the native MXFP8 MoE measured 20% slower on the H200
(benchmarks/history/fused_moe_mxfp8.md, "BF16 output atomics, PDL for the short kernels"), whichever
point the GEMMs signalled at. Why was not settled (a guess: an SM whose
shared-memory carve-out was set for the short kernel holds fewer GEMM
programs).

Elsewhere (AMD, pre-Hopper, the interpreter) PDL is off and the kernels are
compiled without the instructions.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from ..platform import nvidia_capability

try:    # Triton >= 3.4; the kernels only reach these under PDL=True
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:      # pragma: no cover - older Triton: PDL stays off
    gdc_launch_dependents = gdc_wait = None

_forced: contextvars.ContextVar[Optional[bool]] = contextvars.ContextVar("mmr_pdl_forced", default=None)


def supported(device: torch.device, triton_kernel: bool = True) -> bool:
    """NVIDIA sm90 or later, not the interpreter, and for a Triton kernel a
    Triton with the grid-dependency ops; MINIMAX_ROCM_PDL=0 turns it off.
    (Native kernels take it through hip/include/mmr/dependent_launch.h.)"""
    if (triton_kernel and gdc_wait is None) or os.environ.get("MINIMAX_ROCM_PDL", "1") == "0":
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return (nvidia_capability(device) or (0, 0)) >= (9, 0)


def enabled(device: torch.device, triton_kernel: bool = True) -> bool:
    """Whether a launch on `device` uses PDL now (supported, and not turned
    off by `forced`)."""
    on = _forced.get()
    s = supported(device, triton_kernel)
    return s if on is None else (on and s)


def launch(device: torch.device) -> dict:
    """Keyword arguments for a kernel launch that takes the `PDL` constexpr:
    the constexpr and the launch attribute, on or off together."""
    return dict(PDL=True, launch_pdl=True) if enabled(device) else dict(PDL=False)


@contextlib.contextmanager
def forced(on: bool):
    """Launches inside this block use PDL only if `on` (and supported): the
    benchmark's with / without comparison."""
    token = _forced.set(on)
    try:
        yield
    finally:
        _forced.reset(token)


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """First statement of a PDL kernel: wait for the predecessor grid, then
    let the successor launch (see the module docstring for the order)."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
