"""The committed records of what vLLM's layers handed the adapters (CPU
engine runs and M3 seam runs, tests/vllm_engine) replay against the float64
reference here, without vLLM; the GPU machine replays the same files."""
from pathlib import Path

import pytest
import torch

from minimax_rocm.integrations.vllm import replay

RECORDS = sorted((Path(__file__).parent / "vllm_engine" / "records").glob("*.jsonl"))


def test_records_cover_every_seam():
    seams = {e["seam"] for r in RECORDS for e in replay.load(str(r))}
    assert seams == {"gate", "qk_norm", "moe_bf16", "moe_mxfp8"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.stem)
def test_replay_on_cpu(record):
    outcomes = replay.replay(str(record), "cpu", seed=int(torch.randint(0, 1 << 30, ()).item()))
    assert outcomes and all(o.ok for o in outcomes), [o.line() for o in outcomes]


def test_replay_fails_a_wrong_adapter(monkeypatch):
    """The comparison can fail: an adapter that drops the expert map."""
    from minimax_rocm.integrations.vllm import adapters
    real = adapters.fused_moe
    monkeypatch.setattr(adapters, "fused_moe", lambda x, w13, w2, tw, ids, emap, *a: real(x, w13, w2, tw, ids, None,
                                                                                         *a) * 0.5)
    outcomes = [o for o in replay.replay(str(RECORDS[0]), "cpu") if o.seam == "moe_bf16"]
    assert outcomes and not any(o.ok for o in outcomes)


@pytest.mark.gpu
@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.stem)
def test_replay_on_gpu_eager_and_in_cuda_graphs(record):
    for graph in (False, True):
        outcomes = replay.replay(str(record), "cuda", graph=graph)
        assert outcomes and all(o.ok for o in outcomes), [o.line() for o in outcomes]
