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


# --------------------------------------------------------------------------- #
# native (hip/mxfp8_quant.hip; translated CUDA on NVIDIA)
# --------------------------------------------------------------------------- #

def _every_bf16(device, shuffle):
    """All 65536 bf16 bit patterns (NaNs, infinities, subnormals, both zeros)
    as 2048 blocks: in order, blocks are runs of neighbouring patterns (most
    finite, many subnormal); shuffled, most blocks mix magnitudes."""
    bits = torch.arange(65536, dtype=torch.int32)
    if shuffle:
        bits = bits[torch.randperm(65536)]
    bits = torch.where(bits >= 32768, bits - 65536, bits).to(torch.int16)
    return bits.view(torch.bfloat16).reshape(64, 1024).to(device)


def _native_quant(native, x, fp8):
    """The kernel run twice over outputs poisoned with different bytes: an
    element it did not write cannot match the reference both times."""
    outs = []
    for poison in (0x5A, 0xA5):
        q = torch.full(x.shape, poison, dtype=torch.uint8, device=x.device)
        s = torch.full((*x.shape[:-1], x.shape[-1] // 32), poison, dtype=torch.uint8, device=x.device)
        native.mxfp8_quant(x, fp8 == torch.float8_e4m3fnuz, q, s)
        outs.append((q.cpu(), s.cpu()))
    return outs


def _check_native(native, x, fp8):
    rq, rs = R.mxfp8_quant(x.cpu(), fp8)
    for q, s in _native_quant(native, x, fp8):
        bad_s = (s != rs).nonzero()
        assert bad_s.numel() == 0, f"{bad_s.shape[0]} scale bytes differ, first at {bad_s[0].tolist()}"
        bad_q = (q != rq.view(torch.uint8)).nonzero()
        assert bad_q.numel() == 0, (f"{bad_q.shape[0]} fp8 bytes differ, first at {bad_q[0].tolist()}: "
                                    f"{q[tuple(bad_q[0])]:#x} vs {rq.view(torch.uint8)[tuple(bad_q[0])]:#x}")


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (3, 5, 96), (216, 6144), (1000, 3072)])
def test_native_is_bit_exact(native, fp8, shape):
    torch.manual_seed(sum(shape))
    rows = 1
    for d in shape[:-1]:
        rows *= d
    x = _hard_input(rows, shape[-1], "cuda") if rows >= 5 else torch.randn(rows, shape[-1], device="cuda")
    _check_native(native, x.to(torch.bfloat16).reshape(shape), fp8)


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_native_every_bf16_pattern(native, fp8, shuffle):
    _check_native(native, _every_bf16("cuda", shuffle), fp8)


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", FLAVOURS)
def test_native_unaligned_input(native, fp8):
    # A contiguous view starting 2 bytes into its storage: the scalar-load path.
    buf = _hard_input(33, 256, "cuda").reshape(-1)
    x = buf[1:1 + 32 * 256].reshape(32, 256)
    assert x.data_ptr() % 16 != 0
    _check_native(native, x, fp8)


@pytest.mark.gpu
def test_native_rejects_bad_input(native):
    x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    q = torch.empty(4, 64, dtype=torch.uint8, device="cuda")
    s = torch.empty(4, 2, dtype=torch.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="mxfp8_quant.*'x'"):
        native.mxfp8_quant(x.float(), False, q, s)
    with pytest.raises(RuntimeError, match="mxfp8_quant.*'x'"):
        native.mxfp8_quant(torch.randn(4, 48, device="cuda", dtype=torch.bfloat16), False, q, s)
    with pytest.raises(RuntimeError, match="mxfp8_quant.*'scales'"):
        native.mxfp8_quant(x, False, q, s[:, :1].contiguous())


@pytest.mark.gpu
def test_oracle_picks_native_for_bf16_only(native):
    from minimax_rocm import oracle
    assert oracle.detect_platform(refresh=True).native_ext
    x = _hard_input(64, 512, "cuda")
    for fp8 in ("e4m3fn", "e4m3fnuz"):
        q, s = mm.mxfp8_quant(x, fp8)
        assert LAST_BACKEND["mxfp8_quant"] == "hip"
        rq, rs = R.mxfp8_quant(x.cpu(), getattr(torch, f"float8_{fp8}"))
        assert torch.equal(s.cpu(), rs) and _same_bytes(q, rq)
    mm.mxfp8_quant(x.float(), "e4m3fn")
    assert LAST_BACKEND["mxfp8_quant"] == "triton"


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_triton_every_bf16_pattern(fp8, shuffle):
    # On NVIDIA sm89+ e4m3fn takes the hardware conversion (HW_CVT): same bytes.
    x = _every_bf16("cuda", shuffle)
    q, s = tri.mxfp8_quant(x, fp8)
    rq, rs = R.mxfp8_quant(x.cpu(), fp8)
    assert torch.equal(s.cpu(), rs)
    bad = (q.view(torch.uint8).cpu() != rq.view(torch.uint8)).nonzero()
    assert bad.numel() == 0, f"{bad.shape[0]} fp8 bytes differ, first at {bad[0].tolist()}"
    img = tri.mxfp8_round(x, fp8).float().cpu()
    ref = R.mxfp8_dequant(rq, rs).float()
    # the BF16 image is exact where it lies in BF16's normal range (mxfp8_round)
    normal = torch.isfinite(ref) & ((ref.abs() >= 2.0 ** -126) | (ref == 0))
    assert torch.equal(img[normal], ref[normal].to(torch.bfloat16).float())
