"""Triton gated activations (SwiGLU-OAI, silu-and-mul; split and interleaved
gate/up layouts) against the float64 reference; the row-count variant the
unfused MoE uses leaves rows past the device count untouched, and the
block-masked variant rows of remote experts' blocks."""
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


@pytest.mark.parametrize("with_map", [True, False])
def test_blocks_of_remote_experts_are_skipped(with_map):
    # MoE-aligned rows in blocks of 4: the blocks' (global) expert ids map to
    # local 0, remote, local 1, out of range. Skipped rows are neither read
    # (their NaN inputs reach nothing) nor written (out keeps its sentinel).
    x = _x((16, 32), torch.float32)
    block_ids = torch.tensor([2, 0, 3, 9], dtype=torch.int32)
    if with_map:
        emap = torch.tensor([-1, -1, 0, 1], dtype=torch.int32)          # 4 global experts, 2 local
    else:
        emap, block_ids = None, torch.tensor([0, -1, 1, 5], dtype=torch.int32)
    x[4:8] = float("nan")
    x[12:16] = float("nan")
    out = torch.full((16, 16), 123.0)
    ew.glu(x, "swiglu_oai", blocks=(block_ids, 4, emap, 2), out=out)
    for rows in (slice(0, 4), slice(8, 12)):
        assert R.rel_error(out[rows], R.swiglu_oai(x[rows].double(), 1.702, 7.0, "split")) < 1e-6
    for rows in (slice(4, 8), slice(12, 16)):
        assert (out[rows] == 123.0).all()


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


# --------------------------------------------------------------------------- #
# NaN in the gate or up half survives SwiGLU-OAI's clamps (torch.clamp keeps
# NaN; Triton's default min/max would return the limit instead)
# --------------------------------------------------------------------------- #

NAN = float("nan")


@pytest.mark.parametrize("half", ["gate", "up"])
@pytest.mark.parametrize("layout", ["split", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_in_either_half_stays_nan(half, layout, dtype):
    I = 24
    x = _x((5, 2 * I), torch.float32)
    cols = torch.randperm(I)[:3]
    gate_cols, up_cols = (cols, cols + I) if layout == "split" else (2 * cols, 2 * cols + 1)
    rows = torch.tensor([0, 2, 4])
    x[rows[:, None], (gate_cols if half == "gate" else up_cols)[None, :]] = NAN
    # the other half: inside and beyond the limits, so every clamp branch meets a NaN
    other = up_cols if half == "gate" else gate_cols
    x[rows[:, None], other[None, :]] = torch.tensor([-50.0, 0.5, 50.0])
    x = x.to(dtype)
    ref = R.swiglu_oai(x.double(), layout=layout)
    out = ew.swiglu_oai(x, layout=layout)
    want_nan = torch.zeros(5, I, dtype=torch.bool)
    want_nan[rows[:, None], cols[None, :]] = True
    assert torch.equal(torch.isnan(ref), want_nan)            # the reference propagates...
    assert torch.equal(torch.isnan(out), want_nan)            # ...and so must the kernel
    assert R.rel_error(out[~want_nan], ref[~want_nan]) < (1e-6 if dtype == torch.float32 else 1e-2)


def _moe_with_nan_rows(half, layout, E=4, T=6, H=64, I=32, k=2, dtype=torch.float32):
    """MoE inputs where expert 1's GEMM1 gate (or up) row j is NaN: every
    token routed to expert 1 must come out NaN (GEMM2 sums over all of I)."""
    hidden = torch.randn(T, H).to(dtype)
    w13 = (torch.randn(E, 2 * I, H) * 3 / H ** 0.5)
    w2 = torch.randn(E, H, I) / I ** 0.5
    j = 5
    row = (j if half == "gate" else j + I) if layout == "split" else (2 * j if half == "gate" else 2 * j + 1)
    w13[1, row] = NAN
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(torch.int32)
    ids[0, 0], ids[1, 1] = 1, 1                        # at least two tokens meet expert 1
    ids[0, 1] = 0 if ids[0, 1] == 1 else ids[0, 1]
    ids[1, 0] = 2 if ids[1, 0] == 1 else ids[1, 0]
    tw = torch.rand(T, k)
    return hidden, w13.to(dtype), w2.to(dtype), tw, ids


def _assert_nan_rows(out, ref, ids):
    hit = (ids == 1).any(dim=1)
    assert bool(torch.isnan(ref[hit]).all()) and not bool(torch.isnan(ref[~hit]).any())
    assert bool(torch.isnan(out[hit]).all()), "a NaN route came out finite"
    assert not bool(torch.isnan(out[~hit]).any())
    return hit


@pytest.mark.parametrize("fuse", [True, False], ids=["fused act", "act kernel"])
@pytest.mark.parametrize("half", ["gate", "up"])
@pytest.mark.parametrize("layout", ["split", "interleaved"])
def test_nan_through_bf16_moe_gemm1(fuse, half, layout):
    from minimax_rocm.triton import fused_moe as tri
    hidden, w13, w2, tw, ids = _moe_with_nan_rows(half, layout)
    out = tri.fused_moe(hidden, w13, w2, tw, ids, None, "swiglu_oai", layout, fuse_act=fuse)
    ref = R.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ids, None, "swiglu_oai", layout)
    hit = _assert_nan_rows(out, ref, ids)
    assert R.rel_error(out[~hit], ref[~hit]) < 1e-5


@pytest.mark.parametrize("mode", ["fp8", "upcast+act kernel", "upcast+fused act"])
@pytest.mark.parametrize("half", ["gate", "up"])
@pytest.mark.parametrize("layout", ["split", "interleaved"])
def test_nan_through_mxfp8_moe_gemm1(mode, half, layout):
    from minimax_rocm.triton import fused_moe_mxfp8 as tri
    hidden, w13, w2, tw, ids = _moe_with_nan_rows(half, layout, dtype=torch.bfloat16)
    # the NaN row quantises as the quantiser writes NaN: NaN bytes, NaN scale
    w13_q, w13_s = R.mxfp8_quant(w13.float(), torch.float8_e4m3fn)
    w2_q, w2_s = R.mxfp8_quant(w2.float(), torch.float8_e4m3fn)
    args = (hidden, w13_q, w13_s, w2_q, w2_s, tw, ids)
    kw = dict(dot="upcast", fuse_act=mode == "upcast+fused act") if mode.startswith("upcast") else dict(dot=mode)
    out = tri.fused_moe_mxfp8(*args, None, "swiglu_oai", layout, **kw)
    ref = R.fused_moe_mxfp8(*args, None, "swiglu_oai", layout)
    hit = _assert_nan_rows(out, ref, ids)
    assert R.rel_error(out[~hit], ref[~hit]) < 1.2e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_huge_negative_gate_gives_zero_not_nan(dtype):
    # (u + 1) * g overflows fp32 for g near the dtype's largest value; the
    # bounded g * sigmoid(alpha g) is taken first, so the product is -0 / 0
    big = float(torch.finfo(dtype).max)
    x = torch.tensor([[-big, -1e30, -100.0, 0.27, 5.0, -3.0]], dtype=dtype)
    ref = R.swiglu_oai(x.double())
    assert torch.isfinite(ref).all() and (ref[0, :2] == 0).all()
    for out in (ew.swiglu_oai(x), R.swiglu_oai(x)):          # Triton; the reference's fp32 mode (torch backend)
        assert torch.isfinite(out).all(), out
        assert (out.double() - ref).abs().max() < 1e-30
