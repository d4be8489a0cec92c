"""The error every op raises for bad input (the bottom layer: it imports
nothing of the package)."""


class OpInputError(ValueError):
    """Bad input to a minimax_rocm op; the message names the op and the argument."""


def fail(op: str, arg: str, msg: str):
    raise OpInputError(f"minimax_rocm.{op}: argument '{arg}' {msg}")
