"""Two `bench --json` results side by side: the same rows (op, case, impl)
before and after a change, with after / before and the rows that moved by
more than a tolerance. A refactor that should change nothing is proved by
both trees run on one machine, one after the other.

    python -m minimax_rocm.bench.compare BEFORE.json AFTER.json [--tolerance 0.05]

Exit status 1 when a row of AFTER is slower than BEFORE by more than the
tolerance (faster rows are listed, not failed); rows present on one side only
are listed too.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Change:
    key: tuple[str, str, str]       # (op, case, impl)
    before_us: Optional[float]
    after_us: Optional[float]

    @property
    def ratio(self) -> Optional[float]:
        """after / before: > 1 is slower."""
        if self.before_us and self.after_us:
            return self.after_us / self.before_us
        return None


def load_rows(path: str) -> dict[tuple[str, str, str], float]:
    with open(path) as f:
        data = json.load(f)
    rows = data["rows"] if isinstance(data, dict) else data
    return {(r["op"], r["case"], r["impl"]): float(r["us"]) for r in rows}


def compare(before: dict, after: dict) -> list[Change]:
    keys = list(dict.fromkeys([*before, *after]))
    return [Change(k, before.get(k), after.get(k)) for k in keys]


def slower(changes: list[Change], tolerance: float) -> list[Change]:
    return [c for c in changes if c.ratio is not None and c.ratio > 1 + tolerance]


def format_changes(changes: list[Change], tolerance: float) -> str:
    lines = []
    for c in changes:
        op, case, impl = c.key
        if c.ratio is None:
            side = "before only" if c.after_us is None else "after only"
            lines.append(f"  {side:11s} {op} | {case} | {impl}")
            continue
        mark = "SLOWER" if c.ratio > 1 + tolerance else "faster" if c.ratio < 1 - tolerance else ""
        lines.append(f"  {c.ratio:5.3f} {c.before_us:10.2f} -> {c.after_us:10.2f} us  {mark:6s} {op} | {case} | {impl}")
    matched = [c for c in changes if c.ratio is not None]
    lines.append(f"{len(matched)} rows in both, {len(slower(changes, tolerance))} slower by more than "
                 f"{100 * tolerance:.0f}%, {len(changes) - len(matched)} on one side only")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimax_rocm.bench.compare")
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--tolerance", type=float, default=0.05, help="relative change counted as noise")
    a = ap.parse_args(argv)
    changes = compare(load_rows(a.before), load_rows(a.after))
    print(format_changes(changes, a.tolerance))
    return 1 if slower(changes, a.tolerance) else 0


if __name__ == "__main__":
    raise SystemExit(main())
