"""Platform detection and the backend rule table.

The oracle answers one question per op call: which backend runs it here. The
answer comes from an ordered rule table (data, below): the first rule whose op
matches, whose condition holds for the problem, and whose backend is available
on the platform AND implemented for the op wins; the remaining matching rules
are the fallback ladder. Thresholds live in `THRESHOLDS`, per arch, never as
literals in code.

Environment:
  MINIMAX_ROCM_ARCH=gfx942|gfx950|sm90|sm100|cpu   simulate a platform (platform.py)
  MINIMAX_ROCM_FORCE="op=backend,op2=backend"      force backends; forcing one that
                                                   is unavailable is an error
  MINIMAX_ROCM_FORCE_<OP>=backend                  the same, one op
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch

from .platform import (ARCHS as _ARCHS, BACKENDS, Platform, arch_family, gpu_arch,  # noqa: F401
                       simulated_arch, simulated_platform)

# --------------------------------------------------------------------------- #
# the detected platform (what each arch is: platform.py)
# --------------------------------------------------------------------------- #


def _triton_usable() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except Exception:
        return False


# Limits a backend adapter declares about itself (backends/aiter.py registers
# "available", "fused_moe" and "allreduce"): the oracle imports no backend.
_BACKEND_LIMITS: dict[str, dict[str, Callable]] = {}


def register_backend_limits(backend: str, **limits: Callable) -> None:
    """available() -> bool; <kind>(problem) -> why it declines, or None."""
    _BACKEND_LIMITS.setdefault(backend, {}).update(limits)


def _declines(backend: str, kind: str, p: "Problem") -> Optional[str]:
    fn = _BACKEND_LIMITS.get(backend, {}).get(kind)
    return f"no {backend} adapter registered" if fn is None else fn(p)


def _aiter_usable() -> bool:
    if not torch.version.hip:
        return False  # AITER's import fails without ROCm: never probe it elsewhere
    fn = _BACKEND_LIMITS.get("aiter", {}).get("available")
    return bool(fn and fn())


def _native_ext_loaded() -> bool:
    try:
        from .native import ext
    except Exception:
        return False
    return ext.available()


_DETECTED: Optional[Platform] = None


def detect_platform(refresh: bool = False) -> Platform:
    """The platform of the current GPU (device 0 or the current device), or the
    simulated one named by MINIMAX_ROCM_ARCH."""
    global _DETECTED
    sim = simulated_arch()
    if sim:
        return simulated_platform(sim)
    if _DETECTED is not None and not refresh:
        return _DETECTED
    if not torch.cuda.is_available():
        plat = Platform(vendor="cpu", arch="cpu", wave_size=1, cu_count=0, fp8_dtype="e4m3fn",
                        mx_hw=False, native_ext=False, aiter=False, triton=False)
    else:
        idx = torch.cuda.current_device()
        arch = gpu_arch(idx)
        known = _ARCHS.get(arch)
        vendor = "amd" if torch.version.hip else "nvidia"
        props = torch.cuda.get_device_properties(idx)
        plat = Platform(
            vendor=vendor, arch=arch,
            wave_size=64 if vendor == "amd" else 32,
            cu_count=props.multi_processor_count,
            fp8_dtype=known["fp8_dtype"] if known else ("e4m3fnuz" if arch.startswith("gfx94") else "e4m3fn"),
            mx_hw=known["mx_hw"] if known else False,
            native_ext=_native_ext_loaded(), aiter=_aiter_usable(), triton=_triton_usable())
    _DETECTED = plat
    return plat


# --------------------------------------------------------------------------- #
# problem
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Problem:
    op: str
    tokens: int = 0                     # T (or M for the router)
    hidden: int = 0
    dtype: str = "bfloat16"
    weight_format: str = "bf16"         # bf16 | mxfp8 (MoE weights)
    num_experts: int = 0                # global
    num_local_experts: int = 0
    top_k: int = 0
    ep_size: int = 1
    tp_size: int = 1
    max_model_len: int = 0
    has_bias: bool = False
    on_gpu: bool = True                 # inputs live on a GPU (CPU tensors: torch only)
    peer_access: bool = True            # Lamport: IPC-mapped peer buffers are open
    has_bf16_copy: bool = False         # MXFP8 MoE: BF16 weights kept beside the fp8 ones
    aligned16: bool = True              # the inputs native kernels read in 16-byte vectors start 16-byte aligned


# --------------------------------------------------------------------------- #
# thresholds (table entries; re-measured per target by the benchmark)
# --------------------------------------------------------------------------- #

THRESHOLDS: dict[str, dict[str, float]] = {
    # Router fast path: native kernel up to this M; BLAS-backed above (issue 5).
    # Measured on H100 (benchmarks/history/router_gemm.md): the native kernel beats cast + cuBLAS at
    # every M <= 32 (1.25-6.4x), its size limit; the AMD entries take the same
    # kernel's range until an MI300X measurement replaces them.
    "router_native_max_m": {"gfx942": 32, "gfx950": 32, "sm90": 32, "sm100": 32, "cpu": 0},
    # Without the extension, the Triton split-K router only where it beat
    # cast + cuBLAS (H100, 2026-11-24: 12.8-12.9 us against 15.1-16.8 at M = 8
    # and 16; slower at M = 1-4 (12.7 against 5.7 at M = 1) and at 32;
    # benchmarks/history/router_gemm.md). AMD entries: not measured, the same.
    "router_triton_min_m": {"gfx942": 8, "gfx950": 8, "sm90": 8, "sm100": 8, "cpu": 1 << 30},
    "router_triton_max_m": {"gfx942": 16, "gfx950": 16, "sm90": 16, "sm100": 16, "cpu": 0},
    # Which native router kernel (KERNEL_RULES): the tensor-core cluster
    # kernel for bf16 x where the GPU has clusters, from router_tc_min_m rows,
    # and from router_tc_min_m_wide rows once M x H reaches router_tc_min_mh;
    # else split-K once M x H reaches router_splitk_min_mh; else one-pass.
    # H200 (benchmarks/history/router_gemm.md, "the reduction's dependent
    # loads" and "one x batch of 16 rows"): tc wins from M = 9 for M2's gate
    # and from 5 for M3's; split-K above 16 x 3072. AMD: split-K, not measured.
    "router_tc_min_m": {"gfx942": 9, "gfx950": 9, "sm90": 9, "sm100": 9, "cpu": 9},
    "router_tc_min_m_wide": {"gfx942": 5, "gfx950": 5, "sm90": 5, "sm100": 5, "cpu": 5},
    "router_tc_min_mh": {"gfx942": 5 * 6144, "gfx950": 5 * 6144, "sm90": 5 * 6144, "sm100": 5 * 6144,
                         "cpu": 5 * 6144},
    "router_splitk_min_mh": {"gfx942": 16 * 3072 + 1, "gfx950": 16 * 3072 + 1, "sm90": 16 * 3072 + 1,
                             "sm100": 16 * 3072 + 1, "cpu": 16 * 3072 + 1},
    # One-pass kernel, bf16 x, M <= 8: the most W rows per block (4, 2, 1)
    # whose fp32 W fits this many bytes (at M = 1, and above). Every block
    # reads all of x after the PDL wait, so fewer blocks re-read x less; more
    # W per block lengthens the stream that overlaps the previous kernel.
    # H200 (benchmarks/history/router_gemm.md): M2 4 rows at M = 1, 2 above;
    # M3 2 and 1. AMD keeps one row (0 bytes) until measured: MI300X's 304
    # CUs would mostly sit out a 64-block W stream.
    "router_onepass_w_bytes_m1": {"gfx942": 0, "gfx950": 0, "sm90": 48 << 10, "sm100": 48 << 10, "cpu": 0},
    "router_onepass_w_bytes": {"gfx942": 0, "gfx950": 0, "sm90": 24 << 10, "sm100": 24 << 10, "cpu": 0},
    # Native MXFP8 for max_model_len at or under this; emulation above (issue 7,
    # from the MI300X memory policy: every layer keeps BF16 beside MXFP8 up to 4096).
    "mxfp8_native_max_model_len": {"gfx942": 4096, "gfx950": 4096, "sm90": 4096, "sm100": 4096, "cpu": 4096},
    # Mixed policy per call, where a BF16 copy is kept: BF16 experts at or
    # under this many tokens...
    # ...and at or above mxfp8_bf16_min_tokens (MI300X crossover 827-843,
    # rounded to a tile multiple). AMD entries: the MI300X work's measurement.
    # sm90: `bench --op fused_moe_mxfp8` on an H200 (benchmarks/history/fused_moe_mxfp8.md, M3 and M2
    # EP8 ranks): native faster from T=16 to 216 (1.38-1.52x), BF16 faster at
    # T=1 for M3 (native 0.80x; M2 1.05x) and at T=1024 (native 0.71-0.72x).
    # 512 is the linear interpolation of both shapes' crossovers (M3 ~580,
    # M2 ~520); T in 2..15 and 217..1023 is unmeasured. At prefill sizes
    # (H100, T=2048-16384, bench moe_prefill) native ran 0.51-0.70x BF16: sm90
    # has no MX MMA (benchmarks/history/fused_moe_mxfp8.md). sm100: not
    # measured, no native band.
    "mxfp8_bf16_max_tokens": {"gfx942": 8, "gfx950": 8, "sm90": 1, "sm100": 1 << 30, "cpu": 8},
    "mxfp8_bf16_min_tokens": {"gfx942": 832, "gfx950": 832, "sm90": 512, "sm100": 1 << 30, "cpu": 832},
    # Without a BF16 copy: native below this many tokens, emulation (every
    # local expert dequantised, then the BF16 MoE) from it. sm90: bench
    # moe_prefill on an H100 (M3 and M2 EP8 ranks, two runs): native 1.20-1.30x
    # emulation at T=8192, emulation 1.11-1.17x native at T=16384; 13312 is the
    # linear interpolation of both shapes' crossovers (M3 ~13800, M2 ~13300),
    # T in 8193..16383 unmeasured. No MX MMA on sm90: its native GEMMs upcast to
    # BF16 and lose to the BF16 MoE once FLOPs bind. Other archs: not measured
    # (gfx950 and sm100 have MX MMA: no crossover expected).
    "mxfp8_emulation_min_tokens": {"gfx942": 1 << 30, "gfx950": 1 << 30, "sm90": 13312, "sm100": 1 << 30,
                                   "cpu": 1 << 30},
    # Mixed policy, memory side: above mxfp8_native_max_model_len every n-th
    # MoE layer keeps BF16 experts only (the rest MXFP8 only), so the model
    # fits beside a long KV cache (MI300X: every fifth layer).
    "mxfp8_bf16_only_every": {"gfx942": 5, "gfx950": 5, "sm90": 5, "sm100": 5, "cpu": 5},
    # Lamport one-shot: world sizes the fused kernel supports.
    "lamport_max_world": {"gfx942": 8, "gfx950": 8, "sm90": 8, "sm100": 8, "cpu": 0},
    # ...and the most tokens it takes before the NCCL/RCCL path (no cap: it
    # is faster at every measured T; the workspace's max_tokens still bounds it).
    "lamport_max_tokens": {"gfx942": 1 << 30, "gfx950": 1 << 30, "sm90": 1 << 30, "sm100": 1 << 30, "cpu": 0},
    # moe_align: the native kernel (one launch, one wave per range of
    # routes) where many experts are local, the Triton kernels (3 launches,
    # PDL-chained on sm90; their count kernel compares each route against
    # every local expert) elsewhere. H200, `bench --op moe_align`, same run
    # (benchmarks/history/moe_align.md, 2026-11-29): with 256 local experts
    # (EP1, BLOCK_M 64) native 9.5 / 16.9 / 30.7 us against Triton 16.6 /
    # 18.4 / 21.4 at 512 / 1728 / 4096 routes; with 16 or 32 local experts
    # (EP8) Triton is faster at every size (4.7 vs 5.3 us at 64 routes). AMD
    # entries: the same kernel designs, not measured there.
    "align_native_min_local_experts": {"gfx942": 256, "gfx950": 256, "sm90": 256, "sm100": 256, "cpu": 1 << 30},
    "align_native_max_routes": {"gfx942": 2048, "gfx950": 2048, "sm90": 2048, "sm100": 2048, "cpu": 0},
    # Sparse-local BF16 MoE: the MI300X work took it for decode batches only.
    "sparse_local_max_tokens": {"gfx942": 256, "gfx950": 256, "sm90": 4096, "sm100": 4096, "cpu": 1 << 30},
}


def threshold(name: str, arch: str) -> float:
    return THRESHOLDS[name][arch_family(arch)]


# --------------------------------------------------------------------------- #
# rule table
# --------------------------------------------------------------------------- #

Cond = Callable[[Problem, Platform], bool]


@dataclass(frozen=True)
class Rule:
    op: str
    backend: str
    reason: str
    when: Cond = lambda p, plat: True
    path: str = ""                      # MoE: which algorithmic path this rule is


def _always(p: Problem, plat: Platform) -> bool:
    return True


def _bf16_rows_of_8(p, plat):
    # 16-byte vectors: rows of 8 bf16 from a 16-byte aligned start (a tensor
    # sliced out of a larger buffer may not be)
    return p.dtype == "bfloat16" and p.hidden % 8 == 0 and p.aligned16


def _router_small(p, plat):
    # The fast paths have no bias and read x in 16-byte vectors (H % 8 == 0).
    return (not p.has_bias and 1 <= p.tokens <= threshold("router_native_max_m", plat.arch)
            and p.hidden % 8 == 0)


def _router_triton(p, plat):
    return (_router_small(p, plat) and threshold("router_triton_min_m", plat.arch) <= p.tokens
            <= threshold("router_triton_max_m", plat.arch))


def _align_native(p, plat):
    return (p.num_local_experts >= threshold("align_native_min_local_experts", plat.arch)
            and p.tokens * p.top_k <= threshold("align_native_max_routes", plat.arch))


def _lamport_ok(p, plat):
    # bf16 rows in 16-byte vectors; a Lamport workspace open for the group
    # (peer_access); the kernel checks slice widths and alignment itself and
    # hands anything else to the next rule.
    return (p.tp_size in (2, 4, 8) and p.tp_size <= threshold("lamport_max_world", plat.arch) and p.peer_access
            and p.dtype == "bfloat16" and p.hidden % 8 == 0
            and p.tokens <= threshold("lamport_max_tokens", plat.arch))


def _bf16_ep_sparse(p, plat):
    return (p.weight_format == "bf16" and p.ep_size > 1
            and p.tokens <= threshold("sparse_local_max_tokens", plat.arch))


def _mxfp8_native(p, plat):
    # Short context: native, except where the mixed policy kept a BF16 copy
    # and the batch is outside the band native wins (tiny / prefill-sized).
    # Without a copy native reads the fewest bytes (emulation reads the fp8
    # weights, writes and reads a BF16 copy), up to where FLOPs bind and the
    # arch's native GEMMs lose (mxfp8_emulation_min_tokens).
    if p.weight_format != "mxfp8" or p.max_model_len > threshold("mxfp8_native_max_model_len", plat.arch):
        return False
    if not p.has_bf16_copy:
        return p.tokens < threshold("mxfp8_emulation_min_tokens", plat.arch)
    return threshold("mxfp8_bf16_max_tokens", plat.arch) < p.tokens < threshold("mxfp8_bf16_min_tokens", plat.arch)


def _mxfp8_bf16_copy(p, plat):
    # Short context keeps BF16 weights beside MXFP8: the mixed policy sends tiny
    # and large batches to them.
    return (p.weight_format == "mxfp8" and p.has_bf16_copy
            and p.max_model_len <= threshold("mxfp8_native_max_model_len", plat.arch))


def _mxfp8(p, plat):
    return p.weight_format == "mxfp8"


# AITER rules: the adapter module registers its own limits (it imports nothing
# from AITER at load, so this is safe on every platform).
def _aiter_moe(p, plat):
    return _declines("aiter", "fused_moe", p) is None


def _aiter_allreduce(p, plat):
    return _declines("aiter", "allreduce", p) is None


def _bf16(p, plat):
    return p.weight_format == "bf16"


RULES: tuple[Rule, ...] = (
    # topk_reduce ---------------------------------------------------------------
    Rule("topk_reduce", "hip", "native vectorised reduction (16-byte loads)", _bf16_rows_of_8),
    Rule("topk_reduce", "triton", "portable Triton reduction"),
    Rule("topk_reduce", "torch", "reference"),
    # router_gemm ---------------------------------------------------------------
    Rule("router_gemm", "hip", "small M: native kernel reads W once for all rows",
         lambda p, plat: _router_small(p, plat) and p.aligned16),
    Rule("router_gemm", "triton", "M 8-16 without the extension: Triton split-K kernel (fp32 dot)", _router_triton),
    Rule("router_gemm", "torch", "large M or bias: cast + BLAS (F.linear)"),
    # QK norm all-reduce ----------------------------------------------------------
    Rule("allreduce_rms_qk", "hip", "one-shot Lamport exchange + norm in one kernel", _lamport_ok),
    Rule("allreduce_rms_qk", "aiter", "AITER custom (IPC) all-reduce of the sums of squares + norm",
         _aiter_allreduce),
    Rule("allreduce_rms_qk", "triton", "sum-of-squares kernel + NCCL/RCCL all-reduce + norm kernel"),
    Rule("allreduce_rms_qk", "torch", "reference + torch.distributed all-reduce"),
    Rule("allreduce_rms", "hip", "one-shot Lamport exchange + norm in one kernel", _lamport_ok),
    Rule("allreduce_rms", "aiter", "AITER custom (IPC) all-reduce of the sums of squares + norm",
         _aiter_allreduce),
    Rule("allreduce_rms", "triton", "sum-of-squares kernel + NCCL/RCCL all-reduce + norm kernel"),
    Rule("allreduce_rms", "torch", "reference + torch.distributed all-reduce"),
    # MoE alignment -------------------------------------------------------------
    Rule("moe_align", "hip", "many local experts, few routes: native alignment in one launch", _align_native),
    Rule("moe_align", "triton", "Triton alignment sized by local experts"),
    Rule("moe_align", "torch", "reference"),
    # fused_moe (BF16 weights) -----------------------------------------------------
    Rule("fused_moe", "triton", "sparse-local BF16: only local routes, 16-row tiles, SwiGLU in GEMM1",
         _bf16_ep_sparse, path="sparse_local_bf16"),
    Rule("fused_moe", "aiter", "generic: AITER CK fused MoE with expert mask (silu, pre-shuffled weights)",
         _aiter_moe, path="generic"),
    Rule("fused_moe", "triton", "generic: Triton fused MoE (local-expert alignment)", _bf16, path="generic"),
    Rule("fused_moe", "torch", "reference", path="reference"),
    # fused_moe_mxfp8 -----------------------------------------------------------
    Rule("fused_moe_mxfp8", "triton", "native MXFP8: fp8 GEMMs with in-kernel block scales",
         _mxfp8_native, path="native_mxfp8"),
    # No AITER rule: its fp8 MoE takes per-token / 128x128 fp32 scales, not
    # per-32 e8m0 ones (backends/aiter.py says more).
    Rule("fused_moe_mxfp8", "triton", "mixed policy: BF16 weight copy for tiny/large batches",
         _mxfp8_bf16_copy, path="bf16_copy"),
    Rule("fused_moe_mxfp8", "triton",
         "emulation (dequantise + sparse-local BF16): long context, or large batches without a BF16 copy",
         _mxfp8, path="emulation"),
    Rule("fused_moe_mxfp8", "torch", "reference (dequantise + reference MoE)", path="reference"),
    # MXFP8 quant ---------------------------------------------------------------
    Rule("mxfp8_quant", "hip", "native per-32 block quantisation (bf16 input, 16-byte loads)", _bf16_rows_of_8),
    # No AITER rule: its per-1x32 fp8 quantiser does not pick OCP scales
    # (not bit-exact) and has no e4m3fnuz output (backends/aiter.py).
    Rule("mxfp8_quant", "triton", "Triton per-32 block quantisation"),
    Rule("mxfp8_quant", "torch", "reference"),
    Rule("mxfp8_dequant", "triton", "Triton dequantisation"),
    Rule("mxfp8_dequant", "torch", "reference"),
    # activations ---------------------------------------------------------------
    Rule("swiglu_oai", "triton", "Triton elementwise"),
    Rule("swiglu_oai", "torch", "reference"),
)

OPS: tuple[str, ...] = tuple(dict.fromkeys(r.op for r in RULES))


# --------------------------------------------------------------------------- #
# kernel rules: which of a backend's kernels runs, with which build
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Kernel:
    """A kernel of a backend and the build-time choices it is launched with."""
    name: str
    args: tuple[tuple[str, int], ...] = ()
    reason: str = field(default="", compare=False)

    def arg(self, key: str) -> int:
        return dict(self.args)[key]

    def __str__(self) -> str:
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in self.args)})" if self.args else "")


@dataclass(frozen=True)
class KernelRule:
    op: str
    backend: str
    kernel: str
    reason: str
    when: Cond = _always
    args: Callable[[Problem, Platform], dict] = lambda p, plat: {}


def _router_tc(p, plat):
    return (p.dtype == "bfloat16" and plat.clusters
            and (p.tokens >= threshold("router_tc_min_m", plat.arch)
                 or (p.tokens >= threshold("router_tc_min_m_wide", plat.arch)
                     and p.tokens * p.hidden >= threshold("router_tc_min_mh", plat.arch))))


def _router_splitk(p, plat):
    return p.tokens * p.hidden >= threshold("router_splitk_min_mh", plat.arch)


def router_onepass_rows(p: Problem, plat: Platform) -> int:
    """W rows per block of the one-pass router kernel: the build for this M
    bucket (M 9-16: 2, M 17-32: 4, fp32 x: 1), or for bf16 x at M <= 8 the
    most of 4, 2, 1 whose fp32 W fits the table's byte budget."""
    if p.tokens > 16:
        return 4
    if p.tokens > 8:
        return 2
    if p.dtype != "bfloat16":
        return 1
    budget = threshold("router_onepass_w_bytes_m1" if p.tokens <= 1 else "router_onepass_w_bytes", plat.arch)
    rows = 4
    while rows > 1 and rows * p.hidden * 4 > budget:
        rows //= 2
    return rows


# Ordered per (op, backend): the first whose condition holds runs.
KERNEL_RULES: tuple[KernelRule, ...] = (
    KernelRule("router_gemm", "hip", "tc", "bf16 x, enough rows: tensor cores, K split across a thread-block "
               "cluster", _router_tc),
    KernelRule("router_gemm", "hip", "splitk", "M x H large: K split across blocks meeting in a workspace",
               _router_splitk),
    KernelRule("router_gemm", "hip", "onepass", "a block per W rows, K split across its threads",
               args=lambda p, plat: {"rows": router_onepass_rows(p, plat)}),
)


def kernel_for(problem: Problem, backend: str, plat: Platform) -> Optional[Kernel]:
    """The kernel `backend` runs for `problem` (None where the backend has one)."""
    for r in KERNEL_RULES:
        if r.op == problem.op and r.backend == backend and r.when(problem, plat):
            return Kernel(r.kernel, tuple(sorted(r.args(problem, plat).items())), r.reason)
    return None


# --------------------------------------------------------------------------- #
# implementations registered by the op modules
# --------------------------------------------------------------------------- #

# op -> backend -> callable. Filled by minimax_rocm.ops.* at import; the oracle
# never picks a backend an op has not registered.
_IMPLS: dict[str, dict[str, Callable]] = {}


def register_impl(op: str, backend: str):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")

    def deco(fn):
        _IMPLS.setdefault(op, {})[backend] = fn
        return fn
    return deco


# (Importing the package imports minimax_rocm.ops, which fills _IMPLS before
# any op can be called: the oracle itself imports no op.)
def implemented(op: str) -> tuple[str, ...]:
    return tuple(b for b in BACKENDS if b in _IMPLS.get(op, {}))


def impl(op: str, backend: str) -> Callable:
    return _IMPLS[op][backend]


# --------------------------------------------------------------------------- #
# decisions
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str
    path: str = ""
    kernel: Optional[Kernel] = None     # the chosen backend's kernel (KERNEL_RULES)

    @property
    def label(self) -> str:
        """backend[/path][ kernel]: what `explain` and the demo print."""
        return (self.backend + (f"/{self.path}" if self.path else "")
                + (f" {self.kernel}" if self.kernel else ""))


@dataclass(frozen=True)
class Decision:
    op: str
    chosen: Choice
    fallbacks: tuple[Choice, ...]
    forced: bool = False
    skipped: tuple[str, ...] = field(default=())   # matching rules passed over, and why


class BackendUnavailable(RuntimeError):
    pass


def forced_backend(op: str) -> Optional[str]:
    one = os.environ.get(f"MINIMAX_ROCM_FORCE_{op.upper()}")
    if one:
        return one.strip()
    many = os.environ.get("MINIMAX_ROCM_FORCE", "")
    for item in filter(None, (s.strip() for s in many.split(","))):
        if "=" not in item:
            raise ValueError(f"MINIMAX_ROCM_FORCE: expected op=backend, got {item!r}")
        k, v = item.split("=", 1)
        if k.strip() == op:
            return v.strip()
    return None


def _usable(backend: str, problem: Problem, plat: Platform, check_impl: bool) -> Optional[str]:
    """None if usable, else why not."""
    if not problem.on_gpu and backend != "torch":
        return "inputs are on the CPU"
    if backend not in plat.backends:
        return f"{backend} not available on {plat.arch}"
    if check_impl and backend not in implemented(problem.op):
        return f"{problem.op} has no {backend} implementation"
    return None


def decide(problem: Problem, plat: Optional[Platform] = None, check_impl: bool = True) -> Decision:
    """The backend for `problem` on `plat` (the detected platform by default).

    check_impl=False answers for a full install (every backend the table names
    is assumed implemented): what `explain --arch` shows for a target.
    """
    plat = plat or detect_platform()
    if problem.op not in OPS:
        raise ValueError(f"unknown op {problem.op!r}; known: {', '.join(OPS)}")
    rules = [r for r in RULES if r.op == problem.op]
    forced = forced_backend(problem.op)
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"{problem.op}: forced backend {forced!r} is not one of {BACKENDS}")
        why = _usable(forced, problem, plat, check_impl)
        if why:
            raise BackendUnavailable(f"{problem.op}: forced backend {forced!r} is unavailable: {why}")
        match = next((r for r in rules if r.backend == forced and r.when(problem, plat)),
                     next((r for r in rules if r.backend == forced), None))
        reason = f"forced by environment ({match.reason})" if match else "forced by environment"
        return Decision(problem.op, Choice(forced, reason, match.path if match else "",
                                           kernel_for(problem, forced, plat)), (), True)

    chosen: list[Choice] = []
    skipped: list[str] = []
    for r in rules:
        if not r.when(problem, plat):
            continue
        why = _usable(r.backend, problem, plat, check_impl)
        if why:
            skipped.append(f"{r.backend}: {why}")
            continue
        c = Choice(r.backend, r.reason, r.path)
        if c not in chosen:
            chosen.append(c)
    if not chosen:  # the reference always exists; reaching here is a table bug
        raise BackendUnavailable(f"{problem.op}: no usable backend ({'; '.join(skipped)})")
    first = dataclasses.replace(chosen[0], kernel=kernel_for(problem, chosen[0].backend, plat))
    return Decision(problem.op, first, tuple(chosen[1:]), False, tuple(skipped))


def moe_path(problem: Problem, plat: Optional[Platform] = None, check_impl: bool = True) -> str:
    """The MoE algorithmic path (sparse_local_bf16 / native_mxfp8 / bf16_copy /
    emulation / generic / reference) the oracle takes for this problem."""
    return decide(problem, plat, check_impl).chosen.path


def with_platform(plat: Platform, **changes) -> Platform:
    return dataclasses.replace(plat, **changes)


def explain_rows(problems: Iterable[Problem], plat: Platform, check_impl: bool) -> list[dict]:
    rows = []
    for p in problems:
        d = decide(p, plat, check_impl)
        k = d.chosen.kernel
        rows.append(dict(op=p.op, backend=d.chosen.backend, path=d.chosen.path, kernel=str(k) if k else "",
                         kernel_reason=k.reason if k else "", reason=d.chosen.reason,
                         fallbacks=[c.label for c in d.fallbacks], forced=d.forced))
    return rows


# --------------------------------------------------------------------------- #
# serving engines: which of a model's layers take this package's ops
# --------------------------------------------------------------------------- #

# Hugging Face model_type and architecture names of the models this package
# serves; every other model keeps the engine's own code.
SERVED_MODEL_TYPES = ("minimax_m2", "minimax_m3")
SERVED_ARCHITECTURES = ("MiniMaxM2ForCausalLM", "MiniMaxM3SparseForCausalLM",
                        "MiniMaxM3SparseForConditionalGeneration")

# A seam is a place in the engine's model where one op stands in for the
# engine's own layer code.
SEAM_OPS = {"gate": "router_gemm", "qk_norm": "allreduce_rms_qk", "moe_bf16": "fused_moe",
            "moe_mxfp8": "fused_moe_mxfp8"}

# The Lamport workspace a serving engine opens per TP group holds at most this
# many tokens (24 MiB per rank at TP8); larger steps take the engine's path.
SERVING_LAMPORT_MAX_TOKENS = 16384
# QK-norm backends that all-reduce inside one kernel (no separate collective
# that the engine's graph capture would have to hold).
FUSED_ALLREDUCE_BACKENDS = ("hip", "aiter")


@dataclass(frozen=True)
class SeamFacts:
    """What the engine tells about one layer when it is built."""
    seam: str
    model_type: str = ""
    architectures: tuple[str, ...] = ()
    hidden: int = 0
    num_experts: int = 0
    num_local_experts: int = 0
    top_k: int = 0
    tp_size: int = 1
    ep_size: int = 1
    dp_size: int = 1
    act_dtype: str = "bfloat16"
    weight_dtype: str = "bfloat16"
    quantized: bool = False             # the engine quantises this layer's weights
    quant_scheme: str = ""              # MoE: "" (bf16) or the checkpoint's scheme name
    has_bias: bool = False
    activation: str = "silu"            # engine's MoE activation name
    swiglu_beta: float = 1.0
    all2all: bool = False               # EP through an all-to-all / DP dispatch backend
    eplb: bool = False
    fused_shared_experts: bool = False
    router_weight_on_input: bool = False
    max_model_len: int = 0


# Engine MoE activation name -> (fused_moe activation, gate/up layout).
SERVING_ACTIVATIONS = {"silu": ("silu", "split"), "swigluoai_uninterleave": ("swiglu_oai", "split"),
                       "swigluoai": ("swiglu_oai", "interleaved")}
SERVING_MXFP8_SCHEMES = ("mxfp8",)


def _served(f: SeamFacts) -> bool:
    return f.model_type in SERVED_MODEL_TYPES or any(a in SERVED_ARCHITECTURES for a in f.architectures)


@dataclass(frozen=True)
class SeamDecline:
    seams: tuple[str, ...]
    reason: str
    when: Callable[[SeamFacts, Platform], bool]


# Ordered: the first that holds keeps the engine's own code, with its reason.
SEAM_DECLINES: tuple[SeamDecline, ...] = (
    SeamDecline(("gate", "qk_norm", "moe_bf16", "moe_mxfp8"), "not a MiniMax-M2/M3 model",
                lambda f, plat: not _served(f)),
    SeamDecline(("gate",), "quantised or biased gate", lambda f, plat: f.quantized or f.has_bias),
    SeamDecline(("gate",), "gate weight not fp32 (router_gemm reads an fp32 W)",
                lambda f, plat: f.weight_dtype != "float32"),
    SeamDecline(("gate",), "no native router kernel on this GPU (the engine's GateLinear tiers)",
                lambda f, plat: plat.vendor != "cpu" and not plat.native_ext),
    SeamDecline(("qk_norm",), "TP1: no all-reduce (the engine's compiled norm)",
                lambda f, plat: plat.vendor != "cpu" and f.tp_size == 1),
    SeamDecline(("qk_norm",), "no fused all-reduce + norm for this group (the engine's kernels around its "
                              "graph-safe all-reduce)",
                lambda f, plat: plat.vendor != "cpu" and decide(
                    Problem("allreduce_rms_qk", tokens=1, hidden=f.hidden, dtype=f.act_dtype, tp_size=f.tp_size),
                    plat, check_impl=False).chosen.backend not in FUSED_ALLREDUCE_BACKENDS),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "all-to-all / data-parallel expert dispatch (the engine's backend)",
                lambda f, plat: f.all2all or f.dp_size > 1),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "expert load balancing moves experts (the engine's kernels)",
                lambda f, plat: f.eplb),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "shared experts fused into the routed ones",
                lambda f, plat: f.fused_shared_experts),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "expert biases or router weight on the input",
                lambda f, plat: f.has_bias or f.router_weight_on_input),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "activation not silu / swigluoai with beta 1",
                lambda f, plat: f.activation not in SERVING_ACTIVATIONS
                or (f.activation != "silu" and f.swiglu_beta != 1.0)),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "activations not bf16/fp16",
                lambda f, plat: f.act_dtype not in ("bfloat16", "float16")),
    SeamDecline(("moe_bf16",), "quantised expert weights", lambda f, plat: f.quantized),
    SeamDecline(("moe_mxfp8",), "expert weights not MXFP8", lambda f, plat: f.quant_scheme not in SERVING_MXFP8_SCHEMES),
    SeamDecline(("moe_bf16", "moe_mxfp8"), "no GPU MoE kernel here (Triton missing)",
                lambda f, plat: plat.vendor != "cpu" and not (plat.triton or plat.aiter)),
)


@dataclass(frozen=True)
class SeamDecision:
    seam: str
    take: bool
    reason: str

    def line(self, where: str) -> str:
        op = SEAM_OPS[self.seam]
        verdict = f"minimax_rocm.{op}" if self.take else "engine's own"
        return f"minimax_rocm: {where}: {self.seam} -> {verdict} ({self.reason})"


def seam_problem(f: SeamFacts, tokens: int = 1) -> Problem:
    """The op problem a seam's layer poses at `tokens` tokens per step."""
    op = SEAM_OPS[f.seam]
    if f.seam == "gate":
        return Problem(op, tokens=tokens, hidden=f.hidden, dtype=f.act_dtype, has_bias=f.has_bias)
    if f.seam == "qk_norm":
        return Problem(op, tokens=tokens, hidden=f.hidden, dtype=f.act_dtype, tp_size=f.tp_size)
    return Problem(op, tokens=tokens, hidden=f.hidden, dtype=f.act_dtype,
                   weight_format="mxfp8" if f.seam == "moe_mxfp8" else "bf16", num_experts=f.num_experts,
                   num_local_experts=f.num_local_experts, top_k=f.top_k, ep_size=f.ep_size, tp_size=f.tp_size,
                   max_model_len=f.max_model_len)


def decide_seam(f: SeamFacts, plat: Optional[Platform] = None) -> SeamDecision:
    """Whether the layer `f` describes takes this package's op, and why (the
    op's own backend is chosen per call by `decide`)."""
    plat = plat or detect_platform()
    if f.seam not in SEAM_OPS:
        raise ValueError(f"unknown seam {f.seam!r}; known: {', '.join(SEAM_OPS)}")
    for d in SEAM_DECLINES:
        if f.seam in d.seams and d.when(f, plat):
            return SeamDecision(f.seam, False, d.reason)
    c = decide(seam_problem(f), plat, check_impl=False).chosen
    return SeamDecision(f.seam, True, f"{c.label} at decode: {c.reason}")
