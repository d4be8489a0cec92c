"""On a GPU machine: where the native MXFP8 MoE's time goes, kernel by kernel,
inside a CUDA graph (as served): each kernel's mean duration and the mean gap
before it (torch.profiler / CUPTI over graph replays), for the M3 EP8 rank
at the bench's routings, beside the op's graph time.
    PYTHONPATH=$PWD python scripts/gpu_mxfp8_timeline.py [T ...]"""
import sys
from collections import defaultdict

import torch
from torch.autograd import DeviceType

from minimax_rocm.bench.fused_moe import rank_step
from minimax_rocm.bench.fused_moe_mxfp8 import SHAPES, fp8_touched_bytes, mxfp8_weights
from minimax_rocm.bench.harness import copy_bandwidth_gbs, time_us
from minimax_rocm.triton import fused_moe_mxfp8 as tri

dev = torch.device("cuda")
bw = copy_bandwidth_gbs() * 1e9
tokens = [int(t) for t in sys.argv[1:]] or [64, 216]
REPLAYS = 30
print(torch.cuda.get_device_name(), f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
for name, H, I, E, E_loc, k, act, ep in SHAPES[:1]:
    w13_q, w13_s, w2_q, w2_s = mxfp8_weights(E_loc, H, I, dev)[2:]
    for T in tokens:
        hidden, tw, ids, emap, grp, case = rank_step(name, T, H, E, E_loc, k, ep, T, dev)
        floor = fp8_touched_bytes(grp, H, I) / bw * 1e6
        fn = lambda: tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act)  # noqa: E731
        us = time_us(fn, iters=20, inner=10)
        loc = grp["counts"].tolist()
        print(f"{case}: graph {us:.1f} us ({100 * floor / us:.1f}% of floor {floor:.1f} us); routes per local "
              f"expert {loc}", flush=True)
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            fn()
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(REPLAYS):
                g.replay()
            torch.cuda.synchronize()
        ev = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
        dur, gap, cnt, order = defaultdict(float), defaultdict(float), defaultdict(int), []
        prev_end = None
        for e in ev:
            n = e.name[:60]
            if n not in cnt:
                order.append(n)
            cnt[n] += 1
            dur[n] += e.time_range.end - e.time_range.start
            if prev_end is not None and e.time_range.start - prev_end < 50:   # same replay
                gap[n] += e.time_range.start - prev_end
            prev_end = e.time_range.end
        span = (ev[-1].time_range.end - ev[0].time_range.start) / REPLAYS if ev else 0
        print(f"  {'kernel':60s} {'calls':>5s} {'mean us':>8s} {'gap before':>10s}   (span/replay {span:.1f} us)")
        for n in order:
            print(f"  {n:60s} {cnt[n] // REPLAYS:5d} {dur[n] / cnt[n]:8.2f} {gap[n] / cnt[n]:10.2f}")
