"""Triton topk_reduce (the op's triton backend and the MoE's masked
reduction) against the float64 reference."""
import pytest
import torch

from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map
from minimax_rocm.triton.topk_reduce import topk_reduce

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(dtype, tol, weighted):
    x = torch.randn(5, 3, 40).to(dtype)
    w = torch.rand(5, 3) if weighted else None
    out = topk_reduce(x, w, out=torch.full((5, 40), float("nan"), dtype=dtype))
    assert R.rel_error(out, R.topk_reduce(x.double(), None if w is None else w.double())) < tol


def test_masked_routes_are_never_read():
    E, k = 8, 2
    emap = expert_map(E, 2, 1)                    # local: 4..7
    ids = torch.tensor([[4, 0], [1, 7], [2, 3], [5, 6]], dtype=torch.int32)
    x = torch.randn(4, k, 16)
    local = (emap[ids.long()] >= 0)
    x_poisoned = torch.where(local.unsqueeze(-1), x, torch.full_like(x, float("nan")))
    out = topk_reduce(x_poisoned, topk_ids=ids, expert_map=emap, num_local_experts=4)
    ref = (x.double() * local.unsqueeze(-1)).sum(1)
    assert R.rel_error(out, ref) < 1e-6
    assert torch.equal(out[2], torch.zeros(16))


@pytest.mark.gpu
def test_gpu_production_shape():
    x = torch.randn(1024, 4, 6144, device="cuda").to(torch.bfloat16)
    w = torch.rand(1024, 4, device="cuda")
    assert R.rel_error(topk_reduce(x, w), R.topk_reduce(x.double(), w.double())) < 1e-2
