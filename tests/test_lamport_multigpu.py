"""The fused Lamport all-reduce + RMSNorm kernel on two GPUs (two processes,
NCCL): fused vs the float64 reference for random token counts and widths, a
stress of >= 10,000 calls with changing inputs, token counts and pacing
(a stale or raced buffer shows as a wrong value), -0.0 / zero / huge / tiny
inputs, CUDA graph capture and replay mixed with eager calls, the buffers'
state after the calls, host-side errors and fall-throughs, close and reopen.

    pytest -m multigpu tests/test_lamport_multigpu.py

Each rank runs every check in the same order and records failures instead of
raising at once (so the ranks never fall out of step); the worker raises at
the end with everything that failed. A lost peer write traps the kernel after
KERNEL_TIMEOUT_S instead of hanging the run.
"""
import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist

from minimax_rocm.parallel import end_spawned_worker, local_init_method

pytestmark = pytest.mark.multigpu

# TP size of the run: 2 by default; MINIMAX_ROCM_TP=4 or 8 on a machine with that many GPUs.
WORLD = int(os.environ.get("MINIMAX_ROCM_TP", "2"))
MAX_T = 4096
EPS = 1e-6
KERNEL_TIMEOUT_S = 20.0
STRESS_CALLS = 10_000
# NVLink multicast stays off, as in the bench's ENV: every process gets these.
ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
HALF_ULP = 2.0 ** -8 * 1.001   # bf16 round-to-nearest of an fp32 result, relative


class Failures(list):
    def expect(self, ok, msg):
        if not ok:
            self.append(msg)
        return ok


def _full_inputs(T, q_full, kv_full, seed, w_dtype, dev, scale=None):
    """Full-width inputs (identical on every rank: same seed) and the shards."""
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(T, q_full + 2 * kv_full, generator=g, device=dev)
    row_scale = torch.rand(T, 1, generator=g, device=dev) * 3.9 + 0.1 if scale is None else scale
    x = (x * row_scale).to(torch.bfloat16)
    qw = (torch.rand(q_full, generator=g, device=dev) + 0.5).to(w_dtype)
    kw = (torch.rand(kv_full, generator=g, device=dev) + 0.5).to(w_dtype)
    return x, qw, kw


def _shard(x, qw, kw, q_full, kv_full, rank, world):
    ql, kl = q_full // world, kv_full // world
    q, k, v = x[:, :q_full], x[:, q_full:q_full + kv_full], x[:, q_full + kv_full:]
    qkv = torch.cat([q[:, rank * ql:(rank + 1) * ql], k[:, rank * kl:(rank + 1) * kl],
                     v[:, rank * kl:(rank + 1) * kl]], 1).contiguous()
    return qkv, qw[rank * ql:(rank + 1) * ql].contiguous(), kw[rank * kl:(rank + 1) * kl].contiguous()


def _ref_qk(x, qw, kw, q_full, kv_full, rank, world):
    """float64 reference of this rank's q | k slices (from the full inputs)."""
    from minimax_rocm import reference as R
    shards = [_shard(x, qw, kw, q_full, kv_full, r, world) for r in range(world)]
    out = R.qk_norm_tp([s[0].double() for s in shards], [s[1].double() for s in shards],
                       [s[2].double() for s in shards], EPS)[rank]
    ql, kl = q_full // world, kv_full // world
    return out[:, :ql + kl]


def _bad_elements(out, ref) -> int:
    return int(((out.double() - ref).abs() > ref.abs() * HALF_ULP + 1e-37).sum().item())


# --------------------------------------------------------------------------- #
# checks (every rank runs them in the same order)
# --------------------------------------------------------------------------- #


def check_oracle_and_random_token_counts(ws, rank, world, dev, fails, log):
    import minimax_rocm as mm
    from minimax_rocm import oracle
    from minimax_rocm.ops import _common
    from minimax_rocm.ops.norm import norm_problem
    name = ws.group_name
    probe = torch.empty(4, 3584 + 512, dtype=torch.bfloat16, device=dev)
    fails.expect(oracle.decide(norm_problem("allreduce_rms_qk", probe, name)).chosen.backend == "hip",
                 "oracle does not pick hip with an open workspace")
    gen = torch.Generator().manual_seed(1234)   # same token counts on every rank
    widths = [(3072 * world, 512 * world), (768 * world, 128 * world), (1536 * world, 256 * world),
              (32 * world, 8 * world)]   # the narrowest 16-byte rows: 32 q + 8 k per rank
    calls = 0
    for wi, (q_full, kv_full) in enumerate(widths):
        Ts = [t for t in (1, 2, 7, 64, 128, 333, 1024) if t < MAX_T] + [MAX_T] + \
            [int(t) for t in torch.randint(1, MAX_T + 1, (4,), generator=gen)]
        for T in Ts:
            for w_dtype in (torch.float32, torch.bfloat16):
                seed = 100_000 * wi + T * 3 + (w_dtype == torch.float32)
                x, qw, kw = _full_inputs(T, q_full, kv_full, seed, w_dtype, dev)
                qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
                orig = qkv.clone()
                ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
                mm.allreduce_rms_qk(qkv, qws, kws, EPS, name)
                calls += 1
                n = ref.shape[1]
                tag = f"qk widths {q_full}/{kv_full} T={T} w={w_dtype}"
                fails.expect(_common.LAST_BACKEND["allreduce_rms_qk"] == "hip",
                             f"{tag}: ran {_common.LAST_BACKEND['allreduce_rms_qk']}")
                fails.expect(_bad_elements(qkv[:, :n], ref) == 0, f"{tag}: {_bad_elements(qkv[:, :n], ref)} bad")
                fails.expect(torch.equal(qkv[:, n:], orig[:, n:]), f"{tag}: v changed")
    # one tensor, including rows wider than the kernel's register cache
    for D_full in (6144, 12288 * world, 1024 * world):
        for T in (1, 5, 129, min(2500, MAX_T)):
            x, qw, _ = _full_inputs(T, D_full, 0, 7 * T + D_full, torch.bfloat16, dev)
            D = D_full // world
            xs = x[:, rank * D:(rank + 1) * D].contiguous()
            from minimax_rocm import reference as R
            ref = R.rms_norm(x.double(), qw.double(), EPS)[:, rank * D:(rank + 1) * D]
            mm.allreduce_rms(xs, qw[rank * D:(rank + 1) * D].contiguous(), EPS, name)
            calls += 1
            fails.expect(_common.LAST_BACKEND["allreduce_rms"] == "hip", f"one D={D_full}: not hip")
            fails.expect(_bad_elements(xs, ref) == 0, f"one tensor D={D_full} T={T}: {_bad_elements(xs, ref)} bad")
    log(f"random token counts: {calls} calls")
    return calls


def check_edge_values(ws, rank, world, dev, fails, log):
    import minimax_rocm as mm
    q_full, kv_full = 3072 * world, 512 * world
    T = 12
    x, qw, kw = _full_inputs(T, q_full, kv_full, 77, torch.bfloat16, dev)
    xf = x.float()
    ql, kl = q_full // world, kv_full // world
    xf[0] = -0.0                                   # every rank: -0.0 only
    xf[1, :ql] = -0.0                              # rank 0's q slice -0.0, the others real
    xf[2] = 0.0
    xf[3] *= 1e16                                  # huge: squares near 1e34, sums stay finite in fp32
    xf[4] *= 1e-16                                 # tiny: eps dominates
    xf[5] *= 1e-30                                 # squares underflow fp32: eps alone
    xf[6, :q_full] *= 1e12                         # q huge, k ordinary
    xf[7, q_full:] *= 1e-12                        # k tiny
    xf[8, ql:q_full] = -0.0                        # rank 1+ q slices -0.0
    x = xf.to(torch.bfloat16)
    for rep in range(3):                           # several calls: every buffer of the rotation
        qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
        orig = qkv.clone()
        ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
        mm.allreduce_rms_qk(qkv, qws, kws, EPS, ws.group_name)
        n = ql + kl
        out = qkv[:, :n]
        fails.expect(not torch.isnan(out.float()).any(), f"edge values rep {rep}: NaN in output")
        fails.expect(_bad_elements(out, ref) == 0, f"edge values rep {rep}: {_bad_elements(out, ref)} bad")
        fails.expect(torch.equal(qkv[:, n:], orig[:, n:]), "edge values: v changed")
        # -0.0 in, -0.0 out (sign kept: x * positive scale)
        if rank == 0:
            fails.expect(bool((out[1, :ql].view(torch.int16) == -32768).all()), "edge: -0.0 not kept")
    log("edge values: ok" if not fails else f"edge values: {len(fails)} failures so far")


def check_stress(ws, rank, world, dev, fails, log, calls=STRESS_CALLS):
    """Many calls, no host sync in between: changing inputs (each row scaled by
    a random factor, so a sum from another call is far off), changing token
    counts, both variants, bursts of 1-6 calls back to back (PDL launches
    overlapping each other, every fourth burst plain), and random GPU-side
    delays on either rank so the ranks drift against each other by up to a
    call."""
    import minimax_rocm as mm
    q_full, kv_full = 3072 * world, 512 * world
    ql, kl = q_full // world, kv_full // world
    n = ql + kl
    g_cpu = torch.Generator().manual_seed(4321)             # same schedule on every rank
    g_dev = torch.Generator(device=dev).manual_seed(8765)   # same inputs on every rank
    pool = torch.randn(MAX_T, q_full + 2 * kv_full, device=dev, generator=g_dev)
    qw = (torch.rand(q_full, device=dev, generator=g_dev) + 0.5)
    kw = (torch.rand(kv_full, device=dev, generator=g_dev) + 0.5)
    qws = qw[rank * ql:(rank + 1) * ql].contiguous()
    kws = kw[rank * kl:(rank + 1) * kl].contiguous()
    # the full-width column index lists of this rank's q | k | v slices
    cols = torch.cat([torch.arange(rank * ql, (rank + 1) * ql), q_full + torch.arange(rank * kl, (rank + 1) * kl),
                      q_full + kv_full + torch.arange(rank * kl, (rank + 1) * kl)]).to(dev)
    wcat = torch.cat([qws, kws])
    bad = torch.zeros(calls, dtype=torch.int32, device=dev)
    sched_T = torch.randint(1, 161, (calls,), generator=g_cpu)
    big = torch.rand(calls, generator=g_cpu) < 0.05
    sched_T[big] = torch.randint(161, MAX_T + 1, (int(big.sum()),), generator=g_cpu)
    one_tensor = torch.rand(calls, generator=g_cpu) < 0.15
    sleeper = torch.randint(0, 4, (calls,), generator=g_cpu)   # 0: rank 0 sleeps, 1: rank 1, else nobody
    sleep_cycles = torch.randint(1000, 200_000, (calls,), generator=g_cpu)
    burst_len = torch.randint(1, 7, (calls,), generator=g_cpu)
    from minimax_rocm.triton import dependent_launch
    t0 = time.time()
    i = nburst = 0
    while i < calls:
        # a burst: inputs and expectations first, then the calls back to back
        # (no other kernel between them: under PDL each launch overlaps the
        # previous one's tail); every fourth burst is launched plainly
        jobs = []
        for c in range(i, min(calls, i + int(burst_len[nburst]))):
            T = int(sched_T[c])
            start = int(torch.randint(0, MAX_T - T + 1, (), generator=g_cpu))
            scale = torch.rand(T, 1, device=dev, generator=g_dev) * 15.9 + 0.1
            full = (pool[start:start + T] * scale).to(torch.bfloat16)
            mine = full.index_select(1, cols)
            if one_tensor[c]:
                x = mine[:, :ql].contiguous()
                ss = full[:, :q_full].float().pow(2).sum(1, keepdim=True)
                exp = x.float() * torch.rsqrt(ss / q_full + EPS) * qws
                jobs.append((c, x, x, exp, None))
            else:
                x = mine.clone()
                ssq = full[:, :q_full].float().pow(2).sum(1, keepdim=True)
                ssk = full[:, q_full:q_full + kv_full].float().pow(2).sum(1, keepdim=True)
                inv = torch.cat([torch.rsqrt(ssq / q_full + EPS).expand(T, ql), torch.rsqrt(ssk / kv_full + EPS)
                                 .expand(T, kl)], 1)
                jobs.append((c, x, x[:, :n], x[:, :n].float() * inv * wcat, mine[:, n:]))
        if int(sleeper[i]) == rank:
            torch.cuda._sleep(int(sleep_cycles[i]))
        with dependent_launch.forced(nburst % 4 != 3):
            for c, x, _, _, v in jobs:
                if v is None:
                    mm.allreduce_rms(x, qws, EPS, ws.group_name)
                else:
                    mm.allreduce_rms_qk(x, qws, kws, EPS, ws.group_name)
        for c, x, out, exp, v in jobs:
            if v is not None:
                bad[c] += (x[:, n:] != v).sum().to(torch.int32)   # v untouched
            # fp32 expectation vs fp32 kernel, both rounded: within one bf16 ulp
            bad[c] += ((out.float() - exp).abs() > exp.abs() * 2.0 ** -7 * 1.001 + 1e-30).sum().to(torch.int32)
        i += len(jobs)
        nburst += 1
    torch.cuda.synchronize()
    dt = time.time() - t0
    nbad = int((bad > 0).sum())
    first = int((bad > 0).nonzero()[0]) if nbad else -1
    fails.expect(nbad == 0, f"stress: {nbad} of {calls} calls wrong, first call {first} "
                            f"(T={int(sched_T[first]) if nbad else 0})")
    log(f"stress: {calls} calls in {dt:.1f} s, {nbad} wrong")
    return calls


def check_buffers_after_calls(ws, rank, world, dev, fails, log, last_T):
    """After a call of last_T tokens: its buffer holds exactly last_T x world x
    waves real pairs (slots [0, waves) of each token and rank, the same waves
    everywhere, both halves real), every other slot of every buffer is the
    sentinel."""
    from minimax_rocm.parallel import lamport
    torch.cuda.synchronize()
    n = ws.calls()
    b = ws.buffers()  # [buffers, max_tokens, world, slots, 2]
    empty = b == lamport.SENTINEL_I32
    cur = (n - 1) % lamport.NUM_BUFFERS
    written = ~empty[cur, :last_T].all(-1)  # [T, world, slots]: a slot with any real half
    waves = int(written[0, 0].sum())
    fails.expect(waves >= 1, f"buffers: call {n - 1} wrote no slot of token 0, rank 0")
    fails.expect(bool((~empty[cur, :last_T, :, :waves]).all()),
                 f"buffers: call {n - 1}'s slots [0, {waves}) not all written (both halves)")
    fails.expect(bool(empty[cur, :last_T, :, waves:].all()), f"buffers: slots past {waves} waves written")
    fails.expect(bool(empty[cur, last_T:].all()), f"buffers: stale slots past T={last_T} in the current buffer")
    for other in range(lamport.NUM_BUFFERS):
        if other != cur:
            fails.expect(bool(empty[other].all()), f"buffers: buffer {other} not cleared "
                                                   f"({int((~empty[other]).sum())} slots)")
    # the slots hold this call's pairs: real values, no -0.0 halves
    log(f"buffers after {n} calls: {'ok' if not fails else 'see failures'}")


def check_graph(ws, rank, world, dev, fails, log):
    """Calls captured in one CUDA graph (both variants, two token counts),
    replayed with fresh inputs, with eager calls in between."""
    import minimax_rocm as mm
    q_full, kv_full = 3072 * world, 512 * world
    ql, kl = q_full // world, kv_full // world
    n = ql + kl
    Ta, Tb = 37, 128
    static_a = torch.empty(Ta, n + kl, dtype=torch.bfloat16, device=dev)
    static_b = torch.empty(Tb, ql, dtype=torch.bfloat16, device=dev)
    static_c = torch.empty(Tb, n + kl, dtype=torch.bfloat16, device=dev)
    x0, qw, kw = _full_inputs(1, q_full, kv_full, 5, torch.bfloat16, dev)
    _, qws, kws = _shard(x0, qw, kw, q_full, kv_full, rank, world)

    def body():
        mm.allreduce_rms_qk(static_a, qws, kws, EPS, ws.group_name)
        mm.allreduce_rms(static_b, qws, EPS, ws.group_name)
        mm.allreduce_rms_qk(static_c, qws, kws, EPS, ws.group_name)

    def fill(seed):
        xa = _full_inputs(Ta, q_full, kv_full, seed, torch.bfloat16, dev)[0]
        xc = _full_inputs(Tb, q_full, kv_full, seed + 1, torch.bfloat16, dev)[0]
        static_a.copy_(_shard(xa, qw, kw, q_full, kv_full, rank, world)[0])
        static_c.copy_(_shard(xc, qw, kw, q_full, kv_full, rank, world)[0])
        static_b.copy_(_shard(xc, qw, kw, q_full, kv_full, rank, world)[0][:, :ql])
        return xa, xc

    fill(0)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        body()                                  # warm-up on a side stream
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    calls_before = ws.calls()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        body()
    torch.cuda.synchronize()
    fails.expect(ws.calls() == calls_before, "graph: capture ran the kernel")
    from minimax_rocm import reference as R
    for rep in range(12):
        xa, xc = fill(1000 + 7 * rep)
        ref_a = _ref_qk(xa, qw, kw, q_full, kv_full, rank, world)
        ref_c = _ref_qk(xc, qw, kw, q_full, kv_full, rank, world)
        ref_b = R.rms_norm(xc[:, :q_full].double(), qw.double(), EPS)[:, rank * ql:(rank + 1) * ql]
        va, vc = static_a[:, n:].clone(), static_c[:, n:].clone()
        g.replay()
        for name, out, ref in (("a", static_a[:, :n], ref_a), ("b", static_b, ref_b), ("c", static_c[:, :n], ref_c)):
            fails.expect(_bad_elements(out, ref) == 0, f"graph replay {rep} call {name}: {_bad_elements(out, ref)} bad")
        fails.expect(torch.equal(static_a[:, n:], va) and torch.equal(static_c[:, n:], vc), "graph: v changed")
        if rep % 3 == 1:                        # eager calls between replays: 1 or 2 of them
            for j in range(1 + rep % 2):
                T = 3 + 50 * j + rep
                x, _, _ = _full_inputs(T, q_full, kv_full, 5000 + rep * 10 + j, torch.bfloat16, dev)
                qkv = _shard(x, qw, kw, q_full, kv_full, rank, world)[0]
                ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
                mm.allreduce_rms_qk(qkv, qws, kws, EPS, ws.group_name)
                fails.expect(_bad_elements(qkv[:, :n], ref) == 0, f"graph: eager call after replay {rep} wrong")
    torch.cuda.synchronize()
    log(f"graph: 12 replays x 3 calls + eager calls, counter {calls_before} -> {ws.calls()}")
    return Tb  # the last call's T (a replay or eager call: see caller)


def check_errors_and_fallbacks(ws, rank, world, dev, fails, log):
    import minimax_rocm as mm
    from minimax_rocm import reference as R
    from minimax_rocm.ops import _common
    from minimax_rocm.ops._common import OpInputError
    name = ws.group_name
    q_full, kv_full = 64 * world, 16 * world
    # more tokens than the workspace holds: a clear error, nothing launched
    x, qw, kw = _full_inputs(MAX_T + 1, q_full, kv_full, 9, torch.bfloat16, dev)
    qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
    before = qkv.clone()
    n0 = ws.calls()
    try:
        mm.allreduce_rms_qk(qkv, qws, kws, EPS, name)
        fails.expect(False, "too many tokens: no error")
    except OpInputError as e:
        fails.expect("at most" in str(e) and "qkv" in str(e), f"too many tokens: unclear error {e}")
    fails.expect(torch.equal(qkv, before) and ws.calls() == n0, "too many tokens: something ran")
    # fp16: the oracle takes the NCCL path
    x, qw, kw = _full_inputs(9, q_full, kv_full, 10, torch.bfloat16, dev)
    qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
    ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
    h = qkv.half()
    mm.allreduce_rms_qk(h, qws.half(), kws.half(), EPS, name)
    fails.expect(_common.LAST_BACKEND["allreduce_rms_qk"].startswith("triton"), "fp16: not the NCCL path")
    fails.expect(R.rel_error(h[:, :ref.shape[1]], ref) < 3e-3, "fp16 NCCL path wrong")
    # slices not in 16-byte vectors: the kernel declines, the NCCL path runs
    q_full, kv_full = 12 * world, 2 * world     # rows of 16 columns, q slice of 12
    x, qw, kw = _full_inputs(6, q_full, kv_full, 11, torch.bfloat16, dev)
    qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
    ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
    mm.allreduce_rms_qk(qkv, qws, kws, EPS, name)
    fails.expect("hip declined" in _common.LAST_BACKEND["allreduce_rms_qk"],
                 f"odd widths: {_common.LAST_BACKEND['allreduce_rms_qk']}")
    fails.expect(_bad_elements(qkv[:, :ref.shape[1]], ref) == 0, "odd widths: fallback wrong")
    # T = 0: nothing launched, the counter stays in step
    n0 = ws.calls()
    mm.allreduce_rms_qk(torch.empty(0, 16 + 2 * 8, dtype=torch.bfloat16, device=dev),
                        torch.ones(16, device=dev), torch.ones(8, device=dev), EPS, name)
    fails.expect(ws.calls() == n0, "T=0 launched")
    log("errors and fall-throughs: done")


def check_reopen(rank, world, dev, fails, log):
    import minimax_rocm as mm
    from minimax_rocm.parallel import LamportWorkspace, lamport_workspace
    q_full, kv_full = 768 * world, 128 * world
    with LamportWorkspace(max_tokens=64, timeout_s=KERNEL_TIMEOUT_S) as ws2:
        fails.expect(lamport_workspace(ws2.group_name) is ws2, "reopen: not registered")
        for T in (64, 1, 17):
            x, qw, kw = _full_inputs(T, q_full, kv_full, 31 + T, torch.bfloat16, dev)
            qkv, qws, kws = _shard(x, qw, kw, q_full, kv_full, rank, world)
            ref = _ref_qk(x, qw, kw, q_full, kv_full, rank, world)
            mm.allreduce_rms_qk(qkv, qws, kws, EPS, ws2.group_name)
            fails.expect(_bad_elements(qkv[:, :ref.shape[1]], ref) == 0, f"reopened workspace T={T} wrong")
        name = ws2.group_name
    fails.expect(ws2.closed and lamport_workspace(name) is None, "close: still registered or open")
    log("close + reopen: ok")


# --------------------------------------------------------------------------- #
# the two processes
# --------------------------------------------------------------------------- #


def _worker(rank, world, init_method, stress_calls):
    os.environ.update(ENV)
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", init_method=init_method, rank=rank, world_size=world,
                            device_id=dev, timeout=datetime.timedelta(seconds=120))
    t_start = time.time()

    def log(msg):
        if rank == 0:
            print(f"[lamport rank 0 +{time.time() - t_start:5.1f}s] {msg}", flush=True)

    from minimax_rocm.native import ext
    if ext.load() is None:
        raise RuntimeError(f"native extension: {ext.load_error()}")
    from minimax_rocm.parallel import LamportWorkspace
    fails = Failures()
    ws = LamportWorkspace(max_tokens=MAX_T, timeout_s=KERNEL_TIMEOUT_S)
    try:
        check_oracle_and_random_token_counts(ws, rank, world, dev, fails, log)
        check_edge_values(ws, rank, world, dev, fails, log)
        check_stress(ws, rank, world, dev, fails, log, stress_calls)
        check_graph(ws, rank, world, dev, fails, log)
        # the last kernel launch was the last replay's call c (T=128) or an
        # eager call; make the state known with one more call
        x, qw, kw = _full_inputs(77, 64 * world, 16 * world, 3, torch.bfloat16, dev)
        qkv, qws, kws = _shard(x, qw, kw, 64 * world, 16 * world, rank, world)
        import minimax_rocm as mm
        mm.allreduce_rms_qk(qkv, qws, kws, EPS, ws.group_name)
        check_buffers_after_calls(ws, rank, world, dev, fails, log, last_T=77)
        check_errors_and_fallbacks(ws, rank, world, dev, fails, log)
    finally:
        ws.close()
    check_reopen(rank, world, dev, fails, log)
    dist.barrier()
    dist.destroy_process_group()
    if fails:
        raise AssertionError(f"rank {rank}: {len(fails)} failures:\n  " + "\n  ".join(fails[:40]))
    end_spawned_worker()


def test_lamport_allreduce_rms_two_gpus():
    import torch.multiprocessing as mp
    if torch.cuda.device_count() < WORLD:
        pytest.skip(f"TP{WORLD} needs {WORLD} GPUs, found {torch.cuda.device_count()}")
    os.environ.update(ENV)
    os.environ.setdefault("MINIMAX_ROCM_JIT", "1")
    calls = int(os.environ.get("LAMPORT_STRESS_CALLS", STRESS_CALLS))
    mp.spawn(_worker, args=(WORLD, local_init_method(), calls), nprocs=WORLD, join=True)
