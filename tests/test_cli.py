"""The CLI: info, explain, demo, bench (CPU smoke)."""
import json
import subprocess
import sys

import pytest

from minimax_rocm.__main__ import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends usable:" in out and "torch" in out and "versions:" in out
    for op in ("router_gemm", "fused_moe", "allreduce_rms_qk"):
        assert op in out


@pytest.mark.parametrize("arch", ["gfx942", "gfx950", "sm90", "sm100", "cpu"])
@pytest.mark.parametrize("model", ["minimax-m2", "minimax-m2.5", "minimax-m3"])
def test_explain_every_arch_and_model(capsys, arch, model):
    assert main(["explain", "--arch", arch, "--model", model, "--ep", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ops = {r["op"]: r for r in data["rows"]}
    assert "router_gemm" in ops and ("fused_moe" in ops or "fused_moe_mxfp8" in ops)
    assert ("allreduce_rms_qk" in ops) == (model != "minimax-m3")  # M3: per-head norm, no exchange
    for r in data["rows"]:
        assert r["backend"] in data["platform"]["native_ext"] * ["hip"] + ["aiter", "triton", "torch"]
        assert r["reason"]
    if arch == "cpu":
        assert all(r["backend"] == "torch" for r in data["rows"])


def test_explain_says_why_mxfp8_goes_native_or_emulated(capsys):
    main(["explain", "--arch", "gfx942", "--model", "minimax-m3", "--ep", "8", "--max-model-len", "4096",
          "--json"])
    short = {r["op"]: r for r in json.loads(capsys.readouterr().out)["rows"]}["fused_moe_mxfp8"]
    main(["explain", "--arch", "gfx942", "--model", "minimax-m3", "--ep", "8", "--max-model-len", "65536",
          "--json"])
    long = {r["op"]: r for r in json.loads(capsys.readouterr().out)["rows"]}["fused_moe_mxfp8"]
    # which path depends on what is implemented; the two contexts must never pick native both
    assert not (short["path"] == long["path"] == "native_mxfp8")
    assert long["path"] in ("emulation", "reference")


def test_explain_table_text(capsys):
    main(["explain", "--arch", "gfx942", "--model", "minimax-m2", "--tp", "4"])
    out = capsys.readouterr().out
    assert "gfx942" in out and "fallbacks" in out and "allreduce_rms_qk" in out


def test_demo_passes_on_this_machine():
    p = subprocess.run([sys.executable, "-m", "minimax_rocm", "demo", "--tokens", "24"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "demo: PASS" in p.stdout
    for op in ("router_gemm", "fused_moe", "allreduce_rms_qk", "mxfp8_quant"):
        assert op in p.stdout


def test_bench_quick_writes_json_and_plot(tmp_path, capsys):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "--op", "topk_reduce", "--quick", "--json", str(js), "--plot", str(png)]) == 0
    data = json.loads(js.read_text())
    rows = data["rows"]
    assert {r["impl"] for r in rows} >= {"torch (x*w).sum(1)"}
    assert all(r["us"] > 0 for r in rows)
    assert any(r["baseline"] for r in rows) and any(not r["baseline"] and r["ratio"] > 0 for r in rows)
    assert png.stat().st_size > 1000
    assert "x vs base" in capsys.readouterr().out


# Every bad argument is a usage error: exit 2, the argument named, no traceback.
BAD_ARGS = [
    (["explain", "--arch", "gfx999"], "--arch"),
    (["explain", "--arch", "sm_12"], "--arch"),
    (["explain", "--ep", "0"], "--ep"),
    (["explain", "--ep", "-1"], "--ep"),
    (["explain", "--ep", "257"], "--ep"),          # more ranks than M2's 256 experts
    (["explain", "--model", "minimax-m3", "--ep", "129"], "--ep"),
    (["explain", "--ep", "two"], "--ep"),
    (["explain", "--tp", "0"], "--tp"),
    (["explain", "--max-model-len", "-5"], "--max-model-len"),
    (["explain", "--max-model-len", "0"], "--max-model-len"),
    (["explain", "--tokens", "-3"], "--tokens"),
    (["explain", "--tokens", "0"], "--tokens"),
    (["explain", "--model", "minimax-m9"], "--model"),
    (["explain", "--weights", "fp4"], "--weights"),
    (["demo", "--tokens", "0"], "--tokens"),
    (["demo", "--ep", "0"], "--ep"),
    (["demo", "--tp", "-2"], "--tp"),
    (["demo", "--tp", "3"], "--ep/--tp"),          # does not split the demo's heads (checked before spawning)
    (["demo", "--ep", "2", "--tp", "3"], "--ep/--tp"),
    (["demo", "--device", "tpu"], "--device"),
    (["bench", "--op", "nope", "--quick"], "--op"),
    (["bench", "--op", "topk_reduce", "--quick", "--json", "/no/such/dir/b.json"], "--json"),
    (["bench", "--op", "topk_reduce", "--quick", "--plot", "/no/such/dir/b.png"], "--plot"),
]


@pytest.mark.parametrize("argv,arg", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_argument_is_a_usage_error(capsys, argv, arg):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {arg}" in err and "usage:" in err and "Traceback" not in err


def test_cuda_device_without_one_is_a_usage_error(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "cuda"])
    assert exc.value.code == 2 and "argument --device" in capsys.readouterr().err


@pytest.mark.parametrize("env", [{"MINIMAX_ROCM_ARCH": "gfx999"}, {"MINIMAX_ROCM_FORCE": "garbage"},
                                 {"MINIMAX_ROCM_FORCE_TOPK_REDUCE": "cuda"}])
def test_bad_environment_is_a_usage_error(capsys, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for argv in (["info"], ["explain"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "environment" in err and next(iter(env.values())) in err


def test_usage_error_from_a_shell_exits_2_without_traceback():
    for argv, arg in ((["explain", "--arch", "gfx999"], "--arch"), (["explain", "--ep", "-1"], "--ep")):
        p = subprocess.run([sys.executable, "-m", "minimax_rocm", *argv], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 2, p.stdout + p.stderr
        assert f"argument {arg}" in p.stderr and "Traceback" not in p.stderr and p.stdout == ""


def test_explain_api_rejects_bad_values():
    from minimax_rocm.cli import explain
    for kw in (dict(ep=0), dict(tp=-1), dict(max_model_len=0), dict(tokens=-3), dict(ep=512),
               dict(model="nope"), dict(weights="fp4")):
        with pytest.raises(ValueError, match=next(iter(kw))):
            explain(arch="gfx942", **kw)


def test_explain_shapes_come_from_the_model_presets():
    from minimax_rocm.cli import explain_problems
    from minimax_rocm.models.config import EXPERT_WEIGHTS, preset
    for model, weights in EXPERT_WEIGHTS.items():
        cfg = preset(model)
        probs = {p.op: p for p in explain_problems(model, ep=3, tp=2, max_model_len=4096, tokens=16)}
        moe = probs["fused_moe_mxfp8" if weights == "mxfp8" else "fused_moe"]
        assert (moe.hidden, moe.num_experts, moe.top_k, moe.weight_format) == \
            (cfg.hidden_size, cfg.num_experts, cfg.top_k, weights)
        # 3 does not divide the experts: the busiest rank's share
        assert moe.num_local_experts == -(-cfg.num_experts // 3) == cfg.moe_rank_shape(ep=3).num_local_experts
        assert ("allreduce_rms_qk" in probs) == (cfg.qk_norm == "full")
        assert ("swiglu_oai" in probs) == (cfg.activation == "swiglu_oai")


def test_moe_rank_shape():
    from minimax_rocm.models.config import ConfigError, preset
    m3 = preset("minimax-m3")
    assert m3.moe_rank_shape(ep=8)[:5] == (6144, 3072, 128, 16, 4)
    assert m3.moe_rank_shape(tp=8)[:5] == (6144, 384, 128, 128, 4)
    assert preset("tiny-m2").moe_rank_shape(ep=4).num_local_experts == 3       # 10 experts: 3, 3, 2, 2
    for bad in (dict(ep=0), dict(ep=129), dict(tp=0), dict(tp=5)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            m3.moe_rank_shape(**bad)


def test_explain_names_the_moe_tiles():
    # the Triton MoE rows name the tile table's choice: 16-row blocks at
    # decode, the prefill regime's 128-row tiles on gfx942 at a prefill step
    import json
    from minimax_rocm import cli, oracle
    def moe_row(**kw):
        rows = json.loads(cli.explain(as_json=True, model="minimax-m3", ep=8, weights="bf16", **kw))["rows"]
        return next(r for r in rows if r["op"] == "fused_moe")
    decode = moe_row(arch="sm90", tokens=16)
    assert decode["backend"] == "triton" and decode["kernel"].startswith("BM=16 "), decode
    # (explain picks AITER there; the Triton fallback's tiles)
    row = dict(op="fused_moe", backend="triton", path="generic")
    prefill = cli.moe_kernel(oracle.simulated_platform("gfx942"), row, "minimax-m3", 8, 1, 4096)
    assert prefill.startswith("BM=128 g1 64x64/2st"), prefill
