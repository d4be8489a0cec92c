"""Kernel-level views of an op that `bench` does not give: each case's time
under CUDA graphs and eagerly (launch cost against kernel body), the kernels
of one graph replay with the gap before each (CUPTI through torch.profiler),
and one call per case inside an NVTX range for Nsight Compute.

    python -m minimax_rocm.bench.profiling CASE [--mode time|timeline|nvtx] [--tokens T ...]

CASE: router_gemm (each native kernel at M2 / M3 gate shapes, beside a
one-element add_, the launch floor), fused_moe_mxfp8 (the native MXFP8 MoE
at the M3 EP8 rank), mxfp8_quant (each backend of ours at 16384 x 6144).
`--mode nvtx` is what Nsight Compute runs (`python -m minimax_rocm check
profile` wraps it in `ncu --nvtx --nvtx-include step/`).
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch

from .harness import copy_bandwidth_gbs, time_us

NVTX_RANGE = "step"


@dataclass
class Case:
    label: str
    fn: Callable[[], object]
    floor_us: float = 0.0     # fewest bytes over the copy bandwidth; 0: not stated


def router_gemm_cases(tokens=()) -> list[Case]:
    """The native router kernels (PDL off: alone, as Nsight Compute runs them)."""
    from .. import oracle
    from ..native import ext
    from ..ops.router_gemm import splitk_workspace, tc_available
    from .router_gemm import SHAPES
    if ext.load() is None:
        raise RuntimeError(f"native extension not loaded: {ext.load_error()}")
    ops = ext.ops()
    one = torch.ones(1, device="cuda")
    cases = [Case("add_ on one float (launch floor)", lambda: one.add_(1.0))]
    tc = tc_available(one.device)
    for name, H, E in SHAPES:
        w = torch.randn(E, H, device="cuda")
        for M in tokens or (1, 8, 16, 32):
            x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
            out = torch.empty(M, E, device="cuda")
            part, cnt = splitk_workspace(x.device, E)
            rows = oracle.router_onepass_rows(oracle.Problem("router_gemm", tokens=M, hidden=H),
                                              oracle.detect_platform())
            cases.append(Case(f"{name} M={M} one-pass r{rows}", lambda x=x, w=w, out=out, r=rows:
                              ops.router_gemm(x, w, out, r)))
            if M >= 16:
                cases.append(Case(f"{name} M={M} split-K", lambda x=x, w=w, out=out, p=part, c=cnt:
                                  ops.router_gemm_splitk(x, w, out, p, c, 0)))
                if tc:
                    cases.append(Case(f"{name} M={M} tensor-core", lambda x=x, w=w, out=out:
                                      ops.router_gemm_tc(x, w, out)))
    return cases


def fused_moe_mxfp8_cases(tokens=()) -> list[Case]:
    """One call of the native MXFP8 MoE at the M3 EP8 rank per T."""
    from ..triton import fused_moe_mxfp8 as tri
    from .fused_moe import rank_step
    from .fused_moe_mxfp8 import SHAPES, fp8_touched_bytes, mxfp8_weights, served_mxfp8
    name, H, I, E, E_loc, k, act, ep = SHAPES[0]
    dev = torch.device("cuda")
    w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, dev)[2:]
    bw = copy_bandwidth_gbs() * 1e9
    cases = []
    for T in tokens or (64, 216):
        hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, dev)
        print(f"{case}: plan {tri.plan(hidden, w13_q, ids, emap)}; routes per local expert "
              f"{grp['counts'].tolist()}", flush=True)
        cases.append(Case(case, lambda hidden=hidden, tw=tw, ids=ids, emap=emap:
                          served_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act),
                          fp8_touched_bytes(grp, H, I) / bw * 1e6 if bw else 0.0))
    return cases


def mxfp8_quant_cases(tokens=()) -> list[Case]:
    """mxfp8_quant at the bench's main shape, each backend of ours usable here."""
    from .. import oracle
    from ..ops.mxfp8 import QUANT
    from .mxfp8_quant import MAIN, _ours
    cases = []
    bw = copy_bandwidth_gbs() * 1e9
    for T in tokens or (MAIN[0],):
        K = MAIN[1]
        x = torch.randn(T, K, device="cuda").to(torch.bfloat16)
        nbytes = T * K * 2 + T * K + T * K // 32
        for backend in _ours():
            fn = oracle.impl(QUANT, backend)
            cases.append(Case(f"mxfp8_quant T={T} K={K} e4m3fn ({backend})", lambda fn=fn, x=x: fn(x, "e4m3fn"),
                              nbytes / bw * 1e6 if bw else 0.0))
    return cases


CASES: dict[str, Callable[..., list[Case]]] = {
    "router_gemm": router_gemm_cases,
    "fused_moe_mxfp8": fused_moe_mxfp8_cases,
    "mxfp8_quant": mxfp8_quant_cases,
}


def report_times(cases: list[Case]) -> None:
    """Graph (as `bench` times) against eager: the difference is launch cost."""
    for c in cases:
        g = time_us(c.fn)
        floor = f"   {100 * c.floor_us / g:5.1f}% of floor {c.floor_us:.1f} us" if c.floor_us else ""
        print(f"{c.label:48s} graph {g:8.2f} us   eager {time_us(c.fn, graph=False):8.2f} us{floor}", flush=True)


def nvtx_calls(cases: list[Case]) -> None:
    """Warm every case (compiles, autotuning), then one call of each inside
    an NVTX range: `ncu --nvtx --nvtx-include step/` profiles those alone."""
    for c in cases:
        for _ in range(3):
            c.fn()
    torch.cuda.synchronize()
    for c in cases:
        torch.cuda.nvtx.range_push(NVTX_RANGE)
        c.fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print(f"profiled: {c.label}", flush=True)


def timeline(case: Case, replays: int = 30) -> None:
    """Each kernel of one CUDA-graph replay of the case (as served): calls
    per replay, mean duration and mean gap before it (negative: it started
    before its predecessor ended, as PDL lets it)."""
    from torch.autograd import DeviceType
    fn = case.fn
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for _ in range(5):
        g.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            g.replay()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    dur, gap, cnt, order = defaultdict(float), defaultdict(float), defaultdict(int), []
    prev_end = None
    for e in ev:
        n = e.name[:60]
        if n not in cnt:
            order.append(n)
        cnt[n] += 1
        dur[n] += e.time_range.end - e.time_range.start
        if prev_end is not None and e.time_range.start - prev_end < 50:   # the same replay
            gap[n] += e.time_range.start - prev_end
        prev_end = e.time_range.end
    span = (ev[-1].time_range.end - ev[0].time_range.start) / replays if ev else 0
    print(f"{case.label}:")
    print(f"  {'kernel':60s} {'calls':>5s} {'mean us':>8s} {'gap before':>10s}   (span/replay {span:.1f} us)")
    for n in order:
        print(f"  {n:60s} {cnt[n] // replays:5d} {dur[n] / cnt[n]:8.2f} {gap[n] / cnt[n]:10.2f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.profiling", description=__doc__.split("\n")[0])
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--mode", choices=("time", "timeline", "nvtx"), default="time")
    ap.add_argument("--tokens", type=int, nargs="+", default=(),
                    help="M (router_gemm) or T (the others); default: each case's own list")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"profiling {a.case}: needs a GPU")
        return 2
    print(torch.cuda.get_device_name(), f"copy bandwidth {copy_bandwidth_gbs():.0f} GB/s", flush=True)
    cases = CASES[a.case](tuple(a.tokens))
    if a.mode == "time":
        report_times(cases)
    elif a.mode == "nvtx":
        nvtx_calls(cases)
    else:
        for c in cases:
            timeline(c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
