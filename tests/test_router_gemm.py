"""router_gemm: the Triton kernel (interpreter on CPU, compiled on GPU) and the
native kernel (GPU) against the float64 reference; the oracle's threshold and
bias fallback."""
import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import oracle, reference
from minimax_rocm.ops._common import LAST_BACKEND
from minimax_rocm.triton import router_gemm as tri

# fp32 math on bf16 or fp32 inputs: the reference sees the same input values,
# so only fp32 accumulation order differs: far below 1e-5 relative.
TOL = 1e-5


@pytest.mark.parametrize("M,H,E,dtype", [(1, 64, 8, torch.bfloat16), (3, 136, 24, torch.float32),
                                         (17, 256, 40, torch.bfloat16), (32, 512, 64, torch.float32)])
def test_triton_kernel_matches_float64(device, M, H, E, dtype):
    x = torch.randn(M, H, device=device).to(dtype)
    w = torch.randn(E, H, device=device)
    for splits in (1, 3):
        out = tri.router_gemm(x, w, splits=splits)
        assert reference.rel_error(out, reference.router_gemm(x.double(), w.double())) < TOL


def test_oracle_threshold_and_bias():
    plat = oracle.simulated_platform("gfx942")
    limit = int(oracle.threshold("router_native_max_m", "gfx942"))
    for m, want in ((1, "hip"), (limit, "hip"), (limit + 1, "torch")):
        d = oracle.decide(oracle.Problem("router_gemm", tokens=m, hidden=3072, num_experts=256), plat)
        assert d.chosen.backend == want, (m, d)
    biased = oracle.decide(oracle.Problem("router_gemm", tokens=1, hidden=3072, has_bias=True), plat)
    assert biased.chosen.backend == "torch"
    odd = oracle.decide(oracle.Problem("router_gemm", tokens=1, hidden=3070), plat)
    assert odd.chosen.backend == "torch"


def test_bias_is_applied_on_the_fallback():
    x, w, b = torch.randn(4, 64), torch.randn(8, 64), torch.randn(8)
    out = mm.router_gemm(x, w, b)
    assert reference.rel_error(out, reference.router_gemm(x.double(), w.double(), b.double())) < TOL


def test_non_contiguous_x_is_rejected():
    x = torch.randn(64, 4).t()
    with pytest.raises(ValueError, match="router_gemm.*'x'.*contiguous"):
        mm.router_gemm(x, torch.randn(8, 64))


# ----------------------------------------------------------------------------- GPU

SHAPES = [(3072, 256), (6144, 128), (136, 24)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H,E", SHAPES)
def test_native_every_m(native, dtype, H, E):
    w = torch.randn(E, H, device="cuda")
    for M in range(1, 33):
        x = torch.randn(M, H, device="cuda").to(dtype)
        out = torch.full((M, E), float("nan"), device="cuda")
        native.router_gemm(x, w, out)
        err = reference.rel_error(out, reference.router_gemm(x.double(), w.double()))
        assert err < TOL, (M, err)
        again = torch.full_like(out, float("nan"))
        native.router_gemm(x, w, again)
        assert torch.equal(out, again), "not deterministic"


@pytest.mark.gpu
def test_native_rejects_m_over_32(native):
    x = torch.randn(33, 64, device="cuda")
    w = torch.randn(8, 64, device="cuda")
    with pytest.raises(RuntimeError, match="router_gemm.*'x'"):
        native.router_gemm(x, w, torch.empty(33, 8, device="cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 8, 32, 33, 64])
def test_op_dispatch_on_gpu(M):
    x = torch.randn(M, 3072, device="cuda").to(torch.bfloat16)
    w = torch.randn(256, 3072, device="cuda")
    out = mm.router_gemm(x, w)
    assert reference.rel_error(out, reference.router_gemm(x.double(), w.double())) < TOL
    small = M <= oracle.threshold("router_native_max_m", oracle.detect_platform().arch)
    assert (LAST_BACKEND["router_gemm"] in ("hip", "triton")) == small, LAST_BACKEND["router_gemm"]


@pytest.mark.gpu
def test_native_under_graph_replay(native):
    w = torch.randn(256, 3072, device="cuda")
    x = torch.randn(8, 3072, device="cuda").to(torch.bfloat16)
    mm.router_gemm(x, w)  # warm-up outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = mm.router_gemm(x, w)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        g.replay()
        torch.cuda.synchronize()
        assert reference.rel_error(out, reference.router_gemm(x.double(), w.double())) < TOL
