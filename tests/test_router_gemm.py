"""router_gemm: the Triton kernel (interpreter on CPU, compiled on GPU) and the
native kernel (GPU) against the float64 reference; the oracle's threshold and
bias fallback."""
import importlib

import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import oracle, reference
from minimax_rocm.ops._common import LAST_BACKEND
from minimax_rocm.triton import router_gemm as tri

# fp32 math on bf16 or fp32 inputs: the reference sees the same input values,
# so only fp32 accumulation order differs: far below 1e-5 relative.
TOL = reference.REL_TOL[torch.float32]   # fp32 math: accumulation order only


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

# W rows per one-pass block (bf16 x, M <= 8) follow H: 4 / 2 rows for M2's
# 3072 (M = 1 / above), 2 / 1 for M3's 6144, 4 for 1032, whose 71 rows leave
# the last block 3 of its 4.
SHAPES = [(3072, 256), (6144, 128), (136, 24), (1032, 71)]


def built_rows(dtype, M):
    """The W rows per block the one-pass kernels are built with for this x
    (the C++ check names the same): every one runs in the tests."""
    if M > 8:
        return (2,) if M <= 16 else (4,)
    return (1, 2, 4) if dtype == torch.bfloat16 and torch.version.hip is None else (1,)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H,E", SHAPES)
def test_native_every_m(native, dtype, H, E):
    w = torch.randn(E, H, device="cuda")
    for M in range(1, 33):
        x = torch.randn(M, H, device="cuda").to(dtype)
        for rows in built_rows(dtype, M):
            out = torch.full((M, E), float("nan"), device="cuda")
            native.router_gemm(x, w, out, rows)
            err = reference.rel_error(out, reference.router_gemm(x.double(), w.double()))
            assert err < TOL, (M, rows, err)
            again = torch.full_like(out, float("nan"))
            native.router_gemm(x, w, again, rows)
            assert torch.equal(out, again), "not deterministic"


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 2, 3, 5, 8])
def test_native_does_not_touch_memory_past_out(native, M):
    H, E = 1032, 71  # four W rows per block, the last block with three
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
    for rows in built_rows(x.dtype, M):
        big = torch.full((M + 2, E), NAN, device="cuda")
        out = big[1:M + 1]
        native.router_gemm(x, w, out, rows)
        assert torch.isnan(big[0]).all() and torch.isnan(big[M + 1]).all()
        assert _err(out, x, w) < TOL, rows


@pytest.mark.gpu
def test_native_rejects_m_over_32(native):
    x = torch.randn(33, 64, device="cuda")
    w = torch.randn(8, 64, device="cuda")
    with pytest.raises(RuntimeError, match="router_gemm.*'x'"):
        native.router_gemm(x, w, torch.empty(33, 8, device="cuda"), 4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,M,rows", [(torch.bfloat16, 4, 3), (torch.bfloat16, 4, 8), (torch.float32, 4, 2),
                                          (torch.bfloat16, 12, 4), (torch.bfloat16, 20, 2), (torch.bfloat16, 1, 0)])
def test_native_rejects_rows_not_built(native, dtype, M, rows):
    x = torch.randn(M, 64, device="cuda").to(dtype)
    w = torch.randn(8, 64, device="cuda")
    with pytest.raises(RuntimeError, match="router_gemm.*'rows'"):
        native.router_gemm(x, w, torch.empty(M, 8, device="cuda"), rows)


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


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [True, False])
def test_native_back_to_back_calls_in_a_graph(native, pdl):
    """One-pass, split-K (fp32 x) and, on sm90+, tensor-core cluster (bf16
    x, M > 8) launches one after another with nothing between them (under
    PDL each starts while the previous one finishes), several in a row on
    the same split-K workspace, replayed with fresh inputs."""
    from minimax_rocm.triton import dependent_launch
    w = torch.randn(256, 3072, device="cuda")
    xs = [torch.randn(M, 3072, device="cuda").to(dt) for M, dt in
          ((1, torch.bfloat16), (32, torch.float32), (8, torch.bfloat16), (32, torch.float32),
           (17, torch.bfloat16), (24, torch.float32), (4, torch.bfloat16), (32, torch.bfloat16))]
    with dependent_launch.forced(pdl):
        outs = [mm.router_gemm(x, w) for x in xs]  # warm-up (and the split-K workspace) outside the capture
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = [mm.router_gemm(x, w) for x in xs]
    for _ in range(4):
        for x in xs:
            x.copy_(torch.randn_like(x))
        for o in outs:
            o.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        for x, o in zip(xs, outs):
            assert reference.rel_error(o, reference.router_gemm(x.double(), w.double())) < TOL, x.shape


# ----------------------------------------------------------------------------- GPU: split-K (M > 8)

SPLITK_SHAPES = [(3072, 256), (6144, 128), (1032, 72)]
NAN = float("nan")


def _splitk_workspace(native, E):
    # Partials poisoned: a slot the final sum reads but no block wrote shows up as NaN.
    n_partials, n_counters = native.router_gemm_splitk_workspace(E)
    return (torch.full((n_partials,), NAN, device="cuda"), torch.zeros(n_counters, dtype=torch.int32, device="cuda"))


def _splitk(native, x, w, partials, counters, splits=0):
    out = torch.full((x.shape[0], w.shape[0]), NAN, device="cuda")
    native.router_gemm_splitk(x, w, out, partials, counters, splits)
    return out


def _err(out, x, w):
    return reference.rel_error(out, reference.router_gemm(x.double(), w.double()))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H,E", SPLITK_SHAPES)
def test_splitk_every_m(native, dtype, H, E):
    w = torch.randn(E, H, device="cuda")
    partials, counters = _splitk_workspace(native, E)
    for M in range(9, 33):
        x = torch.randn(M, H, device="cuda").to(dtype)
        out = _splitk(native, x, w, partials, counters)
        err = _err(out, x, w)
        assert err < TOL, (M, err)
        again = _splitk(native, x, w, partials, counters)
        assert torch.equal(out, again), f"M={M}: not deterministic"
    assert not counters.any(), "counters not reset"


@pytest.mark.gpu
@pytest.mark.parametrize("H,E", [(1032, 72), (136, 24), (6144, 128), (16384, 5)])
def test_splitk_slice_counts_and_small_m(native, H, E):
    # The automatic slice count depends on the SM count; these cover one
    # slice, uneven last slices, a lone partial tile and the 64-slice limit.
    w = torch.randn(E, H, device="cuda")
    partials, counters = _splitk_workspace(native, E)
    for splits in (0, 1, 2, 5, 13, 64):
        for M in (1, 8, 9, 16, 17, 31, 32):
            x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
            err = _err(_splitk(native, x, w, partials, counters, splits), x, w)
            assert err < TOL, (splits, M, err)
    assert not counters.any()


@pytest.mark.gpu
def test_splitk_200_calls_with_changing_inputs(native):
    H, E = 3072, 256
    w = torch.randn(E, H, device="cuda")
    partials, counters = _splitk_workspace(native, E)
    for i in range(200):
        M = 9 + i % 24
        if i % 50 == 49:
            w = torch.randn(E, H, device="cuda")
        x = torch.randn(M, H, device="cuda").to(torch.bfloat16 if i % 3 else torch.float32)
        err = _err(_splitk(native, x, w, partials, counters), x, w)
        assert err < TOL, (i, M, err)
    torch.cuda.synchronize()
    assert not counters.any()


@pytest.mark.gpu
@pytest.mark.parametrize("M", [9, 16, 32])
def test_splitk_bitwise_repeatable(native, M):
    H, E = 6144, 128
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
    partials, counters = _splitk_workspace(native, E)
    first = _splitk(native, x, w, partials, counters)
    for _ in range(50):
        assert torch.equal(_splitk(native, x, w, partials, counters), first)
    # A fresh workspace gives the same bits as well.
    assert torch.equal(_splitk(native, x, w, *_splitk_workspace(native, E)), first)


@pytest.mark.gpu
def test_splitk_rejects_bad_workspace(native):
    H, E, M = 1032, 72, 16
    x = torch.randn(M, H, device="cuda")
    w = torch.randn(E, H, device="cuda")
    out = torch.empty(M, E, device="cuda")
    partials, counters = _splitk_workspace(native, E)
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'counters'"):
        native.router_gemm_splitk(x, w, out, partials, counters.float())
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'counters'"):
        native.router_gemm_splitk(x, w, out, partials, counters[:2])
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'partials'"):
        native.router_gemm_splitk(x, w, out, partials[:100], counters)
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'partials'"):
        native.router_gemm_splitk(x, w, out, partials.to(torch.float16), counters)
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'x'"):
        native.router_gemm_splitk(torch.randn(33, H, device="cuda"), w, torch.empty(33, E, device="cuda"), partials,
                                  counters)
    with pytest.raises(RuntimeError, match="router_gemm_splitk.*'x'"):
        big = torch.randn(M, 16392, device="cuda")
        native.router_gemm_splitk(big, torch.randn(E, 16392, device="cuda"), out, partials, counters)


@pytest.mark.gpu
def test_op_uses_splitk_workspace_per_stream(native):
    rg = importlib.import_module("minimax_rocm.ops.router_gemm")  # the package exports a function of that name
    H, E = 3072, 256
    w = torch.randn(E, H, device="cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    assert 20 * H >= oracle.threshold("router_splitk_min_mh", "sm90") > 16 * H
    for M in (8, 9, 16, 17, 32):
        x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
        out = rg._hip(x, w, None)
        assert _err(out, x, w) < TOL, M
    p0, c0 = rg.splitk_workspace(dev, E)
    assert rg.splitk_workspace(dev, E)[0] is p0
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        p1, _ = rg.splitk_workspace(dev, E)
        x = torch.randn(20, H, device="cuda")
        out = rg._hip(x, w, None)
    torch.cuda.synchronize()
    assert p1.data_ptr() != p0.data_ptr(), "two streams share one workspace"
    assert _err(out, x, w) < TOL
    assert not c0.any()


@pytest.mark.gpu
@pytest.mark.parametrize("M", [24, 32])   # M x H past router_splitk_min_mh: the split-K path
def test_splitk_under_graph_replay(native, M):
    # The op's native path (workspace cache included); the oracle's choice
    # depends on when the platform was first detected. fp32 x: bf16 takes
    # router_gemm_tc on sm90+.
    from minimax_rocm.ops.router_gemm import _hip
    H, E = 3072, 256
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(M, H, device="cuda")
    _hip(x, w, None)  # warm-up outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = _hip(x, w, None)
    for _ in range(5):
        x.copy_(torch.randn_like(x))
        out.fill_(NAN)
        g.replay()
        torch.cuda.synchronize()
        assert _err(out, x, w) < TOL
    assert torch.equal(_hip(x, w, None), out), "graph and eager results differ"


@pytest.mark.gpu
def test_splitk_workspace_made_inside_a_capture(native):
    # A workspace first made during a capture (no eager call with this E
    # before) is zeroed by that graph; a second graph captured on the same
    # stream, replayed before the first ever ran, must not find garbage.
    rg = importlib.import_module("minimax_rocm.ops.router_gemm")
    _hip = rg._hip
    H, E, M = 3072, 40, 24
    assert M * H >= oracle.threshold("router_splitk_min_mh", "sm90")
    dev = torch.cuda.current_device()
    rg._SPLITK_LAST_EAGER.pop((dev, E), None)
    for key in [k for k in rg._SPLITK_WORKSPACES if k[:2] == (dev, E)]:
        del rg._SPLITK_WORKSPACES[key]
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(M, H, device="cuda")
    g1, g2 = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.cuda.graph(g1):
        out1 = _hip(x, w, None)
    with torch.cuda.graph(g2):
        out2 = _hip(x, w, None)
    for g, out in ((g2, out2), (g1, out1), (g2, out2)):
        x.copy_(torch.randn_like(x))
        out.fill_(NAN)
        g.replay()
        torch.cuda.synchronize()
        assert _err(out, x, w) < TOL
    # An eager call on the capture stream (same workspace) is right too.
    cs = getattr(torch.cuda.graph, "default_capture_stream", None)
    if cs is not None:
        cs.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(cs):
            eager = _hip(x, w, None)
        torch.cuda.synchronize()
        assert _err(eager, x, w) < TOL


# ----------------------------------------------------------------------------- GPU: tensor cores + clusters (sm90+)

def _tc_or_skip(native):
    rg = importlib.import_module("minimax_rocm.ops.router_gemm")  # the package exports a function of that name
    if not rg.tc_available(torch.device("cuda", torch.cuda.current_device())):
        pytest.skip("router_gemm_tc needs an NVIDIA sm90+ GPU (thread-block clusters)")
    return native


def _tc(native, x, w, slices=0, pdl=False, steps=0):
    out = torch.full((x.shape[0], w.shape[0]), NAN, device="cuda")
    native.router_gemm_tc(x, w, out, slices, pdl, steps)
    return out


TC_SHAPES = [(3072, 256), (6144, 128), (1032, 72), (136, 24), (8, 5)]


@pytest.mark.gpu
@pytest.mark.parametrize("H,E", TC_SHAPES)
def test_tc_every_m(native, H, E):
    # H 1032: K units that end inside a block's range; 136 and 8: blocks with
    # no K at all; E 72, 24, 5: a cluster with rows past E.
    _tc_or_skip(native)
    w = torch.randn(E, H, device="cuda")
    for M in range(1, 33):
        x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
        out = _tc(native, x, w)
        err = _err(out, x, w)
        assert err < TOL, (M, err)
        assert torch.equal(_tc(native, x, w), out), f"M={M}: not deterministic"


@pytest.mark.gpu
@pytest.mark.parametrize("H,E", [(3072, 256), (6144, 128), (1032, 72), (136, 24)])
def test_tc_every_cluster_size(native, H, E):
    _tc_or_skip(native)
    w = torch.randn(E, H, device="cuda")
    # 3, 6, 12: shares of the tile that differ in size (the last block's
    # maybe empty), as the automatic choice takes for M2 (6)
    # steps 2 / 3: K units of 32 / 48 (3: an 8-byte x load per row for the
    # third MMA step, and units that end inside a block's range at H = 1032)
    for slices in (1, 2, 3, 4, 6, 8, 12, 16):
        for M in (1, 7, 8, 9, 16, 17, 32):
            x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
            for steps in (2, 3):
                err = _err(_tc(native, x, w, slices, steps=steps), x, w)
                assert err < TOL, (slices, M, steps, err)


@pytest.mark.gpu
def test_tc_products_are_exact(native):
    """Each x row one-hot with a power of two at column k: out[m, e] must be
    exactly x[m, k] * w[e, k], every bit of w's significand (full 24-bit
    ones here). Catches a dropped or mis-split bf16 term (a two-term split
    loses the last 8 bits) and any k that reaches the wrong lane or MMA."""
    _tc_or_skip(native)
    H, E = 3072, 256
    w = torch.randn(E, H, device="cuda")
    w = (w.view(torch.int32) | 0x1).view(torch.float32)  # the last significand bit set
    for M in (8, 16, 32):
        for _ in range(4):
            k = torch.randperm(H, device="cuda")[:M]
            v = torch.pow(2.0, torch.randint(-8, 9, (M,), device="cuda").float()) * (
                torch.randint(0, 2, (M,), device="cuda").float() * 2 - 1)
            x = torch.zeros(M, H, device="cuda")
            x[torch.arange(M, device="cuda"), k] = v
            x = x.to(torch.bfloat16)
            want = v.unsqueeze(1) * w[:, k].t()
            for steps in (2, 3):  # every lane position of 32- and 48-wide K units
                out = _tc(native, x, w, steps=steps)
                assert torch.equal(out, want), (M, steps, (out - want).abs().max().item())


@pytest.mark.gpu
def test_tc_weights_of_every_magnitude(native):
    # Each W row scaled by 2^-20 .. 2^20: the three bf16 terms must follow
    # the exponent. Error per expert column against sum |x| |w| (the scale
    # fp32 accumulation errors are relative to): about 1e-8 here.
    _tc_or_skip(native)
    H, E = 3072, 256
    scale = torch.pow(2.0, torch.linspace(-20, 20, E, device="cuda")).unsqueeze(1)
    w = torch.randn(E, H, device="cuda") * scale
    for M in (1, 16, 32):
        x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
        out = _tc(native, x, w).double().cpu()
        ref = reference.router_gemm(x.double(), w.double()).cpu()
        size = reference.router_gemm(x.double().abs(), w.double().abs()).cpu()
        err = ((out - ref).abs() / size).max().item()
        assert err < 1e-6, (M, err)


@pytest.mark.gpu
def test_tc_does_not_touch_memory_past_out(native):
    _tc_or_skip(native)
    H, E, M = 1032, 72, 13
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(M, H, device="cuda").to(torch.bfloat16)
    big = torch.full((M + 2, E), NAN, device="cuda")
    out = big[1:M + 1]
    native.router_gemm_tc(x, w, out, 0, False)
    assert torch.isnan(big[0]).all() and torch.isnan(big[M + 1]).all()
    assert _err(out, x, w) < TOL


@pytest.mark.gpu
def test_tc_rejects_bad_arguments(native):
    _tc_or_skip(native)
    H, E = 1032, 72
    w = torch.randn(E, H, device="cuda")
    x = torch.randn(4, H, device="cuda").to(torch.bfloat16)
    out = torch.empty(4, E, device="cuda")
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'x'.*bf16"):
        native.router_gemm_tc(x.float(), w, out, 0, False)
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'slices'"):
        native.router_gemm_tc(x, w, out, -1, False)
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'slices'"):
        native.router_gemm_tc(x, w, out, 17, False)
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'steps'"):
        native.router_gemm_tc(x, w, out, 0, False, 4)
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'x'"):
        native.router_gemm_tc(torch.randn(33, H, device="cuda").to(torch.bfloat16), w,
                              torch.empty(33, E, device="cuda"), 0, False)
    with pytest.raises(RuntimeError, match="router_gemm_tc.*'out'"):
        native.router_gemm_tc(x, w, torch.empty(4, E + 1, device="cuda"), 0, False)


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [True, False])
def test_tc_back_to_back_in_a_graph(native, pdl):
    """Cluster launches of every tile height, one after another (under PDL
    each starts while the previous one finishes), replayed with fresh inputs."""
    _tc_or_skip(native)
    H, E = 3072, 256
    w = torch.randn(E, H, device="cuda")
    xs = [torch.randn(M, H, device="cuda").to(torch.bfloat16) for M in (1, 32, 8, 32, 17, 4, 32)]
    outs = [torch.empty(x.shape[0], E, device="cuda") for x in xs]
    for x, o in zip(xs, outs):
        native.router_gemm_tc(x, w, o, 0, pdl)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for x, o in zip(xs, outs):
            native.router_gemm_tc(x, w, o, 0, pdl)
    for _ in range(4):
        for x in xs:
            x.copy_(torch.randn_like(x))
        for o in outs:
            o.fill_(NAN)
        g.replay()
        torch.cuda.synchronize()
        for x, o in zip(xs, outs):
            assert _err(o, x, w) < TOL, x.shape


@pytest.mark.gpu
def test_op_takes_tc_for_bf16_past_the_threshold(native, monkeypatch):
    rg = importlib.import_module("minimax_rocm.ops.router_gemm")
    _tc_or_skip(native)
    calls = []
    real = native.router_gemm_tc

    class Spy:
        def __getattr__(self, name):
            if name == "router_gemm_tc":
                return lambda *a: (calls.append(a[0].shape[0]), real(*a))[1]
            return getattr(native, name)

    from minimax_rocm.native import ext
    monkeypatch.setattr(ext, "ops", lambda: Spy())
    taken = []
    # M2's gate keeps the one-pass kernel to 8 rows, M3's (twice the hidden
    # size) takes tc from 5; fp32 x never does.
    plat = oracle.detect_platform()
    for E, H, ms in ((256, 3072, (8, 9, 32)), (128, 6144, (4, 5, 8))):
        w = torch.randn(E, H, device="cuda")
        for M in ms:
            for dt in (torch.bfloat16, torch.float32):
                x = torch.randn(M, H, device="cuda").to(dt)
                assert _err(rg._hip(x, w, None), x, w) < TOL
            if oracle.kernel_for(oracle.Problem("router_gemm", tokens=M, hidden=H), "hip", plat).name == "tc":
                taken.append(M)
    assert calls == taken == [9, 32, 5, 8]


def _kernel(arch, m, h, dtype="bfloat16"):
    return oracle.kernel_for(oracle.Problem("router_gemm", tokens=m, hidden=h, dtype=dtype), "hip",
                             oracle.simulated_platform(arch))


def test_tc_rule_by_rows_and_hidden_size():
    for m in range(1, 33):
        assert (_kernel("sm90", m, 3072).name == "tc") == (m >= 9), m      # MiniMax-M2's gate
        assert (_kernel("sm90", m, 6144).name == "tc") == (m >= 5), m      # MiniMax-M3's
        assert _kernel("sm90", m, 3072, "float32").name != "tc"            # tensor cores: bf16 x only
        assert _kernel("gfx942", m, 6144).name != "tc"                     # no clusters on AMD
    assert _kernel("sm90", 4, 1 << 20).name != "tc"                         # 4 rows: never tc


@pytest.mark.parametrize("arch", ["sm90", "gfx942"])
def test_splitk_and_onepass_rows_by_shape(arch):
    # without tc (fp32 x; AMD) split-K from M x H > 16 x 3072, else one-pass
    # with the W rows per block of the table's byte budget, one of the builds
    for m in range(1, 33):
        for h in (1032, 3072, 6144):
            for dt in ("bfloat16", "float32"):
                k = _kernel(arch, m, h, dt)
                if k.name == "tc":
                    continue
                assert (k.name == "splitk") == (m * h > 16 * 3072), (m, h, dt, k)
                if k.name == "onepass":
                    rows = k.arg("rows")
                    want = 4 if m > 16 else 2 if m > 8 else 1 if dt == "float32" or arch == "gfx942" else \
                        max(r for r in (1, 2, 4) if r == 1 or r * h * 4 <= (48 << 10 if m == 1 else 24 << 10))
                    assert rows == want, (m, h, dt, k)
    assert str(_kernel("sm90", 1, 3072)) == "onepass(rows=4)"   # M2's gate at M = 1: 48 KB of W per block
    assert str(_kernel("sm90", 2, 6144)) == "onepass(rows=1)"   # M3's above: 24 KB


def test_explain_names_the_router_kernel():
    rows = oracle.explain_rows([oracle.Problem("router_gemm", tokens=1, hidden=3072)],
                               oracle.simulated_platform("sm90"), check_impl=False)
    assert rows[0]["backend"] == "hip" and rows[0]["kernel"] == "onepass(rows=4)", rows
    assert "W rows" in rows[0]["kernel_reason"]
