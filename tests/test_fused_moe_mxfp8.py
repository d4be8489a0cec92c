"""Native MXFP8 MoE (minimax_rocm/triton/fused_moe_mxfp8.py) and the
fused_moe_mxfp8 op's three paths against the float64 references.

Tolerances (relative Frobenius error):
  * native vs reference.fused_moe_mxfp8(quantize_activations=True), which
    quantises activations at the same two points: what is left is fp32
    accumulation order (~1e-6), the rare activation element whose fp8 rounding
    flips because GEMM1 was summed in fp32 rather than float64 (one fp8 step
    of one element), and the output's rounding to bf16 (<= 2^-9 per element,
    ~1.5e-3 in norm), measured 1.5-2.3e-3. Rarely GEMM1's fp32 sum of a
    block's largest element lands across a power of two from the float64 one:
    that block of 32 activations then gets the next scale and every element
    re-rounds at half the resolution, which at these small sizes moves the
    norm by up to ~1e-2. Bound: 1.2e-2. The scaled fp8 dot itself is pinned
    exactly: GEMM1 alone vs float64 at fp32 accumulation tolerance (1e-5).
  * native vs the emulation contract (activations not quantised): the two
    e4m3 roundings of every activation (3 mantissa bits: up to 2^-4 relative
    per element). The test weights spread block magnitudes over 2^+-6, so a
    few terms dominate each dot and those roundings do not average out:
    measured 4e-2 typical, 0.15 worst in a few hundred draws. Bound 0.3: a
    sanity check only (a scale or layout mix-up is an error of order 1); the
    quantised reference above is the precise check.
  * emulation and BF16-copy paths vs the float64 reference of what they
    compute: BF16 MoE tolerance (1e-2).
CPU tests run the interpreter (fp8 decoded to fp32 in integer math); GPU
tests run the M3 and M2 EP8-rank shapes on the fp8 tensor cores.
"""
import pytest
import torch

import minimax_rocm as mm
from minimax_rocm import oracle
from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map
from minimax_rocm.ops import Mxfp8Experts
from minimax_rocm.ops._common import LAST_BACKEND
from minimax_rocm.triton import fused_moe as tri_bf16
from minimax_rocm.triton import fused_moe_mxfp8 as tri

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
NATIVE_TOL = {torch.bfloat16: R.MXFP8_REL_TOL, torch.float32: R.MXFP8_REL_TOL}
GEMM_TOL = R.REL_TOL[torch.float32]
VS_UNQUANTISED_TOL = 0.3
BF16_TOL = R.REL_TOL[torch.bfloat16]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every intermediate buffer starts as garbage (NaN / 0xFF bytes): a row
    the kernels should have written but did not reaches the output."""
    def bad(shape, dtype, device):
        if dtype.is_floating_point:
            return torch.full(shape, float("nan"), dtype=dtype, device=device)
        return torch.full(shape, 0xFF, dtype=dtype, device=device)
    monkeypatch.setattr(tri, "_buffer", bad)
    monkeypatch.setattr(tri_bf16, "_buffer", bad)


def _args(T=9, H=64, I=64, E=8, k=2, E_loc=None, fp8=FN, dtype=torch.bfloat16, device="cpu", gate_scale=3.0):
    """Random MXFP8 MoE inputs; gate_scale > 1 drives SwiGLU-OAI's clamps.
    Weight rows get magnitudes spread over 2^-6..2^6 so block scales differ."""
    E_loc = E if E_loc is None else E_loc
    g = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 1 << 30, ()).item()))

    def w(*shape, s):
        spread = torch.exp2(torch.randint(-6, 7, (*shape[:-1], shape[-1] // 32, 1), generator=g).float())
        x = torch.randn(*shape, generator=g).reshape(*shape[:-1], shape[-1] // 32, 32) * spread
        x = x / spread.mean()
        return R.mxfp8_quant((x.reshape(shape) * s).to(device), fp8)

    hidden = torch.randn(T, H, generator=g).to(dtype).to(device)
    w13_q, w13_s = w(E_loc, 2 * I, H, s=gate_scale / H ** 0.5)
    w2_q, w2_s = w(E_loc, H, I, s=1 / I ** 0.5)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32).to(device)
    tw = torch.rand(T, k, generator=g).to(device)
    return hidden, w13_q, w13_s, w2_q, w2_s, tw, ids


def _op(args, *rest, copies=(None, None), **kw):
    """The public op on _args' inputs, the expert tensors as one Mxfp8Experts."""
    hidden, w13_q, w13_s, w2_q, w2_s, tw, ids = args
    return mm.fused_moe_mxfp8(hidden, Mxfp8Experts(w13_q, w13_s, w2_q, w2_s, *copies), tw, ids, *rest, **kw)


def _check_native(out, args, emap, act, layout):
    hidden = args[0]
    ref_q = R.fused_moe_mxfp8(*args, emap, act, layout)
    ref_u = R.fused_moe_mxfp8(*args, emap, act, layout, quantize_activations=False)
    assert out.shape == hidden.shape and out.dtype == hidden.dtype
    err = R.rel_error(out, ref_q)
    assert err < NATIVE_TOL[hidden.dtype], err
    assert R.rel_error(out, ref_u) < VS_UNQUANTISED_TOL


# "scaled" (tl.dot_scaled) runs the upcast code in the interpreter: GPU only.
# Upcast mode runs SwiGLU + MX rounding in their own kernel ("upcast+act
# kernel") or in GEMM1's epilogue ("upcast+fused act"); the table picks one.
# Every program of the persistent GEMMs runs several items here (the
# interpreter's grid is at most 3 programs; on the GPU the shapes have more
# items than programs), so the next item's prefetched indices are used.
DOT_MODES = ["fp8", "upcast+act kernel", "upcast+fused act"]
GPU_DOT_MODES = DOT_MODES + ["scaled"]


def _mode(mode: str) -> dict:
    if mode.startswith("upcast+"):
        return dict(dot="upcast", fuse_act=mode == "upcast+fused act")
    return dict(dot=mode)


@pytest.mark.parametrize("dot", DOT_MODES)
@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("act,layout", [("swiglu_oai", "split"), ("swiglu_oai", "interleaved"),
                                        ("silu", "interleaved")])
def test_native_matches_quantised_reference(fp8, act, layout, dot):
    E, ep = 8, 2
    emap = expert_map(E, ep, 1)
    args = _args(E=E, E_loc=E // ep, fp8=fp8)
    out = tri.fused_moe_mxfp8(*args, emap, act, layout, **_mode(dot))
    _check_native(out, args, emap, act, layout)


@pytest.mark.parametrize("dot", ["fp8", "upcast"])
@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
def test_gemm1_block_scaled_dot_is_exact_to_fp32(fp8, dot):
    _gemm1_exact(torch.device("cpu"), fp8, dot)


@pytest.mark.gpu
@pytest.mark.parametrize("dot", ["fp8", "upcast", "scaled"])
@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
def test_gemm1_block_scaled_dot_is_exact_to_fp32_on_gpu(device, fp8, dot):
    _gemm1_exact(device, fp8, dot)


def _gemm1_exact(device, fp8, dot):
    """GEMM1 alone: fp8 x fp8 per 32-wide block, both scales applied in fp32
    (upcast: A as the BF16 image of its MXFP8 values, W's bytes moved into
    BF16 and multiplied by 2^(scale - bias)): equal to the float64 product of
    the dequantised operands up to fp32 accumulation. Padding rows of each
    block are never written (they keep the NaN poison)."""
    from minimax_rocm.triton.moe_align import moe_align
    from minimax_rocm.triton.mxfp8_quant import mxfp8_round
    if dot != "upcast" and device.type == "cuda" and oracle.detect_platform().fp8_dtype != fp8_name(fp8):
        pytest.skip("fp8 MMA on this GPU takes its own flavour only")
    T, H, I, E, k = 7, 128, 32, 4, 2
    hidden, w13_q, w13_s, _, _, _, ids = _args(T=T, H=H, I=I, E=E, k=k, fp8=fp8)
    xq, xs = R.mxfp8_quant(hidden, fp8)
    sorted_ids, block_ids, npost = [t.cpu() for t in moe_align(ids.reshape(-1).to(device), 16, None, E)]
    h = torch.full((sorted_ids.shape[0], 2 * I), float("nan"), device=device)
    tile = tri.plan(hidden.to(device), w13_q, ids, None)["tile1"]
    if dot == "upcast":
        a, a_s = mxfp8_round(hidden.to(device), fp8), None
        assert torch.equal(a.cpu(), R.mxfp8_dequant(xq, xs, torch.bfloat16))
    else:
        a, a_s = xq.to(device), xs.to(device)
    on = lambda *ts: [t.to(device) for t in ts]  # noqa: E731
    tri.gemm(a, a_s, *on(w13_q, w13_s), h, *on(sorted_ids, block_ids, npost), None, num_routes=T * k, top_k=k,
             tile=tile, a_by_token=True, atomic_out=False, dot=dot)
    h = h.cpu()
    x = R.mxfp8_dequant(xq, xs, torch.float64)
    w = R.mxfp8_dequant(w13_q, w13_s, torch.float64)
    n = int(npost)
    for pos in range(n):
        r, e = int(sorted_ids[pos]), int(block_ids[pos // 16])
        if r < T * k:
            want = x[r // k] @ w[e].t()
            assert R.rel_error(h[pos], want) < GEMM_TOL, (pos, r, e)
        else:
            assert torch.isnan(h[pos]).all(), pos


def fp8_name(fp8):
    return "e4m3fnuz" if fp8 == FNUZ else "e4m3fn"


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
def test_upcast_tile_is_exact_for_every_byte_and_scale(device, fp8):
    """The upcast path's W tile (bytes moved into BF16 fields, times the
    BF16 multiplier, packed PTX on NVIDIA) equals the float64 dequantisation
    bit for bit, for all 256 bytes under every scale up to 2^bias. Larger
    scales and the NaN scale must not give finite numbers."""
    import triton
    import triton.language as tl

    @triton.jit
    def upcast(q_ptr, s_ptr, out_ptr, FNUZ: tl.constexpr, PTX: tl.constexpr):
        r = tl.program_id(0) * 16 + tl.arange(0, 16)
        k = tl.arange(0, 256)
        v = tri._upcast_tile(q_ptr + r[:, None] * 256 + k[None, :], s_ptr + r[:, None] * 8 + tl.arange(0, 8)[None, :],
                             r < 1 << 30, 16, 256, FNUZ, False, PTX)
        tl.store(out_ptr + r[:, None] * 256 + k[None, :], v)

    bias = 8 if fp8 == FNUZ else 7
    scales = torch.tensor(list(range(0, 127 + bias + 1)) + [127 + bias + 1, 200, 254, 255], dtype=torch.uint8)
    rows = 16 * triton.cdiv(len(scales), 2)
    q = torch.arange(256, dtype=torch.uint8).repeat(rows, 1)
    if fp8 == FNUZ:
        q[q == 0x80] = 0            # fnuz NaN byte: a NaN block carries the NaN scale
    else:
        q[(q & 0x7F) == 0x7F] = 0   # fn NaN bytes: likewise
    s = torch.zeros(rows, 8, dtype=torch.uint8)
    s.view(-1)[:len(scales) * 4] = scales.repeat_interleave(4)   # 4 blocks of 32 = one 128-wide half row
    out = torch.empty(rows, 256, dtype=torch.bfloat16, device=device)
    upcast[(rows // 16,)](q.to(device), s.to(device), out, FNUZ=fp8 == FNUZ, PTX=torch.version.hip is None)
    ref = R.mxfp8_dequant(q.view(fp8), s, torch.float64)
    blk = torch.arange(rows * 8).reshape(rows, 8).repeat_interleave(32, dim=1) // 4  # index into scales
    ok = blk < len(scales)
    sc = scales.long()[blk.clamp(max=len(scales) - 1)]
    exact = ok & (sc <= 127 + bias) & (ref.abs() < 2.0 ** 128) & ((ref == 0) | (ref.abs() >= 2.0 ** -133))
    got = out.cpu().double()
    assert torch.equal(got[exact], ref[exact].to(torch.bfloat16).double())
    loud = ok & (sc > 127 + bias) & (q.view(fp8).float() != 0)
    assert not torch.isfinite(got[loud]).any()


@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
def test_mxfp8_round_is_dequant_of_quant(device, fp8):
    from minimax_rocm.triton.mxfp8_quant import mxfp8_round
    x = (torch.randn(10, 192) * torch.logspace(-20, 20, 10)[:, None]).to(torch.bfloat16)
    x[3, 40] = float("nan")
    got = mxfp8_round(x.to(device), fp8).cpu()
    want = R.mxfp8_dequant(*R.mxfp8_quant(x, fp8), torch.bfloat16)
    assert torch.equal(torch.nan_to_num(got.float(), 7.0), torch.nan_to_num(want.float(), 7.0))
    assert got[3, 32:64].isnan().all() and not got[3, :32].isnan().any()


@pytest.mark.parametrize("dot", DOT_MODES)
def test_native_fp32_hidden_and_every_route_local(dot):
    args = _args(T=5, E=4, k=3, dtype=torch.float32)
    out = tri.fused_moe_mxfp8(*args, None, "swiglu_oai", "split", **_mode(dot))
    _check_native(out, args, None, "swiglu_oai", "split")


def test_native_ep_ranks_sum_to_unsharded():
    E, ep = 8, 4
    hidden, w13_q, w13_s, w2_q, w2_s, tw, ids = _args(T=7, E=E, k=3, dtype=torch.float32)
    total = torch.zeros(hidden.shape, dtype=torch.float64)
    for rank in range(ep):
        emap = expert_map(E, ep, rank)
        own = torch.nonzero(emap >= 0).reshape(-1)
        total += tri.fused_moe_mxfp8(hidden, w13_q[own].contiguous(), w13_s[own].contiguous(),
                                     w2_q[own].contiguous(), w2_s[own].contiguous(), tw, ids, emap).double()
    ref = R.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, None)
    assert R.rel_error(total, ref) < NATIVE_TOL[torch.float32]


def test_native_rank_without_local_routes_returns_zeros():
    emap = expert_map(8, 2, 1)                          # local: 4..7
    hidden, w13_q, w13_s, w2_q, w2_s, tw, _ = _args(T=4, E=8, E_loc=4)
    ids = torch.tensor([[0, 1], [2, 3], [3, 0], [1, 2]], dtype=torch.int32)
    out = tri.fused_moe_mxfp8(hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap)
    assert torch.equal(out, torch.zeros_like(out))


def test_block_k_that_does_not_divide_k_is_an_error():
    # the GEMMs' K loop has no tail step: a tile override whose BLOCK_K does
    # not divide K must fail loudly, not skip the last columns
    emap = expert_map(8, 2, 1)
    args = _args(T=4, H=96, I=64, E=8, E_loc=4)
    with pytest.raises(ValueError, match="does not divide K"):
        tri.fused_moe_mxfp8(*args, emap, dot="upcast", fuse_act=False, tile=dict(block_k=64))


def test_op_paths_on_cpu_use_the_reference():
    args = _args(T=3)
    out = _op(args, None, max_model_len=4096)
    assert LAST_BACKEND["fused_moe_mxfp8"] == "torch/reference"
    assert R.rel_error(out, R.fused_moe_mxfp8(*args, None, quantize_activations=False)) < BF16_TOL


@pytest.mark.parametrize("arch,decode,prefill", [("sm90", "upcast", "upcast"), ("sm100", "upcast", "scaled"),
                                                  ("gfx950", "scaled", "scaled"), ("gfx942", "fp8", "fp8")])
def test_dot_mode_by_target_and_regime(arch, decode, prefill):
    # MX hardware (gfx950 always, sm100 at its 128-row prefill tiles) takes
    # tl.dot_scaled; the prefill regime takes 128-row tiles in the grouped order
    from minimax_rocm.platform import ARCHS
    rank = dict(H=6144, I=3072, E_glob=128, E_loc=16)
    d = tri.plan_shape(arch, ARCHS[arch]["cu_count"], routes=216 * 4, **rank)
    p = tri.plan_shape(arch, ARCHS[arch]["cu_count"], routes=16384 * 4, **rank)
    assert (d["dot"], p["dot"]) == (decode, prefill)
    assert d["block_m"] < 64 and d["tile1"].group_m == 0
    assert p["block_m"] == 128 and p["tile1"].group_m > 0 and p["tile2"].group_m > 0


def test_layer_memory_policy():
    from minimax_rocm.ops.mxfp8 import layer_weight_formats
    short = layer_weight_formats(60, 4096, "gfx942")
    assert short == ["mxfp8+bf16"] * 60
    long = layer_weight_formats(60, 8192, "gfx942")
    every = int(oracle.threshold("mxfp8_bf16_only_every", "gfx942"))
    assert long.count("bf16") == 60 // every and long.count("mxfp8") == 60 - 60 // every
    assert all((f == "bf16") == (i % every == every - 1) for i, f in enumerate(long))


# --------------------------------------------------------------------------- #
# GPU: the op on the fp8 tensor cores at M3 and M2 EP8-rank shapes
# --------------------------------------------------------------------------- #

SHAPES = {
    "M3 EP8": dict(H=6144, I=3072, E=128, k=4, E_loc=16, act="swiglu_oai"),
    "M2 EP8": dict(H=3072, I=1536, E=256, k=8, E_loc=32, act="silu"),
}


def _gpu_fp8():
    """The fp8 flavour of this GPU's tensor cores."""
    return FN if oracle.detect_platform().fp8_dtype == "e4m3fn" else FNUZ


def _shape_args(shape: str, T: int, device):
    """Random inputs at an EP-rank shape of SHAPES, and rank 0's expert map."""
    s = SHAPES[shape]
    args = _args(T=T, H=s["H"], I=s["I"], E=s["E"], k=s["k"], E_loc=s["E_loc"], device=device, fp8=_gpu_fp8())
    return args, expert_map(s["E"], s["E"] // s["E_loc"], 0).to(device)


@pytest.mark.gpu
@pytest.mark.parametrize("dot", GPU_DOT_MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("T", [1, 16, 216, 1024])
def test_native_kernel_on_gpu(device, shape, T, dot):
    s = SHAPES[shape]
    args, emap = _shape_args(shape, T, device)
    out = tri.fused_moe_mxfp8(*args, emap, s["act"], "split", **_mode(dot))
    _check_native(out, args, emap, s["act"], "split")


@pytest.mark.parametrize("group_m", [2, 5])
def test_native_grouped_item_order(group_m):
    # Prefill's item order (groups of M blocks over every N tile), with the
    # next item's indices prefetched across group boundaries.
    args = _args(T=40, H=64, I=64, E=4, k=2)
    for dot in ("fp8", "upcast"):
        out = tri.fused_moe_mxfp8(*args, None, "swiglu_oai", "split", block_m=16, dot=dot,
                                  tile=dict(block_n=32, block_k=32, group_m=group_m))
        _check_native(out, args, None, "swiglu_oai", "split")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", list(SHAPES))
def test_native_prefill_on_gpu(device, shape):
    # T = 4096: the table's prefill tiles (128-row blocks, grouped item order)
    s = SHAPES[shape]
    args, emap = _shape_args(shape, 4096, device)
    out = tri.fused_moe_mxfp8(*args, emap, s["act"], "split")
    assert tri.plan(args[0], args[1], args[6], emap)["tile1"].group_m > 0
    _check_native(out, args, emap, s["act"], "split")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("T", [16])
def test_native_on_gpu(device, shape, T):
    s = SHAPES[shape]
    args, emap = _shape_args(shape, T, device)
    out = _op(args, emap, s["act"], "split", max_model_len=4096)
    assert LAST_BACKEND["fused_moe_mxfp8"] == "triton/native_mxfp8"
    _check_native(out, args, emap, s["act"], "split")


@pytest.mark.gpu
def test_op_paths_on_gpu(device):
    s = SHAPES["M3 EP8"]
    args = _args(T=4, H=1024, I=512, E=32, k=4, E_loc=4, device=device)
    emap = expert_map(32, 8, 3).to(device)
    ref_u = R.fused_moe_mxfp8(*args, emap, s["act"], quantize_activations=False)
    w13 = R.mxfp8_dequant(args[1], args[2], torch.bfloat16)
    w2 = R.mxfp8_dequant(args[3], args[4], torch.bfloat16)
    arch = oracle.detect_platform().arch
    lo, hi = (oracle.threshold(n, arch) for n in ("mxfp8_bf16_max_tokens", "mxfp8_bf16_min_tokens"))
    out = _op(args, emap, s["act"], max_model_len=4096, copies=(w13, w2))
    if lo < 4 < hi:   # the mixed policy's native band
        assert LAST_BACKEND["fused_moe_mxfp8"] == "triton/native_mxfp8"
        _check_native(out, args, emap, s["act"], "split")
        big = [t.repeat(hi // 4 + 1, 1) for t in (args[0], args[5], args[6])]
        _op((big[0], *args[1:5], big[1], big[2]), emap, s["act"], max_model_len=4096, copies=(w13, w2))
    assert LAST_BACKEND["fused_moe_mxfp8"] == "triton/bf16_copy"
    if not lo < 4 < hi:
        assert R.rel_error(out, ref_u) < BF16_TOL
    out = _op(args, emap, s["act"], max_model_len=1 << 20)
    assert LAST_BACKEND["fused_moe_mxfp8"] == "triton/emulation"
    assert R.rel_error(out, ref_u) < BF16_TOL
    out = _op(args, emap, s["act"], max_model_len=4096)
    assert LAST_BACKEND["fused_moe_mxfp8"] == "triton/native_mxfp8"
    _check_native(out, args, emap, s["act"], "split")


@pytest.mark.gpu
@pytest.mark.parametrize("bf16_atomics", [True, False], ids=["bf16-atomics", "fp32-atomics"])
@pytest.mark.parametrize("pdl", [True, False], ids=["pdl", "no-pdl"])
@pytest.mark.parametrize("overlap", [True, False], ids=["2-stream", "1-stream"])
def test_native_output_accumulation_and_launch_on_gpu(device, bf16_atomics, pdl, overlap):
    """Both GEMM2 accumulators (BF16 atomics into the output, or fp32 and a
    conversion) with and without programmatic dependent launch, the rounding
    pass on a side stream or in line, at a size that takes the Triton
    alignment (its kernels are in the PDL chain)."""
    from minimax_rocm.triton import dependent_launch
    s = SHAPES["M2 EP8"]
    args, emap = _shape_args("M2 EP8", 216, device)
    with dependent_launch.forced(pdl):
        out = tri.fused_moe_mxfp8(*args, emap, s["act"], "split", bf16_atomics=bf16_atomics,
                                  overlap_rounding=overlap)
    _check_native(out, args, emap, s["act"], "split")


@pytest.mark.gpu
@pytest.mark.parametrize("T", [16, 64])
@pytest.mark.parametrize("overlap", [True, False], ids=["2-stream", "1-stream"])
def test_native_under_cuda_graph(device, T, overlap):
    """Two MoE calls back to back in one graph (on sm90 every launch but the
    first is programmatically dependent, so the calls' launches overlap; with
    `overlap` the rounding pass is a parallel branch of the graph), replayed
    with fresh routing, router weights and hidden states each time: a kernel
    that read its predecessor's output before it was complete, or a buffer
    of the previous replay, shows as a wrong output."""
    fp8 = _gpu_fp8()
    E, E_loc, k = 32, 8, 4
    calls = [_args(T=T, H=1024, I=512, E=E, k=k, E_loc=E_loc, device=device, fp8=fp8) for _ in range(2)]
    w = calls[0][1:5]
    emap = expert_map(E, E // E_loc, 0).to(device)
    fn = lambda: [tri.fused_moe_mxfp8(c[0], *w, c[5], c[6], emap, overlap_rounding=overlap)  # noqa: E731
                  for c in calls]
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = fn()
    for _ in range(6):
        for c in calls:
            fresh = _args(T=T, H=1024, I=512, E=E, k=k, E_loc=E_loc, device=device, fp8=fp8)
            for i in (0, 5, 6):      # hidden, router weights, routes
                c[i].copy_(fresh[i])
        g.replay()
        torch.cuda.synchronize()
        for c, out in zip(calls, outs):
            _check_native(out, (c[0], *w, c[5], c[6]), emap, "swiglu_oai", "split")
