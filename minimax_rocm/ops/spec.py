"""One declaration per op. `declare_op` takes an op's parameters (in schema
order, with the public defaults), its input check, its oracle problem and its
fake's output, and makes from them:

- the `torch.library` custom op `minimax_rocm::<name>`, its schema derived
  from the parameters; its body checks the inputs, asks the oracle and runs
  the chosen backend (`_common.run`);
- its fake: the same check, then the declared output shapes;
- the public function, with the real signature and defaults (`inspect`,
  `help()`), the docstring, and type checks that raise `OpInputError` naming
  the op and the argument before the schema would raise a bare RuntimeError.

Backends register with `@SPEC.impl("triton")` (the same as
`oracle.register_impl(name, "triton")`) and take the custom op's positional
arguments, less those declared `to_backend=False`, plus the keywords
`_common.run` adds (`path=` when the op dispatches `with_path`).
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from .. import oracle
from ._common import OpInputError, fail, run

NAMESPACE = "minimax_rocm"
REQUIRED = inspect.Parameter.empty

# name -> spec of every declared op (tests compare them with the registered ops)
SPECS: dict[str, "OpSpec"] = {}


@dataclass(frozen=True)
class Param:
    """One argument of an op. Build it with Tensor, Int, Float, Str, Bool or Dtype."""
    name: str
    schema: str                           # its type in the op schema
    accepts: tuple                        # the Python types the public function takes
    what: str                             # what a type error says was expected
    annotation: Any                       # what inspect.signature and help() show
    default: Any = REQUIRED
    mutable: bool = False                 # written in place: Tensor(aN!) in the schema
    convert: Optional[Callable] = None    # public value -> the op's value, after the type check
    to_backend: bool = True               # False: only the check and the oracle problem read it

    def check_type(self, op: str, value) -> None:
        # bool is an int to Python; only a Bool parameter takes one
        if not isinstance(value, self.accepts) or (isinstance(value, bool) and bool not in self.accepts):
            fail(op, self.name, f"must be {self.what}, got {type(value).__name__}")


def Tensor(name: str, *, optional: bool = False, default=REQUIRED, mutable: bool = False) -> Param:
    if optional:
        return Param(name, "Tensor?", (torch.Tensor, type(None)), "a torch.Tensor", Optional[torch.Tensor], default)
    return Param(name, "Tensor", (torch.Tensor,), "a torch.Tensor", torch.Tensor, default, mutable=mutable)


def Int(name: str, *, default=REQUIRED, to_backend: bool = True) -> Param:
    # SymInt, as torch.library infers for `int`: dynamic shapes may pass symbols
    return Param(name, "SymInt", (int, torch.SymInt), "an int", int, default, to_backend=to_backend)


def Float(name: str, *, default=REQUIRED) -> Param:
    return Param(name, "float", (int, float, torch.SymInt, torch.SymFloat), "a number", float, default)


def Str(name: str, *, default=REQUIRED, convert: Optional[Callable[[str], str]] = None) -> Param:
    return Param(name, "str", (str,), "a str", str, default, convert=convert)


def Bool(name: str, *, default=REQUIRED) -> Param:
    return Param(name, "bool", (bool,), "a bool", bool, default)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype)[len("torch."):]


def Dtype(name: str, *, default=REQUIRED) -> Param:
    """A torch.dtype to callers, its name ("bfloat16") in the schema."""
    return Param(name, "str", (torch.dtype,), "a torch.dtype", torch.dtype, default, convert=dtype_name)


def schema_of(params: Sequence[Param], returns: int) -> str:
    """The op schema, as torch.library.infer_schema would write it for the
    annotated function: `(Tensor(a0!) x, Tensor? w, SymInt n) -> (Tensor, Tensor)`."""
    # torch names a written tensor's alias set by its position
    args = [f"Tensor(a{i}!) {p.name}" if p.mutable else f"{p.schema} {p.name}" for i, p in enumerate(params)]
    out = "()" if returns == 0 else "Tensor" if returns == 1 else "(" + ", ".join(["Tensor"] * returns) + ")"
    return f"({', '.join(args)}) -> {out}"


class OpSpec:
    """An op's whole contract; see declare_op."""

    def __init__(self, name: str, params: Sequence[Param], *, check: Callable, problem: Callable,
                 fake: Optional[Callable], returns: int, with_path: bool, doc: str, module: str,
                 agree: Optional[Callable] = None):
        self.name, self.params, self.returns, self.with_path = name, tuple(params), returns, with_path
        self.check, self.problem, self.fake, self.agree = check, problem, fake, agree
        has_default = [p.default is not REQUIRED for p in self.params]
        if has_default != sorted(has_default):      # a required one after one with a default
            raise ValueError(f"{name}: parameters with defaults must come last")
        self.schema = schema_of(self.params, returns)
        self.mutated = tuple(i for i, p in enumerate(self.params) if p.mutable)
        self.backend_args = tuple(i for i, p in enumerate(self.params) if p.to_backend)
        self.custom_op = torch.library.custom_op(f"{NAMESPACE}::{name}", self._body, schema=self.schema,
                                                 mutates_args=tuple(self.params[i].name for i in self.mutated))
        self.custom_op.register_fake(self._fake)
        self.op = getattr(getattr(torch.ops, NAMESPACE), name)
        self.public = self._make_public(doc, module)

    def impl(self, backend: str):
        """Decorator registering a backend's implementation with the oracle."""
        return oracle.register_impl(self.name, backend)

    def _body(self, *args):
        if self.agree is None:
            self.check(*args)
        else:
            # a collective op: the group hears of a rank's bad input before any exchange
            try:
                self.check(*args)
                error = None
            except OpInputError as e:
                error = e
            self.agree(error, *args)
        to_backend = args if len(self.backend_args) == len(args) else tuple(args[i] for i in self.backend_args)
        return run(self.problem(*args), *to_backend, with_path=self.with_path)

    def _fake(self, *args):
        self.check(*args)
        return None if self.fake is None else self.fake(*args)

    def _call(self, *args):
        """The public function's body: type checks, conversions, the op."""
        for p, v in zip(self.params, args):
            p.check_type(self.name, v)
        args = tuple(v if p.convert is None else p.convert(v) for p, v in zip(self.params, args))
        out = self.op(*args)
        # an op that only writes in place returns its first written tensor, as torch's in-place ops do
        return args[self.mutated[0]] if self.returns == 0 and self.mutated else out

    def _make_public(self, doc: str, module: str) -> Callable:
        # Generated like dataclasses' __init__, so that the signature is a real
        # one: Python's own argument errors, inspect, help() and Dynamo see a
        # plain function.
        names = [p.name for p in self.params]
        defaults = [p.default for p in self.params if p.default is not REQUIRED]
        ns = {"_call": self._call}
        exec(f"def {self.name}({', '.join(names)}):\n    return _call({', '.join(names)})\n", ns)
        fn = ns[self.name]
        fn.__defaults__ = tuple(defaults) or None
        if self.returns > 1:
            ret = tuple[(torch.Tensor,) * self.returns]
        else:
            ret = torch.Tensor if self.returns == 1 or self.mutated else None
        fn.__annotations__ = {**{p.name: p.annotation for p in self.params}, "return": ret}
        fn.__doc__, fn.__module__ = doc, module
        return fn


def declare_op(name: str, params: Sequence[Param], *, check: Callable, problem: Callable,
               fake: Optional[Callable] = None, returns: int = 1, with_path: bool = False,
               doc: str = "", agree: Optional[Callable] = None) -> OpSpec:
    """Declare the op `minimax_rocm::<name>`.

    params: its arguments in schema order, with the public defaults.
    check(*args) raises OpInputError for bad input; problem(*args) is the
    oracle.Problem of the call; fake(*args) returns empty outputs of the
    right shapes and dtypes (None for an op that only writes in place), all
    called with the op's arguments. returns: the number of output tensors
    (0: none; the public function returns the first mutable argument).
    with_path: backends also get `path=`, the oracle rule's algorithmic path.
    agree(error, *args), for a collective op: called on every rank after the
    input check (error: the OpInputError it raised, or None) and before the
    op's exchange; it raises, and must raise `error` when it is not None.
    """
    if name in SPECS:
        raise ValueError(f"op {name!r} is declared twice")
    module = sys._getframe(1).f_globals.get("__name__", __name__)
    spec = SPECS[name] = OpSpec(name, params, check=check, problem=problem, fake=fake, returns=returns,
                                with_path=with_path, doc=doc, module=module, agree=agree)
    return spec
