"""The AITER adapters (backends/aiter.py), without ROCm.

1. Contract: the pinned amd-aiter wheel is downloaded without dependencies
   (cached) and its sources parsed (AST, never imported): every AITER function
   the adapters call must exist with every keyword they pass. Skips only when
   the package index cannot be reached.
2. Oracle: "aiter" is chosen for fused_moe on a simulated gfx942 with AITER
   when no higher rule applies, and never where AITER is unavailable.
3. Mapping: with stand-in `aiter` modules that implement AITER's documented
   semantics (its sorting numbers a masked-in expert by how many masked-in
   experts precede it), the adapter's id/mask mapping reproduces the reference
   MoE for arbitrary expert maps; declined calls run the next backend.
"""
import dataclasses
import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minimax_rocm import oracle, reference
from minimax_rocm.backends import aiter as aiter_backend
from minimax_rocm.oracle import Problem, decide, simulated_platform
from minimax_rocm.ops import _common

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("fetch_aiter_wheel", ROOT / "scripts" / "fetch_aiter_wheel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fetch():
    return _script()


@pytest.fixture(scope="module")
def wheel_sources(fetch):
    try:
        wheel = fetch.fetch_wheel(aiter_backend.PINNED_VERSION)
    except fetch.IndexUnreachable as e:
        print(f"skipping the AITER contract: {e}")
        pytest.skip(str(e))
    return fetch.Sources(wheel)


# --------------------------------------------------------------------------- #
# 1. contract against the wheel
# --------------------------------------------------------------------------- #


def test_contract_holds_against_pinned_wheel(fetch, wheel_sources):
    assert wheel_sources.version() == aiter_backend.PINNED_VERSION
    errors, verified = fetch.check_contract(wheel_sources, aiter_backend)
    for v in verified:
        print("verified:", v)
    assert not errors, "\n".join(errors)
    # every declared entry was verified (nothing silently passed over)
    n = (len(aiter_backend.CONTRACT) + len(aiter_backend.NAMES) + len(aiter_backend.ATTRIBUTES)
         + len(aiter_backend.ENUMS) + 1)
    assert len(verified) == n


def test_checker_catches_a_broken_contract(fetch, wheel_sources):
    bad = SimpleNamespace(
        CONTRACT={
            "aiter.fused_moe:fused_moe": ("hidden_states", "w1", "w2", "topk_weight", "topk_ids", "expert_map"),
            "aiter.fused_moe:no_such_function": (),
            "aiter.no_such_module:f": (),
            # omits the required 'x'
            "aiter.ops.shuffle:shuffle_weight": ("layout",),
            "aiter.dist.device_communicators.custom_all_reduce:CustomAllreduce.all_reduce": ("inp", "outt"),
        },
        NAMES=("aiter.ops.enum:NoSuchEnum",),
        ATTRIBUTES={"aiter.dist.device_communicators.custom_all_reduce:CustomAllreduce": ("no_such_attr",)},
        ENUMS={"aiter_meta/csrc/include/aiter_enum.h:ActivationType": ("SwigluOAI",)},
        CK_MOE_CODEGEN=aiter_backend.CK_MOE_CODEGEN, CK_MOE_ACTIVATIONS=("silu", "gelu", "swiglu"))
    errors, _ = fetch.check_contract(wheel_sources, bad)
    text = "\n".join(errors)
    for needle in ("no parameter 'expert_map'", "no_such_function not defined", "aiter.no_such_module not in",
                   "required parameter 'x'", "no parameter 'outt'", "no module-level NoSuchEnum",
                   "'no_such_attr' never set", "no member SwigluOAI", "CK MoE activations are now"):
        assert needle in text, (needle, text)


def test_adapter_never_passes_a_keyword_outside_its_contract():
    with pytest.raises(AssertionError, match="outside its CONTRACT"):
        aiter_backend._kw("aiter.ops.shuffle:shuffle_weight", x=1, layout=(16, 16), use_int4=True)
    assert aiter_backend._kw("aiter.ops.shuffle:shuffle_weight", x=1) == {"x": 1}


# --------------------------------------------------------------------------- #
# 2. oracle decisions
# --------------------------------------------------------------------------- #


def _moe(**kw):
    base = dict(tokens=64, hidden=3072, num_experts=256, num_local_experts=256, top_k=8, ep_size=1)
    base.update(kw)
    return Problem("fused_moe", **base)


def test_oracle_routes_fused_moe_to_aiter_on_gfx942():
    aiter_backend.register()
    assert "aiter" in oracle.implemented("fused_moe")
    plat = simulated_platform("gfx942", aiter=True)
    d = decide(_moe(), plat, check_impl=True)
    assert d.chosen.backend == "aiter" and d.chosen.path == "generic", d
    assert [c.backend for c in d.fallbacks][-1] == "torch"
    # prefill batch under EP8 too (over the sparse-local token threshold)
    assert decide(_moe(tokens=2048, num_local_experts=32, ep_size=8), plat, True).chosen.backend == "aiter"
    # a higher rule wins: EP8 decode takes the sparse-local Triton path
    check = "triton" in oracle.implemented("fused_moe")
    ep8 = decide(_moe(tokens=216, hidden=6144, num_experts=128, num_local_experts=16, top_k=4, ep_size=8),
                 plat, check_impl=check)
    assert ep8.chosen.backend == "triton" and ep8.chosen.path == "sparse_local_bf16", ep8
    # what AITER's fused_moe cannot take is never routed to it
    for p in (_moe(dtype="float32"), _moe(hidden=3000), _moe(tokens=0)):
        assert decide(p, plat, True).chosen.backend != "aiter", p


@pytest.mark.parametrize("arch,aiter", [("gfx942", False), ("gfx950", False), ("sm90", True), ("sm100", True),
                                        ("cpu", True)])
def test_oracle_never_picks_aiter_where_unavailable(arch, aiter):
    aiter_backend.register()
    plat = simulated_platform(arch, aiter=aiter)
    assert not plat.aiter
    for op in ("fused_moe", "fused_moe_mxfp8", "mxfp8_quant", "allreduce_rms_qk", "allreduce_rms"):
        for p in (_moe(), _moe(tp_size=4, weight_format="mxfp8", max_model_len=4096, num_experts=128,
                               num_local_experts=16, top_k=4, ep_size=8, peer_access=False)):
            p = dataclasses.replace(p, op=op)
            for check_impl in (False, True):
                d = decide(p, plat, check_impl)
                assert "aiter" not in [c.backend for c in (d.chosen, *d.fallbacks)], (arch, p, d)


def test_no_aiter_rule_for_mxfp8_ops():
    # The pinned AITER has no OCP-exact MX fp8 quantiser and no per-32 e8m0 fp8 MoE.
    assert not [r for r in oracle.RULES if r.backend == "aiter" and r.op in ("mxfp8_quant", "fused_moe_mxfp8")]


def test_oracle_takes_aiter_allreduce_only_with_an_open_communicator(monkeypatch):
    aiter_backend.register()
    monkeypatch.setattr(aiter_backend, "_COMMS", {})
    no_ext = simulated_platform("gfx942", native_ext=False, aiter=True)
    p = Problem("allreduce_rms_qk", tokens=16, tp_size=4, peer_access=False)
    assert decide(p, no_ext, True).chosen.backend != "aiter"
    aiter_backend._COMMS["tp"] = aiter_backend._Comm(SimpleNamespace(), 4, 1024)
    assert decide(p, no_ext, True).chosen.backend == "aiter"
    assert decide(Problem("allreduce_rms", tokens=16, tp_size=4), no_ext, True).chosen.backend == "aiter"
    assert decide(Problem("allreduce_rms_qk", tokens=16, tp_size=2), no_ext, True).chosen.backend != "aiter"
    # the fused Lamport kernel stays first where it exists
    full = simulated_platform("gfx942", aiter=True)
    d = decide(Problem("allreduce_rms_qk", tokens=16, tp_size=4), full, False)
    assert d.chosen.backend == "hip" and d.fallbacks[0].backend == "aiter"


# --------------------------------------------------------------------------- #
# 3. the adapters' mapping, against stand-in AITER modules
# --------------------------------------------------------------------------- #


class _Enum:
    def __init__(self, name):
        self.name = name


FAKE_ACT = SimpleNamespace(Silu=_Enum("Silu"), Gelu=_Enum("Gelu"))
FAKE_QUANT = SimpleNamespace(No=_Enum("No"))


def _fake_shuffle_weight(x, layout=(16, 16)):
    assert layout == (16, 16)
    y = x.clone()
    y._fake_shuffled = True   # AITER marks its shuffled tensors the same way (is_shuffled)
    return y


def _fake_fused_moe(calls):
    def fused_moe(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask=None, activation=None,
                  quant_type=None):
        calls.append(expert_mask)
        assert getattr(w1, "_fake_shuffled", False) and getattr(w2, "_fake_shuffled", False)
        assert topk_weight.dtype == torch.float32 and topk_ids.dtype == torch.int32
        assert activation is FAKE_ACT.Silu and quant_type is FAKE_QUANT.No
        ids = topk_ids.long()
        if expert_mask is not None:
            assert expert_mask.dtype == torch.int32 and int(ids.max()) < expert_mask.numel()
            local = expert_mask.cumsum(0) - 1          # AITER's numbering of masked-in experts
            local[expert_mask == 0] = -1
            ids = local[ids]
        T, H = hidden_states.shape
        inter = w2.shape[2]
        out = torch.zeros((T, H), dtype=torch.float64)
        for e in range(w1.shape[0]):
            tok, slot = torch.nonzero(ids == e, as_tuple=True)
            h1 = hidden_states[tok].double() @ w1[e].double().t()
            a = torch.nn.functional.silu(h1[:, :inter]) * h1[:, inter:]
            out.index_add_(0, tok, (a @ w2[e].double().t()) * topk_weight[tok, slot].double().unsqueeze(-1))
        return out.to(hidden_states.dtype)
    return fused_moe


@pytest.fixture
def fake_aiter(monkeypatch):
    calls = []
    mods = {name: types.ModuleType(name) for name in ("aiter", "aiter.ops", "aiter.ops.enum", "aiter.ops.shuffle",
                                                        "aiter.fused_moe")}
    mods["aiter"].__path__ = []
    mods["aiter.ops"].__path__ = []
    mods["aiter.ops.enum"].ActivationType = FAKE_ACT
    mods["aiter.ops.enum"].QuantType = FAKE_QUANT
    mods["aiter.ops.shuffle"].shuffle_weight = _fake_shuffle_weight
    mods["aiter.fused_moe"].fused_moe = _fake_fused_moe(calls)
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)
    aiter_backend.available.cache_clear()
    monkeypatch.setattr(aiter_backend, "_PREPARED", {})
    monkeypatch.setattr(aiter_backend, "_MASKS", {})
    monkeypatch.delenv(aiter_backend.AUTO_PREPARE_ENV, raising=False)
    yield calls
    aiter_backend.available.cache_clear()


def _moe_inputs(T=9, H=128, inter=64, n_global=8, n_local=3, k=2, monotone=False):
    hidden = torch.randn(T, H).to(torch.bfloat16)
    w13 = (torch.randn(n_local, 2 * inter, H) / H ** 0.5).to(torch.bfloat16)
    w2 = (torch.randn(n_local, H, inter) / inter ** 0.5).to(torch.bfloat16)
    topk_ids = torch.stack([torch.randperm(n_global)[:k] for _ in range(T)]).to(torch.int32)
    # local ids in ascending global order (monotone: what AITER's own mask
    # numbering gives) or descending (a map only the adapter's remap gets right)
    owned = torch.randperm(n_global)[:n_local].sort(descending=not monotone).values
    emap = torch.full((n_global,), -1, dtype=torch.int32)
    emap[owned] = torch.arange(n_local, dtype=torch.int32)
    remote = [g for g in range(n_global) if emap[g] < 0]
    if len(remote) >= k:  # one token routed only to remote experts: its row must be exactly zero
        topk_ids[0] = torch.tensor(remote[:k], dtype=torch.int32)
        # token 1: the first owned expert (the highest global id in a descending map, which
        # numbers it opposite to AITER's mask order) next to a remote one, so its row alone
        # tells whether the remap happened (random routes miss both swapped experts in ~0.7%)
        topk_ids[1, :2] = torch.tensor([int(owned[0]), remote[0]], dtype=torch.int32)
    topk_weights = torch.rand(T, k)
    topk_weights /= topk_weights.sum(-1, keepdim=True)
    return hidden, w13, w2, topk_weights, topk_ids, emap


def _call(inputs, activation="silu", layout="split", variant="auto"):
    hidden, w13, w2, tw, ti, emap = inputs
    return aiter_backend.fused_moe(hidden, w13, w2, tw, ti, emap, activation, layout, reference.SWIGLU_OAI_ALPHA,
                                   reference.SWIGLU_OAI_LIMIT, variant)


def _ref(inputs, activation="silu", layout="split"):
    hidden, w13, w2, tw, ti, emap = inputs
    return reference.fused_moe(hidden.double(), w13.double(), w2.double(), tw.double(), ti, emap, activation,
                               layout)


@pytest.mark.parametrize("monotone", [False, True])
def test_moe_adapter_maps_any_expert_map(fake_aiter, monotone):
    inputs = _moe_inputs(monotone=monotone)
    hidden, w13, w2 = inputs[:3]
    aiter_backend.prepare_moe_weights(w13, w2)
    out = _call(inputs)
    assert len(fake_aiter) == 1, "AITER was not called"
    mask = fake_aiter[0]
    assert mask.tolist() == [1] * w13.shape[0] + [0]
    ref = _ref(inputs)
    assert out.dtype == hidden.dtype and out.shape == hidden.shape
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    err = reference.rel_error(out, ref)
    assert err < 1e-2, err          # bf16 output of a float64 computation
    # without the remap a non-monotone map would route to the wrong experts:
    # make sure this input can tell (the reference with AITER's own numbering differs)
    if not monotone:
        emap = inputs[5]
        aiter_numbering = torch.full_like(emap, -1)
        owned = (emap >= 0).nonzero().reshape(-1)
        aiter_numbering[owned] = torch.arange(owned.numel(), dtype=emap.dtype)
        assert not torch.equal(aiter_numbering, emap)
        wrong = _ref(inputs[:5] + (aiter_numbering,))
        assert reference.rel_error(wrong[1], ref[1]) > 0.1


def test_moe_adapter_without_expert_map(fake_aiter):
    hidden, w13, w2, tw, ti, _ = _moe_inputs(n_global=3, n_local=3)
    ti[0] = torch.tensor([0, 1], dtype=torch.int32)
    inputs = (hidden, w13, w2, tw, ti, None)
    aiter_backend.prepare_moe_weights(w13, w2)
    out = _call(inputs)
    assert fake_aiter == [None]
    assert reference.rel_error(out, _ref(inputs)) < 1e-2


@pytest.mark.parametrize("case", ["swiglu_oai", "interleaved", "unprepared", "variant", "modified"])
def test_moe_adapter_declines_and_runs_the_next_backend(fake_aiter, case):
    inputs = _moe_inputs()
    hidden, w13, w2 = inputs[:3]
    if case != "unprepared":
        aiter_backend.prepare_moe_weights(w13, w2)
    if case == "modified":
        w13.mul_(1.0)   # an in-place update after prepare: the shuffled copy is stale
    kw = {"swiglu_oai": dict(activation="swiglu_oai"), "interleaved": dict(layout="interleaved"),
          "variant": dict(variant="before")}.get(case, {})
    _common.LAST_BACKEND.pop("fused_moe", None)
    out = _call(inputs, **kw)
    assert fake_aiter == [], "a declined call reached AITER"
    assert "aiter declined" in _common.LAST_BACKEND["fused_moe"]
    ref = _ref(inputs, kw.get("activation", "silu"), kw.get("layout", "split"))
    assert reference.rel_error(out, ref) < 1e-2


def test_prepared_copies_die_with_the_weights(fake_aiter):
    _, w13, w2 = _moe_inputs()[:3]
    aiter_backend.prepare_moe_weights(w13, w2)
    assert len(aiter_backend._PREPARED) == 1
    del w13
    import gc
    gc.collect()
    assert len(aiter_backend._PREPARED) == 0


class _FakeComm:
    """Two ranks holding the same shard: the all-reduce doubles the sums."""
    world_size = 2
    disabled = False

    def __init__(self):
        self.calls = 0

    def all_reduce(self, inp, out=None, registered=False):
        assert inp.dtype == torch.float32 and inp.shape[1] == aiter_backend.AR_SLOTS
        assert (inp.numel() * 4) % 16 == 0 and not registered
        self.calls += 1
        out.copy_(inp * 2)
        return out


def test_allreduce_adapter_normalises_over_the_full_width(monkeypatch):
    comm = _FakeComm()
    monkeypatch.setattr(aiter_backend, "_COMMS", {"tp": aiter_backend._Comm(comm, 2, 64)})
    T, q, kv, eps = 7, 96, 32, 1e-6
    qkv = torch.randn(T, q + 2 * kv) * 3
    qw, kw = torch.randn(q), torch.randn(kv)
    want = reference.qk_norm_tp([qkv.double()] * 2, [qw.double()] * 2, [kw.double()] * 2, eps)[0]
    out = qkv.clone()
    aiter_backend.allreduce_rms_qk(out, qw, kw, eps, "tp")
    assert comm.calls == 1
    assert torch.equal(out[:, q + kv:], qkv[:, q + kv:])          # v untouched
    assert reference.rel_error(out, want) < 1e-5
    x = torch.randn(T, q)
    w = torch.randn(q)
    want1 = reference.rms_norm_sharded([x.double()] * 2, [w.double()] * 2, eps)[0]
    got1 = x.clone()
    aiter_backend.allreduce_rms(got1, w, eps, "tp")
    assert comm.calls == 2 and reference.rel_error(got1, want1) < 1e-5


def test_allreduce_adapter_declines_without_room_or_communicator(monkeypatch):
    comm = _FakeComm()
    monkeypatch.setattr(aiter_backend, "_COMMS", {"": aiter_backend._Comm(comm, 2, 4)})
    x, w, eps = torch.randn(8, 64), torch.randn(64), 1e-6   # 8 tokens > the 4 it was opened for
    got = x.clone()
    _common.LAST_BACKEND.pop("allreduce_rms", None)
    aiter_backend.allreduce_rms(got, w, eps, "")
    assert comm.calls == 0 and "aiter declined" in _common.LAST_BACKEND["allreduce_rms"]
    assert reference.rel_error(got, reference.rms_norm(x.double(), w.double(), eps)) < 1e-5
    monkeypatch.setattr(aiter_backend, "_COMMS", {})
    qkv = torch.randn(3, 64 + 2 * 16)
    got = qkv.clone()
    aiter_backend.allreduce_rms_qk(got, torch.ones(64), torch.ones(16), eps, "")
    want = reference.qk_norm_tp([qkv.double()], [torch.ones(64, dtype=torch.float64)],
                                [torch.ones(16, dtype=torch.float64)], eps)[0]
    assert reference.rel_error(got, want) < 1e-5


@pytest.mark.skipif(bool(torch.version.hip), reason="ROCm build: importing AITER is allowed there")
def test_import_and_register_are_safe_without_rocm():
    # A fresh interpreter: importing the package, the adapter module and
    # registering must not import AITER, and the platform must not claim it.
    code = ("import sys, minimax_rocm.ops, minimax_rocm.oracle as o\n"
            "from minimax_rocm.backends import aiter as a\n"
            "a.register()\n"
            "assert 'aiter' in o.implemented('fused_moe')\n"
            "assert not o._aiter_usable()\n"
            "print('aiter' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
