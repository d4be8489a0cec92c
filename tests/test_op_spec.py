"""The op declaration (minimax_rocm/ops/spec.py): what one declare_op makes
(schema, fake, public function, type checks, backend registration) agrees
with its params and with torch's own schema inference."""
import inspect
from typing import Optional

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import minimax_rocm as mm
from minimax_rocm import oracle
from minimax_rocm.ops._common import OpInputError
from minimax_rocm.ops.spec import REQUIRED, SPECS, Bool, Dtype, Float, Int, Str, Tensor, schema_of

DECLARED = sorted(SPECS)
# ops whose public function takes a typed object and passes its tensors to
# the declared function: fused_moe_mxfp8 (an Mxfp8Experts, ops/mxfp8.py)
TYPED_PUBLIC = {"fused_moe_mxfp8"}
# a value of the right type for each kind, and one of the wrong type
GOOD = {"Tensor": torch.empty(0), "Tensor?": None, "SymInt": 0, "float": 0.5, "str": "", "bool": False}
BAD = {"a torch.Tensor": [1.0], "an int": 1.5, "a number": "1", "a str": 1, "a bool": 1, "a torch.dtype": "bfloat16"}
PY_TYPE = {"Tensor": torch.Tensor, "Tensor?": Optional[torch.Tensor], "SymInt": int, "float": float, "str": str,
           "bool": bool}


def test_the_converted_ops_are_declared():
    assert {"topk_reduce", "swiglu_oai", "allreduce_rms", "allreduce_rms_qk", "mxfp8_quant",
            "mxfp8_dequant", "moe_align", "fused_moe", "router_gemm"} <= set(SPECS)


# Serving engines and saved graphs call the ops by these schemas: a change of
# declaration must leave them as they are.
SCHEMAS = {
    "moe_align": "(Tensor topk_ids, SymInt block_m, Tensor? expert_map, SymInt num_local_experts) "
                 "-> (Tensor, Tensor, Tensor)",
    "fused_moe": "(Tensor hidden, Tensor w13, Tensor w2, Tensor topk_weights, Tensor topk_ids, Tensor? expert_map, "
                 "str activation, str layout, float alpha, float limit, str variant) -> Tensor",
    "router_gemm": "(Tensor x, Tensor w, Tensor? bias) -> Tensor",
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schemas_callers_rely_on(name):
    assert SPECS[name].schema == SCHEMAS[name]
    assert str(getattr(torch.ops.minimax_rocm, name).default._schema) == f"minimax_rocm::{name}{SCHEMAS[name]}"


def test_moe_public_defaults():
    from minimax_rocm import reference
    # moe_align's expert_map may be None but must be passed
    assert inspect.signature(mm.moe_align).parameters["expert_map"].default is inspect.Parameter.empty
    assert [p.default for p in inspect.signature(mm.fused_moe).parameters.values()][5:] == \
        [None, "silu", "split", reference.SWIGLU_OAI_ALPHA, reference.SWIGLU_OAI_LIMIT, "auto"]
    assert inspect.signature(mm.router_gemm).parameters["bias"].default is None


def _inferred(params, returns) -> str:
    """What torch.library.infer_schema writes for a function annotated as params say."""
    def fn(*args):
        pass
    ret = {0: None, 1: torch.Tensor}.get(returns, tuple[(torch.Tensor,) * returns])
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=PY_TYPE[p.schema])
         for p in params], return_annotation=ret)
    return torch.library.infer_schema(fn, mutates_args=[p.name for p in params if p.mutable])


def test_schema_of_every_kind_matches_torchs_inference():
    params = (Tensor("a", mutable=True), Tensor("b", optional=True), Int("n"), Float("f"), Str("s"), Bool("on"),
              Tensor("c", mutable=True), Dtype("d"))
    for returns in (0, 1, 2, 3):
        assert schema_of(params, returns) == _inferred(params, returns)


@pytest.mark.parametrize("name", DECLARED)
def test_registered_schema_is_the_declared_one(name):
    spec = SPECS[name]
    registered = getattr(torch.ops.minimax_rocm, name).default._schema
    assert str(registered) == f"minimax_rocm::{name}{spec.schema}"
    assert spec.schema == _inferred(spec.params, spec.returns)


@pytest.mark.parametrize("name", DECLARED)
def test_public_signature_is_the_declared_params(name):
    spec = SPECS[name]
    sig = inspect.signature(spec.public)
    assert (getattr(mm, name) is spec.public) != (name in TYPED_PUBLIC)
    assert [(p.name, p.default, p.annotation) for p in sig.parameters.values()] == \
        [(p.name, p.default, p.annotation) for p in spec.params]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in sig.parameters.values())
    # documented, and attributed to the module that declares the op
    assert spec.public.__doc__ and spec.public.__name__ == name
    assert spec.public.__module__.startswith("minimax_rocm.ops.") and spec.public.__module__ != "minimax_rocm.ops.spec"


@pytest.mark.parametrize("name", DECLARED)
def test_public_type_errors_name_the_op_and_the_argument(name):
    spec = SPECS[name]
    good = [torch.float32 if p.accepts == (torch.dtype,) else GOOD[p.schema] for p in spec.params]
    for i, p in enumerate(spec.params):
        bad = [BAD[p.what]] + ([True] if p.schema in ("SymInt", "float") else [])  # bool: an int, no number
        for b in bad:
            with pytest.raises(OpInputError) as e:
                spec.public(*good[:i], b, *good[i + 1:])
            assert str(e.value) == f"minimax_rocm.{name}: argument '{p.name}' must be {p.what}, got {type(b).__name__}"


def test_pythons_own_argument_errors_stay():
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        mm.topk_reduce()
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        mm.topk_reduce(torch.randn(2, 2, 8), w=None)


def test_conversions_and_in_place_returns():
    x = torch.randn(3, 64)
    q, s = mm.mxfp8_quant(x, "e4m3fn")
    assert q.dtype == torch.float8_e4m3fn
    assert mm.mxfp8_dequant(q, s, torch.float32).dtype == torch.float32      # Dtype -> "float32" in the op
    assert mm.mxfp8_quant(x)[0].dtype == mm.ops.mxfp8.FP8_DTYPES[oracle.detect_platform().fp8_dtype]
    y = torch.randn(3, 16)
    assert mm.allreduce_rms(y, torch.ones(16)) is y


def test_the_fake_runs_the_check_and_the_declared_shape():
    with FakeTensorMode():
        x = torch.empty(5, 3, 32, dtype=torch.bfloat16)
        out = torch.ops.minimax_rocm.topk_reduce(x, None)
        assert out.shape == (5, 32) and out.dtype == torch.bfloat16
        with pytest.raises(OpInputError, match="minimax_rocm.topk_reduce: argument 'x'"):
            torch.ops.minimax_rocm.topk_reduce(x[0], None)


def test_backends_declared_with_impl_reach_the_oracle():
    for name in DECLARED:
        assert {"torch", "triton"} <= set(oracle.implemented(name)), name
    for name in ("topk_reduce", "moe_align", "router_gemm"):
        assert {"torch", "triton", "hip"} <= set(oracle.implemented(name)), name


def test_declaration_errors():
    from minimax_rocm.ops.spec import declare_op
    with pytest.raises(ValueError, match="declared twice"):
        declare_op("topk_reduce", (Tensor("x"),), check=None, problem=None)
    with pytest.raises(ValueError, match="defaults must come last"):
        declare_op("spec_selftest_order", (Tensor("x", optional=True, default=None), Tensor("y")),
                   check=None, problem=None)
    assert not hasattr(torch.ops.minimax_rocm, "spec_selftest_order")
    assert Tensor("x").default is REQUIRED
