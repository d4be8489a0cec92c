"""python -m minimax_rocm info | explain | demo | bench"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from .cli import info
    print(info())
    return 0


def _cmd_explain(args) -> int:
    from .cli import explain
    print(explain(arch=args.arch, model=args.model, ep=args.ep, tp=args.tp, max_model_len=args.max_model_len,
                  tokens=args.tokens, weights=args.weights, as_json=args.json))
    return 0


def _cmd_demo(args) -> int:
    if args.ep > 1 or args.tp > 1:
        try:
            from .models.demo import run_demo
        except ImportError as e:
            print(f"demo --ep/--tp: the multi-process demo (minimax_rocm.models.demo) is not available: {e}",
                  file=sys.stderr)
            return 2
        ok = run_demo(ep=args.ep, tp=args.tp, device=args.device, tokens=args.tokens)
    else:
        from .demo import run
        ok = run(device=args.device, tokens=args.tokens)
    return 0 if ok else 1


def _cmd_bench(args) -> int:
    import torch

    from .bench import harness
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = harness.run(args.op, harness.Context(dev, quick=args.quick))
    env = harness.env_summary()
    print(f"# {env}")
    print(harness.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=env, rows=[r.as_dict() for r in rows]), f, indent=1)
    if args.plot:
        harness.plot(rows, args.plot)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimax_rocm")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("info", help="platform, usable backends, versions").set_defaults(fn=_cmd_info)

    e = sub.add_parser("explain", help="the oracle's backend per op, with reasons and fallbacks")
    e.add_argument("--arch", default=None, help="simulate gfx942 | gfx950 | sm90 | sm100 | cpu (default: this machine)")
    e.add_argument("--model", default="minimax-m2", choices=["minimax-m2", "minimax-m2.5", "minimax-m3"])
    e.add_argument("--ep", type=int, default=1)
    e.add_argument("--tp", type=int, default=1)
    e.add_argument("--max-model-len", type=int, default=4096)
    e.add_argument("--tokens", type=int, default=216, help="tokens per step (decode batch)")
    e.add_argument("--weights", default=None, choices=["bf16", "mxfp8"], help="expert weight format (default: the model's)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=_cmd_explain)

    d = sub.add_parser("demo", help="a MiniMax-shaped step, sharded, checked against the unsharded reference")
    d.add_argument("--ep", type=int, default=1, help="run EP ranks as processes (default: simulated in-process)")
    d.add_argument("--tp", type=int, default=1, help="run TP ranks as processes (default: simulated in-process)")
    d.add_argument("--tokens", type=int, default=64)
    d.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    d.set_defaults(fn=_cmd_demo)

    b = sub.add_parser("bench", help="time ops against baselines under CUDA graphs")
    b.add_argument("--op", action="append", default=None, help="op to bench (repeatable; default all)")
    b.add_argument("--json", default=None, help="write rows as JSON")
    b.add_argument("--plot", default=None, help="write a PNG plot")
    b.add_argument("--quick", action="store_true", help="fewer cases (smoke runs)")
    b.set_defaults(fn=_cmd_bench)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
