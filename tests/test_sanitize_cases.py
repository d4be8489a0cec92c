"""The sanitizer's case driver (minimax_rocm/sanitize_cases.py) on the CPU:
its Triton-interpreter and torch subset passes, every case names an op row
of `python -m minimax_rocm check`, and a wrong, unwritten or failing kernel
output fails the run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minimax_rocm import gpu_check as gc
from minimax_rocm import sanitize_cases as sc

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)

ROOT = Path(__file__).resolve().parents[1]


def _lines(text: str) -> dict[str, str]:
    """case name -> what its line says after the name."""
    names = {c.name for c in sc.CASES}
    return {name: rest for name, _, rest in (ln.partition(": ") for ln in text.splitlines()) if name in names}


def test_cpu_subset_passes(capsys):
    assert sc.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    assert set(lines) == {c.name for c in sc.CASES}, "one line per case"
    ran = [n for n, r in lines.items() if r.startswith("ok, max err")]
    skipped = {n: r for n, r in lines.items() if r.startswith("skipped (")}
    assert len(ran) + len(skipped) == len(sc.CASES)
    # every native case is skipped here with its reason; every op has a case that ran
    assert {c.name for c in sc.CASES if "native" in c.needs} <= set(skipped)
    assert all("GPU" in r for r in skipped.values())
    assert {c.op for c in sc.CASES if c.name in ran} == set(sc.OPS)
    assert "triton _moe_gemm_kernel" in out and "triton _mx_gemm_kernel dot=upcast" in out
    assert f"{len(ran)} ok, 0 failed, {len(skipped)} skipped" in out


def test_cases_cover_the_ops_of_the_check():
    assert set(sc.OPS) == set(gc.OPS)
    names = [c.name for c in sc.CASES]
    assert len(set(names)) == len(names) and not [n for n in names if ": " in n]
    assert all(set(c.needs) <= {"cuda", "native", "clusters", "ranks"} for c in sc.CASES)


def test_a_wrong_kernel_output_fails_the_run(monkeypatch, capsys):
    from minimax_rocm.triton import topk_reduce as tri
    real = tri.topk_reduce

    def off_by_one(*a, **kw):
        out = real(*a, **kw)
        out.view(-1)[:1] += 1.0
        return out
    monkeypatch.setattr(tri, "topk_reduce", off_by_one)
    assert sc.main(["--device", "cpu", "--op", "topk_reduce"]) == 1
    lines = _lines(capsys.readouterr().out)
    assert lines["topk_reduce/triton, plain and masked by expert map"].startswith("FAILED, ")
    assert lines["topk_reduce/op through the oracle"].startswith("ok")        # the torch backend, untouched


def test_an_unwritten_output_element_fails_the_run(monkeypatch, capsys):
    # the kernel leaves the last row of the output it is handed as it found
    # it: poisoned by the driver, so the comparison sees NaN
    from minimax_rocm.triton import topk_reduce as tri
    real = tri.topk_reduce

    def skip_last_row(*a, out, **kw):
        done = real(*a, out=out.clone(), **kw)
        out[:-1] = done[:-1]
        return out
    monkeypatch.setattr(tri, "topk_reduce", skip_last_row)
    assert sc.main(["--device", "cpu", "--op", "topk_reduce"]) == 1
    line = _lines(capsys.readouterr().out)["topk_reduce/triton, plain and masked by expert map"]
    assert line.startswith("FAILED, ") and "err inf" in line
    # without the poison the same output is garbage or zeros: initcheck's to find
    assert sc.main(["--device", "cpu", "--op", "topk_reduce", "--no-poison"]) in (0, 1)


def test_a_raising_kernel_fails_its_case_and_the_others_still_run(monkeypatch, capsys):
    from minimax_rocm.triton import fused_moe as tri
    buffer = tri._buffer

    def boom(*a, **kw):
        raise RuntimeError("illegal memory access")
    monkeypatch.setattr(tri, "gemm", boom)
    assert sc.main(["--device", "cpu", "--op", "fused_moe"]) == 1
    lines = _lines(capsys.readouterr().out)
    assert lines["fused_moe/triton configurations (unfused, before, block_m 64, swap-AB, bad ids)"] == \
        "FAILED, RuntimeError: illegal memory access"
    assert lines["fused_moe/op sparse_local path (the last EP rank)"].startswith("ok")
    assert tri._buffer is buffer, "the poisoned intermediate buffers are put back"


def test_command_line_in_a_process():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # the driver chooses it for --device cpu
    run = lambda *a: subprocess.run([sys.executable, "-m", "minimax_rocm.sanitize_cases", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    p = run("--device", "cpu", "--op", "moe_align", "--no-poison")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "moe_align/triton: ok, max err 0 " in p.stdout and "not poisoned" in p.stdout
    listed = run("--list", "--op", "router_gemm").stdout.splitlines()
    assert listed == [f"{c.name}  [op router_gemm" + (f"; needs {', '.join(c.needs)}" if c.needs else "") + "]"
                      for c in sc.CASES if c.op == "router_gemm"]
    bad = run("--op", "nope")
    assert bad.returncode == 2 and "--op" in bad.stderr
