"""`python -m minimax_rocm check` (scripts/gpu_check.sh) on the CPU: which
commands each part would run (the plan, --dry-run), the per-op table against
the package, the runner's exit status, logs and timeouts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimax_rocm import gpu_check as gc
from minimax_rocm.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def args(*argv: str):
    """The check's parsed arguments, as `python -m minimax_rocm check ARGV`."""
    import argparse
    p = argparse.ArgumentParser()
    gc.add_arguments(p)
    return p.parse_args(list(argv))


def steps(*argv: str, gpus: int = 1) -> dict:
    return {s.name: s for s in gc.plan(args(*argv), gpus)}


# --------------------------------------------------------------------------- #
# the per-op table
# --------------------------------------------------------------------------- #


def test_every_op_test_file_exists():
    files = {f for op in gc.OPS.values() for f in op.tests} | set(gc.PROPERTY_TESTS)
    assert [f for f in sorted(files) if not (ROOT / f).is_file()] == []


def test_the_op_table_covers_the_package_ops_and_benches():
    from minimax_rocm import oracle
    from minimax_rocm.bench import BENCHES, load_all
    from minimax_rocm.bench.profiling import CASES
    load_all()
    assert set(gc.OPS) <= set(oracle.OPS)
    # the two without a row share their sibling's kernels and tests
    assert set(oracle.OPS) - set(gc.OPS) <= {"allreduce_rms", "mxfp8_dequant"}
    assert {b for op, c in gc.OPS.items() for b in c.benches(op)} == set(BENCHES)
    assert {op for op, c in gc.OPS.items() if c.profile} == set(CASES)


@pytest.mark.parametrize("sweep", sorted({sw for c in gc.OPS.values() for sw in c.sweeps}), ids=" ".join)
def test_every_sweep_is_a_command_of_its_module(sweep):
    # argparse rejects an unknown sweep name (exit 2) before it sees --help
    p = subprocess.run([sys.executable, "-m", *sweep, "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


# --------------------------------------------------------------------------- #
# the plan: which commands each part runs
# --------------------------------------------------------------------------- #


def test_default_parts_and_their_order():
    assert list(steps()) == ["build", "info", "tests", "demo", "bench"]
    # parts run in the fixed order, whatever order they are named in
    assert list(steps("bench", "install", "build")) == ["build", "bench", "install_build", "install_load",
                                                         "install_info", "install_tests", "install_demo"]


def test_tests_take_multigpu_marks_with_two_gpus():
    one, two = steps("tests", gpus=1)["tests"].argv, steps("tests", gpus=2)["tests"].argv
    assert one[one.index("-m", 2) + 1] == "gpu" and two[two.index("-m", 2) + 1] == "gpu or multigpu"
    assert not [a for a in one if a.startswith("tests/")]          # the whole suite


def test_op_restricts_tests_bench_and_properties():
    s = steps("tests", "bench", "properties", "--op", "router_gemm", "--op", "fused_moe_mxfp8", "--out", "/o")
    files = [a for a in s["tests"].argv if a.startswith("tests/")]
    assert files == ["tests/test_router_gemm.py", "tests/test_dependent_launch.py", "tests/test_fused_moe_mxfp8.py",
                     "tests/test_moe_align.py", "tests/test_fused_moe.py"]
    b = s["bench"].argv
    assert b[1:4] == ["-m", "minimax_rocm", "bench"]
    assert b[b.index("--op") + 1] == "router_gemm" and b.count("--op") == 2 and "fused_moe_mxfp8" in b
    assert b[b.index("--json") + 1] == "/o/bench.json"
    assert [n for n in s if n.startswith("properties")] == ["properties_router_gemm"] + [
        f"properties_fused_moe_mxfp8_{i}of4" for i in range(1, 5)]
    p = s["properties_router_gemm"].argv
    assert p[p.index("-k") + 1] == "router_gemm"


def test_an_op_without_a_bench_runs_no_bench():
    assert "bench" not in steps("bench", "--op", "swiglu_oai")
    assert "--quick" in steps("bench", "--quick")["bench"].argv


def test_properties_budget_and_missing_hypothesis(monkeypatch):
    s = steps("properties")["properties_router_gemm"]
    assert s.env == {"MINIMAX_ROCM_HYPOTHESIS_EXAMPLES": "400"}
    assert s.argv[-3:] == list(gc.PROPERTY_TESTS)
    examples = lambda *a: [st.env["MINIMAX_ROCM_HYPOTHESIS_EXAMPLES"] for n, st in steps("properties", *a).items()
                           if n.startswith("properties_fused_moe_") and "mxfp8" not in n]
    assert examples() == ["100"] * 4 and examples("--examples", "50") == ["13", "13", "12", "12"]
    assert examples("--examples", "2") == ["1", "1"]    # never a shard of no examples
    assert "OMP_NUM_THREADS" not in s.env
    assert steps("properties", "--jobs", "4")["properties_router_gemm"].env["OMP_NUM_THREADS"] \
        == str(max(1, (gc.os.cpu_count() or 1) // 4))
    real = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda n: None if n == "hypothesis" else real(n))
    assert "hypothesis is not installed" in steps("properties")["properties_topk_reduce"].missing


def test_properties_run_one_step_per_op_and_one_for_the_rest():
    s = steps("properties")
    names = [n for n in s if n.startswith("properties_")]
    want = [f"properties_{op}" + (f"_{i}of{c.property_shards}" if c.property_shards > 1 else "")
            for op, c in sorted(gc.OPS.items()) for i in range(1, c.property_shards + 1)]
    assert names == want + ["properties_rest"]
    k = {n: s[n].argv[s[n].argv.index("-k") + 1] for n in names}
    assert k["properties_fused_moe_1of4"] == k["properties_fused_moe_4of4"] == "fused_moe and not fused_moe_mxfp8"
    assert k["properties_rest"].startswith("not (allreduce_rms_qk or fused_moe or ")


def test_sanitize_runs_each_tool_over_the_case_driver(monkeypatch):
    monkeypatch.setattr(gc, "_tool", lambda name: f"/cuda/{name}")
    s = steps("sanitize")
    assert list(s) == [f"sanitize_{t}" for t in gc.SANITIZER_TOOLS]
    mem = s["sanitize_memcheck"].argv
    assert mem[:5] == ["/cuda/compute-sanitizer", "--tool", "memcheck", "--leak-check", "full"]
    assert "--target-processes" in mem and "--leak-check" not in s["sanitize_racecheck"].argv
    assert mem[-4:] == ["-m", "minimax_rocm.sanitize_cases", "--device", "cuda"]
    assert all(st.env == {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"} for st in s.values())
    # initcheck sees unpoisoned outputs: a read of memory no kernel wrote is its to report
    assert s["sanitize_initcheck"].argv[-1] == "--no-poison" and "--no-poison" not in mem
    one = steps("sanitize", "--sanitize-tool", "racecheck", "--op", "topk_reduce", "--op", "fused_moe")
    assert list(one) == ["sanitize_racecheck"]
    assert one["sanitize_racecheck"].argv[-4:] == ["--op", "topk_reduce", "--op", "fused_moe"]
    monkeypatch.setattr(gc, "_tool", lambda name: None)
    assert "compute-sanitizer not found" in steps("sanitize")["sanitize_memcheck"].missing


def test_sweeps_and_profiles_per_op(monkeypatch):
    assert list(steps("sweep", "--op", "router_gemm")) == ["sweep_router_gemm_sweep_splitk",
                                                          "sweep_router_gemm_sweep_op"]
    assert list(steps("sweep", "--op", "fused_moe")) == ["sweep_fused_moe_sweep", "sweep_fused_moe_moe_prefill_sweep"]
    names = [s.name for s in gc.plan(args("sweep"), 1)]
    assert len(names) == len(set(names)), names
    assert len(steps("sweep")) == sum(len(c.sweeps) for c in gc.OPS.values())
    monkeypatch.setattr(gc, "_tool", lambda name: f"/cuda/{name}")
    s = steps("profile", "--op", "fused_moe_mxfp8", "--tokens", "216")
    assert list(s) == ["profile_fused_moe_mxfp8_time", "profile_fused_moe_mxfp8_timeline", "ncu_fused_moe_mxfp8"]
    ncu = s["ncu_fused_moe_mxfp8"].argv
    assert ncu[0] == "/cuda/ncu" and ncu[ncu.index("--nvtx-include") + 1] == "step/"
    assert ncu[-7:] == ["-m", "minimax_rocm.bench.profiling", "fused_moe_mxfp8", "--tokens", "216", "--mode", "nvtx"]
    assert s["ncu_fused_moe_mxfp8"].failure("==ERROR== ERR_NVGPUCTRPERM") and not s["ncu_fused_moe_mxfp8"].failure("ok")
    assert not steps("profile", "--op", "moe_align")


def test_install_builds_without_jit():
    s = steps("install")
    assert s["install_build"].argv[1:] == ["setup.py", "-q", "build_ext", "--inplace"]
    for st in s.values():
        assert st.env["MINIMAX_ROCM_JIT"] is None and st.env["MINIMAX_ROCM_BUILD_EXT"] == "1"
        assert st.shell().startswith("env -u MINIMAX_ROCM_JIT MINIMAX_ROCM_BUILD_EXT=1 ")
        env = gc.step_env(st, {"MINIMAX_ROCM_JIT": "1"})
        assert "MINIMAX_ROCM_JIT" not in env and env["MINIMAX_ROCM_BUILD_EXT"] == "1"


def test_without_a_gpu_only_info_runs():
    s = steps("build", "info", "tests", "bench", gpus=0)
    assert not s["info"].missing
    assert all(st.missing == "no CUDA/ROCm GPU visible here" for n, st in s.items() if n != "info")


def test_every_step_environment():
    st = steps("tests")["tests"]
    env = gc.step_env(st, {"TRITON_INTERPRET": "1", "MAX_JOBS": "4", "PYTHONPATH": "/x"})
    assert "TRITON_INTERPRET" not in env and env["MAX_JOBS"] == "4"
    assert env["PYTHONPATH"] == f"{ROOT}{os.pathsep}/x"
    assert env["MINIMAX_ROCM_JIT"] == "1" and env["NCCL_NVLS_ENABLE"] == "0"
    assert gc.step_env(st, {})["MAX_JOBS"] == "16"


# --------------------------------------------------------------------------- #
# the command line
# --------------------------------------------------------------------------- #


def test_dry_run_prints_the_commands_and_runs_nothing(capsys, tmp_path):
    out = tmp_path / "logs"
    assert main(["check", "tests", "bench", "--op", "topk_reduce", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "-m pytest -q -m" in text and "tests/test_topk_reduce_native.py tests/test_topk_reduce_triton.py" in text
    assert f"-m minimax_rocm bench --op topk_reduce --json {out}/bench.json" in text
    assert not out.exists()


BAD = [(["check", "nonsense"], "PART"), (["check", "--op", "nope"], "--op"), (["check", "--examples", "0"], "--examples"),
       (["check", "--sanitize-tool", "leakcheck"], "--sanitize-tool"), (["check", "--tokens", "-1"], "--tokens"),
       (["check", "--jobs", "0"], "--jobs")]


@pytest.mark.parametrize("argv,arg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_is_a_usage_error(capsys, argv, arg):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and f"argument {arg}" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# running: logs, exit status, timeouts
# --------------------------------------------------------------------------- #


def _step(name, code, **kw):
    return gc.Step(name, [sys.executable, "-c", code], **kw)


def test_a_failing_step_fails_the_check_and_the_others_still_run(tmp_path, capsys):
    rc = gc.run_steps([_step("bad", "print('boom'); raise SystemExit(3)"), _step("good", "print('fine')"),
                       gc.Step("absent", ["true"], missing="no such tool")], tmp_path)
    assert rc == 1
    out = capsys.readouterr().out
    assert "boom" in out and "<== bad: FAILED (exit 3)" in out and "<== good: ok" in out
    assert "<== absent: FAILED, not run: no such tool" in out and "failed: bad, absent" in out
    assert (tmp_path / "bad.log").read_text() == "boom\n" and (tmp_path / "good.log").read_text() == "fine\n"
    assert gc.run_steps([_step("good", "print('fine')")], tmp_path) == 0


def test_a_failure_read_from_the_log_fails_the_step(tmp_path):
    st = _step("san", "print('========= ERROR SUMMARY: 2 errors')", failure=gc.sanitizer_failure)
    assert gc.run_steps([st], tmp_path) == 1


def test_a_step_past_its_timeout_is_killed(tmp_path, capsys):
    assert gc.run_steps([_step("slow", "import time; time.sleep(60)")], tmp_path, timeout=1) == 1
    assert "FAILED (exit 124)" in capsys.readouterr().out
    assert "killed after 1 s" in (tmp_path / "slow.log").read_text()


def test_steps_run_at_once_with_jobs(tmp_path, capsys):
    # each step waits for the file the other writes: one at a time, the first would time out
    code = ("import pathlib, sys, time; d = pathlib.Path(sys.argv[1]); (d / sys.argv[2]).touch(); "
            "t = time.monotonic() + 20\nwhile not (d / sys.argv[3]).exists():\n"
            "    assert time.monotonic() < t, 'alone'; time.sleep(0.05)")
    pair = [gc.Step(a, [sys.executable, "-c", code, str(tmp_path), a, b]) for a, b in (("a", "b"), ("b", "a"))]
    assert gc.run_steps(pair, tmp_path, timeout=60, jobs=2) == 0
    assert "check: 2 of 2 steps ok" in capsys.readouterr().out


def test_jobs_take_only_the_properties(capsys):
    assert main(["check", "bench", "properties", "--jobs", "2"]) == 2
    assert "--jobs runs only the properties part" in capsys.readouterr().err
    assert main(["check", "properties", "--jobs", "2", "--dry-run"]) == 0


def test_the_steps_see_the_check_environment(tmp_path):
    st = _step("env", "import os; print(os.environ['MINIMAX_ROCM_JIT'], 'TRITON_INTERPRET' in os.environ)")
    gc.run_steps([st], tmp_path)
    assert (tmp_path / "env.log").read_text() == "1 False\n"


def test_sanitizer_summaries():
    clean = "========= ERROR SUMMARY: 0 errors\n========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
    assert gc.sanitizer_failure(clean) == ""
    leaks = "========= Leaked 512 bytes at 0x7f\n========= Leaked 64 bytes at 0x7e\n========= ERROR SUMMARY: 2 errors"
    assert gc.sanitizer_failure(leaks) == ""
    assert gc.sanitizer_failure(leaks.replace("2 errors", "3 errors")) == "compute-sanitizer reported 1 error(s)"
    # past --print-limit: the leak summary counts every leaked allocation
    many = ("========= Leaked 512 bytes at 0x7f\n========= LEAK SUMMARY: 9000 bytes leaked in 785 allocations\n"
            "========= ERROR SUMMARY: 785 errors\n"
            "========= ERROR SUMMARY: 735 errors were not printed. Use --print-limit option to adjust")
    assert gc.sanitizer_failure(many) == ""
    assert gc.sanitizer_failure(many.replace(": 785 errors", ": 786 errors")) == "compute-sanitizer reported 1 error(s)"
    race = "========= RACECHECK SUMMARY: 4 hazards displayed (1 errors, 3 warnings)"
    assert gc.sanitizer_failure(race) == "compute-sanitizer reported 1 error(s)"


def test_op_names_reads_the_dispatcher():
    import minimax_rocm  # noqa: F401  (registers the ops)
    assert {"router_gemm", "fused_moe", "mxfp8_quant"} <= set(gc.op_names("minimax_rocm"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure report of a machine without a GPU")
def test_the_build_step_reports_the_load_error():
    st = steps("build")["build"]
    p = subprocess.run(st.argv, capture_output=True, text=True, env=gc.step_env(st), cwd=ROOT, timeout=300)
    assert p.returncode == 1 and "extension: FAILED" in p.stdout and "no GPU" in p.stdout


def test_the_script_runs_the_check(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "info"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "backends usable:" in (tmp_path / "info.log").read_text() and "1 of 1 steps ok" in p.stdout
    if not torch.cuda.is_available():
        p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "info", "tests"], capture_output=True,
                           text=True, env=env, timeout=300)
        assert p.returncode == 1 and "failed: tests" in p.stdout


def test_bench_against_a_baseline_tree(tmp_path):
    (tmp_path / "minimax_rocm" / "bench").mkdir(parents=True)
    (tmp_path / "minimax_rocm" / "bench" / "router_gemm.py").write_text("")
    s = steps("bench", "--op", "router_gemm", "--baseline", str(tmp_path), "--out", "/o")
    assert list(s) == ["bench_baseline", "bench", "bench_compare"]
    base = s["bench_baseline"]
    # the baseline's own package (-P: not this checkout's) and its own JIT build
    assert base.argv[1:4] == ["-P", "-m", "minimax_rocm"] and base.env["PYTHONPATH"] == str(tmp_path.resolve())
    assert base.env["MINIMAX_ROCM_BUILD_DIR"].startswith(str(tmp_path.resolve()))
    assert base.argv[base.argv.index("--op") + 1] == "router_gemm"
    assert s["bench_compare"].argv[-2:] == ["/o/bench_baseline.json", "/o/bench.json"]


def test_a_bench_the_baseline_tree_lacks_runs_on_this_side_only(tmp_path):
    # fused_moe's checks include moe_prefill: an older tree with only bench/fused_moe.py
    (tmp_path / "minimax_rocm" / "bench").mkdir(parents=True)
    (tmp_path / "minimax_rocm" / "bench" / "fused_moe.py").write_text("")
    s = steps("bench", "--op", "fused_moe", "--baseline", str(tmp_path), "--out", "/o")
    base, ours = s["bench_baseline"].argv, s["bench"].argv
    assert [base[i + 1] for i, a in enumerate(base) if a == "--op"] == ["fused_moe"]
    assert [ours[i + 1] for i, a in enumerate(ours) if a == "--op"] == ["fused_moe", "moe_prefill"]
    # nothing of the op's in the older tree: this side alone, no comparison
    s = steps("bench", "--op", "moe_align", "--baseline", str(tmp_path), "--out", "/o")
    assert list(s) == ["bench"]

