"""Replay recorded vLLM adapter calls against the float64 reference.

A CPU engine run with MINIMAX_ROCM_VLLM_RECORD=PATH writes what each seam
was handed (shapes, dtypes, strides, storage offsets, flags, the expert map).
This rebuilds every recorded call with fresh random values in exactly that
geometry, on any device, runs it through the same adapter code (`adapters`)
and compares with `minimax_rocm.reference` in float64. No vLLM needed:

    python -m minimax_rocm.integrations.vllm.replay RECORD.jsonl [...] [--device cuda] [--graph]

Calls recorded at TP > 1 replay at TP1 here (the QK norm's all-reduce needs
the group); their shapes, dtypes and strides are still the engine's.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import torch

from ... import oracle, reference
from ...ops import Mxfp8Experts
from ...ops._common import LAST_BACKEND
from . import adapters

# Error bounds, as max |out - ref| / max |ref|: bf16 outputs carry one bf16
# rounding (2^-8) plus the kernels' bf16 intermediates; fp32 logits carry
# fp32 accumulation only.
TOLERANCE = {"gate": 1e-5, "qk_norm": 1e-2, "moe_bf16": 1.5e-2, "moe_mxfp8": 1.5e-2}


@dataclass
class Outcome:
    seam: str
    shapes: str
    backend: str
    error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance

    def line(self) -> str:
        return (f"{'PASS' if self.ok else 'FAIL'} {self.seam:9s} {self.shapes:40s} {self.backend:24s} "
                f"err {self.error:.2e} (tol {self.tolerance:.1e})")


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def build(desc: dict, device: torch.device, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """A tensor with the recorded shape, dtype, strides and storage offset."""
    dtype = getattr(torch, desc["dtype"])
    shape, stride, offset = desc["shape"], desc["stride"], desc["offset"]
    extent = offset + 1 + sum((n - 1) * s for n, s in zip(shape, stride) if n > 0)
    base = torch.randn(extent, generator=gen, dtype=torch.float64) * scale
    return base.to(dtype).to(device).as_strided(shape, stride, offset)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    denom = ref.abs().max().item() or 1.0
    return float((out - ref).abs().max().item() / denom) if out.numel() else 0.0


def _routing(entry: dict, tokens: int, num_local: int, device, gen):
    """(expert_map as recorded, topk_ids, topk_weights, global expert count):
    fresh routes of distinct experts per token in the recorded dtypes."""
    a, emap = entry["args"], entry["values"].get("expert_map")
    expert_map = None if emap is None else torch.tensor(emap, dtype=getattr(torch, a["expert_map"]["dtype"]),
                                                        device=device)
    num_global = num_local if expert_map is None else expert_map.shape[0]
    ids, w = _routes(tokens, a["topk_ids"]["shape"][1], num_global, a, device, gen)
    return expert_map, ids, w, num_global


def _routes(T: int, k: int, num_global: int, desc: dict, device, gen) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.stack([torch.randperm(num_global, generator=gen)[:k] for _ in range(T)]) if T else \
        torch.zeros(0, k, dtype=torch.int64)
    ids = ids.to(getattr(torch, desc["topk_ids"]["dtype"]))
    w = torch.softmax(torch.randn(T, k, generator=gen), dim=-1).to(getattr(torch, desc["topk_weights"]["dtype"]))
    return ids.to(device), w.to(device)


def in_graph(fn):
    """Run `fn` captured in a CUDA graph and replayed (what vLLM's graph
    capture does with the adapters); returns its output from the replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # warm-up outside capture (JIT, lazy allocations)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    g.replay()
    torch.cuda.synchronize()
    return out


def replay_one(entry: dict, device: torch.device, gen: torch.Generator, graph: bool = False) -> Outcome:
    run = in_graph if graph else (lambda fn: fn())
    a, seam = entry["args"], entry["seam"]
    if seam == "gate":
        x, w = build(a["x"], device, gen), build(a["weight"], device, gen, a["x"]["shape"][1] ** -0.5)
        out = run(lambda: torch.ops.minimax_rocm.vllm_gate(x, w))
        ref = reference.router_gemm(x.double(), w.double())
        shapes = f"x{tuple(x.shape)} w{tuple(w.shape)}"
    elif seam == "qk_norm":
        qkv = build(a["qkv"], device, gen)
        qw, kw = build(a["q_weight"], device, gen, 0.1) + 1, build(a["k_weight"], device, gen, 0.1) + 1
        q, kv = qw.shape[0], kw.shape[0]
        src = qkv.double().clone()
        fresh = qkv.clone()

        def norm():  # in place: each run starts from the same input
            qkv.copy_(fresh)
            torch.ops.minimax_rocm.vllm_qk_norm(qkv, qw, kw, a["eps"], "", "")
        run(norm)
        ss = src[:, :q].pow(2).sum(-1), src[:, q:q + kv].pow(2).sum(-1)
        ref = torch.cat([reference.allreduce_rms_local(src[:, :q], qw.double(), a["eps"], ss[0], q),
                         reference.allreduce_rms_local(src[:, q:q + kv], kw.double(), a["eps"], ss[1], kv),
                         src[:, q + kv:]], dim=1)
        out = qkv
        shapes = f"qkv{tuple(qkv.shape)} q{q} kv{kv}"
    elif seam == "moe_bf16":
        x = build(a["x"], device, gen)
        H = x.shape[1]
        w13 = build(a["w13"], device, gen, H ** -0.5)
        w2 = build(a["w2"], device, gen, a["w2"]["shape"][2] ** -0.5)
        expert_map, ids, tw, num_global = _routing(entry, x.shape[0], w13.shape[0], device, gen)
        out = run(lambda: adapters.moe(x, w13, w2, tw, ids, expert_map, a["activation"], a["alpha"], a["limit"]))
        kind, layout = oracle.SERVING_ACTIVATIONS[a["activation"]]
        ref = reference.fused_moe(x.double(), w13.double(), w2.double(), tw.double(), ids, expert_map, kind, layout,
                                  a["alpha"], a["limit"])
        shapes = f"x{tuple(x.shape)} E{w13.shape[0]}/{num_global} k{ids.shape[1]}"
    elif seam == "moe_mxfp8":
        x = build(a["x"], device, gen)
        fp8 = getattr(torch, a["w13_q"]["dtype"])
        E, two_i, H = a["w13_q"]["shape"]
        w13 = torch.randn(E, two_i, H, generator=gen, dtype=torch.float64) * H ** -0.5 * 3
        w2 = torch.randn(E, H, two_i // 2, generator=gen, dtype=torch.float64) * (two_i // 2) ** -0.5
        q13, s13 = (t.to(device) for t in reference.mxfp8_quant(w13, fp8))
        q2, s2 = (t.to(device) for t in reference.mxfp8_quant(w2, fp8))
        expert_map, ids, tw, num_global = _routing(entry, x.shape[0], E, device, gen)
        copies = (reference.mxfp8_dequant(q13, s13, torch.bfloat16), reference.mxfp8_dequant(q2, s2, torch.bfloat16)) \
            if a["bf16_copy"] else (None, None)
        experts = Mxfp8Experts(q13, s13, q2, s2, *copies)
        out = run(lambda: adapters.moe_mxfp8(x, experts, tw, ids, expert_map, a["activation"], a["alpha"],
                                             a["limit"], a["max_model_len"]))
        kind, layout = oracle.SERVING_ACTIVATIONS[a["activation"]]
        path = LAST_BACKEND.get("fused_moe_mxfp8", "")
        if "bf16_copy" in path:  # the BF16 copy is what ran: its weights are the dequantised ones
            ref = reference.fused_moe(x.double(), copies[0].double(), copies[1].double(), tw.double(), ids,
                                      expert_map, kind, layout, a["alpha"], a["limit"])
        else:
            ref = reference.fused_moe_mxfp8(x.double(), q13, s13, q2, s2, tw.double(), ids, expert_map, kind, layout,
                                            a["alpha"], a["limit"], quantize_activations="native" in path)
        shapes = f"x{tuple(x.shape)} E{E}/{num_global} k{ids.shape[1]} {'+bf16' if a['bf16_copy'] else ''}"
    else:
        raise ValueError(f"unknown seam {seam!r} in the record")
    backend = LAST_BACKEND.get(entry["op"], "?") + (" graph" if graph else "")
    return Outcome(seam, shapes, backend, rel_error(out, ref), TOLERANCE[seam])


def replay(path: str, device: str = "cpu", seed: int = 0, graph: bool = False) -> list[Outcome]:
    gen = torch.Generator().manual_seed(seed)
    return [replay_one(e, torch.device(device), gen, graph) for e in load(path)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.integrations.vllm.replay")
    ap.add_argument("records", nargs="+", metavar="RECORD")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--graph", action="store_true", help="also each call captured in a CUDA graph and replayed")
    args = ap.parse_args(argv)
    outcomes = []
    for record in args.records:
        outcomes += replay(record, args.device, args.seed)
        if args.graph:
            outcomes += replay(record, args.device, args.seed, graph=True)
    for o in outcomes:
        print(o.line())
    bad = sum(not o.ok for o in outcomes)
    print(f"replay: {len(outcomes) - bad} passed, {bad} failed ({args.device})")
    return 1 if bad or not outcomes else 0


if __name__ == "__main__":
    sys.exit(main())
