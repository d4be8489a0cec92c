"""The demo (minimax_rocm.models.demo): its two modes, in-process (every rank
simulated) and one process per rank, share one configuration, tolerance
table and report."""
import pytest

from minimax_rocm.models import demo
from minimax_rocm.models.demo import IN_PROCESS_ROWS, MULTI_PROCESS_ROWS, TOL, run_demo


def test_every_row_of_both_modes_has_one_tolerance():
    assert set(IN_PROCESS_ROWS) | set(MULTI_PROCESS_ROWS) == set(TOL)
    assert len(set(IN_PROCESS_ROWS)) == len(IN_PROCESS_ROWS) and len(set(MULTI_PROCESS_ROWS)) == len(MULTI_PROCESS_ROWS)


def test_in_process_mode_simulates_every_rank(capsys):
    res = run_demo(device="cpu", tokens=16, seed=1)
    assert res and list(res) == list(IN_PROCESS_ROWS), res.rows
    out = capsys.readouterr().out
    assert f"every rank simulated, EP{demo.SIM_EP} x TP{demo.SIM_TP}, 16 tokens" in out
    assert "(seed 1," in out and out.rstrip().endswith("demo: PASS")
    for name in IN_PROCESS_ROWS:
        assert name in out


def test_a_row_over_its_tolerance_fails_the_demo(monkeypatch, capsys):
    monkeypatch.setitem(TOL, "swiglu_oai", 0.0)
    res = run_demo(device="cpu", tokens=8, seed=2)
    assert not res and res["swiglu_oai"] is False and res["router_gemm"] is True
    assert capsys.readouterr().out.rstrip().endswith("demo: FAIL")


def test_multi_process_mode_ep2_tp2_cpu(capsys):
    res = run_demo(ep=2, tp=2, device="cpu", tokens=16)
    assert res and list(res) == list(MULTI_PROCESS_ROWS), res.rows
    out = capsys.readouterr().out
    assert "2 ranks as processes (gloo on the CPU), EP2 x TP2" in out and "demo: PASS" in out
    assert "allreduce_rms_qk M2 (TP)" in out


def test_rejects_layouts_it_cannot_split():
    with pytest.raises(ValueError, match="smaller must divide"):
        run_demo(ep=3, tp=2, device="cpu")
    with pytest.raises(ValueError, match="TP3 does not split"):
        run_demo(ep=3, tp=3, device="cpu")
    with pytest.raises(ValueError, match="EP32 exceeds"):
        run_demo(ep=32, tp=1, device="cpu")


@pytest.mark.multigpu
def test_multi_process_mode_ep2_tp2_gpu():
    res = run_demo(ep=2, tp=2, device="cuda", tokens=32)
    assert res, res.rows
