"""The text behind `python -m minimax_rocm info` and `explain`."""
from __future__ import annotations

import json
import platform as _platform

import torch

from . import oracle

# Shapes the oracle needs per model (full sizes, as in models/config.py's presets).
MODEL_SHAPES = {
    "minimax-m2": dict(hidden=3072, experts=256, top_k=8, intermediate=1536, q=6144, kv=1024,
                       qk_norm="full-width", weights="bf16"),
    "minimax-m2.5": dict(hidden=3072, experts=256, top_k=8, intermediate=1536, q=6144, kv=1024,
                         qk_norm="full-width", weights="bf16"),
    "minimax-m3": dict(hidden=6144, experts=128, top_k=4, intermediate=3072, q=8192, kv=512,
                       qk_norm="per-head", weights="mxfp8"),
}


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
    if model not in MODEL_SHAPES:
        raise ValueError(f"explain: unknown model {model!r}; known: {', '.join(MODEL_SHAPES)}")
    s = MODEL_SHAPES[model]
    for name, v in (("ep", ep), ("tp", tp), ("max_model_len", max_model_len), ("tokens", tokens)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"explain: {name} must be an int >= 1, got {v!r}")
    if ep > s["experts"]:
        raise ValueError(f"explain: ep {ep} exceeds {model}'s {s['experts']} experts")
    if weights not in (None, "bf16", "mxfp8"):
        raise ValueError(f"explain: weights must be 'bf16' or 'mxfp8', got {weights!r}")
    wf = weights or s["weights"]
    e_loc = -(-s["experts"] // ep)
    common = dict(tokens=tokens, hidden=s["hidden"], num_experts=s["experts"], num_local_experts=e_loc,
                  top_k=s["top_k"], ep_size=ep, tp_size=tp, max_model_len=max_model_len)
    probs = [oracle.Problem("router_gemm", **common)]
    if s["qk_norm"] == "full-width":
        probs.append(oracle.Problem("allreduce_rms_qk", **common))
    probs += [oracle.Problem("moe_align", **common),
              oracle.Problem("fused_moe_mxfp8" if wf == "mxfp8" else "fused_moe", weight_format=wf, **common),
              oracle.Problem("topk_reduce", **common)]
    if model == "minimax-m3":
        probs.append(oracle.Problem("swiglu_oai", **common))
    if wf == "mxfp8":
        probs.append(oracle.Problem("mxfp8_quant", **common))
    return probs


def explain(arch: str | None = None, model: str = "minimax-m2", ep: int = 1, tp: int = 1,
            max_model_len: int = 4096, tokens: int = 216, weights: str | None = None,
            as_json: bool = False) -> str:
    plat = oracle.simulated_platform(arch) if arch else oracle.detect_platform()
    probs = explain_problems(model, ep, tp, max_model_len, tokens, weights)
    rows = oracle.explain_rows(probs, plat, check_impl=True)
    if as_json:
        return json.dumps(dict(platform=plat.__dict__, rows=rows), indent=1, default=str)
    head = (f"# {model} on {plat.arch}{' (simulated full install)' if plat.simulated else ''}: "
            f"EP{ep} TP{tp}, {tokens} tokens/step, max_model_len {max_model_len}\n"
            f"# backends on this platform: {', '.join(plat.backends)}")
    if MODEL_SHAPES[model]["qk_norm"] == "per-head":
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
