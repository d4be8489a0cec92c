"""The native (hip/ -> translated CUDA) topk_reduce on a GPU vs the float64
reference."""
import pytest
import torch

from minimax_rocm import oracle, reference

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("T", [1, 7, 64, 1000])
@pytest.mark.parametrize("k", [1, 4, 8])
@pytest.mark.parametrize("H", [8, 3072, 6144])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(native, T, k, H, weighted):
    x = torch.randn(T, k, H, device="cuda").to(torch.bfloat16)
    w = torch.rand(T, k, device="cuda") if weighted else None
    out = torch.full((T, H), float("nan"), device="cuda", dtype=torch.bfloat16)
    native.topk_reduce(x, w, out)
    torch.cuda.synchronize()
    ref = reference.topk_reduce(x.double(), None if w is None else w.double())
    assert not torch.isnan(out).any(), "unwritten output elements"
    assert reference.rel_error(out, ref) < 1e-2


def test_oracle_picks_native_and_op_matches(native):
    assert oracle.detect_platform(refresh=True).native_ext
    import minimax_rocm as mm
    from minimax_rocm.ops._common import LAST_BACKEND
    x = torch.randn(33, 4, 256, device="cuda").to(torch.bfloat16)
    w = torch.rand(33, 4, device="cuda")
    out = mm.topk_reduce(x, w)
    assert LAST_BACKEND["topk_reduce"] == "hip"
    assert reference.rel_error(out, reference.topk_reduce(x.double(), w.double())) < 1e-2


def test_native_rejects_bad_input(native):
    x = torch.randn(4, 2, 12, device="cuda").to(torch.bfloat16)  # H not a multiple of 8
    with pytest.raises(RuntimeError, match="topk_reduce.*'x'"):
        native.topk_reduce(x, None, torch.empty(4, 12, device="cuda", dtype=torch.bfloat16))
