"""BENCHMARKS.md's current-figures table (minimax_rocm/bench/figures.py): the
generator on small synthetic results, and the committed table against the
committed results in benchmarks/results/ (regenerating must give the same text)."""
import json
from pathlib import Path

import pytest

from minimax_rocm.bench import figures
from minimax_rocm.bench.harness import Row

REPO = Path(__file__).resolve().parents[1]
# a copy of tests/ without the repository's documents (a Docker image) has nothing to check
needs_docs = pytest.mark.skipif(not (REPO / figures.BENCHMARKS_MD).exists()
                                or not (REPO / figures.RESULTS_DIR).is_dir(),
                                reason="BENCHMARKS.md or benchmarks/results/ not in this copy of the repository")


def _write(path: Path, rows, env=None, **top):
    path.write_text(json.dumps(dict(env=env or {"device": "NVIDIA H200"}, rows=[r.as_dict() for r in rows], **top)))


def _rows(op, case, base_us, ours_us, impl="ours (hip)", floor=0.0):
    base = Row(op, case, "baseline impl", base_us, baseline=True)
    ours = Row(op, case, impl, ours_us, floor_us=floor, pct_roofline=floor / ours_us if floor else 0.0,
               ratio=base_us / ours_us)
    return [base, ours]


def test_table_from_synthetic_results(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    # an older and a newer file for topk_reduce (the newer wins), a date from the file name
    _write(res / "topk_reduce_2026-01-01.json", _rows("topk_reduce", "T=1", 10.0, 5.0))
    _write(res / "topk_reduce_2026-02-01.json", _rows("topk_reduce", "T=1", 12.0, 3.0, floor=1.5),
           source="a bench run")
    # a date given in the file, a headline row other than the first non-baseline one
    rg = [Row("router_gemm", "M=1", "cast + F.linear", 6.0, baseline=True),
          Row("router_gemm", "M=1", "ours (hip, PDL)", 1.0, ratio=6.0),
          Row("router_gemm", "M=1", "op (oracle)", 1.5, ratio=4.0)]
    _write(res / "anything.json", rg, env={"device": "NVIDIA H200", "gpus": 2}, date="2026-03-04")
    results = figures.load_results(res, tmp_path)
    assert [r.date for r in results] == ["2026-03-04", "2026-01-01", "2026-02-01"]

    table = figures.render(results, ops=["topk_reduce", "router_gemm", "swiglu_oai"])
    lines = table.splitlines()
    assert lines[0].startswith("| op | case | ours | device | date | us | baseline | baseline us | x vs base |")
    assert ("| router_gemm | M=1 | op (oracle) | 2 x NVIDIA H200 | 2026-03-04 | 1.50 | cast + F.linear | 6.00 "
            "| 4.00x | - |") in lines
    assert "| swiglu_oai | - | not measured | - | - | - | - | - | - | - |" in lines
    assert ("| topk_reduce | T=1 | ours (hip) | NVIDIA H200 | 2026-02-01 | 3.00 | baseline impl | 12.00 "
            "| 4.00x | 50% |") in lines
    assert not any("2026-01-01" in line for line in lines)      # the older file is not shown
    assert "- `results/topk_reduce_2026-02-01.json`: a bench run" in lines
    # ops in name order
    ops = [line.split("|")[1].strip() for line in lines[2:] if line.startswith("| ")]
    assert ops == sorted(ops)


def test_vllm_row_is_the_moe_baseline_where_timed(tmp_path):
    # fused_moe and moe_prefill compare with upstream vLLM's row when the run
    # timed it (not the row the bench flags), else with the flagged row
    res = tmp_path / "results"
    res.mkdir()
    rows = [Row("moe_prefill", "T=4096", "ours BF16 BM=128", 800.0, baseline=True, floor_us=600.0,
                pct_roofline=0.75),
            Row("moe_prefill", "T=4096", "vLLM fused_experts (local copy)", 1000.0, ratio=0.8),
            Row("moe_prefill", "T=8192", "ours BF16 BM=128", 1200.0, baseline=True)]
    _write(res / "moe_prefill_2026-12-07.json", rows)
    lines = figures.render(figures.load_results(res, tmp_path), ops=["moe_prefill"]).splitlines()
    assert ("| moe_prefill | T=4096 | ours BF16 BM=128 | NVIDIA H200 | 2026-12-07 | 800.0 | "
            "vLLM fused_experts (local copy) | 1000.0 | 1.25x | 75% |") in lines
    assert "| moe_prefill | T=8192 | ours BF16 BM=128 | NVIDIA H200 | 2026-12-07 | 1200.0 | - | - | - | - |" in lines
    assert "moe_prefill" in figures.all_ops()


def test_update_between_markers(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    _write(tmp_path / "benchmarks" / "results" / "moe_align_2026-05-06.json",
           _rows("moe_align", "T=16", 4.0, 8.0))
    doc = f"# Benchmarks\n\nbefore\n\n{figures.BEGIN}\nstale\n{figures.END}\n\nafter\n"
    (tmp_path / "BENCHMARKS.md").write_text(doc)
    assert figures.main(["--root", str(tmp_path), "--check"]) == 1
    assert figures.main(["--root", str(tmp_path)]) == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "stale" not in text
    assert ("| moe_align | T=16 | ours (hip) | NVIDIA H200 | 2026-05-06 | 8.00 | baseline impl | 4.00 "
            "| 0.50x | - |") in text
    assert figures.main(["--root", str(tmp_path), "--check"]) == 0
    with pytest.raises(ValueError):
        figures.replace_block("no markers here", "table")


@needs_docs
def test_benchmarks_md_table_is_up_to_date():
    old, new = figures.generate(REPO)
    assert old == new, "BENCHMARKS.md's figures table is out of date: run python -m minimax_rocm.bench.figures"


@needs_docs
def test_committed_results_cover_the_measured_ops():
    results = figures.load_results(REPO / figures.RESULTS_DIR, REPO)
    assert results, "no results under benchmarks/results"
    for r in results:
        assert r.date != "-", f"{r.path}: no date"
        assert r.rows and all({"op", "case", "impl", "us", "baseline"} <= set(row) for row in r.rows), r.path
    table = figures.render(results)
    measured = {line.split("|")[1].strip() for line in table.splitlines()[2:]
                if line.startswith("| ") and "not measured" not in line}
    assert {"router_gemm", "allreduce_rms_qk", "fused_moe", "fused_moe_mxfp8", "moe_align", "mxfp8_quant",
            "topk_reduce"} <= measured
