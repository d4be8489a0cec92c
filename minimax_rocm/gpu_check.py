"""`python -m minimax_rocm check` (or `bash scripts/gpu_check.sh`): what a GPU
machine checks, in one entry point. Each part runs as one or more commands,
each command's output goes to its own log under --out (default $OUT, else
/tmp/mmr_out) and the part of it worth reading is echoed; the exit status is
1 when any command failed or could not run.

    python -m minimax_rocm check [PART ...] [--op OP ...] [--out DIR] [--dry-run]

Parts (run in this order, whatever order they are named in; default: build
info tests demo bench):
  build       load the native extension, JIT-building it (MINIMAX_ROCM_JIT=1);
              fails with the loader's error
  info        python -m minimax_rocm info
  tests       pytest -m gpu (and multigpu where there are two or more GPUs):
              the whole suite, or the test files of each --op
  properties  the property and hostile-input tests (tests/test_properties.py,
              test_hostile.py, test_swiglu.py) with --examples Hypothesis
              examples per test (default $MINIMAX_ROCM_HYPOTHESIS_EXAMPLES,
              else 400), one step per op (the MoE ops' examples split over
              several steps); --jobs N runs N steps at once;
              needs hypothesis installed (nothing is installed here)
  sanitize    compute-sanitizer (memcheck, racecheck, synccheck, initcheck;
              --sanitize-tool), one tool at a time, over
              `python -m minimax_rocm.sanitize_cases`: every native and Triton
              kernel variant at small shapes, checked against the reference
              (--op: that op's cases only)
  demo        python -m minimax_rocm demo
  bench       python -m minimax_rocm bench [--op OP ...] --json OUT/bench.json; with
              --baseline DIR first the same benches of the tree DIR, then
              both side by side (minimax_rocm.bench.compare)
  sweep       each op's sweeps (`python -m minimax_rocm.bench.<module> <sweep>`: the op's
              module, and moe_prefill's for the MoE ops)
  profile     minimax_rocm.bench.profiling per op: graph against eager time,
              the kernels of one graph replay, Nsight Compute counters (ncu)
  install     `setup.py build_ext --inplace` (what `pip install .` builds), the
              prebuilt module loading without JIT, then the GPU tests and the
              demo on it; it leaves minimax_rocm/_C*.so in the checkout (later
              runs load that instead of JIT-building; delete it to go back)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("build", "info", "tests", "properties", "sanitize", "demo", "bench", "sweep", "profile", "install")
DEFAULT_PARTS = ("build", "info", "tests", "demo", "bench")


@dataclass(frozen=True)
class OpChecks:
    """Where an op's checks live: its test files (tests/...), whether it has
    a registered bench (and other benches of its kernels, e.g. at other
    sizes), its sweeps (argv after `python -m`) and whether
    minimax_rocm.bench.profiling has a case for it; property_shards: the
    processes its property tests' examples are split over (each draws its
    share at random, with no example database)."""
    tests: tuple[str, ...]
    bench: bool = True
    sweeps: tuple[tuple[str, ...], ...] = ()
    profile: bool = False
    more_benches: tuple[str, ...] = ()
    property_shards: int = 1

    def benches(self, op: str) -> tuple[str, ...]:
        return ((op,) if self.bench else ()) + self.more_benches


OPS: dict[str, OpChecks] = {
    "allreduce_rms_qk": OpChecks(("tests/test_allreduce_rms.py", "tests/test_lamport_multigpu.py")),
    "router_gemm": OpChecks(("tests/test_router_gemm.py", "tests/test_dependent_launch.py"),
                            sweeps=(("minimax_rocm.bench.router_gemm", "sweep_splitk"),
                                    ("minimax_rocm.bench.router_gemm", "sweep_op")), profile=True),
    "moe_align": OpChecks(("tests/test_moe_align.py", "tests/test_moe_align_native.py"), property_shards=2),
    "fused_moe": OpChecks(("tests/test_fused_moe.py", "tests/test_moe_align.py", "tests/test_swiglu.py",
                           "tests/test_topk_reduce_triton.py"),
                          sweeps=(("minimax_rocm.bench.fused_moe", "sweep"),
                                  ("minimax_rocm.bench.moe_prefill", "sweep")),
                          more_benches=("moe_prefill",), property_shards=4),
    "fused_moe_mxfp8": OpChecks(("tests/test_fused_moe_mxfp8.py", "tests/test_moe_align.py", "tests/test_fused_moe.py"),
                                sweeps=(("minimax_rocm.bench.fused_moe_mxfp8", "sweep"),
                                        ("minimax_rocm.bench.fused_moe_mxfp8", "spread"),
                                        ("minimax_rocm.bench.moe_prefill", "sweep-mxfp8")), profile=True,
                                property_shards=4),
    "mxfp8_quant": OpChecks(("tests/test_mxfp8_quant.py",), profile=True),
    "swiglu_oai": OpChecks(("tests/test_swiglu.py",), bench=False),
    "topk_reduce": OpChecks(("tests/test_topk_reduce_native.py", "tests/test_topk_reduce_triton.py")),
}

PROPERTY_TESTS = ("tests/test_properties.py", "tests/test_hostile.py", "tests/test_swiglu.py")
# Kernels run tens of times slower under the sanitizer, so it runs a driver
# that calls each kernel variant a few times at small shapes, not the tests.
SANITIZE_DRIVER = ("-m", "minimax_rocm.sanitize_cases", "--device", "cuda")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# echoed from a sanitize log: the first error reports, the tools' summaries,
# the driver's failed cases and its closing lines
SANITIZER_ERRORS = r"^=+ (Invalid|Uninitialized|Race reported|Barrier error|Program hit|Error)"
SANITIZE_SUMMARY = r"ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|: FAILED|^== "
NCU_SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "WarpStateStats", "SchedulerStats", "Occupancy",
                "LaunchStats")
NCU_LINES = (r"^  [A-Za-z_].*\(|profiled:|==ERROR==|Duration|Executed Ipc|Issued Warp|Warp Cycles Per Issued|"
             r"DRAM Throughput|Memory Throughput|Compute \(SM\)|Issue Slots Busy|No Eligible|Achieved Occupancy|"
             r"Registers Per|Grid Size|Stall")

# Every step's environment: NVLink multicast off in every process (NCCL's
# NVLS, torch's symmetric memory, NVSHMEM), as bench.allreduce_rms_qk's ENV;
# never the Triton interpreter (it runs CPU tensors only).
ENV: dict[str, Optional[str]] = {
    "PYTHONUNBUFFERED": "1", "TRITON_DEFAULT_FP_FUSION": "1", "MINIMAX_ROCM_JIT": "1",
    "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
    "TRITON_INTERPRET": None,
}


# --------------------------------------------------------------------------- #
# steps: one command, its log, what of the log is echoed
# --------------------------------------------------------------------------- #


def tail(n: Optional[int]) -> Callable[[str], list[str]]:
    """Echo the last n lines of the log (all of them for None)."""
    return lambda text: text.splitlines()[-n:] if n else text.splitlines()


def grep(pattern: str, last: int = 0, first: int = 0, invert: bool = False) -> Callable[[str], list[str]]:
    """Echo the log lines matching (or, inverted, not matching) pattern, the
    first or last few of them."""
    rx = re.compile(pattern)

    def pick(text: str) -> list[str]:
        lines = [ln for ln in text.splitlines() if bool(rx.search(ln)) != invert]
        return lines[:first] if first else lines[-last:] if last else lines
    return pick


@dataclass
class Step:
    name: str                                     # also the log's name: OUT/<name>.log
    argv: list[str]
    env: dict[str, Optional[str]] = field(default_factory=dict)   # on top of ENV; None unsets
    echo: Callable[[str], list[str]] = field(default=tail(40))
    failure: Optional[Callable[[str], str]] = None   # a failure read from the log despite exit status 0
    missing: str = ""                             # a prerequisite is absent: fails without running
    part: str = ""                                # set by plan()

    def shell(self) -> str:
        unset = [f"-u {k}" for k, v in self.env.items() if v is None]
        sets = [f"{k}={shlex.quote(v)}" for k, v in self.env.items() if v is not None]
        prefix = "env " + " ".join(unset + sets) + " " if unset else " ".join(sets) + " " if sets else ""
        return prefix + shlex.join(self.argv)


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _call(fn: str) -> list[str]:
    """A function of this module as its own process (a build's compiler
    output and a failed load stay in that process and its log)."""
    return _py("-c", f"from minimax_rocm.gpu_check import {fn}; raise SystemExit({fn}())")


def gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _ops(args) -> list[str]:
    return list(dict.fromkeys(args.op)) if args.op else list(OPS)


def _test_files(args) -> list[str]:
    """The test files of the --op ops ([]: the whole suite)."""
    return list(dict.fromkeys(f for op in args.op for f in OPS[op].tests)) if args.op else []


def sanitizer_failure(text: str) -> str:
    """Errors in compute-sanitizer's summaries, less the leak reports: torch's
    caching allocator and the libraries keep blocks until the process exits,
    so leaks are echoed for reading but do not fail the step. A leaked
    allocation counts as one error; the leak summary counts them all, the
    printed `Leaked` lines only up to --print-limit."""
    errors = sum(int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors?$", text, re.M))
    leak_summaries = re.findall(r"LEAK SUMMARY: \d+ bytes leaked in (\d+) allocation", text)
    if leak_summaries:
        errors -= sum(int(n) for n in leak_summaries)
    else:
        errors -= len(re.findall(r"^=+ Leaked \d+ bytes", text, re.M))
    errors += sum(int(n) for n in re.findall(r"RACECHECK SUMMARY: .*?\((\d+) error", text))
    return f"compute-sanitizer reported {errors} error(s)" if errors > 0 else ""


def _tool(name: str) -> Optional[str]:
    """A CUDA toolkit program, on PATH or in /usr/local/cuda/bin."""
    found = shutil.which(name) or f"/usr/local/cuda/bin/{name}"
    return found if os.path.exists(found) else None


# --------------------------------------------------------------------------- #
# the parts
# --------------------------------------------------------------------------- #


def _marks(gpus: int) -> str:
    return "gpu or multigpu" if gpus >= 2 else "gpu"


def part_build(args, gpus: int) -> list[Step]:
    return [Step("build", _call("build_extension"), echo=grep(r"(?i)error|^extension:|^torch |^gpu ", last=25))]


def part_info(args, gpus: int) -> list[Step]:
    return [Step("info", _py("-m", "minimax_rocm", "info"), echo=tail(None))]


def part_tests(args, gpus: int) -> list[Step]:
    return [Step("tests", _py("-m", "pytest", "-q", "-m", _marks(gpus), "-p", "no:cacheprovider", "-rfEs",
                              *_test_files(args)))]


def _op_tests(op: str) -> str:
    """A pytest -k expression for the tests named after op and not after a
    longer op name that contains it (fused_moe, not fused_moe_mxfp8)."""
    return " and ".join([op, *(f"not {o}" for o in sorted(OPS) if o != op and op in o)])


def part_properties(args, gpus: int) -> list[Step]:
    """One step per op, or per shard of an op with property_shards (each its
    own log and --step-timeout: at 400 examples the whole set outlasts one
    command's limit on a device machine), then, without --op, one for the
    tests named after no op. Under --jobs each step's torch takes its share
    of the CPU cores (the float64 references run there)."""
    missing = "" if importlib.util.find_spec("hypothesis") else \
        "hypothesis is not installed: the property tests cannot run (install it where a package index is reachable)"
    selections = [(op, _op_tests(op), OPS[op].property_shards) for op in (list(dict.fromkeys(args.op)) or sorted(OPS))]
    if not args.op:
        selections.append(("rest", f"not ({' or '.join(sorted(OPS))})", 1))
    threads = {} if args.jobs == 1 else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.jobs))}
    steps = []
    for name, k, shards in selections:
        shards = min(shards, args.examples)
        for i in range(shards):
            examples = args.examples // shards + (i < args.examples % shards)
            steps.append(Step(f"properties_{name}" + (f"_{i + 1}of{shards}" if shards > 1 else ""),
                              _py("-m", "pytest", "-q", "-m", _marks(gpus), "-p", "no:cacheprovider", "-rfEs",
                                  "-k", k, *PROPERTY_TESTS),
                              env={"MINIMAX_ROCM_HYPOTHESIS_EXAMPLES": str(examples), **threads}, echo=tail(20),
                              missing=missing))
    return steps


def part_sanitize(args, gpus: int) -> list[Step]:
    cs = _tool("compute-sanitizer")
    ops = [a for op in dict.fromkeys(args.op) for a in ("--op", op)]
    steps = []
    for tool in args.sanitize_tool or SANITIZER_TOOLS:
        extra = ["--leak-check", "full"] if tool == "memcheck" else []
        # initcheck: outputs left unpoisoned, so a read of memory no kernel
        # wrote is reported instead of hidden behind the poison's writes
        driver = _py(*SANITIZE_DRIVER, *ops, *(["--no-poison"] if tool == "initcheck" else []))
        steps.append(Step(f"sanitize_{tool}",
                          [cs or "compute-sanitizer", "--tool", tool, *extra, "--target-processes", "all",
                           "--print-limit", "50", *driver],
                          # no caching allocator: each tensor its own allocation, so
                          # memcheck sees an access past a tensor's end
                          env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"},
                          echo=lambda text: grep(SANITIZER_ERRORS, first=20)(text) + grep(SANITIZE_SUMMARY)(text),
                          failure=sanitizer_failure,
                          missing="" if cs else "compute-sanitizer not found (on PATH or in /usr/local/cuda/bin)"))
    return steps


def part_demo(args, gpus: int) -> list[Step]:
    return [Step("demo", _py("-m", "minimax_rocm", "demo"), echo=tail(None))]


def part_bench(args, gpus: int) -> list[Step]:
    ops = [b for op in _ops(args) for b in OPS[op].benches(op)] if args.op else []
    if args.op and not ops:
        return []
    out = Path(args.out)

    def which(benches: list[str]) -> list[str]:
        """The bench command's selection, for this tree's run and a baseline's."""
        return [*(a for b in benches for a in ("--op", b)), *(["--quick"] if args.quick else [])]

    argv = _py("-m", "minimax_rocm", "bench", *which(ops), "--json", str(out / "bench.json"))
    if importlib.util.find_spec("matplotlib"):
        argv += ["--plot", str(out / "bench.png")]
    steps = [Step("bench", argv, echo=tail(None))]
    if args.baseline:
        # the same benches from another tree (its own package and JIT build; -P keeps
        # this checkout off sys.path), then both side by side; a bench the older
        # tree does not have (no bench/<name>.py there) runs on this side only
        base = Path(args.baseline).resolve()
        before = str(out / "bench_baseline.json")
        have = [op for op in ops if (base / "minimax_rocm" / "bench" / f"{op}.py").exists()]
        if ops and not have:
            return steps
        steps = [Step("bench_baseline", _py("-P", "-m", "minimax_rocm", "bench", *which(have), "--json", before),
                      env={"PYTHONPATH": str(base), "MINIMAX_ROCM_BUILD_DIR": str(base / ".ext")}, echo=tail(None)),
                 *steps,
                 Step("bench_compare", _py("-m", "minimax_rocm.bench.compare", before, str(out / "bench.json")),
                      echo=tail(None))]
    return steps


def part_sweep(args, gpus: int) -> list[Step]:
    def name(op: str, sw: tuple) -> str:
        # a sweep of another bench module (moe_prefill's under fused_moe) names that module too
        module = sw[0].rsplit(".", 1)[-1]
        return f"sweep_{op}_{sw[-1]}" if module == op else f"sweep_{op}_{module}_{sw[-1]}"
    return [Step(name(op, sw), _py("-m", *sw), echo=tail(80)) for op in _ops(args) for sw in OPS[op].sweeps]


def part_profile(args, gpus: int) -> list[Step]:
    ncu = _tool("ncu")
    steps = []
    for op in (op for op in _ops(args) if OPS[op].profile):
        tokens = ["--tokens", *map(str, args.tokens)] if args.tokens else []
        prof = _py("-m", "minimax_rocm.bench.profiling", op, *tokens)
        steps += [Step(f"profile_{op}_time", prof + ["--mode", "time"], echo=tail(None)),
                  Step(f"profile_{op}_timeline", prof + ["--mode", "timeline"], echo=tail(None)),
                  # Nsight Compute profiles the calls inside the NVTX ranges
                  # only; clocks are left alone (--clock-control none)
                  Step(f"ncu_{op}", [ncu or "ncu", "--clock-control", "none", "--nvtx", "--nvtx-include", "step/",
                                     *(a for s in NCU_SECTIONS for a in ("--section", s)),
                                     *prof, "--mode", "nvtx"],
                       echo=grep(NCU_LINES, first=220),
                       failure=lambda text: "ncu could not profile (see the log)" if "==ERROR==" in text else "",
                       missing="" if ncu else "ncu (Nsight Compute) not found (on PATH or in /usr/local/cuda/bin)")]
    return steps


def part_install(args, gpus: int) -> list[Step]:
    env = {"MINIMAX_ROCM_BUILD_EXT": "1", "MINIMAX_ROCM_JIT": None,
           "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST") or _cuda_arch()}
    return [Step("install_build", _py("setup.py", "-q", "build_ext", "--inplace"), env=env,
                 echo=grep(r"^(running|copying|creating)", last=20, invert=True)),
            Step("install_load", _call("check_prebuilt"), env=env),
            Step("install_info", _py("-m", "minimax_rocm", "info"), env=env, echo=tail(None)),
            Step("install_tests", _py("-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs",
                                      *_test_files(args)), env=env, echo=tail(10)),
            Step("install_demo", _py("-m", "minimax_rocm", "demo"), env=env, echo=tail(None))]


PART_STEPS = {"build": part_build, "info": part_info, "tests": part_tests, "properties": part_properties,
              "sanitize": part_sanitize, "demo": part_demo, "bench": part_bench, "sweep": part_sweep,
              "profile": part_profile, "install": part_install}


def _cuda_arch() -> str:
    """This GPU's compute capability as TORCH_CUDA_ARCH_LIST wants it (9.0 without one)."""
    try:
        import torch
        if torch.cuda.is_available() and torch.version.cuda:
            return "{}.{}".format(*torch.cuda.get_device_capability(0))
    except Exception:
        pass
    return "9.0"


def plan(args, gpus: int) -> list[Step]:
    """The steps of the chosen parts, in PARTS order. Without a GPU only
    `info` can run: the others are marked as not run."""
    chosen = set(args.parts or DEFAULT_PARTS)
    steps = []
    for part in (p for p in PARTS if p in chosen):
        for s in PART_STEPS[part](args, gpus):
            s.part = part
            steps.append(s)
    source = (ROOT / "tests").is_dir() and (ROOT / "setup.py").exists()
    for s in steps:
        # (sanitize runs a module of the package: an install serves it)
        if not s.missing and not source and s.part in ("tests", "properties", "install"):
            s.missing = f"no source checkout at {ROOT} (tests/ and setup.py are needed)"
        if not s.missing and gpus == 0 and s.part != "info":
            s.missing = "no CUDA/ROCm GPU visible here"
    return steps


# --------------------------------------------------------------------------- #
# running
# --------------------------------------------------------------------------- #


def step_env(step: Step, base: Optional[dict] = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("MAX_JOBS", "16")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    for k, v in {**ENV, **step.env}.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _run_one(step: Step, log: Path, timeout: Optional[float]) -> int:
    """Exit status of the step's command, its output in log; 124 when it
    ran past timeout (its whole process group is then killed)."""
    with open(log, "w") as f:
        try:
            p = subprocess.Popen(step.argv, stdout=f, stderr=subprocess.STDOUT, env=step_env(step), cwd=ROOT,
                                 start_new_session=True)
        except OSError as e:
            f.write(f"could not start {step.argv[0]}: {e}\n")
            return 127
        try:
            return p.wait(timeout=timeout)
        except BaseException as e:   # a timeout or Ctrl-C: no process of it may outlive the check
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            f.write(f"\ncheck: killed after {timeout:.0f} s\n")
            return 124


def _run_and_report(step: Step, out: Path, timeout: Optional[float]) -> tuple[bool, list[str]]:
    """Run one step; whether it failed, and the lines to print about it."""
    log = out / f"{step.name}.log"
    if step.missing:
        log.write_text(f"not run: {step.missing}\n")
        return True, [f"<== {step.name}: FAILED, not run: {step.missing}"]
    t0 = time.monotonic()
    rc = _run_one(step, log, timeout)
    text = log.read_text(errors="replace")
    why = f"exit {rc}" if rc else (step.failure(text) if step.failure else "")
    return bool(why), [*step.echo(text), f"<== {step.name}: {'FAILED (' + why + ')' if why else 'ok'} in "
                                         f"{time.monotonic() - t0:.0f} s, log {log}"]


def run_steps(steps: list[Step], out: Path, timeout: Optional[float] = None, jobs: int = 1) -> int:
    """Run every step (a failure does not stop the others), up to jobs at a
    time, each step's report printed whole when it ends; 1 if any failed."""
    out.mkdir(parents=True, exist_ok=True)

    def one(step: Step) -> bool:
        print(f"==> {step.name}: {step.shell()}", flush=True)
        failed, lines = _run_and_report(step, out, timeout)
        print("\n".join(lines), flush=True)
        return failed

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failed = [s.name for s, f in zip(steps, pool.map(one, steps)) if f]
    print(f"check: {len(steps) - len(failed)} of {len(steps)} steps ok"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f" (logs under {out})")
    return 1 if failed else 0


def run(args) -> int:
    gpus = gpu_count()
    steps = plan(args, gpus)
    if args.jobs > 1 and any(s.part != "properties" for s in steps):
        print("check: error: --jobs runs only the properties part (the other parts build or time kernels, "
              "which steps sharing the machine would disturb)", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"# {len(steps)} steps, {gpus} GPU(s), logs under {args.out}; every step's environment: "
              + " ".join(f"{k}={v}" if v is not None else f"-u {k}" for k, v in ENV.items()))
        for s in steps:
            print(f"[{s.name}] " + (f"NOT RUN ({s.missing}): " if s.missing else "") + s.shell())
        return 0
    return run_steps(steps, Path(args.out), args.step_timeout, args.jobs)


# --------------------------------------------------------------------------- #
# the commands of `build` and `install`, each run as its own process
# --------------------------------------------------------------------------- #


def _describe_gpus() -> None:
    import torch
    try:
        import triton
        tv = triton.__version__
    except Exception:
        tv = "absent"
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    print(f"torch {torch.__version__}, triton {tv}, {n} GPU(s)")
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    smi = shutil.which("nvidia-smi")
    if smi and n >= 2:   # how the GPUs connect (NVLink or PCIe) matters to the all-reduce
        r = subprocess.run([smi, "topo", "-m"], capture_output=True, text=True)
        print(r.stdout)


def op_names(namespace: str) -> list[str]:
    """The operators registered in a torch.ops namespace (dir() of the
    namespace lists only those already looked up)."""
    import torch
    return sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
                   if s.name.startswith(namespace + "::")})


def build_extension() -> int:
    """Load the native extension, JIT-building it (MINIMAX_ROCM_JIT=1) with
    the compiler's output shown; 1 with the loader's error when it fails."""
    os.environ.setdefault("MINIMAX_ROCM_JIT", "1")
    _describe_gpus()
    from .native import ext
    t0 = time.monotonic()
    m = ext.load(verbose=True)
    dt = time.monotonic() - t0
    if m is None:
        print(f"extension: FAILED after {dt:.0f} s: {ext.load_error()}")
        return 1
    print(f"extension: loaded in {dt:.0f} s; ops: {', '.join(op_names(ext.NAME))}")
    return 0


def check_prebuilt() -> int:
    """The module `setup.py build_ext` built loads with no JIT build."""
    try:
        import minimax_rocm._C  # noqa: F401
    except ImportError as e:
        print(f"prebuilt extension: minimax_rocm._C does not load: {e}")
        return 1
    from .native import ext
    ok = ext.available()
    print(f"prebuilt extension: {'loads' if ok else 'FAILED: ' + str(ext.load_error())}; "
          f"ops: {', '.join(op_names(ext.NAME))}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- #
# arguments (the `check` subcommand of python -m minimax_rocm)
# --------------------------------------------------------------------------- #


def _part(text: str) -> str:
    if text not in PARTS:
        raise argparse.ArgumentTypeError(f"unknown part {text!r}; parts: {', '.join(PARTS)}")
    return text


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="*", type=_part, metavar="PART",
                   help=f"{' | '.join(PARTS)} (default: {' '.join(DEFAULT_PARTS)})")
    p.add_argument("--op", action="append", default=[], choices=sorted(OPS),
                   help="only this op's tests, benches, sweeps, profiles and sanitizer cases (repeatable)")
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/mmr_out", help="log folder (default $OUT or %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--quick", action="store_true", help="bench: fewer cases")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="bench: also run the benches of the source tree DIR (e.g. `git archive REV`) and compare")
    p.add_argument("--examples", type=_positive, default=os.environ.get("MINIMAX_ROCM_HYPOTHESIS_EXAMPLES") or 400,
                   help="properties: Hypothesis examples per test (default %(default)s)")
    p.add_argument("--sanitize-tool", action="append", default=[], choices=SANITIZER_TOOLS,
                   help=f"sanitize: this tool only (repeatable; default all of {', '.join(SANITIZER_TOOLS)})")
    p.add_argument("--tokens", type=_positive, nargs="+", default=[],
                   help="profile: M (router_gemm) or T (the MoE, mxfp8_quant) to profile at")
    p.add_argument("--step-timeout", type=float, default=None, help="seconds one command may run")
    p.add_argument("--jobs", type=_positive, default=1,
                   help="properties: run up to this many steps at once (they share the GPU; default %(default)s)")
