"""`python -m minimax_rocm bench`: one module per op registers its benchmark."""
import importlib
import pkgutil

from .harness import BENCHES, Context, Row, register_bench, time_us  # noqa: F401


def load_all() -> None:
    for m in pkgutil.iter_modules(__path__):
        if m.name != "harness":
            importlib.import_module(f"{__name__}.{m.name}")
