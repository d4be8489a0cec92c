"""MXFP8 quantise / dequantise kernels, byte for byte against the reference
(OCP rules), both fp8 flavours; under the interpreter on the CPU, compiled on
the GPU (where the op's dispatch is checked too)."""
import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import reference as R
from minimax_rocm.ops._common import LAST_BACKEND
from minimax_rocm.triton import mxfp8_quant as tri

FLAVOURS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]


def _hard_input(rows, K, device, dtype=torch.bfloat16, subnormals=True):
    """Random magnitudes from 1e-38 to 1e30 per row, plus the special blocks:
    all zero, a NaN, an Inf, subnormal-only, values that saturate.

    subnormals=False keeps inputs normal: Triton's interpreter (3.9, CPU)
    mis-converts subnormal bf16 loads, so the CPU tests leave them to the GPU."""
    x = torch.randn(rows, K) * torch.logspace(-38 if subnormals else -30, 30, rows)[:, None]
    x[0, :32] = 0
    x[1 % rows, 40] = float("nan")
    x[2 % rows, 70] = float("-inf")
    if subnormals:
        x[3 % rows, 64:96] = 1e-39
    x[4 % rows, 5 % K] = -3.0e4
    return x.to(dtype).to(device)


ON_GPU = torch.cuda.is_available()


def _same_bytes(a, b):
    return torch.equal(a.view(torch.uint8).cpu(), b.view(torch.uint8).cpu())


@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_quant_is_bit_exact(device, fp8, dtype):
    x = _hard_input(12, 256, device, dtype, subnormals=ON_GPU or dtype == torch.float32)
    q, s = tri.mxfp8_quant(x, fp8)
    rq, rs = R.mxfp8_quant(x.cpu(), fp8)
    assert q.dtype == fp8 and s.dtype == torch.uint8 and s.shape == (12, 8)
    assert torch.equal(s.cpu(), rs), (s, rs)
    assert _same_bytes(q, rq)


@pytest.mark.parametrize("fp8", FLAVOURS)
def test_triton_dequant_is_exact(device, fp8):
    x = _hard_input(6, 128, device)
    rq, rs = R.mxfp8_quant(x.cpu(), fp8)
    out = tri.mxfp8_dequant(rq.to(device), rs.to(device), torch.float32)
    ref = R.mxfp8_dequant(rq, rs, torch.float32)
    assert torch.equal(torch.nan_to_num(out.cpu(), 7.0), torch.nan_to_num(ref, 7.0))


def test_odd_row_counts_and_leading_dims(device):
    x = torch.randn(3, 5, 96, device=device).to(torch.bfloat16)
    q, s = tri.mxfp8_quant(x, torch.float8_e4m3fn)
    rq, rs = R.mxfp8_quant(x.cpu(), torch.float8_e4m3fn)
    assert q.shape == (3, 5, 96) and s.shape == (3, 5, 3)
    assert torch.equal(s.cpu(), rs) and _same_bytes(q, rq)


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", ["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("shape", [(1, 32), (216, 6144), (1024, 3072), (7, 96)])
def test_op_on_gpu_is_bit_exact(fp8, shape):
    x = _hard_input(*shape, "cuda") if shape[0] >= 5 else torch.randn(*shape, device="cuda").to(torch.bfloat16)
    q, s = mm.mxfp8_quant(x, fp8)
    assert LAST_BACKEND["mxfp8_quant"] in ("hip", "triton")
    rq, rs = R.mxfp8_quant(x.cpu(), getattr(torch, f"float8_{fp8}"))
    assert torch.equal(s.cpu(), rs) and _same_bytes(q, rq)
    back = mm.mxfp8_dequant(q, s, torch.float32)
    assert torch.equal(torch.nan_to_num(back.cpu(), 7.0), torch.nan_to_num(R.mxfp8_dequant(rq, rs), 7.0))
