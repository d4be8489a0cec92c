"""The text behind `python -m minimax_rocm info` and `explain`."""
from __future__ import annotations

import json
import platform as _platform

import torch

from . import oracle
from .models.config import EXPERT_WEIGHTS, preset


def info() -> str:
    plat = oracle.detect_platform(refresh=True)
    lines = [f"minimax-rocm {__import__('minimax_rocm').__version__}",
             f"platform: vendor={plat.vendor} arch={plat.arch} wave={plat.wave_size} cus={plat.cu_count} "
             f"fp8={plat.fp8_dtype} mx_hw={plat.mx_hw}{' (simulated)' if plat.simulated else ''}",
             f"backends usable: {', '.join(plat.backends)}"]
    try:
        from .native import ext
        err = ext.load_error() if hasattr(ext, "load_error") else None
        lines.append(f"native extension: {'loaded' if plat.native_ext else 'not loaded'}"
                     + (f" ({err})" if err and not plat.native_ext else ""))
    except Exception as e:  # the build package must never break `info`
        lines.append(f"native extension: unavailable ({type(e).__name__}: {e})")
    vers = [f"python {_platform.python_version()}", f"torch {torch.__version__}"]
    if torch.version.hip:
        vers.append(f"hip {torch.version.hip}")
    elif torch.version.cuda:
        vers.append(f"cuda {torch.version.cuda}")
    try:
        import triton
        vers.append(f"triton {triton.__version__}")
    except Exception:
        vers.append("triton absent")
    lines.append("versions: " + ", ".join(vers))
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})")
    lines.append("ops (implemented backends):")
    for op in oracle.OPS:
        lines.append(f"  {op:<18} {', '.join(oracle.implemented(op))}")
    return "\n".join(lines)


def explain_problems(model: str, ep: int, tp: int, max_model_len: int, tokens: int,
                     weights: str | None = None) -> list[oracle.Problem]:
    if model not in EXPERT_WEIGHTS:
        raise ValueError(f"explain: unknown model {model!r}; known: {', '.join(EXPERT_WEIGHTS)}")
    cfg = preset(model)
    for name, v in (("ep", ep), ("tp", tp), ("max_model_len", max_model_len), ("tokens", tokens)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"explain: {name} must be an int >= 1, got {v!r}")
    if ep > cfg.num_experts:
        raise ValueError(f"explain: ep {ep} exceeds {model}'s {cfg.num_experts} experts")
    if weights not in (None, "bf16", "mxfp8"):
        raise ValueError(f"explain: weights must be 'bf16' or 'mxfp8', got {weights!r}")
    wf = weights or EXPERT_WEIGHTS[model]
    # the experts' EP split only: the oracle's MoE rules do not look at the TP slice of I
    moe = cfg.moe_rank_shape(ep=ep)
    common = dict(tokens=tokens, hidden=moe.hidden, num_experts=moe.num_experts,
                  num_local_experts=moe.num_local_experts, top_k=moe.top_k, ep_size=ep, tp_size=tp,
                  max_model_len=max_model_len)
    probs = [oracle.Problem("router_gemm", **common)]
    if cfg.qk_norm == "full":
        probs.append(oracle.Problem("allreduce_rms_qk", **common))
    probs += [oracle.Problem("moe_align", **common),
              oracle.Problem("fused_moe_mxfp8" if wf == "mxfp8" else "fused_moe", weight_format=wf, **common),
              oracle.Problem("topk_reduce", **common)]
    if cfg.activation == "swiglu_oai":
        probs.append(oracle.Problem("swiglu_oai", **common))
    if wf == "mxfp8":
        probs.append(oracle.Problem("mxfp8_quant", **common))
    return probs


def moe_kernel(plat: oracle.Platform, row: dict, model: str, ep: int, tp: int, tokens: int) -> str:
    """The Triton MoE's tiles for an explain row (the per-arch tile table in
    triton/moe_configs.py picks them, not the oracle): "" where none run."""
    if row["op"] not in ("fused_moe", "fused_moe_mxfp8") or row["backend"] != "triton":
        return ""
    try:
        from .triton import fused_moe as bf16, fused_moe_mxfp8 as mx
    except ImportError:          # no Triton here: the table is not importable
        return ""
    s = preset(model).moe_rank_shape(ep=ep, tp=tp)
    size = dict(H=s.hidden, I=s.intermediate, E_glob=s.num_experts, E_loc=s.num_local_experts,
                routes=tokens * s.top_k)
    if row["path"] == "native_mxfp8":
        p = mx.plan_shape(plat.arch, plat.cu_count, **size)
    else:
        p = bf16.plan_shape(plat.arch, plat.cu_count, tokens=tokens, **size)
    t1, t2 = p["tile1"], p["tile2"]
    dot = f" {p['dot']}" if "dot" in p else ""
    blocks = " per-route blocks" if p.get("per_route") else ""
    return (f"BM={p['block_m']} g1 {t1.block_n}x{t1.block_k}/{t1.num_stages}st "
            f"g2 {t2.block_n}x{t2.block_k}/{t2.num_stages}st{dot}{blocks}")


def explain(arch: str | None = None, model: str = "minimax-m2", ep: int = 1, tp: int = 1,
            max_model_len: int = 4096, tokens: int = 216, weights: str | None = None,
            as_json: bool = False) -> str:
    plat = oracle.simulated_platform(arch) if arch else oracle.detect_platform()
    probs = explain_problems(model, ep, tp, max_model_len, tokens, weights)
    rows = oracle.explain_rows(probs, plat, check_impl=True)
    for r in rows:
        r["kernel"] = r["kernel"] or moe_kernel(plat, r, model, ep, tp, tokens)
    if as_json:
        return json.dumps(dict(platform=plat.__dict__, rows=rows), indent=1, default=str)
    head = (f"# {model} on {plat.arch}{' (simulated full install)' if plat.simulated else ''}: "
            f"EP{ep} TP{tp}, {tokens} tokens/step, max_model_len {max_model_len}\n"
            f"# backends on this platform: {', '.join(plat.backends)}")
    if preset(model).qk_norm == "per_head":
        head += "\n# QK norm: per-head (Gemma) RMSNorm, local to each rank: no cross-rank all-reduce"
    table = [("op", "backend", "path", "kernel", "reason", "fallbacks")]
    for r in rows:
        reason = r["reason"] + (f"; {r['kernel_reason']}" if r["kernel_reason"] else "")
        table.append((r["op"], r["backend"] + (" (forced)" if r["forced"] else ""), r["path"] or "-",
                      r["kernel"] or "-", reason, " > ".join(r["fallbacks"]) or "-"))
    n = len(table[0]) - 1
    w = [max(len(t[i]) for t in table) for i in range(n)]
    body = ["  ".join(c.ljust(w[i]) if i < n else c for i, c in enumerate(t)) for t in table]
    return head + "\n" + "\n".join(body)
