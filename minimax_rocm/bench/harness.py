"""Benchmark frame: CUDA-graph timing with medians, measured ceilings, rows
with a roofline floor, a baseline and the ratio.

Each op's benchmark lives in its own module of this package and registers a
function with `@register_bench("op")`; it returns a list of `Row`s. Rows of one
case share `case`; the row whose `baseline` is True is what the others'
`ratio` (baseline time / our time: > 1 means faster) is computed against.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Optional

import torch

BENCHES: dict[str, Callable] = {}


def register_bench(op: str):
    def deco(fn):
        BENCHES[op] = fn
        return fn
    return deco


@dataclass
class Row:
    op: str
    case: str                  # the shape, e.g. "M=4 H=3072 E=256"
    impl: str                  # "ours (hip)", "cast + F.linear", ...
    us: float                  # median microseconds
    bytes: int = 0             # fewest bytes the op must move (for the floor)
    flops: int = 0
    baseline: bool = False
    floor_us: float = 0.0      # max(bytes / bandwidth, flops / peak)
    ratio: float = 0.0         # baseline us / this us, within the case
    pct_roofline: float = 0.0  # floor / us
    note: str = ""

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclass
class Context:
    device: torch.device
    quick: bool = False        # fewer repetitions (CI smoke runs on CPU)

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"


# A timed sample of graph replays should last at least this long, so that the
# one graph launch it pays (the host's submission, about 5 us on an H200)
# stays a small share of it.
SAMPLE_MIN_US = 500.0
MAX_REPLAYS = 10


def time_us(fn: Callable[[], object], *, graph: bool = True, warmup: int = 10, iters: int = 50,
            inner: int = 20, replays: Optional[int] = None) -> float:
    """Median microseconds of one call of fn.

    On a GPU: `inner` calls are captured in one CUDA graph (launch gaps shrink
    as they would in a serving engine's graph). One sample is `replays`
    replays queued back to back between two events, over `inner * replays`
    calls; the median of `iters` samples is returned. A serving engine replays
    one graph per step, of hundreds of kernels; a sample of one short replay
    would charge every call 1/inner of a graph launch (0.15-0.35 us per call
    at inner = 20 for ops of 2-4 us on an H200: benchmarks/history/timing.md). By
    default `replays` grows until a sample lasts SAMPLE_MIN_US (at most
    MAX_REPLAYS). Ranks whose calls wait for each other must pass the same
    `replays` (a number chosen per rank could differ). graph=False (or capture
    failing, e.g. an op that syncs) times eager calls with events. On the CPU:
    wall clock.
    """
    if not torch.cuda.is_available():
        import time
        for _ in range(max(1, warmup // 5)):
            fn()
        ts = []
        for _ in range(max(3, iters // 5)):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(ts)

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    g = None
    if graph:
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(inner):
                    fn()
            g.replay()
            torch.cuda.synchronize()
        except Exception:
            g = None
            torch.cuda.synchronize()

    def sample(n: int) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            if g is not None:
                g.replay()
            else:
                for _ in range(inner):
                    fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e3 / (inner * n)

    if g is None:
        replays = 1
    elif replays is None:
        per_replay = sample(1) * inner
        replays = max(1, min(MAX_REPLAYS, math.ceil(SAMPLE_MIN_US / max(per_replay, 1e-3))))
    return statistics.median(sample(replays) for _ in range(iters))


def time_us_behind_plain_kernel(fn: Callable[[], object], device: torch.device,
                                between: Callable[[], object] = lambda: None,
                                replays: Optional[int] = None) -> tuple[float, str]:
    """Microseconds of fn right after a plain kernel (a one-element add_,
    which does not let its dependents launch early, so nothing of fn overlaps
    it): [add_, fn] less add_ alone, and a note showing both. What a PDL
    kernel costs after, say, a library GEMM. `between` runs before each of
    the two timings (a barrier across ranks)."""
    pad = torch.zeros(1, device=device)

    def plain_then_fn():
        pad.add_(1)
        fn()
    between()
    t_plain = time_us(lambda: pad.add_(1), replays=replays)
    between()
    t_pair = time_us(plain_then_fn, replays=replays)
    return t_pair - t_plain, f"[1-element add_, ours] {t_pair:.2f} us - add_ alone {t_plain:.2f} us"


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gbs() -> float:
    """Measured device-to-device copy bandwidth, bytes read + written, GB/s."""
    if not torch.cuda.is_available():
        return 0.0
    n = 1 << 30  # 1 GiB: far past L2
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), graph=False, warmup=3, iters=10, inner=2)
    del src, dst
    return 2 * n / (us * 1e-6) / 1e9


@functools.lru_cache(maxsize=None)
def matmul_tflops(dtype: torch.dtype = torch.bfloat16) -> float:
    """Measured dense matrix rate on random data (8192^3), TFLOP/s."""
    if not torch.cuda.is_available():
        return 0.0
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    us = time_us(lambda: a @ b, graph=False, warmup=3, iters=10, inner=2)
    return 2 * n ** 3 / (us * 1e-6) / 1e12


def finish(rows: list[Row]) -> list[Row]:
    """Fill floor, % of roofline and ratio vs the case's baseline."""
    bw = copy_bandwidth_gbs()
    peak = matmul_tflops()
    base = {r.case: r.us for r in rows if r.baseline}
    for r in rows:
        t_bytes = r.bytes / (bw * 1e9) * 1e6 if bw and r.bytes else 0.0
        t_flops = r.flops / (peak * 1e12) * 1e6 if peak and r.flops else 0.0
        r.floor_us = max(t_bytes, t_flops)
        r.pct_roofline = r.floor_us / r.us if r.us > 0 else 0.0
        r.ratio = base[r.case] / r.us if r.case in base and r.us > 0 else 0.0
    return rows


def format_table(rows: list[Row]) -> str:
    head = ("op", "case", "impl", "us", "floor us", "% roof", "x vs base")
    lines = [head]
    for r in rows:
        lines.append((r.op, r.case, r.impl + (" [base]" if r.baseline else ""), f"{r.us:.2f}",
                      f"{r.floor_us:.2f}" if r.floor_us else "-",
                      f"{100 * r.pct_roofline:.0f}%" if r.floor_us else "-",
                      f"{r.ratio:.2f}" if r.ratio and not r.baseline else "-"))
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(l, widths)) for l in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(rows: list[Row], path: str) -> None:
    """One panel per op: time per case and impl (log scale), PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops = list(dict.fromkeys(r.op for r in rows))
    fig, axes = plt.subplots(len(ops), 1, figsize=(10, 3.5 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        rs = [r for r in rows if r.op == op]
        cases = list(dict.fromkeys(r.case for r in rs))
        impls = list(dict.fromkeys(r.impl for r in rs))
        for i, impl in enumerate(impls):
            xs, ys = [], []
            for j, c in enumerate(cases):
                m = [r.us for r in rs if r.case == c and r.impl == impl]
                if m:
                    xs.append(j)
                    ys.append(m[0])
            ax.plot(xs, ys, marker="o", label=impl)
        floors = [next((r.floor_us for r in rs if r.case == c and r.floor_us), None) for c in cases]
        if any(floors):
            ax.plot([j for j, f in enumerate(floors) if f], [f for f in floors if f], "k--", label="floor")
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=20, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("us")
        ax.set_title(op)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def env_summary() -> dict:
    import platform as _p
    info = dict(torch=torch.__version__, python=_p.python_version())
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["copy_bandwidth_gbs"] = round(copy_bandwidth_gbs(), 1)
        info["bf16_tflops"] = round(matmul_tflops(), 1)
    else:
        info["device"] = "cpu"
    return info


def run(ops: Optional[list[str]], ctx: Context) -> list[Row]:
    """The registered benches (minimax_rocm.bench.load_all registers every one)."""
    names = ops or list(BENCHES)
    unknown = [o for o in names if o not in BENCHES]
    if unknown:
        raise SystemExit(f"bench: no benchmark for {', '.join(unknown)}; have {', '.join(BENCHES)}")
    rows: list[Row] = []
    for op in names:
        rows += finish(BENCHES[op](ctx))
    return rows


def vllm_fused_experts() -> Optional[Callable]:
    """Upstream vLLM's Triton fused MoE as a timing baseline: `fused_experts`
    from the Python file MINIMAX_ROCM_VLLM_MOE names (a local copy, never part
    of the package), taking `(hidden, w13, w2, topk_weights, topk_ids,
    expert_map, activation=...)` as vLLM's does (global ids, the map global ->
    local or -1); None when the variable is unset."""
    path = os.environ.get("MINIMAX_ROCM_VLLM_MOE")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("vllm_moe_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fused_experts
