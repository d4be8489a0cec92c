"""Every native (hip/) and Triton kernel variant, called a few times at small
shapes and checked against the float64 reference: the workload that
`python -m minimax_rocm check sanitize` runs under compute-sanitizer's tools.

    python -m minimax_rocm.sanitize_cases [--device cuda|cpu] [--op OP ...] [--no-poison] [--list]

Each case prints one line (`name: ok, max err E (tol T)`, `FAILED ...` or
`skipped (why)`); the run ends with the kernels and op backends it exercised
and exits 1 if any case failed. Shapes are small (a few tokens, a few
experts) but reach each variant: the router's one-pass builds (every M bucket,
1/2/4 W rows per block), split-K and tensor-core kernels; the edge sizes T = 0
and 1, token counts and widths off every block size.

Outputs and the MoE's intermediate buffers start poisoned (NaN, 0xFF, -7),
so an element no kernel wrote is a wrong answer. `--no-poison` leaves them
as torch.empty, so that initcheck sees any read of memory no kernel wrote.

`--device cpu` runs the Triton kernels under the interpreter (TRITON_INTERPRET=1,
as the CPU test suite does) and the ops on their torch backend; native kernels
and GPU-only variants are skipped with the reason printed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import reference as R

BF, F32 = torch.bfloat16, torch.float32
FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
NAN = float("nan")

# The tests' tolerances (reference.REL_TOL) for the same kernels.
ROUTER_TOL = F32_TOL = R.REL_TOL[F32]
BF16_TOL = R.REL_TOL[BF]
MX_TOL = R.MXFP8_REL_TOL
EXACT = 0                # mismatching elements: alignment, quantisation bytes


# --------------------------------------------------------------------------- #
# cases and the run they share
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Case:
    name: str
    op: str                         # the op's row in `python -m minimax_rocm check` (its --op)
    fn: Callable[["Run"], None]
    needs: tuple[str, ...] = ()     # "cuda", "native", "clusters", "ranks"


CASES: list[Case] = []


def case(name: str, op: str, *needs: str):
    def deco(fn):
        CASES.append(Case(name, op, fn, needs))
        return fn
    return deco


class Run:
    """The device, the poison switch, what each check found and what ran."""

    def __init__(self, device: str, poison: bool = True):
        self.dev = torch.device(device)
        self.cuda = self.dev.type == "cuda"
        self.poison = poison
        # a batch off every block size: 13 tokens (the interpreter: 5, for time)
        self.tokens = 13 if self.cuda else 5
        self.native, self.native_error = None, "native kernels run on a GPU only"
        if self.cuda:
            from .native import ext
            self.native = ext.load()
            self.native_error = f"native extension not loaded: {ext.load_error()}"
        self.exercised: dict[str, None] = {}
        self.reset()

    def reset(self) -> None:
        self.worst = (0.0, 0.0, 0.0, "")   # (err / tol, err, tol, label) of the check closest to failing
        self.failures: list[str] = []

    def why_not(self, needs: tuple[str, ...]) -> str:
        for n in needs:
            if n in ("cuda", "native", "clusters") and not self.cuda:
                return "needs a GPU (--device cuda)"
            if n == "native" and self.native is None:
                return self.native_error
            if n == "clusters" and not _router_ops().tc_available(self.dev):
                return "router_gemm_tc needs an NVIDIA sm90+ GPU (thread-block clusters)"
            if n == "ranks":
                return ("the Lamport kernel exchanges sums between ranks: it needs 2+ GPUs and one process "
                        "per rank (tests/test_lamport_multigpu.py runs it)")
        return ""

    def check(self, label: str, err: float, tol: float) -> None:
        """Record one comparison: err (relative error, or mismatching
        elements for exact checks) must be at most tol."""
        err = float(err)
        score = math.inf if math.isnan(err) else err / tol if tol else (0.0 if err == 0 else math.inf)
        if score >= self.worst[0]:
            self.worst = (score, err, tol, label)
        if not err <= tol:
            self.failures.append(f"{label}: err {err:.3g} > tol {tol:g}")

    def used(self, label: str) -> None:
        self.exercised[label] = None

    def out(self, shape, dtype: torch.dtype, device=None) -> torch.Tensor:
        """An output buffer: poisoned (NaN, 0xFF, -7) unless --no-poison."""
        device = device or self.dev
        if not self.poison:
            return torch.empty(shape, dtype=dtype, device=device)
        fill = NAN if dtype.is_floating_point else 0xFF if dtype == torch.uint8 else -7
        return torch.full(shape, fill, dtype=dtype, device=device)

    def on(self, *ts):
        return [None if t is None else t.to(self.dev) for t in ts]


def _router_ops():
    # the package exports a function named like this module
    return importlib.import_module("minimax_rocm.ops.router_gemm")


def _c64(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A float64 CPU copy (references run on the CPU, never on the kernels' device)."""
    return None if t is None else t.detach().cpu().double()


def _cpu(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().cpu()


def _mismatches(a: torch.Tensor, b: torch.Tensor) -> int:
    """Elements that differ (bytes for fp8; NaN equal to NaN), or all of
    them when the shapes differ."""
    a, b = _cpu(a), _cpu(b)
    if a.shape != b.shape:
        return max(a.numel(), b.numel(), 1)
    if a.dtype in (FN, FNUZ):
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    if a.is_floating_point():
        a, b = a.double(), b.double()
        return int((~((a == b) | (a.isnan() & b.isnan()))).sum())
    return int((a != b).sum())


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return R.rel_error(_cpu(out), ref)


def _last(op: str) -> str:
    from .ops._common import LAST_BACKEND
    return f"{op} op -> {LAST_BACKEND.get(op, '?')}"


@contextlib.contextmanager
def _moe_buffers(run: Run):
    """The MoE kernels' intermediate buffers from run.out (poisoned unless --no-poison)."""
    from .triton import fused_moe as bf16_moe, fused_moe_mxfp8 as mx_moe
    saved = bf16_moe._buffer, mx_moe._buffer
    bf16_moe._buffer = mx_moe._buffer = run.out
    try:
        yield
    finally:
        bf16_moe._buffer, mx_moe._buffer = saved


def _routes(run: Run, T: int, E: int, k: int, dtype=torch.int32) -> torch.Tensor:
    """T tokens' k distinct global expert ids out of E."""
    if T == 0:
        return torch.zeros(0, k, dtype=dtype, device=run.dev)
    return torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(dtype).to(run.dev)


def _emap(run: Run, E: int, ep: int, rank: int) -> Optional[torch.Tensor]:
    from .parallel import expert_map
    return expert_map(E, ep, rank, device=run.dev) if ep > 1 else None


def _hard(run: Run, rows: int, K: int, dtype=BF) -> torch.Tensor:
    """Magnitudes 1e-38 .. 1e30 by row plus the special MX blocks (zero, NaN,
    Inf, subnormal, saturating; K >= 96). No subnormal bf16 in the
    interpreter: it mis-converts them (tests/test_mxfp8_quant.py)."""
    sub = run.cuda or dtype == F32
    x = torch.randn(rows, K) * torch.logspace(-38 if sub else -30, 30, rows)[:, None]
    if rows:
        x[0, :32] = 0
        x[1 % rows, 40] = NAN
        x[2 % rows, 70] = -math.inf
        if sub:
            x[3 % rows, 64:96] = 1e-39
        x[4 % rows, 5] = -3.0e4
    return x.to(dtype).to(run.dev)


# --------------------------------------------------------------------------- #
# router_gemm
# --------------------------------------------------------------------------- #


def _router_err(out, x, w, bias=None) -> float:
    return _rel(out, R.router_gemm(_c64(x), _c64(w), _c64(bias)))


def _onepass_builds() -> list[tuple[torch.dtype, int, int]]:
    """(x dtype, M, W rows per block): every one-pass kernel the extension
    builds (bf16 M <= 8: kernels for 1, 2, 4, 8 rows of x, each with 1, 2 or 4
    W rows per block, 1 only on AMD; fp32 M <= 8: 1; M 9-16: 2; M 17-32: 4)."""
    rows = (1,) if torch.version.hip else (1, 2, 4)
    return ([(BF, M, r) for M in (1, 2, 3, 7) for r in rows] + [(F32, M, 1) for M in (1, 2, 4, 8)]
            + [(BF, 13, 2), (F32, 9, 2), (BF, 17, 4), (F32, 32, 4)])


@case("router_gemm/hip onepass, every M bucket and rows build", "router_gemm", "native")
def _router_onepass(run: Run):
    # 71 experts: the last block holds fewer W rows than it is built for; H
    # 1032: a multiple of 8 (16-byte vectors) and of no larger power of two
    w = torch.randn(71, 1032, device=run.dev)
    for dt, M, rows in _onepass_builds():
        x = torch.randn(M, 1032, device=run.dev).to(dt)
        out = run.out((M, 71), F32)
        run.native.router_gemm(x, w, out, rows, False)
        run.check(f"{dt} M={M} rows={rows}", _router_err(out, x, w), ROUTER_TOL)
    w, x = torch.randn(256, 3072, device=run.dev), torch.randn(1, 3072, device=run.dev).to(BF)
    out = run.out((1, 256), F32)
    run.native.router_gemm(x, w, out, 1 if torch.version.hip else 4, True)   # M2's gate at decode, PDL
    run.check("M2 gate M=1 pdl", _router_err(out, x, w), ROUTER_TOL)
    run.used("hip router_gemm onepass (m1/m2/m4/m8/m16/m32, bf16 and fp32, rows 1/2/4)")


@case("router_gemm/hip splitk, both tile heights and slice counts", "router_gemm", "native")
def _router_splitk(run: Run):
    for H, E, calls in ((1032, 72, ((BF, 9, 0, False), (F32, 16, 5, False), (BF, 17, 0, True), (F32, 32, 13, False),
                                    (BF, 24, 64, False), (F32, 1, 1, False))),
                        (3072, 256, ((F32, 20, 0, False),))):
        n_partials, n_counters = run.native.router_gemm_splitk_workspace(E)
        partials = run.out((n_partials,), F32)
        counters = torch.zeros(n_counters, dtype=torch.int32, device=run.dev)
        w = torch.randn(E, H, device=run.dev)
        for dt, M, splits, pdl in calls:
            x = torch.randn(M, H, device=run.dev).to(dt)
            out = run.out((M, E), F32)
            run.native.router_gemm_splitk(x, w, out, partials, counters, splits, pdl)
            run.check(f"H={H} {dt} M={M} splits={splits}", _router_err(out, x, w), ROUTER_TOL)
        # every call must leave the arrival counters at zero for the next one
        run.check(f"H={H} counters reset", int(counters.count_nonzero()), EXACT)
    run.used("hip router_gemm splitk (m16/m32, bf16 and fp32)")


@case("router_gemm/hip tc, every tile height, cluster size and unit", "router_gemm", "native", "clusters")
def _router_tc(run: Run):
    # (H, E, M, slices, steps, pdl): 0 = automatic. H 1032: K units ending
    # inside a block's range; 136 and 8: blocks with no K; E 72, 24, 5: a
    # cluster with rows past E; M 1..32: the 8/16/24/32-row tiles.
    for H, E, M, slices, steps, pdl in ((1032, 72, 1, 0, 0, False), (1032, 72, 9, 3, 3, False),
                                        (1032, 72, 17, 0, 2, False), (1032, 72, 32, 16, 0, False),
                                        (136, 24, 13, 0, 0, False), (8, 5, 24, 0, 0, False),
                                        (3072, 256, 9, 0, 0, True), (6144, 128, 5, 0, 0, False)):
        w = torch.randn(E, H, device=run.dev)
        x = torch.randn(M, H, device=run.dev).to(BF)
        out = run.out((M, E), F32)
        run.native.router_gemm_tc(x, w, out, slices, pdl, steps)
        run.check(f"H={H} E={E} M={M} slices={slices} steps={steps}", _router_err(out, x, w), ROUTER_TOL)
    run.used("hip router_gemm_tc (m8/m16/m24/m32, 2 and 3 steps)")


@case("router_gemm/triton split-K kernel", "router_gemm")
def _router_triton(run: Run):
    from .triton import router_gemm as tri
    # H 1030: rows not in 16-byte vectors (the native kernels' contract excludes it)
    for dt, M, H, E, splits in ((BF, 1, 1030, 71, 0), (F32, 13, 136, 24, 3), (BF, 32, 1032, 71, 1)):
        x, w = torch.randn(M, H, device=run.dev).to(dt), torch.randn(E, H, device=run.dev)
        run.check(f"{dt} M={M} H={H} splits={splits}", _router_err(tri.router_gemm(x, w, splits), x, w), ROUTER_TOL)
    run.used("triton router_gemm_kernel")


@case("router_gemm/op through the oracle", "router_gemm")
def _router_op(run: Run):
    import minimax_rocm as mm
    from . import oracle
    rg = _router_ops()
    # M2's gate at M = 0, 1, 9, 64, M3's at M = 6, fp32 x at M = 20, a bias
    for M, H, E, dt, bias in ((0, 3072, 256, BF, False), (1, 3072, 256, BF, False), (6, 6144, 128, BF, False),
                              (9, 3072, 256, BF, False), (20, 3072, 256, F32, False), (64, 3072, 256, BF, False),
                              (4, 3072, 256, F32, True)):
        x, w = torch.randn(M, H, device=run.dev).to(dt), torch.randn(E, H, device=run.dev)
        b = torch.randn(E, device=run.dev) if bias else None
        out = mm.router_gemm(x, w, b)
        d = oracle.decide(rg.problem(x, w, b))
        run.check(f"M={M} H={H} {dt} bias={bias} ({d.chosen.label})", _router_err(out, x, w, b), ROUTER_TOL)
        run.used(f"router_gemm op -> {d.chosen.label}")


# --------------------------------------------------------------------------- #
# moe_align
# --------------------------------------------------------------------------- #

# (T, k, E, ep, rank, block_m, id dtype): one token, uneven EP splits, int64
# ids, no map, no routes at all, 1024 local experts (the native kernel's most)
NATIVE_ALIGN = ((1, 4, 128, 8, 0, 16, torch.int32), (7, 3, 10, 3, 2, 16, torch.int64),
                (13, 8, 256, 1, 0, 64, torch.int32), (0, 4, 128, 8, 5, 16, torch.int32),
                (300, 8, 1024, 1, 0, 16, torch.int32))
TRITON_ALIGN = ((7, 2, 8, 2, 1, 4, torch.int32), (33, 4, 16, 4, 3, 16, torch.int64),
                (5, 8, 32, 1, 0, 16, torch.int32), (0, 2, 8, 2, 1, 16, torch.int32))


def _align_bad_ids(run: Run):
    """Routes with ids outside the map (the op rejects them; under graph
    capture the kernels must treat them as remote): (ids, map, local experts,
    the same routes with a remote expert in their place)."""
    emap = _emap(run, 8, 2, 1)                   # local: 4..7
    ids = torch.tensor([[4, -1], [11, 6], [5, 7], [6, 1 << 20]], dtype=torch.int32, device=run.dev)
    clean = torch.where((ids < 0) | (ids >= 8), torch.zeros_like(ids), ids)
    return ids, emap, 4, clean


def _align_check(run: Run, label: str, got, ids, bm, emap, e_loc) -> None:
    ref = R.moe_align(_cpu(ids), bm, _cpu(emap), e_loc)
    run.check(label, sum(_mismatches(g, r) for g, r in zip(got, ref)), EXACT)


def _align_cases(run: Run, cases, align) -> None:
    for T, k, E, ep, rank, bm, idt in cases:
        ids, emap = _routes(run, T, E, k, idt), _emap(run, E, ep, rank)
        e_loc = E if emap is None else int((emap >= 0).sum())
        _align_check(run, f"T={T} k={k} E={E} ep={ep} block_m={bm} {idt}", align(ids, bm, emap, e_loc),
                     ids, bm, emap, e_loc)
    ids, emap, e_loc, clean = _align_bad_ids(run)
    _align_check(run, "ids outside the map", align(ids, 16, emap, e_loc), clean, 16, emap, e_loc)


def _align_out(run: Run, n: int, bm: int):
    i32 = torch.int32
    return run.out((n,), i32), run.out((n // bm,), i32), run.out((1,), i32)


@case("moe_align/hip", "moe_align", "native")
def _align_native(run: Run):
    def align(ids, bm, emap, e_loc):
        out = _align_out(run, R.align_buffer_size(ids.numel(), bm, e_loc), bm)
        run.native.moe_align(ids, emap, e_loc, bm, *out)
        return out
    _align_cases(run, NATIVE_ALIGN, align)
    run.used("hip moe_align (int32 and int64 ids)")


@case("moe_align/triton", "moe_align")
def _align_triton(run: Run):
    from .triton.moe_align import moe_align

    def align(ids, bm, emap, e_loc):
        if emap is not None and ids.dtype == torch.int64:
            emap = emap.long()
        return moe_align(ids, bm, emap, e_loc, out=_align_out(run, R.align_buffer_size(ids.numel(), bm, e_loc), bm))
    _align_cases(run, TRITON_ALIGN, align)
    run.used("triton moe_align (_count, _offsets, _place kernels)")


@case("moe_align/op through the oracle", "moe_align")
def _align_op(run: Run):
    import minimax_rocm as mm
    for T, k, E, ep, bm in ((8, 8, 256, 1, 16), (13, 4, 128, 8, 16)):   # 256 local experts, then 16
        ids, emap = _routes(run, T, E, k), _emap(run, E, ep, 3)
        e_loc = E // ep
        _align_check(run, f"T={T} local experts={e_loc}", mm.moe_align(ids, bm, emap, e_loc), ids, bm, emap, e_loc)
        run.used(_last("moe_align"))


# --------------------------------------------------------------------------- #
# topk_reduce
# --------------------------------------------------------------------------- #


def _topk_err(out, x, w) -> float:
    return _rel(out, R.topk_reduce(_c64(x), _c64(w)))


@case("topk_reduce/hip", "topk_reduce", "native")
def _topk_native(run: Run):
    # H 8: one 16-byte vector per row; 3080: 8 x 385 (no larger power of two)
    for T, k, H, weighted in ((1, 1, 8, False), (7, 4, 3080, True), (13, 8, 6144, False), (0, 4, 64, True)):
        x = torch.randn(T, k, H, device=run.dev).to(BF)
        w = torch.rand(T, k, device=run.dev) if weighted else None
        out = run.out((T, H), BF)
        run.native.topk_reduce(x, w, out)
        run.check(f"T={T} k={k} H={H} weighted={weighted}", _topk_err(out, x, w), BF16_TOL)
    run.used("hip topk_reduce")


@case("topk_reduce/triton, plain and masked by expert map", "topk_reduce")
def _topk_triton(run: Run):
    from .triton.topk_reduce import topk_reduce
    for T, k, H, dt, weighted in ((5, 3, 40, F32, True), (7, 4, 3070, BF, True), (1, 8, 24, F32, False),
                                  (0, 2, 16, BF, True)):
        x = torch.randn(T, k, H, device=run.dev).to(dt)
        w = torch.rand(T, k, device=run.dev) if weighted else None
        out = topk_reduce(x, w, out=run.out((T, H), dt))
        run.check(f"T={T} k={k} H={H} {dt}", _topk_err(out, x, w), BF16_TOL if dt == BF else F32_TOL)
    # the MoE's form: routes to remote experts are never read (NaN there)
    emap = _emap(run, 8, 2, 1)
    ids = torch.tensor([[4, 0], [1, 7], [2, 3], [5, 6]], dtype=torch.int32, device=run.dev)
    local = (emap[ids.long()] >= 0).unsqueeze(-1)
    x = torch.randn(4, 2, 16, device=run.dev)
    out = topk_reduce(torch.where(local, x, NAN), topk_ids=ids, expert_map=emap, num_local_experts=4,
                      out=run.out((4, 16), F32))
    run.check("masked routes", _rel(out, (_c64(x) * _cpu(local)).sum(1)), F32_TOL)
    run.used("triton _topk_reduce_kernel (weighted, masked)")


@case("topk_reduce/op through the oracle", "topk_reduce")
def _topk_op(run: Run):
    import minimax_rocm as mm
    x, w = torch.randn(9, 4, 256, device=run.dev).to(BF), torch.rand(9, 4, device=run.dev)
    run.check("16-byte aligned", _topk_err(mm.topk_reduce(x, w), x, w), BF16_TOL)
    run.used(_last("topk_reduce"))
    # a contiguous view 8 bytes into its storage: not for the native kernel
    odd = torch.randn(9 * 4 * 256 + 4, device=run.dev).to(BF)[4:].view(9, 4, 256)
    run.check("8 bytes off alignment", _topk_err(mm.topk_reduce(odd, w), odd, w), BF16_TOL)
    run.used(_last("topk_reduce"))


# --------------------------------------------------------------------------- #
# MXFP8 quantise / dequantise / fn -> fnuz
# --------------------------------------------------------------------------- #


def _quant_check(run: Run, label: str, got, x, fp8) -> None:
    rq, rs = R.mxfp8_quant(_cpu(x), fp8)
    run.check(label, _mismatches(got[0].view(torch.uint8), rq.view(torch.uint8)) + _mismatches(got[1], rs), EXACT)


@case("mxfp8_quant/hip", "mxfp8_quant", "native")
def _quant_native(run: Run):
    # the last input: a contiguous view 2 bytes into its storage (scalar loads)
    unaligned = _hard(run, 33, 256).reshape(-1)[1:1 + 32 * 256].reshape(32, 256)
    for label, x in (("1x32", torch.randn(1, 32, device=run.dev).to(BF)), ("7x96", _hard(run, 7, 96)),
                     ("3x5x96", torch.randn(3, 5, 96, device=run.dev).to(BF)), ("33x1056", _hard(run, 33, 1056)),
                     ("0x64", torch.zeros(0, 64, device=run.dev, dtype=BF)), ("unaligned 32x256", unaligned)):
        for fp8 in (FN, FNUZ):
            q, s = run.out(x.shape, torch.uint8), run.out((*x.shape[:-1], x.shape[-1] // 32), torch.uint8)
            run.native.mxfp8_quant(x, fp8 == FNUZ, q, s)
            _quant_check(run, f"{label} {fp8}", (q, s), x, fp8)
    run.used("hip mxfp8_quant (e4m3fn, e4m3fnuz; 16-byte and scalar loads)")


@case("mxfp8_quant/triton quant, round and dequant", "mxfp8_quant")
def _quant_triton(run: Run):
    from .triton import mxfp8_quant as tri
    for fp8 in (FN, FNUZ):
        for dt in (BF, F32):
            for label, x in (("12x256", _hard(run, 12, 256, dt)), ("3x5x96", torch.randn(3, 5, 96).to(dt)),
                             ("0x64", torch.zeros(0, 64).to(dt))):
                x = x.to(run.dev)
                _quant_check(run, f"quant {label} {dt} {fp8}", tri.mxfp8_quant(x, fp8), x, fp8)
        # the BF16 image of the MXFP8 values, zeroing the MoE's accumulator as it goes
        x = (torch.randn(10, 192) * torch.logspace(-20, 20, 10)[:, None]).to(BF)
        x[3, 40] = NAN
        x = x.to(run.dev)
        zero = run.out(x.shape, BF)
        img = tri.mxfp8_round(x, fp8, zero=zero)
        want = R.mxfp8_dequant(*R.mxfp8_quant(_cpu(x), fp8), BF)
        run.check(f"round {fp8}", _mismatches(img, want) + _mismatches(zero, torch.zeros(x.shape, dtype=BF)), EXACT)
        q, s = R.mxfp8_quant(_cpu(_hard(run, 6, 128)), fp8)
        run.check(f"dequant fp32 {fp8}", _mismatches(tri.mxfp8_dequant(*run.on(q, s), F32), R.mxfp8_dequant(q, s)),
                  EXACT)
        q, s = R.mxfp8_quant(torch.randn(5, 96), fp8)
        run.check(f"dequant bf16 {fp8}", _mismatches(tri.mxfp8_dequant(*run.on(q, s), BF),
                                                    R.mxfp8_dequant(q, s, BF)), EXACT)
    run.used("triton mxfp8_quant_kernel, mxfp8_round_kernel, mxfp8_dequant_kernel (e4m3fn, e4m3fnuz)")


@case("mxfp8_quant/ops through the oracle, and fn_to_fnuz", "mxfp8_quant")
def _quant_op(run: Run):
    import minimax_rocm as mm
    for dt in (BF, F32):
        x = _hard(run, 7, 96, dt)
        q, s = mm.mxfp8_quant(x, "e4m3fn")
        _quant_check(run, f"quant {dt}", (q, s), x, FN)
        run.used(_last("mxfp8_quant"))
        run.check(f"dequant {dt}", _mismatches(mm.mxfp8_dequant(q, s, F32), R.mxfp8_dequant(_cpu(q), _cpu(s))), EXACT)
        run.used(_last("mxfp8_dequant"))
    # the one-time gfx942 conversion keeps every value (-0.0 becomes +0)
    x = torch.randn(4, 64)
    x[1, 3] = -0.0
    q, s = run.on(*R.mxfp8_quant(x, FN))
    q2, s2 = mm.mxfp8_fn_to_fnuz(q, s)
    run.check("fn_to_fnuz keeps values", _mismatches(R.mxfp8_dequant(_cpu(q), _cpu(s), torch.float64),
                                                     R.mxfp8_dequant(_cpu(q2), _cpu(s2), torch.float64)), EXACT)
    run.used("mxfp8_fn_to_fnuz (torch)")


# --------------------------------------------------------------------------- #
# swiglu_oai (and silu-and-mul, the same kernel)
# --------------------------------------------------------------------------- #


@case("swiglu_oai/triton glu, both activations and layouts, row count", "swiglu_oai")
def _glu_triton(run: Run):
    from .triton import elementwise as ew
    for act in ("swiglu_oai", "silu"):
        for layout in ("split", "interleaved"):
            x = torch.randn(3, 5, 80, device=run.dev) * 4     # I = 40: a masked tail; |x| past the limit
            run.check(f"{act} {layout} fp32", _rel(ew.glu(x, act, layout), R.activation(_c64(x), act, layout)),
                      F32_TOL)
    x = (torch.randn(7, 2 * 1030, device=run.dev) * 4).to(BF)     # I = 1030: two column blocks, one nearly empty
    run.check("swiglu_oai bf16 I=1030", _rel(ew.swiglu_oai(x), R.swiglu_oai(_c64(x))), BF16_TOL)
    # the unfused MoE's form: only rows below a device-side count
    x = torch.randn(7, 32, device=run.dev)
    out = ew.glu(x, "silu", row_count=torch.tensor([4], dtype=torch.int32, device=run.dev), out=run.out((7, 16), F32))
    run.check("row count 4 of 7", _rel(out[:4], R.silu_and_mul(_c64(x[:4]))), F32_TOL)
    if run.poison:
        run.check("rows past the count untouched", int((~out[4:].isnan()).sum()), EXACT)
    run.check("T=0", _mismatches(ew.swiglu_oai(torch.zeros(0, 8, device=run.dev)), torch.zeros(0, 4)), EXACT)
    run.used("triton _glu_kernel (swiglu_oai, silu; split, interleaved; row count)")


@case("swiglu_oai/op through the oracle", "swiglu_oai")
def _glu_op(run: Run):
    import minimax_rocm as mm
    for layout in ("split", "interleaved"):
        x = (torch.randn(13, 2 * 136, device=run.dev) * 4).to(BF)
        run.check(layout, _rel(mm.swiglu_oai(x, layout=layout), R.swiglu_oai(_c64(x), layout=layout)), BF16_TOL)
        run.used(_last("swiglu_oai"))


# --------------------------------------------------------------------------- #
# allreduce_rms_qk / allreduce_rms on one rank (the Triton norm kernels)
# --------------------------------------------------------------------------- #


def _rms_tol() -> float:
    # the interpreter truncates fp32 -> bf16 (tests/test_allreduce_rms.py)
    return 8e-3 if os.environ.get("TRITON_INTERPRET") == "1" else 4e-3


def _qk_inputs(run: Run, T: int, q: int, kv: int, w_dtype):
    qkv = (torch.randn(T, q + 2 * kv) * (torch.rand(T, 1) * 4 + 0.1)).to(BF)
    qw, kw = (torch.rand(q) + 0.5).to(w_dtype), (torch.rand(kv) + 0.5).to(w_dtype)
    return run.on(qkv, qw, kw)


def _qk_check(run: Run, label: str, qkv, orig, qw, kw, eps=1e-6) -> None:
    q, kv = qw.shape[0], kw.shape[0]
    ref = R.qk_norm_tp([_c64(orig)], [_c64(qw)], [_c64(kw)], eps)[0]
    run.check(f"{label} q|k", _rel(qkv[:, :q + kv], ref[:, :q + kv]), _rms_tol())
    run.check(f"{label} v untouched", _mismatches(qkv[:, q + kv:], orig[:, q + kv:]), EXACT)


@case("allreduce_rms_qk/triton norm kernels, one rank", "allreduce_rms_qk")
def _qk_triton(run: Run):
    from . import oracle
    qk, one = oracle.impl("allreduce_rms_qk", "triton"), oracle.impl("allreduce_rms", "triton")
    # q 1040 / kv 24: slices off the 1024-wide block and off 16-byte vectors
    for T, q, kv in ((1, 48, 16), (13, 1040, 24), (0, 32, 8)):
        for w_dtype in (F32, BF):
            qkv, qw, kw = _qk_inputs(run, T, q, kv, w_dtype)
            orig = qkv.clone()
            qk(qkv, qw, kw, 1e-6, "")
            _qk_check(run, f"T={T} q={q} kv={kv} w {w_dtype}", qkv, orig, qw, kw)
    x, w = run.on(torch.randn(5, 72).to(BF), (torch.rand(72) + 0.5).to(BF))
    ref = R.rms_norm(_c64(x), _c64(w), 1e-6)
    one(x, w, 1e-6, "")
    run.check("allreduce_rms T=5 D=72", _rel(x, ref), _rms_tol())
    run.used("triton _sum_squares_kernel, _rms_scale_kernel")


@case("allreduce_rms_qk/op through the oracle, one rank", "allreduce_rms_qk")
def _qk_op(run: Run):
    import minimax_rocm as mm
    qkv, qw, kw = _qk_inputs(run, 7, 6144, 1024, F32)    # M2's q and k widths at TP1
    orig = qkv.clone()
    mm.allreduce_rms_qk(qkv, qw, kw)
    _qk_check(run, "T=7 M2 widths", qkv, orig, qw, kw)
    run.used(_last("allreduce_rms_qk"))


@case("allreduce_rms_qk/hip Lamport kernel", "allreduce_rms_qk", "ranks")
def _qk_lamport(run: Run):
    raise AssertionError("unreachable: skipped on one process")


# --------------------------------------------------------------------------- #
# fused_moe (BF16 weights)
# --------------------------------------------------------------------------- #


def _moe_shape(run: Run, ragged: bool = False) -> dict:
    """Small widths: GPU H 1024 / I 512 (and 1000 / 200, off every tile
    width), 16 experts, top-4, EP4; the interpreter's are tiny and fp32 (its
    bf16 dots are upcast and its bf16 conversions truncate)."""
    if run.cuda:
        return dict(H=1000, I=200, E=16, k=4, ep=4) if ragged else dict(H=1024, I=512, E=16, k=4, ep=4)
    return dict(H=40, I=24, E=8, k=2, ep=2) if ragged else dict(H=32, I=16, E=8, k=2, ep=2)


def _moe_inputs(run: Run, T: int, ragged: bool = False, local_all: bool = False):
    """(hidden, w13, w2, topk_weights, topk_ids) and the expert map of the
    last EP rank (None: every expert local)."""
    s = _moe_shape(run, ragged)
    H, I, E = s["H"], s["I"], s["E"]
    E_loc = E if local_all else E // s["ep"]
    dt = BF if run.cuda else F32
    hidden = torch.randn(T, H).to(dt)
    w13 = (torch.randn(E_loc, 2 * I, H) * (3.0 / H ** 0.5)).to(dt)    # gate scale 3: the SwiGLU clamps act
    w2 = (torch.randn(E_loc, H, I) / I ** 0.5).to(dt)
    args = [*run.on(hidden, w13, w2, torch.rand(T, s["k"])), _routes(run, T, E, s["k"])]
    return args, None if local_all else _emap(run, E, s["ep"], s["ep"] - 1)


def _remote_routes(run: Run, args, emap) -> torch.Tensor:
    """Routes of args' tokens to experts below the last rank's: all remote."""
    return _routes(run, args[0].shape[0], int((emap >= 0).nonzero()[0]), args[-1].shape[1])


def _moe_check(run: Run, label: str, out, args, emap, act, layout="split") -> None:
    hidden, w13, w2, tw, ids = args
    ref = R.fused_moe(_c64(hidden), _c64(w13), _c64(w2), _c64(tw), _cpu(ids), _cpu(emap), act, layout)
    run.check(label, _rel(out, ref), BF16_TOL if run.cuda else F32_TOL)


@case("fused_moe/op generic path (every expert local)", "fused_moe")
def _moe_generic(run: Run):
    import minimax_rocm as mm
    with _moe_buffers(run):
        for T in (1, run.tokens, 0):
            args, _ = _moe_inputs(run, T, local_all=True)
            _moe_check(run, f"T={T}", mm.fused_moe(*args, None, activation="silu"), args, None, "silu")
            run.used(_last("fused_moe"))


@case("fused_moe/op sparse_local path (the last EP rank)", "fused_moe")
def _moe_sparse(run: Run):
    import minimax_rocm as mm
    with _moe_buffers(run):
        for T in (1, run.tokens, 0):
            args, emap = _moe_inputs(run, T)
            _moe_check(run, f"T={T}", mm.fused_moe(*args, emap, activation="swiglu_oai"), args, emap, "swiglu_oai")
            run.used(_last("fused_moe"))
        args, emap = _moe_inputs(run, 3)
        args[4] = _remote_routes(run, args, emap)
        out = mm.fused_moe(*args, emap)
        run.check("no local route: zeros", _mismatches(out, torch.zeros(out.shape, dtype=out.dtype)), EXACT)


@case("fused_moe/triton configurations (unfused, before, block_m 64, swap-AB, bad ids)", "fused_moe")
def _moe_triton(run: Run):
    from .triton import fused_moe as tri
    from .triton.moe_configs import Tile
    n = 64 if run.cuda else 16
    swap = Tile(block_n=n, block_k=n, swap_ab=True)
    with _moe_buffers(run):
        for variant, fuse, act, layout, ragged, kw in (
                ("sparse_local", False, "swiglu_oai", "interleaved", False, {}),
                ("before", False, "silu", "split", False, {}),
                ("before", True, "swiglu_oai", "split", True, {}),
                ("sparse_local", True, "silu", "interleaved", True, {}),
                ("sparse_local", True, "swiglu_oai", "split", False, dict(block_m=64)),
                ("sparse_local", True, "swiglu_oai", "split", False, dict(tile1=swap, tile2=swap))):
            args, emap = _moe_inputs(run, run.tokens, ragged=ragged)
            out = tri.fused_moe(*args, emap, act, layout, variant=variant, fuse_act=fuse, **kw)
            _moe_check(run, f"{variant} fuse={fuse} {act} {layout} ragged={ragged} {sorted(kw)}", out, args, emap,
                       act, layout)
        # ids outside the map are remote routes in both configurations, never an index
        args, emap = _moe_inputs(run, 4)
        E = emap.shape[0]
        bad = args[4].clone()
        bad[0, 0], bad[1, 1], bad[2, 0] = -1, E + 5, 1 << 20
        clean = torch.where((bad < 0) | (bad >= E), torch.zeros_like(bad), bad)    # expert 0 is remote here
        for variant in ("sparse_local", "before"):
            out = tri.fused_moe(*args[:4], bad, emap, "silu", variant=variant)
            _moe_check(run, f"{variant} ids outside the map", out, [*args[:4], clean], emap, "silu")
    run.used("triton _moe_gemm_kernel (fused and unfused act, before, block_m 16/64, swap-AB)")


# --------------------------------------------------------------------------- #
# fused_moe_mxfp8
# --------------------------------------------------------------------------- #


def _mx_shape(run: Run, ragged: bool = False) -> dict:
    """GPU: H 1024 / I 512 (and 1056 / 224: K not a multiple of 64 or 128),
    32 experts, top-4, 4 local (EP8 rank 3); the interpreter's are tiny."""
    if run.cuda:
        return dict(H=1056, I=224, E=32, k=4, ep=8) if ragged else dict(H=1024, I=512, E=32, k=4, ep=8)
    return dict(H=96, I=32, E=8, k=2, ep=2) if ragged else dict(H=64, I=64, E=8, k=2, ep=2)


def _mx_weight(shape, scale: float, fp8):
    """fp8 weights whose 32-wide blocks span 2^-6 .. 2^6, so block scales differ."""
    spread = torch.exp2(torch.randint(-6, 7, (*shape[:-1], shape[-1] // 32, 1)).float())
    x = torch.randn(*shape[:-1], shape[-1] // 32, 32) * spread / spread.mean()
    return R.mxfp8_quant(x.reshape(shape) * scale, fp8)


def _mx_fp8(run: Run):
    from . import oracle
    return oracle.detect_platform().torch_fp8_dtype if run.cuda else FN


def _mx_inputs(run: Run, T: int, ragged: bool = False, fp8=None, dtype=BF, local_all: bool = False):
    """(hidden, w13_q, w13_s, w2_q, w2_s, topk_weights, topk_ids), expert map."""
    s = _mx_shape(run, ragged)
    fp8 = fp8 or _mx_fp8(run)
    E_loc = s["E"] if local_all else s["E"] // s["ep"]
    w13 = _mx_weight((E_loc, 2 * s["I"], s["H"]), 3.0 / s["H"] ** 0.5, fp8)
    w2 = _mx_weight((E_loc, s["H"], s["I"]), 1 / s["I"] ** 0.5, fp8)
    hidden, tw = torch.randn(T, s["H"]).to(dtype), torch.rand(T, s["k"])
    args = [*run.on(hidden, *w13, *w2, tw), _routes(run, T, s["E"], s["k"])]
    return args, None if local_all else _emap(run, s["E"], s["ep"], s["ep"] - 1)


def _mx_check(run: Run, label: str, out, args, emap, act="swiglu_oai", layout="split", quantised=True) -> None:
    """Native MXFP8 against the reference quantising activations at the same
    points; the emulation and BF16-copy paths against the unquantised one."""
    ref = R.fused_moe_mxfp8(*[_cpu(a) for a in args], _cpu(emap), act, layout, quantize_activations=quantised)
    run.check(label, _rel(out, ref), MX_TOL if quantised else BF16_TOL)


def _mx_op(run: Run, label: str, T: int, max_model_len: int, copy: bool = False) -> None:
    import minimax_rocm as mm
    from .ops import Mxfp8Experts
    args, emap = _mx_inputs(run, T)
    experts = Mxfp8Experts(*args[1:5])
    experts = experts.with_bf16_copy() if copy else experts
    out = mm.fused_moe_mxfp8(args[0], experts, args[5], args[6], emap, max_model_len=max_model_len)
    path = _last("fused_moe_mxfp8")
    _mx_check(run, f"{label} T={T} ({path})", out, args, emap, quantised=path.endswith("native_mxfp8"))
    run.used(path)


@case("fused_moe_mxfp8/op native_mxfp8 path", "fused_moe_mxfp8")
def _mx_native(run: Run):
    with _moe_buffers(run):
        for T in (1, run.tokens, 0):
            _mx_op(run, "short context, no BF16 copy", T, 4096)


@case("fused_moe_mxfp8/op emulation and bf16_copy paths", "fused_moe_mxfp8")
def _mx_paths(run: Run):
    from . import oracle
    tiny = max(1, int(oracle.threshold("mxfp8_bf16_max_tokens", oracle.detect_platform().arch)))
    with _moe_buffers(run):
        _mx_op(run, "long context", run.tokens, 1 << 20)
        _mx_op(run, "BF16 copy, tiny batch", min(tiny, 8), 4096, copy=True)
        _mx_op(run, "BF16 copy, native band", 16, 4096, copy=True)


def _mx_dot_modes(run: Run):
    # (dot, fused activation, activation, layout); "scaled" runs the upcast
    # code in the interpreter, so only on a GPU
    modes = [("fp8", None, "swiglu_oai", "split"), ("upcast", False, "swiglu_oai", "interleaved"),
             ("upcast", True, "silu", "interleaved")]
    return modes + ([("scaled", None, "swiglu_oai", "split")] if run.cuda else [])


@case("fused_moe_mxfp8/triton dot modes and activation placement", "fused_moe_mxfp8")
def _mx_dots(run: Run):
    from .triton import fused_moe_mxfp8 as tri
    with _moe_buffers(run):
        for dot, fuse, act, layout in _mx_dot_modes(run):
            args, emap = _mx_inputs(run, run.tokens)
            out = tri.fused_moe_mxfp8(*args, emap, act, layout, dot=dot, fuse_act=fuse)
            _mx_check(run, f"dot={dot} fuse_act={fuse} {act} {layout}", out, args, emap, act, layout)
            run.used(f"triton _mx_gemm_kernel dot={dot}" + ("" if fuse is None else f" fuse_act={fuse}"))
    run.used("triton _act_quant_kernel")


@case("fused_moe_mxfp8/triton accumulation, side stream and PDL", "fused_moe_mxfp8", "cuda")
def _mx_launch(run: Run):
    from .triton import dependent_launch
    from .triton import fused_moe_mxfp8 as tri
    with _moe_buffers(run):
        # every value of each switch once: BF16 or fp32 output atomics, the
        # rounding pass on a second stream, programmatic dependent launch
        for bf16_atomics, overlap, pdl in ((True, True, True), (False, False, False), (True, False, True),
                                           (False, True, False)):
            args, emap = _mx_inputs(run, run.tokens)
            with dependent_launch.forced(pdl):
                out = tri.fused_moe_mxfp8(*args, emap, bf16_atomics=bf16_atomics, overlap_rounding=overlap)
            _mx_check(run, f"bf16_atomics={bf16_atomics} overlap={overlap} pdl={pdl}", out, args, emap)
    run.used(f"triton MXFP8 MoE chain, PDL {'on' if dependent_launch.supported(run.dev) else 'unsupported here'}")


@case("fused_moe_mxfp8/triton edge shapes (ragged widths, fnuz, fp32, no local route)", "fused_moe_mxfp8")
def _mx_edges(run: Run):
    from .triton import fused_moe_mxfp8 as tri
    with _moe_buffers(run):
        args, emap = _mx_inputs(run, run.tokens, ragged=True)
        _mx_check(run, "ragged H, I", tri.fused_moe_mxfp8(*args, emap), args, emap)
        # e4m3fnuz (gfx942's flavour) through the upcast dot, which reads any flavour
        args, emap = _mx_inputs(run, 5, fp8=FNUZ)
        _mx_check(run, "e4m3fnuz upcast", tri.fused_moe_mxfp8(*args, emap, dot="upcast"), args, emap)
        args, _ = _mx_inputs(run, 5, dtype=F32, local_all=True)
        _mx_check(run, "fp32 hidden, every expert local", tri.fused_moe_mxfp8(*args, None), args, None)
        args, emap = _mx_inputs(run, 4)
        args[6] = _remote_routes(run, args, emap)
        out = tri.fused_moe_mxfp8(*args, emap)
        run.check("no local route: zeros", _mismatches(out, torch.zeros(out.shape, dtype=out.dtype)), EXACT)


# --------------------------------------------------------------------------- #
# the driver
# --------------------------------------------------------------------------- #

OPS = tuple(dict.fromkeys(c.op for c in CASES))


def run_cases(run: Run, cases: list[Case]) -> tuple[int, int, list[str]]:
    """(passed, failed, skip lines): one printed line per case."""
    passed, failed, skipped = 0, 0, []
    for c in cases:
        why = run.why_not(c.needs)
        if why:
            skipped.append(f"{c.name}: {why}")
            print(f"{c.name}: skipped ({why})", flush=True)
            continue
        run.reset()
        torch.manual_seed(zlib.crc32(c.name.encode()))   # reproducible per case, whatever else runs
        t0 = time.monotonic()
        try:
            c.fn(run)
            if run.cuda:
                torch.cuda.synchronize()   # a kernel's asynchronous error belongs to this case
        except Exception as e:  # noqa: BLE001  (any failure of a case is reported, the others still run)
            failed += 1
            print(f"{c.name}: FAILED, {type(e).__name__}: {str(e).strip()[:500]}", flush=True)
            traceback.print_exc(file=sys.stdout)
            continue
        _, err, tol, label = run.worst
        took = f" [{time.monotonic() - t0:.1f} s]"
        if run.failures:
            failed += 1
            print(f"{c.name}: FAILED, {len(run.failures)} check(s): {'; '.join(run.failures[:5])}{took}", flush=True)
        else:
            passed += 1
            print(f"{c.name}: ok, max err {err:.3g} (tol {tol:g}; {label}){took}", flush=True)
    return passed, failed, skipped


def _header(run: Run) -> str:
    try:
        import triton
        tv = triton.__version__
    except Exception:
        tv = "absent"
    where = torch.cuda.get_device_name(run.dev) if run.cuda else "cpu (Triton interpreter)"
    native = "loaded" if run.native is not None else run.native_error
    return (f"== sanitize cases on {where}; torch {torch.__version__}, triton {tv}; native extension: {native}; "
            f"outputs {'poisoned' if run.poison else 'not poisoned (torch.empty)'}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimax_rocm.sanitize_cases", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda: every case this GPU can run; cpu: the Triton interpreter and torch subset "
                        "(default: %(default)s)")
    p.add_argument("--op", action="append", default=[], choices=OPS, help="only this op's cases (repeatable)")
    p.add_argument("--no-poison", action="store_true",
                   help="leave outputs and intermediates unwritten (torch.empty): for initcheck")
    p.add_argument("--list", action="store_true", help="print the cases and run nothing")
    args = p.parse_args(argv)
    cases = [c for c in CASES if not args.op or c.op in args.op]
    if args.list:
        for c in cases:
            print(f"{c.name}  [op {c.op}{'; needs ' + ', '.join(c.needs) if c.needs else ''}]")
        return 0
    if args.device == "cpu":
        # Triton kernels take CPU tensors only under the interpreter, which
        # must be chosen before any kernel module is imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif os.environ.get("TRITON_INTERPRET") == "1":
        p.error("TRITON_INTERPRET=1 runs CPU tensors only: unset it for --device cuda")
    elif not torch.cuda.is_available():
        p.error("--device cuda: no CUDA/ROCm device visible")
    run = Run(args.device, poison=not args.no_poison)
    print(_header(run), flush=True)
    t0 = time.monotonic()
    passed, failed, skipped = run_cases(run, cases)
    print(f"== exercised ({len(run.exercised)}): " + " | ".join(run.exercised))
    if skipped:
        print(f"== skipped ({len(skipped)}): " + " | ".join(skipped))
    print(f"== {len(cases)} case(s): {passed} ok, {failed} failed, {len(skipped)} skipped "
          f"in {time.monotonic() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
