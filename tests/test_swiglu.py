"""Triton gated activations (SwiGLU-OAI, silu-and-mul; split and interleaved
gate/up layouts) against the float64 reference; the row-count variant the
unfused MoE uses leaves rows past the device count untouched."""
import pytest
import torch

from minimax_rocm import reference as R
from minimax_rocm.triton import elementwise as ew

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)


def _x(shape, dtype, device="cpu"):
    # scale 4: |gate| and |up| exceed the limit 7 often, so the clamps matter
    return (torch.randn(shape, device=device) * 4).to(dtype)


@pytest.mark.parametrize("layout", ["split", "interleaved"])
@pytest.mark.parametrize("act", ["swiglu_oai", "silu"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_matches_reference(layout, act, dtype, tol):
    x = _x((3, 5, 2 * 40), dtype)      # I = 40: not a power of two (masked tail)
    out = ew.glu(x, act, layout, alpha=1.702, limit=7.0)
    ref = R.activation(x.double(), act, layout, 1.702, 7.0)
    assert out.shape == (3, 5, 40) and out.dtype == dtype
    assert R.rel_error(out, ref) < tol


def test_swiglu_parameters_are_used():
    x = _x((4, 64), torch.float32)
    for alpha, limit in ((1.0, 3.0), (2.5, 100.0)):
        out = ew.swiglu_oai(x, alpha, limit, "split")
        assert R.rel_error(out, R.swiglu_oai(x.double(), alpha, limit, "split")) < 1e-6


def test_row_count_from_device_limits_the_rows():
    x = _x((7, 32), torch.float32)
    out = torch.full((7, 16), float("nan"))
    ew.glu(x, "silu", row_count=torch.tensor([4], dtype=torch.int32), out=out)
    assert R.rel_error(out[:4], R.silu_and_mul(x[:4].double())) < 1e-6
    assert torch.isnan(out[4:]).all()


def test_empty():
    assert ew.swiglu_oai(torch.zeros(0, 8)).shape == (0, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["split", "interleaved"])
def test_gpu_op_dispatch_and_production_width(layout):
    import minimax_rocm as mm
    from minimax_rocm.ops._common import LAST_BACKEND
    x = _x((216, 2 * 3072), torch.bfloat16, "cuda")
    out = mm.swiglu_oai(x, layout=layout)
    assert LAST_BACKEND["swiglu_oai"] == "triton"
    assert R.rel_error(out, R.swiglu_oai(x.double(), layout=layout)) < 1e-2
