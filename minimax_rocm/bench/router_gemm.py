"""bench --op router_gemm: the native and Triton kernels vs cast + F.linear
(cuBLAS / hipBLASLt), M = 1..64, MiniMax-M2 (3072 x 256) and M3 (6144 x 128)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import oracle
from ..models.config import preset
from ..ops.router_gemm import _hip as native_router_gemm
from ..ops.router_gemm import router_gemm as router_gemm_op
from ..triton import dependent_launch
from ..triton import router_gemm as tri
from .harness import Context, Row, register_bench, time_us, time_us_behind_plain_kernel

MS = (1, 2, 4, 8, 16, 32, 64)
# (name, H, E) of each model's router
SHAPES = tuple((name, preset(model).hidden_size, preset(model).num_experts)
               for name, model in (("M2", "minimax-m2"), ("M3", "minimax-m3")))


@register_bench("router_gemm")
def bench(ctx: Context) -> list[Row]:
    rows = []
    shapes = SHAPES[:1] if ctx.quick else SHAPES
    ms = (1, 32) if ctx.quick else MS
    native = ctx.gpu and oracle.detect_platform().native_ext
    for name, H, E in shapes:
        w = torch.randn(E, H, device=ctx.device)
        for M in ms:
            x = torch.randn(M, H, device=ctx.device).to(torch.bfloat16)
            case = f"{name} M={M} H={H} E={E}"
            nbytes = E * H * 4 + M * H * 2 + M * E * 4
            rows.append(Row("router_gemm", case, "cast + F.linear", time_us(lambda: F.linear(x.float(), w)),
                            nbytes, 2 * M * H * E, baseline=True))
            if native and M <= 32:
                pdl = dependent_launch.enabled(x.device, triton_kernel=False)
                rows.append(Row("router_gemm", case, "ours (hip, PDL)" if pdl else "ours (hip)",
                                time_us(lambda: native_router_gemm(x, w, None)), nbytes, 2 * M * H * E))
                if pdl:  # what PDL is worth: each call launched after the previous one drained
                    with dependent_launch.forced(False):
                        rows.append(Row("router_gemm", case, "ours (hip) without PDL",
                                        time_us(lambda: native_router_gemm(x, w, None)), nbytes, 2 * M * H * E))
                    # Back to back, each call's W loads overlap the previous
                    # call (they go out before its PDL wait). After a kernel
                    # that does not let its dependents launch early (a plain
                    # torch op) nothing overlaps: the number to expect there.
                    us, note = time_us_behind_plain_kernel(lambda: native_router_gemm(x, w, None), ctx.device)
                    rows.append(Row("router_gemm", case, "ours (hip, PDL) behind a plain kernel", us,
                                    nbytes, 2 * M * H * E, note=note))
            if ctx.gpu:
                rows.append(Row("router_gemm", case, "ours (triton)", time_us(lambda: tri.router_gemm(x, w)),
                                nbytes, 2 * M * H * E))
            rows.append(Row("router_gemm", case, "op (oracle)", time_us(lambda: router_gemm_op(x, w)),
                            nbytes, 2 * M * H * E))
    return rows


def _native_ops():
    """The native extension's ops, loaded (or JIT-built); an error where it is not available."""
    from ..native import ext
    if ext.load() is None:
        raise RuntimeError(f"native extension not loaded: {ext.load_error()}")
    return ext.ops()


def sweep_splitk(ms=(1, 2, 4, 5, 6, 8, 9, 12, 16, 24, 32), splits=(0, 8, 16), tc_slices=(0, 6, 8, 16),
                 tc_steps=(0, 2, 3), pdl: bool = True, behind_plain: bool = False) -> None:
    """Print each native kernel's time per M: the one-pass kernel, the
    split-K kernel (0 = its automatic slice count) and, on NVIDIA sm90+, the
    tensor-core cluster kernel (C = its cluster size / its MMA steps per K
    unit, 0 = automatic), after a
    one-element add_ (a launch and nothing else), all launched with PDL
    where `pdl` and the GPU has it: the measurement behind the oracle's
    router kernel thresholds (router_tc_*, router_splitk_min_mh).
    `behind_plain`: each time is that of [a one-element add_, the kernel]
    less the add_ alone, the kernel after one that does not let it launch
    early (nothing overlaps its start).
        python -m minimax_rocm.bench.router_gemm sweep_splitk
    """
    from ..ops.router_gemm import splitk_workspace, tc_available
    ops = _native_ops()
    dev = torch.device("cuda", torch.cuda.current_device())
    tc = tc_available(dev)
    pdl = pdl and dependent_launch.enabled(dev, triton_kernel=False)
    null = torch.zeros(1, device="cuda")
    print(f"one-element add_ (a launch and nothing else): {time_us(lambda: null.add_(1.0)):.2f} us")

    def time_us_of(fn):
        return time_us_behind_plain_kernel(fn, dev)[0] if behind_plain else time_us(fn)
    for name, H, E in SHAPES:
        w = torch.randn(E, H, device="cuda")
        for M in ms:
            x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
            out = torch.empty(M, E, device="cuda")
            part, cnt = splitk_workspace(x.device, E)
            rows = oracle.router_onepass_rows(oracle.Problem("router_gemm", tokens=M, hidden=H),
                                              oracle.detect_platform())
            cells = [f"one-pass r{rows} {time_us_of(lambda: ops.router_gemm(x, w, out, rows, pdl)):.2f}"]
            for s in splits:
                us = time_us_of(lambda s=s: ops.router_gemm_splitk(x, w, out, part, cnt, s, pdl))
                cells.append(f"S={s or 'auto'} {us:.2f}")
            for c in tc_slices if tc else ():
                for st in tc_steps:
                    us = time_us_of(lambda c=c, st=st: ops.router_gemm_tc(x, w, out, c, pdl, st))
                    cells.append(f"tc C={c or 'auto'}/{st or 'auto'} {us:.2f}")
            print(f"{name} M={M}: " + "  ".join(cells), flush=True)


def sweep_op(ms=range(1, 33)) -> None:
    """Print the op's time (the oracle's native dispatch, PDL where the GPU
    has it, CUDA graphs) against cast + F.linear for every M, both gates:
    the goal is per M, and the bench's M list skips the M where a kernel or
    an x tile changes (5, 9, 17, 25).
        python -m minimax_rocm.bench.router_gemm sweep_op
    """
    _native_ops()
    for name, H, E in SHAPES:
        w = torch.randn(E, H, device="cuda")
        worst = (0.0, 0)
        for M in ms:
            x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
            base = time_us(lambda: F.linear(x.float(), w))
            ours = time_us(lambda: native_router_gemm(x, w, None))
            worst = max(worst, (ours, M))
            print(f"{name} M={M}: op {ours:.2f} us, cast + F.linear {base:.2f} us, {base / ours:.2f}x", flush=True)
        print(f"{name}: slowest M={worst[1]} at {worst[0]:.2f} us", flush=True)


if __name__ == "__main__":   # python -m minimax_rocm.bench.router_gemm sweep_splitk | sweep_op
    import argparse
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.router_gemm")
    ap.add_argument("sweep", choices=("sweep_splitk", "sweep_op"))
    ap.add_argument("--behind-plain", action="store_true", help="sweep_splitk: each kernel after a plain kernel")
    ap.add_argument("--no-pdl", action="store_true", help="sweep_splitk: launch without PDL")
    a = ap.parse_args()
    if a.sweep == "sweep_op":
        sweep_op()
    else:
        sweep_splitk(pdl=not a.no_pdl, behind_plain=a.behind_plain)
