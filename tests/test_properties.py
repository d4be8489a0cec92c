"""Property tests (Hypothesis) of every public op against the float64
reference, and of every op's fake implementation against its real one.

Drawn per op from its contract: shapes with 0 and 1 tokens and widths at,
below and above each alignment (8 bf16 / 4 fp32 elements = 16 bytes, 32 for
MX blocks), dtypes, storage offsets (contiguous slices of larger buffers),
special values placed at drawn positions (+-0, NaN, +-inf, subnormals, the
largest finite values, values at the e4m3 and e8m0 edges) over random
normal data from a drawn seed. Each valid case must match the reference on
every path (NaN and inf exactly where the reference has them, finite values
within the tolerance stated per op); each bad case (one argument broken:
dtype, rank, shape, layout, value range, device) must raise OpInputError
naming the op and that argument; each valid case's fake output must have the
real output's shape, dtype and strides (strides of dims longer than 1), and
torch.library.opcheck runs on a share of them.

Paths: CPU (CI): the op (torch backend) and the Triton backend under the
interpreter. CUDA (marker gpu, `scripts/gpu_check.sh properties`): the op as the
oracle dispatches it, and every backend whose rule takes the case (native
HIP/CUDA, Triton with each MoE path, torch).

Budgets (examples per test; MINIMAX_ROCM_HYPOTHESIS_EXAMPLES overrides all):
  CPU: swiglu_oai, topk_reduce, router_gemm, allreduce_rms(_qk), mxfp8_quant,
  mxfp8_dequant (with mxfp8_fn_to_fnuz), moe_align, layer_weight_formats 100
  each; each op family's bad-input test 60; fused_moe 80; fused_moe_mxfp8 60;
  opcheck 80 over all ops. About 70 s on one core, 55 s with -n 2 (2 cores).
  GPU (`scripts/gpu_check.sh properties`): 400 per test (moe_align's in two
  processes of 200, fused_moe's and fused_moe_mxfp8's in four of 100).

The MoE tests draw moderate magnitudes (no largest-finite values): their
GEMMs accumulate in fp32 and store bf16 intermediates, so products past
~1e38 are outside the kernels' range by design; the elementwise, norm,
quant and reduction ops take the largest finite values (a reduction whose
fp32 sum could overflow may give inf or NaN there, never a wrong finite
number).

Profile: derandomize off (fresh examples each run), deadline off, no example
database, print_blob on: a failure prints the @reproduce_failure line that
replays it.
"""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import minimax_rocm as mm
from minimax_rocm import oracle
from minimax_rocm import reference as R
from minimax_rocm.ops import Mxfp8Experts, layer_weight_formats
from minimax_rocm.ops._common import OpInputError

settings.register_profile(
    "minimax_rocm", derandomize=False, deadline=None, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.load_profile("minimax_rocm")

_ENV = os.environ.get("MINIMAX_ROCM_HYPOTHESIS_EXAMPLES")


def budget(cpu: int) -> settings:
    return settings(max_examples=int(_ENV) if _ENV else cpu)


DEVICES = [pytest.param("cpu", marks=pytest.mark.interpreter, id="cpu"),
           pytest.param("cuda", marks=pytest.mark.gpu, id="cuda")]

BF, F16, F32 = torch.bfloat16, torch.float16, torch.float32
FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
FLOATS = [BF, F16, F32]
NAN, INF = float("nan"), float("inf")

# widths around each alignment: 16 bytes (8 bf16 / 4 fp32) and 32-element MX blocks
WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 64, 65]
TOKENS = [0, 1, 1, 2, 3, 5, 8, 17]


def special_values(dtype: torch.dtype, huge: bool = True) -> list[float]:
    fi = torch.finfo(dtype)
    v = [0.0, -0.0, NAN, INF, -INF, fi.smallest_normal, -fi.smallest_normal, float(fi.smallest_normal) / 4,
         fi.tiny * 2 ** -3 if dtype != F16 else 2.0 ** -24,        # subnormals
         448.0, -448.0, 464.0, 240.0, 248.0, 2.0 ** -9, 2.0 ** -6, 2.0 ** -10,   # e4m3 / e4m3fnuz edges
         1.0, -1.0, 0.5]
    if huge:
        v += [fi.max, -fi.max, 2.0 ** 127, 448.0 * 2.0 ** 100, 2.0 ** -127, 2.0 ** -127 * 448]   # e8m0 edges
    return v


def moderate_values(dtype: torch.dtype) -> list[float]:
    """Special values for the MoE ops, whose intermediates are stored in the
    activation dtype: the e4m3 edges only where that is not fp16 (silu(g) * u
    squares the scale: 448 in, ~1e5 out of GEMM1, past fp16's 65504)."""
    fi = torch.finfo(dtype)
    edges = [] if dtype == F16 else [448.0, -240.0]
    return [0.0, -0.0, NAN, INF, -INF, fi.smallest_normal, float(fi.smallest_normal) / 4, 2.0 ** -9, 8.0, -8.0,
            1e-3] + edges


@st.composite
def tensors(draw, shape, dtype, values=None, scale=None, offset=True, device="cpu", specials=6):
    """A contiguous tensor of random normal values (seeded from the draw)
    with up to `specials` drawn special values, starting a drawn number of
    elements into a larger buffer."""
    shape = tuple(shape)
    n = math.prod(shape)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    s = draw(st.sampled_from([1.0, 0.25, 4.0])) if scale is None else scale
    x = torch.randn(shape, generator=g, dtype=torch.float64) * s
    if n and values:
        flat = x.view(-1)
        for pos, val in draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(values)),
                                      max_size=min(specials, n))):
            flat[pos] = val
    x = x.to(dtype)
    off = draw(st.integers(0, 9)) if offset else 0
    buf = torch.empty(n + off + 1, dtype=dtype, device=device)
    out = buf[off:off + n].view(shape)
    out.copy_(x)
    return out


def ulp(dtype: torch.dtype) -> float:
    return {BF: 2.0 ** -8, F16: 2.0 ** -11, F32: 2.0 ** -24, torch.float64: 2.0 ** -53}[dtype]


def check(out: torch.Tensor, ref: torch.Tensor, *, rtol: float, atol=0.0, ambiguous=None, what=""):
    """out against ref (float64, not rounded): NaN exactly where ref (rounded
    to out's dtype) is NaN, inf of the same sign where it is inf, finite
    values within atol + rtol |ref|. `ambiguous` elements (an fp32
    intermediate may overflow there) may instead be non-finite."""
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    o = out.detach().double().cpu()
    r = ref.detach().to(out.dtype).double().cpu() if out.dtype.is_floating_point else ref.double().cpu()
    amb = torch.zeros_like(o, dtype=torch.bool) if ambiguous is None else ambiguous.cpu().expand(o.shape)
    atol = atol if isinstance(atol, float) else atol.double().cpu()
    bad_nan = torch.isnan(o) != torch.isnan(r)
    rinf = torch.isinf(r)
    bad_inf = (rinf & (o != r)) | (torch.isinf(o) & ~rinf)
    fin = torch.isfinite(o) & torch.isfinite(r)
    err = torch.zeros_like(o)
    err[fin] = (o - r).abs()[fin]
    bad_val = fin & (err > atol + rtol * r.abs())
    bad = (bad_nan | bad_inf | bad_val) & ~(amb & ~torch.isfinite(o))
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(bad.sum())} of {o.numel()} elements wrong; first at {i}: "
                             f"got {o[i].item()!r}, reference {r[i].item()!r} (unrounded "
                             f"{ref.double().cpu()[i].item()!r})")


def significant_strides(t: torch.Tensor) -> tuple:
    return tuple(s for s, n in zip(t.stride(), t.shape) if n > 1) if t.numel() else ()


def fake_matches_real(fn, args: tuple, real):
    """The op's fake implementation on fake copies of args gives outputs with
    the real ones' shape, dtype and strides."""
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fargs = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
    with mode:
        fake = fn(*fargs)
    reals = real if isinstance(real, (tuple, list)) else (real,)
    fakes = fake if isinstance(fake, (tuple, list)) else (fake,)
    assert len(reals) == len(fakes)
    for r, f in zip(reals, fakes):
        if r is None:
            assert f is None
            continue
        assert tuple(f.shape) == tuple(r.shape), (tuple(f.shape), tuple(r.shape))
        assert f.dtype == r.dtype, (f.dtype, r.dtype)
        assert significant_strides(f) == significant_strides(r), (f.stride(), r.stride())


def rule_paths(problem: oracle.Problem) -> list[tuple[str, str]]:
    """(backend, path) of every rule that takes `problem` on this machine."""
    plat = oracle.detect_platform()
    out = []
    for r in oracle.RULES:
        if r.op != problem.op or not r.when(problem, plat):
            continue
        if oracle._usable(r.backend, problem, plat, True) is None and (r.backend, r.path) not in out:
            out.append((r.backend, r.path))
    return out


def gpu_backends(problem, device, *inputs) -> list[str]:
    """Backends to run besides the op: CPU, the Triton interpreter (where it
    reads `inputs` right); CUDA, every backend whose rule takes the case."""
    if device == "cpu":
        return ["triton"] if interp_reads(device, *inputs) else []
    return list(dict.fromkeys(b for b, _ in rule_paths(problem)))


def interp_atol(device, dtype) -> float:
    """The Triton interpreter (Triton 3.9) converts fp32 values below 2^-126
    to bf16 wrongly (1.5 * 2^-127 -> 2^-127); GPUs convert them exactly, so
    only CPU runs of Triton kernels with bf16 outputs get this slack."""
    return 2.0 ** -126 if device == "cpu" and dtype == BF else 0.0


def interp_reads(device, *tensors) -> bool:
    """Whether the Triton interpreter reads these inputs right: it converts
    bf16 subnormals to fp32 wrongly (Triton 3.9: 2.9e-39 -> 0), so CPU runs
    of Triton kernels skip bf16 inputs holding them (the GPU run checks them)."""
    if device != "cpu":
        return True
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dtype == BF and t.numel():
            a = t.float().abs()
            if bool(((a > 0) & (a < 2.0 ** -126)).any()):
                return False
    return True


def need_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA/ROCm device")


def expect_error(op: str, arg: str, fn, *args):
    with pytest.raises(OpInputError, match=f"minimax_rocm.{op}: argument '{arg}'"):
        fn(*args)


# --------------------------------------------------------------------------- #
# swiglu_oai
# --------------------------------------------------------------------------- #


@st.composite
def swiglu_cases(draw, device):
    dtype = draw(st.sampled_from(FLOATS))
    lead = draw(st.lists(st.sampled_from(TOKENS), max_size=2))
    I = draw(st.sampled_from(WIDTHS))
    x = draw(tensors((*lead, 2 * I), dtype, special_values(dtype), device=device))
    alpha = draw(st.sampled_from([1.702, 1.0, 0.5, 3.0]))
    limit = draw(st.sampled_from([7.0, 1.0, 0.25, 50.0]))
    return x, alpha, limit, draw(st.sampled_from(["split", "interleaved"]))


def _swiglu_tol(dtype, limit):
    # fp32 math (sigmoid's exp, u + 1 rounded) then one rounding; |out| <= limit (limit + 1)
    return dict(rtol=2 * ulp(dtype) + 1e-6,
                atol=8 * ulp(F32) * limit * (limit + 1) + 2 * float(torch.finfo(dtype).tiny))


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_swiglu_oai(device, data):
    need_device(device)
    x, alpha, limit, layout = data.draw(swiglu_cases(device))
    ref = R.swiglu_oai(x.double(), alpha, limit, layout)
    tol = _swiglu_tol(x.dtype, limit)
    out = mm.swiglu_oai(x, alpha, limit, layout)
    check(out, ref, **tol, what="op")
    fake_matches_real(torch.ops.minimax_rocm.swiglu_oai, (x, alpha, limit, layout), out)
    p = oracle.Problem("swiglu_oai", tokens=x.numel() // x.shape[-1], hidden=x.shape[-1], dtype=str(x.dtype)[6:],
                       on_gpu=x.is_cuda)
    for b in gpu_backends(p, device, x):
        check(oracle.impl("swiglu_oai", b)(x, alpha, limit, layout), ref, **tol, what=b)


@budget(60)
@given(data=st.data())
def test_swiglu_oai_bad_input(data):
    x, alpha, limit, layout = data.draw(swiglu_cases("cpu"))
    kind = data.draw(st.sampled_from(["dtype", "odd", "scalar", "noncontig", "layout", "limit", "alpha", "list"]))
    f = mm.swiglu_oai
    if kind == "dtype":
        expect_error("swiglu_oai", "x", f, x.to(data.draw(st.sampled_from([torch.float64, torch.int32]))))
    elif kind == "odd":
        expect_error("swiglu_oai", "x", f, torch.zeros(*x.shape[:-1], x.shape[-1] + 1, dtype=x.dtype))
    elif kind == "scalar":
        expect_error("swiglu_oai", "x", f, torch.zeros((), dtype=x.dtype))
    elif kind == "noncontig":
        assume(x.numel() > 0)           # an empty view is contiguous
        expect_error("swiglu_oai", "x", f, torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)[..., ::2])
    elif kind == "layout":
        expect_error("swiglu_oai", "layout", f, x, alpha, limit, "gate_up")
    elif kind == "limit":
        expect_error("swiglu_oai", "limit", f, x, alpha, data.draw(st.sampled_from([0.0, -7.0, NAN])), layout)
    elif kind == "alpha":
        expect_error("swiglu_oai", "alpha", f, x, data.draw(st.sampled_from([NAN, INF, -INF])), limit, layout)
    else:
        expect_error("swiglu_oai", "x", f, x.tolist())


# --------------------------------------------------------------------------- #
# topk_reduce
# --------------------------------------------------------------------------- #


@st.composite
def topk_cases(draw, device):
    dtype = draw(st.sampled_from(FLOATS))
    T, k, H = draw(st.sampled_from(TOKENS)), draw(st.sampled_from([1, 2, 3, 4, 8])), draw(st.sampled_from(WIDTHS))
    x = draw(tensors((T, k, H), dtype, special_values(dtype), device=device))
    wd = draw(st.sampled_from([None, F32, dtype]))
    w = None if wd is None else draw(tensors((T, k), wd, special_values(wd), device=device, scale=1.0))
    return x, w


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_topk_reduce(device, data):
    need_device(device)
    x, w = data.draw(topk_cases(device))
    xd = x.double()
    wd = torch.ones(x.shape[:2], dtype=torch.float64, device=x.device) if w is None else w.double()
    ref = R.topk_reduce(xd, None if w is None else wd)
    terms = (xd.abs() * wd.abs().unsqueeze(-1)).sum(1)        # sum of |w x|: the fp32 sum's error scale
    k = x.shape[1]
    tol = dict(rtol=ulp(x.dtype) * 2, atol=(k + 2) * ulp(F32) * terms + 2 * float(torch.finfo(x.dtype).tiny),
               ambiguous=~torch.isfinite(terms) | (terms > float(torch.finfo(F32).max) / 2)
               | (ref.abs() > float(torch.finfo(x.dtype).max) * (1 - ulp(x.dtype))))
    out = mm.topk_reduce(x, w)
    check(out, ref, **tol, what="op")
    fake_matches_real(torch.ops.minimax_rocm.topk_reduce, (x, w), out)
    from minimax_rocm.ops.topk_reduce import problem
    for b in gpu_backends(problem(x, w), device, x, w):
        check(oracle.impl("topk_reduce", b)(x, w), ref, **tol, what=b)


@budget(60)
@given(data=st.data())
def test_topk_reduce_bad_input(data):
    x, w = data.draw(topk_cases("cpu"))
    T, k, H = x.shape
    kind = data.draw(st.sampled_from(["dtype", "rank", "noncontig", "wshape", "wdtype", "wdevice", "wnoncontig"]))
    f = mm.topk_reduce
    if kind == "dtype":
        expect_error("topk_reduce", "x", f, x.to(data.draw(st.sampled_from([torch.float64, torch.int64]))), None)
    elif kind == "rank":
        expect_error("topk_reduce", "x", f, x.reshape(T, k * H), None)
    elif kind == "noncontig":
        assume(T > 0 and (H > 1 or k > 1))
        expect_error("topk_reduce", "x", f, x.transpose(1, 2) if H > 1 and k > 1 else
                     torch.zeros(T, k, 2 * H, dtype=x.dtype)[..., ::2], None)
    elif kind == "wshape":
        expect_error("topk_reduce", "weights", f, x, torch.zeros(T, k + 1))
    elif kind == "wdtype":
        expect_error("topk_reduce", "weights", f, x, torch.zeros(T, k, dtype=torch.int32))
    elif kind == "wdevice":
        expect_error("topk_reduce", "weights", f, x, torch.zeros(T, k, device="meta"))
    else:
        assume(T * k > 1)       # a 1 x 1 view is contiguous whatever its strides
        expect_error("topk_reduce", "weights", f, x, torch.zeros(T, 2 * k)[:, ::2])


# --------------------------------------------------------------------------- #
# router_gemm
# --------------------------------------------------------------------------- #


@st.composite
def router_cases(draw, device):
    xd = draw(st.sampled_from([BF, F32]))
    M = draw(st.sampled_from(TOKENS + [31, 32, 33]))
    H, E = draw(st.sampled_from(WIDTHS)), draw(st.sampled_from([1, 2, 7, 8, 9, 16, 33]))
    x = draw(tensors((M, H), xd, special_values(xd), device=device))
    w = draw(tensors((E, H), F32, special_values(F32), device=device, scale=H ** -0.5))
    b = draw(st.one_of(st.none(), tensors((E,), F32, special_values(F32), device=device)))
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_router_gemm(device, data):
    need_device(device)
    x, w, b = data.draw(router_cases(device))
    xd, wd = x.double(), w.double()
    ref = R.router_gemm(xd, wd, None if b is None else b.double())
    terms = xd.abs() @ wd.abs().t() + (0 if b is None else b.double().abs())
    H = x.shape[1]
    fmax = float(torch.finfo(F32).max)
    # fp32 accumulation over H terms; a GPU may flush subnormal operands (2^-126 each)
    tol = dict(rtol=2 * ulp(F32), atol=(H + 3) * ulp(F32) * terms
               + 2.0 ** -126 * (xd.abs().sum(1, keepdim=True) + wd.abs().sum(1) + 1),
               ambiguous=~torch.isfinite(terms) | (terms > fmax / 2))
    out = mm.router_gemm(x, w, b)
    check(out, ref, **tol, what="op")
    fake_matches_real(torch.ops.minimax_rocm.router_gemm, (x, w, b), out)
    from minimax_rocm.ops.router_gemm import problem
    for backend in gpu_backends(problem(x, w, b), device, x):
        check(oracle.impl("router_gemm", backend)(x, w, b), ref, **tol, what=backend)


@budget(60)
@given(data=st.data())
def test_router_gemm_bad_input(data):
    x, w, b = data.draw(router_cases("cpu"))
    M, H = x.shape
    E = w.shape[0]
    kind = data.draw(st.sampled_from(["xdtype", "wdtype", "cols", "rank", "noncontig", "bias", "wdevice"]))
    f = mm.router_gemm
    if kind == "xdtype":
        expect_error("router_gemm", "x", f, x.to(data.draw(st.sampled_from([F16, torch.float64]))), w, b)
    elif kind == "wdtype":
        expect_error("router_gemm", "w", f, x, w.to(BF), b)
    elif kind == "cols":
        expect_error("router_gemm", "w", f, x, torch.zeros(E, H + 1), b)
    elif kind == "rank":
        expect_error("router_gemm", "x", f, x.reshape(1, M, H), w, b)
    elif kind == "noncontig":
        assume(M * H > 1)       # a 1 x 1 view is contiguous whatever its strides
        expect_error("router_gemm", "x", f, torch.zeros(M, 2 * H, dtype=x.dtype)[:, ::2], w, b)
    elif kind == "bias":
        expect_error("router_gemm", "bias", f, x, w, torch.zeros(E + 1))
    else:
        expect_error("router_gemm", "w", f, x, w.to("meta"), b)


# --------------------------------------------------------------------------- #
# allreduce_rms, allreduce_rms_qk (one rank: group "")
# --------------------------------------------------------------------------- #


def _norm_tol(dtype, x):
    # inverse rms exact to ~2^-21 (fp32, subnormal past 2^126), two fp32
    # products, one rounding to the dtype
    return dict(rtol=2 * ulp(dtype) + 2.0 ** -20, atol=2 * float(torch.finfo(dtype).tiny))


@st.composite
def rms_cases(draw, device):
    dtype = draw(st.sampled_from(FLOATS))
    T, D = draw(st.sampled_from(TOKENS)), draw(st.sampled_from(WIDTHS))
    x = draw(tensors((T, D), dtype, special_values(dtype), device=device, specials=3))
    w = draw(tensors((D,), draw(st.sampled_from([dtype, F32])), device=device, scale=1.0))
    return x, w, draw(st.sampled_from([1e-6, 1e-5, 1e-12, 0.5]))


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_allreduce_rms(device, data):
    need_device(device)
    x, w, eps = data.draw(rms_cases(device))
    ref = R.rms_norm(x.double(), w.double(), eps)
    tol = _norm_tol(x.dtype, x)
    y = x.clone()
    assert mm.allreduce_rms(y, w, eps) is y
    check(y, ref, **tol, what="op")
    fake_matches_real(torch.ops.minimax_rocm.allreduce_rms, (x.clone(), w, eps, ""), None)
    from minimax_rocm.ops.norm import norm_problem
    for b in gpu_backends(norm_problem("allreduce_rms", x, ""), device, x, w):
        y = x.clone()
        oracle.impl("allreduce_rms", b)(y, w, eps, "")
        check(y, ref, **tol, what=b)


@st.composite
def rms_qk_cases(draw, device):
    dtype = draw(st.sampled_from(FLOATS))
    T = draw(st.sampled_from(TOKENS))
    q, kv = draw(st.sampled_from(WIDTHS)), draw(st.sampled_from(WIDTHS))
    qkv = draw(tensors((T, q + 2 * kv), dtype, special_values(dtype), device=device, specials=3))
    wd = draw(st.sampled_from([dtype, F32]))
    qw = draw(tensors((q,), wd, device=device, scale=1.0))
    kw = draw(tensors((kv,), wd, device=device, scale=1.0))
    return qkv, qw, kw, draw(st.sampled_from([1e-6, 1e-5, 1e-12, 0.5]))


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_allreduce_rms_qk(device, data):
    need_device(device)
    qkv, qw, kw, eps = data.draw(rms_qk_cases(device))
    q, kv = qw.shape[0], kw.shape[0]
    ref = R.qk_norm_tp([qkv.double()], [qw.double()], [kw.double()], eps)[0]
    tol = _norm_tol(qkv.dtype, qkv)
    from minimax_rocm.ops.norm import norm_problem
    paths = ["op"] + gpu_backends(norm_problem("allreduce_rms_qk", qkv, ""), device, qkv, qw, kw)
    for b in paths:
        y = qkv.clone()
        if b == "op":
            assert mm.allreduce_rms_qk(y, qw, kw, eps) is y
        else:
            oracle.impl("allreduce_rms_qk", b)(y, qw, kw, eps, "")
        check(y[:, :q + kv], ref[:, :q + kv], **tol, what=b)
        assert torch.equal(y[:, q + kv:].view(torch.int8 if y.dtype != F32 else torch.int32),
                           qkv[:, q + kv:].view(torch.int8 if y.dtype != F32 else torch.int32)), f"{b}: v changed"
    fake_matches_real(torch.ops.minimax_rocm.allreduce_rms_qk, (qkv.clone(), qw, kw, eps, ""), None)


@budget(60)
@given(data=st.data())
def test_allreduce_rms_bad_input(data):
    qkv, qw, kw, eps = data.draw(rms_qk_cases("cpu"))
    T, n = qkv.shape
    kind = data.draw(st.sampled_from(["qkv_dtype", "qkv_rank", "cols", "eps", "w_dtype", "noncontig", "wdevice",
                                      "one_weight", "one_eps", "one_x"]))
    f = mm.allreduce_rms_qk
    if kind == "qkv_dtype":
        expect_error("allreduce_rms_qk", "qkv", f, qkv.to(torch.float64), qw, kw, eps)
    elif kind == "qkv_rank":
        expect_error("allreduce_rms_qk", "qkv", f, qkv.reshape(-1), qw, kw, eps)
    elif kind == "cols":
        expect_error("allreduce_rms_qk", "qkv", f, torch.zeros(T, n + 1, dtype=qkv.dtype), qw, kw, eps)
    elif kind == "eps":
        expect_error("allreduce_rms_qk", "eps", f, qkv, qw, kw, data.draw(st.sampled_from([0.0, -1e-6, NAN, INF])))
    elif kind == "w_dtype":
        expect_error("allreduce_rms_qk", "q_weight", f, qkv, qw.to(torch.int32), kw, eps)
    elif kind == "noncontig":
        assume(T > 0)
        expect_error("allreduce_rms_qk", "qkv", f, torch.zeros(T, 2 * n, dtype=qkv.dtype)[:, ::2], qw, kw, eps)
    elif kind == "wdevice":
        expect_error("allreduce_rms_qk", "k_weight", f, qkv, qw, kw.to("meta"), eps)
    elif kind == "one_weight":
        expect_error("allreduce_rms", "weight", mm.allreduce_rms, qkv, torch.ones(n + 1, dtype=qkv.dtype), eps)
    elif kind == "one_eps":
        expect_error("allreduce_rms", "eps", mm.allreduce_rms, qkv, torch.ones(n, dtype=qkv.dtype),
                     data.draw(st.sampled_from([0.0, NAN, INF])))
    else:
        expect_error("allreduce_rms", "x", mm.allreduce_rms, qkv.reshape(1, T, n), torch.ones(n), eps)


# --------------------------------------------------------------------------- #
# mxfp8_quant, mxfp8_dequant, mxfp8_fn_to_fnuz
# --------------------------------------------------------------------------- #

FP8_NAMES = {FN: "e4m3fn", FNUZ: "e4m3fnuz"}


@st.composite
def quant_cases(draw, device):
    dtype = draw(st.sampled_from(FLOATS))
    lead = draw(st.lists(st.sampled_from(TOKENS), max_size=2))
    K = 32 * draw(st.sampled_from([1, 2, 3, 4, 5]))
    # e4m3 / e8m0 edges: values near 448 and 240 times powers of two, and the
    # extremes of the dtype; one block may hold only subnormals or zeros
    x = draw(tensors((*lead, K), dtype, special_values(dtype), device=device, specials=8,
                     scale=draw(st.sampled_from([1.0, 2.0 ** -130, 2.0 ** 100, 1e-3]))))
    return x, draw(st.sampled_from([FN, FNUZ]))


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_mxfp8_quant(device, data):
    """Bit-exact: the same fp8 bytes and e8m0 bytes as the reference."""
    need_device(device)
    x, fp8 = data.draw(quant_cases(device))
    rq, rs = R.mxfp8_quant(x.cpu(), fp8)
    q, s = mm.mxfp8_quant(x, FP8_NAMES[fp8])
    fake_matches_real(torch.ops.minimax_rocm.mxfp8_quant, (x, FP8_NAMES[fp8]), (q, s))
    outs = {"op": (q, s)}
    p = oracle.Problem("mxfp8_quant", tokens=x.numel() // x.shape[-1], hidden=x.shape[-1], dtype=str(x.dtype)[6:],
                       on_gpu=x.is_cuda)
    for b in gpu_backends(p, device, x):
        outs[b] = oracle.impl("mxfp8_quant", b)(x, FP8_NAMES[fp8])
    for b, (q, s) in outs.items():
        assert q.dtype == fp8 and s.dtype == torch.uint8 and q.shape == x.shape
        assert torch.equal(s.cpu(), rs), f"{b}: scales differ"
        assert torch.equal(q.view(torch.uint8).cpu(), rq.view(torch.uint8)), f"{b}: elements differ"


@st.composite
def dequant_cases(draw, device):
    fp8 = draw(st.sampled_from([FN, FNUZ]))
    lead = draw(st.lists(st.sampled_from(TOKENS), max_size=2))
    K = 32 * draw(st.sampled_from([1, 2, 3]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    q = torch.randint(0, 256, (*lead, K), generator=g, dtype=torch.uint8)      # every byte, NaN encodings too
    lo, hi = draw(st.sampled_from([(0, 256), (100, 150), (0, 3), (250, 256)]))     # e8m0 edges: 2^-127 .. NaN
    s = torch.randint(lo, hi, (*lead, K // 32), generator=g, dtype=torch.uint8)
    return q.view(fp8).to(device), s.to(device), draw(st.sampled_from(FLOATS))


def dequant64(q, s):
    """Float64 dequantisation: q * 2^(s - 127), NaN for the NaN scale."""
    return R.mxfp8_dequant(q.cpu(), s.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_mxfp8_dequant(device, data):
    need_device(device)
    q, s, out_dtype = data.draw(dequant_cases(device))
    ref = dequant64(q, s)
    # exact: a power-of-two multiple of an fp8 value, rounded once
    tol = dict(rtol=0.0, atol=float(torch.finfo(out_dtype).smallest_normal) * ulp(out_dtype) * 2,
               ambiguous=ref.abs() >= float(torch.finfo(out_dtype).max))
    out = mm.mxfp8_dequant(q, s, out_dtype)
    check(out, ref, **tol, what="op")
    fake_matches_real(torch.ops.minimax_rocm.mxfp8_dequant, (q, s, str(out_dtype)[6:]), out)
    p = oracle.Problem("mxfp8_dequant", tokens=q.numel() // q.shape[-1], hidden=q.shape[-1], on_gpu=q.is_cuda)
    for b in gpu_backends(p, device):
        tb = dict(tol, atol=max(tol["atol"], interp_atol(device, out_dtype) if b == "triton" else 0.0))
        check(oracle.impl("mxfp8_dequant", b)(q, s, str(out_dtype)[6:]), ref, **tb, what=b)
    # the fn -> fnuz checkpoint conversion keeps every value (its one bad scale, 2^127, is an error)
    if q.dtype == FN:
        if bool((s == 0xFE).any()):
            expect_error("mxfp8_fn_to_fnuz", "scales", mm.mxfp8_fn_to_fnuz, q, s)
        else:
            qu, su = mm.mxfp8_fn_to_fnuz(q, s)
            a, b = dequant64(q, s), dequant64(qu, su)
            assert torch.equal(torch.isnan(a), torch.isnan(b))
            assert torch.equal(a[~torch.isnan(a)], b[~torch.isnan(b)])


@budget(60)
@given(data=st.data())
def test_mxfp8_bad_input(data):
    x, fp8 = data.draw(quant_cases("cpu"))
    q, s = R.mxfp8_quant(x, fp8)
    K = x.shape[-1]
    kind = data.draw(st.sampled_from(["qx_dtype", "qx_k", "q_flavour", "q_name", "dq_dtype", "dq_sshape", "dq_sdtype",
                                      "dq_out", "dq_k", "noncontig", "fnuz_q", "fnuz_s", "fnuz_shape"]))
    if kind == "qx_dtype":
        expect_error("mxfp8_quant", "x", mm.mxfp8_quant, x.to(torch.float64), "e4m3fn")
    elif kind == "qx_k":
        expect_error("mxfp8_quant", "x", mm.mxfp8_quant, torch.zeros(*x.shape[:-1], K - 8, dtype=x.dtype), "e4m3fn")
    elif kind == "q_flavour":
        expect_error("mxfp8_quant", "fp8_dtype", mm.mxfp8_quant, x, data.draw(st.sampled_from(["e5m2", "fp8", ""])))
    elif kind == "q_name":
        expect_error("mxfp8_quant", "x", mm.mxfp8_quant, torch.zeros((), dtype=x.dtype), "e4m3fn")
    elif kind == "dq_dtype":
        expect_error("mxfp8_dequant", "q", mm.mxfp8_dequant, q.view(torch.uint8), s)
    elif kind == "dq_sshape":
        expect_error("mxfp8_dequant", "scales", mm.mxfp8_dequant, q, torch.zeros(*s.shape[:-1], s.shape[-1] + 1,
                                                                             dtype=torch.uint8))
    elif kind == "dq_sdtype":
        expect_error("mxfp8_dequant", "scales", mm.mxfp8_dequant, q, s.to(torch.int32))
    elif kind == "dq_out":
        expect_error("mxfp8_dequant", "out_dtype", mm.mxfp8_dequant, q, s, torch.int8)
    elif kind == "dq_k":
        expect_error("mxfp8_dequant", "q", mm.mxfp8_dequant, q[..., :K - 16].contiguous(), s)
    elif kind == "noncontig":
        assume(x.numel() > 0)
        expect_error("mxfp8_quant", "x", mm.mxfp8_quant, torch.zeros(*x.shape[:-1], 2 * K, dtype=x.dtype)[..., ::2],
                     "e4m3fn")
    elif kind == "fnuz_q":
        expect_error("mxfp8_fn_to_fnuz", "q", mm.mxfp8_fn_to_fnuz, q.view(torch.uint8), s)
    elif kind == "fnuz_s":
        assume(fp8 == FN)
        expect_error("mxfp8_fn_to_fnuz", "scales", mm.mxfp8_fn_to_fnuz, q, s.to(torch.int64) + 300)
    else:
        assume(fp8 == FN)
        # one scale more than q's blocks: the wrong shape for every q (a slice
        # to one scale is right when q is one block)
        one_more = torch.cat([s.reshape(-1), s.reshape(-1)[:1]])
        expect_error("mxfp8_fn_to_fnuz", "scales", mm.mxfp8_fn_to_fnuz, q, one_more)


# --------------------------------------------------------------------------- #
# moe_align
# --------------------------------------------------------------------------- #


@st.composite
def align_cases(draw, device):
    T, k = draw(st.sampled_from(TOKENS)), draw(st.sampled_from([1, 2, 4, 8]))
    E_loc = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    id_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        E_glob = E_loc * draw(st.sampled_from([1, 2, 4]))
        # any map: remote (-1) or a local id, repeats allowed
        emap = torch.randint(-1, E_loc, (E_glob,), generator=g).to(draw(st.sampled_from([torch.int32, torch.int64])))
        emap = emap.to(device)
    else:
        E_glob, emap = E_loc, None
    ids = torch.randint(0, E_glob, (T, k), generator=g, dtype=id_dtype).to(device)
    return ids, draw(st.sampled_from([1, 2, 4, 16, 64])), emap, E_loc


@pytest.mark.parametrize("device", DEVICES)
@budget(100)
@given(data=st.data())
def test_moe_align(device, data):
    """Exactly the reference's buffers (the kernels keep the flat route order)."""
    need_device(device)
    ids, bm, emap, E_loc = data.draw(align_cases(device))
    ref = R.moe_align(ids.cpu(), bm, None if emap is None else emap.cpu(), E_loc)
    out = mm.moe_align(ids, bm, emap, E_loc)
    fake_matches_real(torch.ops.minimax_rocm.moe_align, (ids, bm, emap, E_loc), out)
    outs = {"op": out}
    p = oracle.Problem("moe_align", tokens=ids.shape[0], top_k=ids.shape[1], num_local_experts=E_loc,
                       on_gpu=ids.is_cuda)
    for b in gpu_backends(p, device):
        outs[b] = oracle.impl("moe_align", b)(ids, bm, emap, E_loc)
    for b, got in outs.items():
        for name, g, r in zip(("sorted_route_ids", "block_expert_ids", "num_routes_post_padded"), got, ref):
            assert g.dtype == torch.int32 and torch.equal(g.cpu(), r), f"{b}: {name} differs"


@budget(60)
@given(data=st.data())
def test_moe_align_bad_input(data):
    ids, bm, emap, E_loc = data.draw(align_cases("cpu"))
    E_glob = E_loc if emap is None else emap.shape[0]
    kind = data.draw(st.sampled_from(["block_m", "experts", "id_range", "id_neg", "id_dtype", "rank", "map_range",
                                      "map_short", "map_dtype"]))
    f = mm.moe_align
    if kind == "block_m":
        expect_error("moe_align", "block_m", f, ids, data.draw(st.sampled_from([0, -16, 3, 24])), emap, E_loc)
    elif kind == "experts":
        expect_error("moe_align", "num_local_experts", f, ids, bm, None, data.draw(st.sampled_from([0, -2])))
    elif kind in ("id_range", "id_neg"):
        assume(ids.numel() > 0)
        bad = ids.clone()
        bad.view(-1)[data.draw(st.integers(0, ids.numel() - 1))] = E_glob + 3 if kind == "id_range" else -1
        expect_error("moe_align", "topk_ids", f, bad, bm, emap, E_loc)
    elif kind == "id_dtype":
        expect_error("moe_align", "topk_ids", f, ids.float(), bm, emap, E_loc)
    elif kind == "rank":
        expect_error("moe_align", "topk_ids", f, ids.reshape(-1), bm, emap, E_loc)
    elif kind == "map_range":
        bad = torch.full((E_glob,), E_loc, dtype=torch.int32)
        expect_error("moe_align", "expert_map", f, ids, bm, bad, E_loc)
    elif kind == "map_short":
        assume(E_loc > 1)
        expect_error("moe_align", "expert_map", f, ids.clamp(max=0), bm, torch.zeros(E_loc - 1, dtype=torch.int32),
                     E_loc)
    else:
        expect_error("moe_align", "expert_map", f, ids, bm, torch.zeros(E_glob, dtype=torch.float32), E_loc)


# --------------------------------------------------------------------------- #
# fused_moe (BF16 weights) and fused_moe_mxfp8
# --------------------------------------------------------------------------- #

MOE_TOL = R.REL_TOL


@st.composite
def routing(draw, T, E_loc, device):
    """topk weights and ids `[T, k]` (GLOBAL ids, distinct per token) and an
    expert map (or None: every expert local)."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    ep = draw(st.sampled_from([1, 2, 3]))
    E_glob = E_loc * ep
    k = draw(st.integers(1, min(3, E_glob)))
    if ep > 1:
        from minimax_rocm.parallel import expert_map
        emap = expert_map(E_glob, ep, draw(st.integers(0, ep - 1))).to(device)
    else:
        emap = None
    ids = (torch.stack([torch.randperm(E_glob, generator=g)[:k] for _ in range(T)]) if T else
           torch.zeros(0, k, dtype=torch.int64)).to(draw(st.sampled_from([torch.int32, torch.int64]))).to(device)
    tw = draw(tensors((T, k), F32, moderate_values(F32), device=device, scale=0.5, specials=2))
    return tw, ids, emap


@st.composite
def moe_cases(draw, device):
    dtype = draw(st.sampled_from([BF, F32, F16]))
    T = draw(st.sampled_from([0, 1, 2, 3, 5]))
    H, I = draw(st.sampled_from([8, 16, 24, 32, 40])), draw(st.sampled_from([8, 16, 24, 32]))
    E_loc = draw(st.integers(1, 3))
    vals = moderate_values(dtype)
    hidden = draw(tensors((T, H), dtype, vals, device=device, scale=1.0, specials=2))
    w13 = draw(tensors((E_loc, 2 * I, H), dtype, vals, device=device, scale=3 / H ** 0.5, specials=2))
    w2 = draw(tensors((E_loc, H, I), dtype, vals, device=device, scale=I ** -0.5, specials=2))
    tw, ids, emap = draw(routing(T, E_loc, device))
    act = draw(st.sampled_from(["swiglu_oai", "silu"]))
    layout = draw(st.sampled_from(["split", "interleaved"]))
    return hidden, w13, w2, tw, ids, emap, act, layout


def moe_magnitude(hidden, w13, w2, tw, ids, emap, act, layout, alpha=R.SWIGLU_OAI_ALPHA,
                  limit=R.SWIGLU_OAI_LIMIT, quant=None):
    """`[T, H]` float64: the MoE with every product taken in absolute value
    and each activation replaced by a bound on its value and on its change
    under a relative change of gate and up (|f| + |g df/dg| + |u df/du|): the
    scale of each output's rounding error, which cancellation in the output
    itself does not shrink."""
    hf = hidden.double().cpu()
    hf = torch.nan_to_num(quant(hf) if quant else hf, nan=0.0)
    T, H = hf.shape
    out = torch.zeros(T, H, dtype=torch.float64)
    local = R.local_expert_ids(ids.cpu(), None if emap is None else emap.cpu())
    w13, w2, tw = (torch.nan_to_num(t.double().cpu(), nan=0.0) for t in (w13, w2, tw))
    for e in range(w13.shape[0]):
        tok, slot = torch.nonzero(local == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        g, u = R.split_gate_up(torch.nan_to_num(hf[tok] @ w13[e].t(), nan=0.0), layout)
        if act == "swiglu_oai":
            g, u = g.clamp(max=limit), u.clamp(-limit, limit)
            a = (u.abs() + 1) * (g * torch.sigmoid(alpha * g)).abs() * (2 + alpha * g.abs())
        else:
            a = (g * torch.sigmoid(g)).abs() * u.abs() * (2 + g.abs())
        a = torch.nan_to_num(a, nan=0.0)
        out.index_add_(0, tok, (a @ w2[e].abs().t()) * tw[tok, slot].abs().unsqueeze(-1))
    return out


def moe_check(out, ref, dtype, tol, what, mag, inputs=()):
    """NaN / inf exactly where the reference has them; finite values within
    `tol` times the magnitude `mag`, in Frobenius norm (the GEMMs' error is a
    norm property; the magnitude keeps a cancelling output from making any
    rounding look large). Where an input holds an infinity, an infinite
    reference element is inf times, or plus, a finite term that rounding in
    the op's precision may move across zero or to an infinity of its own:
    any non-finite value passes there (either sign, or NaN), a finite one
    does not."""
    amb = None
    if any(t is not None and t.is_floating_point() and bool(torch.isinf(t).any()) for t in inputs):
        amb = torch.isinf(ref.cpu())
    check(out, ref, rtol=INF, what=what, ambiguous=amb)   # non-finite pattern only
    o, r = out.double().cpu(), ref.to(dtype).double().cpu()
    fin = torch.isfinite(r) & torch.isfinite(mag)
    err = (o[fin] - r[fin]).norm().item()
    scale = mag[fin].norm().item()
    assert err <= tol * scale + 1e-30 * math.sqrt(max(1, int(fin.sum()))), \
        f"{what}: error {err:.3g} = {err / max(scale, 1e-300):.3g} x magnitude {scale:.3g} > {tol}"


@pytest.mark.parametrize("device", DEVICES)
@budget(80)
@given(data=st.data())
def test_fused_moe(device, data):
    need_device(device)
    hidden, w13, w2, tw, ids, emap, act, layout = data.draw(moe_cases(device))
    alpha, limit = data.draw(st.sampled_from([(1.702, 7.0), (1.0, 2.0)]))
    ref = R.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ids, emap, act, layout, alpha, limit)
    tol = MOE_TOL[hidden.dtype]
    args = (hidden, w13, w2, tw, ids, emap, act, layout, alpha, limit)
    variant = data.draw(st.sampled_from(["auto", "sparse_local", "before"]))
    mag = moe_magnitude(hidden, w13, w2, tw, ids, emap, act, layout, alpha, limit)
    out = mm.fused_moe(*args, variant=variant)
    moe_check(out, ref, hidden.dtype, tol, "op", mag, (hidden, w13, w2, tw))
    fake_matches_real(torch.ops.minimax_rocm.fused_moe, args + (variant,), out)
    from minimax_rocm.ops.moe import moe_problem
    for b in gpu_backends(moe_problem("fused_moe", hidden, w13, ids, emap), device, hidden, w13, w2):
        got = oracle.impl("fused_moe", b)(*args, variant)
        moe_check(got, ref, hidden.dtype, tol, f"{b}/{variant}", mag, (hidden, w13, w2, tw))


@st.composite
def mx_weights(draw, shape, fp8, device):
    """Quantised random weights: some blocks at the smallest scale (2^-127),
    some NaN blocks (NaN in the float weights -> NaN scale and NaN bytes),
    elements at the e4m3 maximum (each block's largest element)."""
    w = draw(tensors(shape, F32, [NAN, 0.0, -0.0, INF], scale=3 / shape[-1] ** 0.5, specials=2, offset=False))
    q, s = R.mxfp8_quant(w, fp8)
    nb = s.numel()
    for pos in draw(st.lists(st.integers(0, nb - 1), max_size=2)):
        s.view(-1)[pos] = 0
    return q.to(device), s.to(device)


@st.composite
def mx_moe_cases(draw, device):
    fp8 = draw(st.sampled_from([FN, FNUZ]))
    dtype = draw(st.sampled_from([BF, F32]))
    T = draw(st.sampled_from([0, 1, 2, 3, 5]))
    H, I = 32 * draw(st.integers(1, 2)), 32 * draw(st.integers(1, 2))
    E_loc = draw(st.integers(1, 3))
    hidden = draw(tensors((T, H), dtype, moderate_values(dtype), device=device, scale=1.0, specials=2))
    w13_q, w13_s = draw(mx_weights((E_loc, 2 * I, H), fp8, device))
    w2_q, w2_s = draw(mx_weights((E_loc, H, I), fp8, device))
    tw, ids, emap = draw(routing(T, E_loc, device))
    act = draw(st.sampled_from(["swiglu_oai", "silu"]))
    layout = draw(st.sampled_from(["split", "interleaved"]))
    return hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout


# native MXFP8 vs the activation-quantised reference: fp32 accumulation, the
# rare activation whose fp8 rounding or block scale flips against float64,
# bf16 output (test_fused_moe_mxfp8.py: measured up to ~1e-2 at tiny sizes)
MX_NATIVE_TOL = 3e-2


@pytest.mark.parametrize("device", DEVICES)
@budget(60)
@given(data=st.data())
def test_fused_moe_mxfp8(device, data):
    need_device(device)
    hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout = data.draw(mx_moe_cases(device))
    base = (hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout)
    ref_u = R.fused_moe_mxfp8(*base, quantize_activations=False)      # emulation contract (the torch backend)
    ref_q = R.fused_moe_mxfp8(*base)                                  # native: activations quantised
    with_copy = data.draw(st.booleans())
    w13_b = R.mxfp8_dequant(w13_q, w13_s, hidden.dtype) if with_copy else None
    w2_b = R.mxfp8_dequant(w2_q, w2_s, hidden.dtype) if with_copy else None
    mml = data.draw(st.sampled_from([0, 4096, 65536]))
    op_args = (*base, R.SWIGLU_OAI_ALPHA, R.SWIGLU_OAI_LIMIT, mml, w13_b, w2_b)
    w13_d, w2_d = R.mxfp8_dequant(w13_q, w13_s, torch.float64), R.mxfp8_dequant(w2_q, w2_s, torch.float64)
    mag_u = moe_magnitude(hidden, w13_d, w2_d, tw, ids, emap, act, layout)
    out = mm.fused_moe_mxfp8(hidden, Mxfp8Experts(w13_q, w13_s, w2_q, w2_s, w13_b, w2_b), tw, ids, emap, act,
                             layout, max_model_len=mml)

    def ref_bf16(w13, w2):   # what the BF16-copy and emulation paths compute
        return R.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ids, emap, act, layout)

    mag_q = moe_magnitude(hidden, w13_d, w2_d, tw, ids, emap, act, layout,
                          quant=lambda x: R.mxfp8_dequant(*R.mxfp8_quant(x, w13_q.dtype), torch.float64))
    impl = oracle.impl("fused_moe_mxfp8", "triton")
    call = (*base, R.SWIGLU_OAI_ALPHA, R.SWIGLU_OAI_LIMIT, w13_b, w2_b)
    emu = (R.mxfp8_dequant(w13_q, w13_s, hidden.dtype), R.mxfp8_dequant(w2_q, w2_s, hidden.dtype))

    def path_check(got, path):
        """Each path against its own contract: native quantises the
        activations; the BF16 copy and emulation run the BF16 MoE on weights
        dequantised to hidden's dtype; the reference is the emulation contract."""
        if path == "native_mxfp8":
            moe_check(got, ref_q, hidden.dtype, MX_NATIVE_TOL, path, mag_q, (hidden, tw))
        elif path == "bf16_copy":
            moe_check(got, ref_bf16(w13_b, w2_b), hidden.dtype, MOE_TOL[hidden.dtype], path, mag_u,
                      (hidden, tw))
        elif path == "emulation":
            moe_check(got, ref_bf16(*emu), hidden.dtype, MOE_TOL[hidden.dtype], path, mag_u, (hidden, tw))
        else:
            moe_check(got, ref_u, hidden.dtype, MOE_TOL[hidden.dtype], path, mag_u, (hidden, tw))

    from minimax_rocm.ops.moe import moe_problem
    problem = moe_problem("fused_moe_mxfp8", hidden, w13_q, ids, emap, weight_format="mxfp8", max_model_len=mml,
                          has_bf16_copy=with_copy)
    path_check(out, oracle.moe_path(problem))       # the op: the oracle's path here
    fake_matches_real(torch.ops.minimax_rocm.fused_moe_mxfp8, op_args, out)
    if device == "cpu":
        from minimax_rocm.triton import fused_moe_mxfp8 as tri
        mode = data.draw(st.sampled_from([dict(dot="fp8"), dict(dot="upcast", fuse_act=False),
                                          dict(dot="upcast", fuse_act=True)]))
        if interp_reads(device, hidden):
            got = tri.fused_moe_mxfp8(*base, **mode)
            moe_check(got, ref_q, hidden.dtype, MX_NATIVE_TOL, f"native {mode}", mag_q, (hidden, tw))
        paths = [p for p, ok in (("emulation", True), ("bf16_copy", with_copy)) if ok]
        if not interp_reads(device, hidden, *emu):     # the BF16 weights hold subnormals
            paths = []
    else:
        paths = [path for b, path in rule_paths(problem) if b == "triton"]
    for path in paths:
        path_check(impl(*call, path=path), path)


@budget(60)
@given(data=st.data())
def test_fused_moe_bad_input(data):
    hidden, w13, w2, tw, ids, emap, act, layout = data.draw(moe_cases("cpu"))
    T, H = hidden.shape
    E_loc, two_i, _ = w13.shape
    kind = data.draw(st.sampled_from(["act", "layout", "variant", "hidden", "w13_k", "w13_odd", "w2", "ids_rows",
                                      "ids_range", "tw", "map", "limit", "alpha", "wdtype", "noncontig"]))
    f = mm.fused_moe
    a = [hidden, w13, w2, tw, ids, emap, act, layout]
    if kind == "act":
        a[6] = "gelu"
        expect_error("fused_moe", "activation", f, *a)
    elif kind == "layout":
        a[7] = "blocked"
        expect_error("fused_moe", "layout", f, *a)
    elif kind == "variant":
        expect_error("fused_moe", "variant", lambda *x: f(*x, variant="fast"), *a)
    elif kind == "hidden":
        a[0] = hidden.reshape(1, T, H)
        expect_error("fused_moe", "hidden", f, *a)
    elif kind == "w13_k":
        a[1] = torch.zeros(E_loc, two_i, H + 1, dtype=hidden.dtype)
        expect_error("fused_moe", "w13", f, *a)
    elif kind == "w13_odd":
        a[1] = torch.zeros(E_loc, two_i + 1, H, dtype=hidden.dtype)
        expect_error("fused_moe", "w13", f, *a)
    elif kind == "w2":
        a[2] = torch.zeros(E_loc, H, two_i // 2 + 1, dtype=hidden.dtype)
        expect_error("fused_moe", "w2", f, *a)
    elif kind == "ids_rows":
        a[4] = torch.zeros(T + 1, ids.shape[1], dtype=torch.int32)
        expect_error("fused_moe", "topk_ids", f, *a)
    elif kind == "ids_range":
        assume(T > 0)
        bad = ids.clone()
        bad[0, 0] = (E_loc if emap is None else emap.shape[0]) + 1
        a[4] = bad
        expect_error("fused_moe", "topk_ids", f, *a)
    elif kind == "tw":
        a[3] = torch.zeros(T, ids.shape[1] + 1)
        expect_error("fused_moe", "topk_weights", f, *a)
    elif kind == "map":
        a[5] = torch.full((E_loc + 2,), E_loc, dtype=torch.int32)
        a[4] = ids.clamp(max=0)
        expect_error("fused_moe", "expert_map", f, *a)
    elif kind == "limit":
        assume(act == "swiglu_oai")
        expect_error("fused_moe", "limit", lambda *x: f(*x, limit=data.draw(st.sampled_from([0.0, -1.0, NAN]))), *a)
    elif kind == "alpha":
        assume(act == "swiglu_oai")
        expect_error("fused_moe", "alpha", lambda *x: f(*x, alpha=NAN), *a)
    elif kind == "wdtype":
        a[1] = w13.to(F16 if hidden.dtype != F16 else BF)
        expect_error("fused_moe", "w13", f, *a)
    else:
        assume(T > 0)
        a[0] = torch.zeros(T, 2 * H, dtype=hidden.dtype)[:, ::2]
        expect_error("fused_moe", "hidden", f, *a)


@budget(60)
@given(data=st.data())
def test_fused_moe_mxfp8_bad_input(data):
    """One expert tensor broken: building the Mxfp8Experts and the custom op
    handed the tensors loose both name it. A copy in another dtype than
    hidden's fails the call (the object takes any float copy); experts that
    are no Mxfp8Experts fail the public function."""
    hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout = data.draw(mx_moe_cases("cpu"))
    w = dict(w13_q=w13_q, w13_s=w13_s, w2_q=w2_q, w2_s=w2_s, w13_bf16=None, w2_bf16=None)
    kind = data.draw(st.sampled_from(["w13_q", "w13_s", "w2_s", "copy_pair", "copy_shape", "w2_q", "copy_dtype",
                                      "experts"]))
    copy = torch.zeros(w13_q.shape, dtype=hidden.dtype)
    arg = kind
    if kind == "w13_q":
        w["w13_q"] = w13_q.view(torch.uint8)
    elif kind == "w13_s":
        w["w13_s"] = w13_s[..., :-1].contiguous() if w13_s.shape[-1] > 1 else w13_s.to(torch.int32)
    elif kind == "w2_s":
        w["w2_s"] = w2_s.float()
    elif kind == "copy_pair":
        w["w13_bf16"], arg = copy, "w13_bf16"
    elif kind == "copy_shape":
        w["w13_bf16"], w["w2_bf16"], arg = copy, torch.zeros(1, dtype=hidden.dtype), "w2_bf16"
    elif kind == "copy_dtype":
        other = F16 if hidden.dtype != F16 else BF
        w["w13_bf16"], w["w2_bf16"], arg = copy.to(other), torch.zeros(w2_q.shape, dtype=other), "w13_bf16"
    elif kind == "w2_q":
        w["w2_q"] = w2_q.to(FNUZ if w2_q.dtype == FN else FN)
    if kind == "experts":
        expect_error("fused_moe_mxfp8", "experts", mm.fused_moe_mxfp8, hidden, (w13_q, w13_s, w2_q, w2_s), tw, ids)
        return
    expect_error("fused_moe_mxfp8", arg, lambda: mm.fused_moe_mxfp8(hidden, Mxfp8Experts(**w), tw, ids, emap, act,
                                                                    layout))
    expect_error("fused_moe_mxfp8", arg, torch.ops.minimax_rocm.fused_moe_mxfp8, hidden, w["w13_q"], w["w13_s"],
                 w["w2_q"], w["w2_s"], tw, ids, emap, act, layout, R.SWIGLU_OAI_ALPHA, R.SWIGLU_OAI_LIMIT, 0,
                 w["w13_bf16"], w["w2_bf16"])


# --------------------------------------------------------------------------- #
# layer_weight_formats (a plain function)
# --------------------------------------------------------------------------- #


@budget(100)
@given(n=st.integers(0, 100), mml=st.integers(1, 1 << 20), arch=st.sampled_from(["gfx942", "gfx950", "sm90", "sm100"]))
def test_layer_weight_formats(n, mml, arch):
    f = layer_weight_formats(n, mml, arch)
    assert len(f) == n and set(f) <= {"mxfp8+bf16", "mxfp8", "bf16"}
    if mml <= oracle.threshold("mxfp8_native_max_model_len", arch):
        assert set(f) <= {"mxfp8+bf16"}
    else:
        every = int(oracle.threshold("mxfp8_bf16_only_every", arch))
        assert f.count("bf16") == n // every


@pytest.mark.parametrize("bad,arg", [((-1, 4096), "num_layers"), ((4, -5), "max_model_len"),
                                     ((2.5, 4096), "num_layers"), ((4, 4096, "gfx999"), "arch")])
def test_layer_weight_formats_bad_input(bad, arg):
    expect_error("layer_weight_formats", arg, layer_weight_formats, *bad)


# --------------------------------------------------------------------------- #
# torch.library.opcheck on drawn cases (schema, fake tensor, AOT dispatch)
# --------------------------------------------------------------------------- #

_OPCHECK_UTILS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


@st.composite
def opcheck_cases(draw):
    op = draw(st.sampled_from(["swiglu_oai", "topk_reduce", "router_gemm", "allreduce_rms", "allreduce_rms_qk",
                               "mxfp8_quant", "mxfp8_dequant", "moe_align", "fused_moe", "fused_moe_mxfp8"]))
    if op == "swiglu_oai":
        x, alpha, limit, layout = draw(swiglu_cases("cpu"))
        return op, (x, alpha, limit, layout)
    if op == "topk_reduce":
        return op, draw(topk_cases("cpu"))
    if op == "router_gemm":
        return op, draw(router_cases("cpu"))
    if op == "allreduce_rms":
        x, w, eps = draw(rms_cases("cpu"))
        return op, (x, w, eps, "")
    if op == "allreduce_rms_qk":
        return op, (*draw(rms_qk_cases("cpu")), "")
    if op == "mxfp8_quant":
        x, fp8 = draw(quant_cases("cpu"))
        return op, (x, FP8_NAMES[fp8])
    if op == "mxfp8_dequant":
        q, s, od = draw(dequant_cases("cpu"))
        return op, (q, s, str(od)[6:])
    if op == "moe_align":
        return op, draw(align_cases("cpu"))
    if op == "fused_moe":
        return op, (*draw(moe_cases("cpu")), 1.702, 7.0, "auto")
    hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout = draw(mx_moe_cases("cpu"))
    return op, (hidden, w13_q, w13_s, w2_q, w2_s, tw, ids, emap, act, layout, 1.702, 7.0, 0, None, None)


def _finite(t: torch.Tensor) -> torch.Tensor:
    if t.dtype in (FN, FNUZ):
        b = t.view(torch.uint8)
        nan = (b == 0x80) if t.dtype == FNUZ else ((b & 0x7F) == 0x7F)
        return torch.where(nan, torch.zeros_like(b), b).view(t.dtype)
    if t.dtype == torch.uint8:                       # e8m0 scales: no NaN scale, none huge
        return t.clamp(100, 150)
    if t.dtype.is_floating_point:
        return torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1e3, 1e3)
    return t


@budget(80)
@given(case=opcheck_cases())
def test_opcheck(case):
    op, args = case
    # NaN outputs fail the AOT test's comparison (assert_close), so the inputs
    # are made finite and moderate; the values do not matter to what opcheck checks
    args = tuple(_finite(a) if isinstance(a, torch.Tensor) else a for a in args)
    # opcheck's input cloning (torch._dynamo.utils.clone_input) fails on
    # tensors with a zero-size dim; fake_matches_real covers those
    assume(all(a.numel() for a in args if isinstance(a, torch.Tensor)))
    # (SchemaCheckMode compares inputs with allclose, which fp8 tensors lack)
    utils = _OPCHECK_UTILS[1:] if any(isinstance(a, torch.Tensor) and a.element_size() == 1
                                      and a.dtype.is_floating_point for a in args) else _OPCHECK_UTILS
    torch.library.opcheck(getattr(torch.ops.minimax_rocm, op).default, args, test_utils=utils)
