"""What every op module shares: input checks with errors that name the op and
the argument, and dispatch through the oracle. spec.declare_op builds each op
from these."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch

from .. import oracle
from ..errors import OpInputError, fail  # noqa: F401  (re-exported for the op modules)

# op -> backend that ran it last (the demo and `info` print this).
LAST_BACKEND: dict[str, str] = {}


DTypes = Union[torch.dtype, Sequence[torch.dtype]]


def check_tensor(op: str, arg: str, t, *, dtype: Optional[DTypes] = None, dim: Optional[int] = None,
                 shape: Optional[Sequence[Optional[int]]] = None, device: Optional[torch.device] = None,
                 contiguous: bool = True, last_multiple: Optional[int] = None) -> None:
    """Raise OpInputError naming op and arg unless t matches. A None entry in
    `shape` accepts any size in that dim."""
    if not isinstance(t, torch.Tensor):
        fail(op, arg, f"must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        ok = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if t.dtype not in ok:
            fail(op, arg, f"has dtype {t.dtype}; expected {' or '.join(map(str, ok))}")
    if dim is not None and t.dim() != dim:
        fail(op, arg, f"must be {dim}-D, got shape {tuple(t.shape)}")
    if shape is not None:
        if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            fail(op, arg, f"has shape {tuple(t.shape)}; expected {want}")
    if device is not None and t.device != device:
        fail(op, arg, f"is on {t.device}; expected {device} (same device as the other inputs)")
    if contiguous and not t.is_contiguous():
        fail(op, arg, f"must be contiguous (strides {t.stride()} for shape {tuple(t.shape)})")
    if last_multiple and t.dim() and t.shape[-1] % last_multiple:
        fail(op, arg, f"last dim {t.shape[-1]} must be a multiple of {last_multiple}")


def check_choice(op: str, arg: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(op, arg, f"is {value!r}; expected one of {choices}")


def on_gpu(*tensors: Optional[torch.Tensor]) -> bool:
    return all(t.is_cuda for t in tensors if t is not None)


def aligned16(*tensors: Optional[torch.Tensor]) -> bool:
    """Every tensor starts on a 16-byte boundary (a contiguous slice of a
    larger buffer may not): what native kernels reading 16-byte vectors need."""
    return all(t.data_ptr() % 16 == 0 for t in tensors if t is not None and t.numel())


def choose(problem: oracle.Problem) -> oracle.Decision:
    return oracle.decide(problem)


def run(problem: oracle.Problem, *args, with_path: bool = False, **kwargs):
    """Call the oracle's choice for problem.op (with path=the rule's
    algorithmic path when with_path: one backend serving several paths; with
    kernel=the backend's kernel where the table names one)."""
    d = oracle.decide(problem)
    LAST_BACKEND[problem.op] = d.chosen.backend + (f"/{d.chosen.path}" if d.chosen.path else "")
    if with_path:
        kwargs["path"] = d.chosen.path
    if d.chosen.kernel is not None:
        kwargs["kernel"] = d.chosen.kernel
    return oracle.impl(problem.op, d.chosen.backend)(*args, **kwargs)
