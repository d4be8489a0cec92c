"""The current-figures table at the top of BENCHMARKS.md, generated from the
committed benchmark results in benchmarks/results/*.json.

A results file is what `python -m minimax_rocm bench --json F` writes:

    {"env": harness.env_summary(), "rows": [harness.Row.as_dict(), ...]}

optionally with two more top-level keys:

    "date":   "YYYY-MM-DD", when it was measured (else env["date"], else the
              first YYYY-MM-DD in the file name, else "-")
    "source": where the numbers come from (a bench run, or transcribed from
              the history)

and env may say "gpus": N for a run over N GPUs of one machine. Name new
files `<op>_<YYYY-MM-DD>.json`, e.g.

    python -m minimax_rocm bench --op router_gemm --json benchmarks/results/router_gemm_$(date +%F).json

For every op of the oracle's rule table, the newest file (by date, then by
name) that holds rows of that op gives its figures: one table line per case,
the op's headline row (HEADLINE) against the case's baseline row. An op that
no file measures is listed as "not measured".

    python -m minimax_rocm.bench.figures            rewrite the table in BENCHMARKS.md
    python -m minimax_rocm.bench.figures --check    exit 1 where the table is out of date
    python -m minimax_rocm.bench.figures --print    print the table only

Run from the repository root (or pass --root).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
RESULTS_DIR = Path("benchmarks") / "results"
BENCHMARKS_MD = Path("BENCHMARKS.md")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# The row of a case that is the op's figure (the others are its variants and
# the baselines): the first row, in file order, that the op's test accepts.
# Ops not listed take their first non-baseline row.
HEADLINE: dict[str, Callable[[str], bool]] = {
    # the custom op with the oracle's dispatch, not a kernel called directly
    "router_gemm": lambda impl: impl == "op (oracle)",
    # the fused kernel as the op launches it (not "without PDL", not "behind a plain kernel")
    "allreduce_rms_qk": lambda impl: impl.startswith("ours (") and "behind" not in impl,
    "allreduce_rms": lambda impl: impl.startswith("ours (") and "behind" not in impl,
    # the per-arch table's configuration comes first; the other activation placement second
    "fused_moe": lambda impl: impl.startswith("ours sparse_local"),
    # the table's configuration, not a "native-alt (...)" variant
    "fused_moe_mxfp8": lambda impl: impl == "native" or impl.startswith("native ["),
    # the native kernel against the Triton path (the bench's baseline)
    "moe_align": lambda impl: impl == "ours (hip)",
    # the oracle's order: the native kernel where it is built, else Triton
    "mxfp8_quant": lambda impl: impl in ("ours (hip)", "ours (triton)"),
    "topk_reduce": lambda impl: impl.startswith("ours ("),
    # the BF16 MoE at chunked-prefill sizes (bench --op moe_prefill)
    "moe_prefill": lambda impl: impl.startswith("ours BF16"),
}

# The row a case's figure is compared with, where not the row the bench marks
# as its baseline: upstream vLLM's fused MoE where the run timed it (the
# bench's own baseline otherwise).
BASELINE: dict[str, Callable[[str], bool]] = {
    "fused_moe": lambda impl: impl.startswith("vLLM"),
    "moe_prefill": lambda impl: impl.startswith("vLLM"),
}

# Benches of an op at other sizes, listed as their own lines of the table.
MORE_BENCHES = ("moe_prefill",)


@dataclass
class Result:
    """One results file."""
    path: str                   # as shown in the table's sources (relative to the root)
    env: dict
    rows: list[dict]
    date: str = "-"
    source: str = ""
    ops: tuple = field(default=())

    @property
    def device(self) -> str:
        dev = str(self.env.get("device") or "-")
        gpus = self.env.get("gpus")
        return f"{gpus} x {dev}" if isinstance(gpus, int) and gpus > 1 else dev


def _date_of(data: dict, name: str) -> str:
    for d in (data.get("date"), (data.get("env") or {}).get("date")):
        if d:
            return str(d)
    m = _DATE.search(name)
    return m.group(0) if m else "-"


def load_results(results_dir: Path, root: Optional[Path] = None) -> list[Result]:
    """Every *.json under results_dir, in name order."""
    out = []
    for p in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(p.read_text())
        if isinstance(data, list):  # a bare list of rows
            data = {"rows": data}
        rows = list(data.get("rows") or [])
        shown = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else p.as_posix()
        out.append(Result(path=shown, env=dict(data.get("env") or {}), rows=rows, date=_date_of(data, p.name),
                          source=str(data.get("source") or ""),
                          ops=tuple(dict.fromkeys(r.get("op", "") for r in rows))))
    return out


def latest_for(op: str, results: Iterable[Result]) -> Optional[Result]:
    """The newest result (date, then file name) holding rows of op."""
    have = [r for r in results if op in r.ops]
    if not have:
        return None
    return max(have, key=lambda r: (r.date if r.date != "-" else "", r.path))


def headline(op: str, rows: list[dict]) -> Optional[dict]:
    """The op's figure among one case's rows."""
    test = HEADLINE.get(op)
    for r in rows:
        if test is not None and test(str(r.get("impl", ""))):
            return r
    if test is None:
        return next((r for r in rows if not r.get("baseline")), None)
    return None


def _us(v) -> str:
    """Microseconds as the history writes them: 2 decimals under 100 us, 1 above."""
    if not v:
        return "-"
    v = float(v)
    return f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _cell(s) -> str:
    return str(s).replace("|", "\\|")


def op_lines(op: str, res: Optional[Result]) -> list[str]:
    """The table lines of one op."""
    if res is None:
        return [f"| {op} | - | not measured | - | - | - | - | - | - | - |"]
    cases: dict[str, list[dict]] = {}
    for r in res.rows:
        if r.get("op") == op:
            cases.setdefault(str(r.get("case", "")), []).append(r)
    lines = []
    for case, rows in cases.items():
        row = headline(op, rows)
        if row is None:
            continue
        test = BASELINE.get(op)
        chosen = next((r for r in rows if test is not None and test(str(r.get("impl", "")))), None)
        base = chosen or next((r for r in rows if r.get("baseline")), None)
        us = float(row.get("us") or 0.0)
        ratio = 0.0 if chosen is not None else float(row.get("ratio") or 0.0)
        if not ratio and base is not None and us > 0 and base is not row:
            ratio = float(base.get("us") or 0.0) / us
        pct = float(row.get("pct_roofline") or 0.0)
        if not pct and float(row.get("floor_us") or 0.0) > 0 and us > 0:
            pct = float(row["floor_us"]) / us
        cells = [op, case, row.get("impl", ""), res.device, res.date, _us(us),
                 base.get("impl", "") if base is not None and base is not row else "-",
                 _us(base.get("us")) if base is not None and base is not row else "-",
                 f"{ratio:.2f}x" if ratio and base is not row else "-",
                 f"{100 * pct:.0f}%" if pct else "-"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines or [f"| {op} | - | no headline row in {res.path} | - | - | - | - | - | - | - |"]


def all_ops() -> list[str]:
    """Every op of the oracle's rule table and MORE_BENCHES, sorted."""
    from .. import oracle
    return sorted({*oracle.OPS, *MORE_BENCHES})


def render(results: list[Result], ops: Optional[Iterable[str]] = None) -> str:
    """The markdown table (and the list of the files it comes from)."""
    ops = sorted(ops) if ops is not None else all_ops()
    head = ("| op | case | ours | device | date | us | baseline | baseline us | x vs base | % of floor |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    used: dict[str, Result] = {}
    for op in ops:
        res = latest_for(op, results)
        if res is not None:
            used.setdefault(res.path, res)
        lines += op_lines(op, res)
    src = ["", "From:"]
    for path, res in sorted(used.items()):
        src.append(f"- `{path}`" + (f": {res.source}" if res.source else ""))
    return "\n".join(lines + (src if used else []))


def block(text: str) -> str:
    return (f"{BEGIN}\n<!-- generated by `python -m minimax_rocm.bench.figures` from "
            f"{RESULTS_DIR.as_posix()}/*.json; do not edit by hand -->\n{text}\n{END}")


def replace_block(doc: str, table: str) -> str:
    """doc with the text between the markers replaced by table."""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        raise ValueError(f"markers {BEGIN} ... {END} not found (in that order)")
    return doc[:i] + block(table) + doc[j + len(END):]


def _default_root() -> Path:
    cwd = Path.cwd()
    return cwd if (cwd / BENCHMARKS_MD).exists() else Path(__file__).resolve().parents[2]


def generate(root: Optional[Path] = None) -> tuple[str, str]:
    """(current BENCHMARKS.md text, the text it should have)."""
    root = Path(root) if root is not None else _default_root()
    doc = (root / BENCHMARKS_MD).read_text()
    table = render(load_results(root / RESULTS_DIR, root))
    return doc, replace_block(doc, table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="rewrite BENCHMARKS.md's current-figures table from "
                                             "benchmarks/results/*.json")
    ap.add_argument("--root", default=None, help="repository root (default: the current directory)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if the table is out of date; write nothing")
    g.add_argument("--print", action="store_true", help="print the table; write nothing")
    a = ap.parse_args(argv)
    root = Path(a.root) if a.root else _default_root()
    if a.print:
        print(render(load_results(root / RESULTS_DIR, root)))
        return 0
    old, new = generate(root)
    if a.check:
        if old != new:
            print(f"{BENCHMARKS_MD}: the figures table is out of date; run python -m minimax_rocm.bench.figures")
            return 1
        return 0
    if old != new:
        (root / BENCHMARKS_MD).write_text(new)
        print(f"{BENCHMARKS_MD}: figures table rewritten")
    else:
        print(f"{BENCHMARKS_MD}: figures table up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
