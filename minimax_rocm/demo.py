"""`python -m minimax_rocm demo`: one MiniMax-shaped step on a reduced config,
every EP and TP rank simulated in this process, checked against the unsharded
float64 reference. Prints, per op, the backend the oracle ran, the error and the
time. On a GPU everything runs on the GPU.

`demo --ep N --tp N` runs the ranks as processes instead (models/demo.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import ops, reference
from .parallel import expert_map
from .ops._common import LAST_BACKEND


@dataclass(frozen=True)
class DemoConfig:
    """MiniMax-M3-like in structure, small enough for a CPU: hidden 256, 16
    experts top-4 over EP4 (4 local each), SwiGLU-OAI experts (split layout);
    M2-like QK norm (q 8 x 32, k 2 x 32) over TP2."""
    hidden: int = 256
    experts: int = 16
    top_k: int = 4
    intermediate: int = 128
    ep: int = 4
    tp: int = 2
    q_width: int = 256
    kv_width: int = 64
    routed_scaling_factor: float = 2.0
    eps: float = 1e-6


# Tolerances against float64: bf16 storage of inputs is shared with the
# reference, so what remains is bf16 rounding of intermediates and outputs
# (2^-8 relative per element), plus fp8's 2^-4 for MXFP8.
TOL = {"router_gemm": 1e-5, "fused_moe (EP combine)": 2e-2, "allreduce_rms_qk": 1e-2, "topk_reduce": 1e-2,
       "swiglu_oai": 1e-2, "mxfp8_quant+dequant": 7e-2}


def _timed(fn: Callable[[], object], dev: torch.device) -> tuple[object, float]:
    out = fn()  # warm-up (Triton compiles, extension loads)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 5
    for _ in range(n):
        out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return out, (time.perf_counter() - t0) * 1e6 / n


def run(device: Optional[str] = None, tokens: int = 64, cfg: DemoConfig = DemoConfig(), verbose: bool = True
        ) -> bool:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator(device="cpu").manual_seed(int(time.time()))
    rnd = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale)  # noqa: E731
    H, E, I, k = cfg.hidden, cfg.experts, cfg.intermediate, cfg.top_k
    bf = torch.bfloat16

    x = rnd(tokens, H).to(bf)
    gate_w = rnd(E, H, scale=H ** -0.5)
    bias = rnd(E, scale=0.1)
    w13 = rnd(E, 2 * I, H, scale=H ** -0.5).to(bf)
    w2 = rnd(E, H, I, scale=I ** -0.5).to(bf)
    results = []

    def record(name, out, ref, us):
        err = reference.rel_error(out, ref)
        results.append((name, LAST_BACKEND.get(name.split(" ")[0].split("+")[0], "torch"), err, us,
                        err <= TOL[name]))

    xd, gd = x.to(dev), gate_w.to(dev)
    # 1. router: fp32 logits from bf16 activations
    logits, us = _timed(lambda: ops.router_gemm(xd, gd), dev)
    record("router_gemm", logits, reference.router_gemm(x.double(), gate_w.double()), us)

    # 2. MiniMax routing (sigmoid + correction bias, renormalised, scaled), on the
    #    reference logits so that the kernels below see the same routes.
    weights, ids = reference.minimax_route(reference.router_gemm(x.double(), gate_w.double()), bias.double(), k,
                                           routed_scaling_factor=cfg.routed_scaling_factor)
    weights = weights.float()

    # 3. sparse-local MoE on every simulated EP rank, then the combine (a sum).
    def moe_all_ranks():
        total = torch.zeros(tokens, H, dtype=torch.float32, device=dev)
        for r in range(cfg.ep):
            emap = expert_map(E, cfg.ep, r, device=dev)
            lo = r * (E // cfg.ep)
            part = ops.fused_moe(xd, w13[lo:lo + E // cfg.ep].to(dev), w2[lo:lo + E // cfg.ep].to(dev),
                                 weights.to(dev), ids.to(dev), emap, activation="swiglu_oai", layout="split")
            total += part.float()
        return total
    moe, us = _timed(moe_all_ranks, dev)
    ref_moe = reference.fused_moe(x.double(), w13.double(), w2.double(), weights.double(), ids, None,
                                  "swiglu_oai", "split")
    record("fused_moe (EP combine)", moe, ref_moe, us)

    # 4. topk_reduce on [T, k, H] route rows
    rows = rnd(tokens, k, H).to(bf)
    red, us = _timed(lambda: ops.topk_reduce(rows.to(dev), weights.to(dev)), dev)
    record("topk_reduce", red, reference.topk_reduce(rows.double(), weights.double()), us)

    # 5. SwiGLU-OAI on a GEMM1-shaped output (values past the clamp limit included)
    h1 = rnd(tokens, 2 * I, scale=4.0).to(bf)
    act, us = _timed(lambda: ops.swiglu_oai(h1.to(dev)), dev)
    record("swiglu_oai", act, reference.swiglu_oai(h1.double()), us)

    # 6. QK norm: the op over the full width equals the reference over TP shards.
    qkv = rnd(tokens, cfg.q_width + 2 * cfg.kv_width).to(bf)
    qw, kw = (1 + 0.1 * rnd(cfg.q_width)), (1 + 0.1 * rnd(cfg.kv_width))
    qs, ks = cfg.q_width // cfg.tp, cfg.kv_width // cfg.tp
    shards = [torch.cat([qkv[:, r * qs:(r + 1) * qs], qkv[:, cfg.q_width + r * ks:cfg.q_width + (r + 1) * ks],
                         qkv[:, cfg.q_width + cfg.kv_width + r * ks:cfg.q_width + cfg.kv_width + (r + 1) * ks]], 1)
              for r in range(cfg.tp)]
    ref_sh = reference.qk_norm_tp([s.double() for s in shards], [qw[r * qs:(r + 1) * qs].double() for r in range(cfg.tp)],
                                  [kw[r * ks:(r + 1) * ks].double() for r in range(cfg.tp)], cfg.eps)
    ref_q = torch.cat([s[:, :qs] for s in ref_sh], 1)
    ref_k = torch.cat([s[:, qs:qs + ks] for s in ref_sh], 1)
    qkvd, qwd, kwd = qkv.to(dev), qw.to(dev), kw.to(dev)
    out, us = _timed(lambda: ops.allreduce_rms_qk(qkvd.clone(), qwd, kwd, cfg.eps), dev)
    record("allreduce_rms_qk", out[:, :cfg.q_width + cfg.kv_width], torch.cat([ref_q, ref_k], 1), us)

    # 7. MXFP8 round trip of the expert weights (the platform's fp8 flavour)
    wq = w13[0].float().to(dev)
    (q, s), us = _timed(lambda: ops.mxfp8_quant(wq), dev)
    record("mxfp8_quant+dequant", ops.mxfp8_dequant(q, s, torch.float32), w13[0].double(), us)

    ok = all(r[4] for r in results)
    if verbose:
        print(f"minimax-rocm demo on {dev}: {tokens} tokens, hidden {H}, {E} experts top-{k} over EP{cfg.ep}, "
              f"QK norm over TP{cfg.tp}")
        print(f"{'op':<24}{'backend':<28}{'rel err':>10}{'tol':>9}{'us':>11}  ok")
        for name, backend, err, us, good in results:
            print(f"{name:<24}{backend:<28}{err:>10.2e}{TOL[name]:>9.0e}{us:>11.1f}  {'yes' if good else 'NO'}")
        print("demo: PASS" if ok else "demo: FAIL")
    return ok
