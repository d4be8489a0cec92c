"""python -m minimax_rocm info | explain | demo | bench | check"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys


def _archs() -> tuple[str, ...]:
    """The archs `explain --arch` and MINIMAX_ROCM_ARCH can simulate."""
    from .oracle import _ARCHS
    return tuple(_ARCHS)


def _int_at_least(lo: int):
    """argparse type: an int >= lo (argparse names the argument on failure)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    parse.__name__ = f"int >= {lo}"
    return parse


def _arch(text: str) -> str:
    if text not in _archs():
        raise argparse.ArgumentTypeError(f"unknown arch {text!r}; known: {', '.join(_archs())}")
    return text


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if text.startswith("cuda"):
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(text.split(":")[1]) if ":" in text else 0
        if idx >= n:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA/ROCm device(s)")
    return text


def _check_environment(p: argparse.ArgumentParser) -> None:
    """The oracle's environment variables, checked before any command runs
    (a bad value is a usage error, not a traceback from deep inside)."""
    from . import oracle
    arch = os.environ.get("MINIMAX_ROCM_ARCH")
    if arch and arch not in _archs():
        p.error(f"environment MINIMAX_ROCM_ARCH={arch!r}: unknown arch; known: {', '.join(_archs())}")
    for op in oracle.OPS:
        try:
            b = oracle.forced_backend(op)
        except ValueError as e:
            p.error(f"environment: {e}")
        if b is not None and b not in oracle.BACKENDS:
            p.error(f"environment: {op} forced to {b!r}, not one of {', '.join(oracle.BACKENDS)}")


def _cmd_info(args) -> int:
    from .cli import info
    print(info())
    return 0


def _cmd_explain(args) -> int:
    from .cli import explain
    from .models.config import preset
    experts = preset(args.model).num_experts
    if args.ep > experts:
        args.parser.error(f"argument --ep: {args.ep} exceeds {args.model}'s {experts} experts")
    print(explain(arch=args.arch, model=args.model, ep=args.ep, tp=args.tp, max_model_len=args.max_model_len,
                  tokens=args.tokens, weights=args.weights, as_json=args.json))
    return 0


def _cmd_demo(args) -> int:
    from .models.demo import run_demo
    try:
        ok = run_demo(ep=args.ep, tp=args.tp, device=args.device, tokens=args.tokens)
    except ValueError as e:
        # run_demo checks the EP/TP layout against its model before it runs
        # anything: those are usage errors
        if not str(e).startswith("run_demo:"):
            raise
        args.parser.error(f"argument --ep/--tp: {str(e)[len('run_demo:'):].strip()}")
    return 0 if ok else 1


def _cmd_bench(args) -> int:
    import torch

    from .bench import harness
    from .bench import BENCHES, load_all
    load_all()
    unknown = [o for o in args.op or () if o not in BENCHES]
    if unknown:
        args.parser.error(f"argument --op: no benchmark for {', '.join(unknown)}; have {', '.join(BENCHES)}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        d = os.path.dirname(os.path.abspath(path)) if path else None
        if d and not os.path.isdir(d):
            args.parser.error(f"argument {flag}: directory {d!r} does not exist")
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


def _cmd_check(args) -> int:
    from .gpu_check import run
    return run(args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimax_rocm")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("info", help="platform, usable backends, versions").set_defaults(fn=_cmd_info)

    e = sub.add_parser("explain", help="the oracle's backend per op, with reasons and fallbacks")
    e.add_argument("--arch", default=None, type=_arch,
                   help="simulate gfx942 | gfx950 | sm90 | sm100 | cpu (default: this machine)")
    e.add_argument("--model", default="minimax-m2", choices=["minimax-m2", "minimax-m2.5", "minimax-m3"])
    e.add_argument("--ep", type=_int_at_least(1), default=1)
    e.add_argument("--tp", type=_int_at_least(1), default=1)
    e.add_argument("--max-model-len", type=_int_at_least(1), default=4096)
    e.add_argument("--tokens", type=_int_at_least(1), default=216, help="tokens per step (decode batch)")
    e.add_argument("--weights", default=None, choices=["bf16", "mxfp8"], help="expert weight format (default: the model's)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=_cmd_explain, parser=e)

    d = sub.add_parser("demo", help="a MiniMax-shaped step, sharded, checked against the unsharded reference")
    d.add_argument("--ep", type=_int_at_least(1), default=1,
                   help="run EP ranks as processes (default: simulated in-process)")
    d.add_argument("--tp", type=_int_at_least(1), default=1,
                   help="run TP ranks as processes (default: simulated in-process)")
    d.add_argument("--tokens", type=_int_at_least(1), default=64)
    d.add_argument("--device", default=None, type=_device, help="cpu | cuda[:N] (default: cuda if present)")
    d.set_defaults(fn=_cmd_demo, parser=d)

    b = sub.add_parser("bench", help="time ops against baselines under CUDA graphs")
    b.add_argument("--op", action="append", default=None, help="op to bench (repeatable; default all)")
    b.add_argument("--json", default=None, help="write rows as JSON")
    b.add_argument("--plot", default=None, help="write a PNG plot")
    b.add_argument("--quick", action="store_true", help="fewer cases (smoke runs)")
    b.set_defaults(fn=_cmd_bench, parser=b)

    from . import gpu_check
    c = sub.add_parser("check", help="a GPU machine's checks: build, tests, properties, sanitizer, bench, profiles",
                       description=gpu_check.__doc__.split("\n\n")[0],
                       epilog=gpu_check.__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu_check.add_arguments(c)
    c.set_defaults(fn=_cmd_check, parser=c)

    args = p.parse_args(argv)
    _check_environment(p)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
