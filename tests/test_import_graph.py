"""The package's import graph (every import statement, at module level or
inside a function): no circles, and the layers import downwards only."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "minimax_rocm"



def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges = {}
    for m, f in mods.items():
        here = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        out = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = ".".join(here[:len(here) - n.level + 1] + ([n.module] if n.module else [])) if n.level \
                    else (n.module or "")
                for a in n.names:
                    out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
            elif isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
        edges[m] = {o for o in out if o in mods and o != m}
    return edges


def _cycles(edges):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_graph_is_read():
    edges = _graph()
    assert "minimax_rocm.oracle" in edges and "minimax_rocm.ops.moe" in edges
    assert "minimax_rocm.oracle" in edges["minimax_rocm.ops._common"]


def test_no_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _importers_of(edges, prefixes, targets):
    return {m for m, out in edges.items() if m.startswith(prefixes)
            and any(t == w or w.startswith(t + ".") for w in out for t in targets)}


def test_oracle_and_errors_import_no_op_kernel_or_integration():
    edges = _graph()
    for bottom in ("minimax_rocm.oracle", "minimax_rocm.errors"):
        assert not {w for w in edges[bottom] if w.startswith(("minimax_rocm.ops", "minimax_rocm.triton",
                                                               "minimax_rocm.backends", "minimax_rocm.integrations",
                                                               "minimax_rocm.models"))}, bottom


def test_kernels_import_no_op():
    edges = _graph()
    assert _importers_of(edges, ("minimax_rocm.triton", "minimax_rocm.native"), ("minimax_rocm.ops",)) == set()


def test_kernels_do_not_ask_the_oracle():
    # the op layer passes the oracle's choices (alignment, quantiser) in;
    # the kernels' per-arch tables key on platform.py alone
    edges = _graph()
    assert _importers_of(edges, ("minimax_rocm.triton", "minimax_rocm.native"), ("minimax_rocm.oracle",)) == set()


def test_platform_is_the_bottom():
    assert _graph()["minimax_rocm.platform"] == set()


@pytest.mark.parametrize("layer", ["minimax_rocm.ops", "minimax_rocm.triton", "minimax_rocm.oracle",
                                   "minimax_rocm.parallel", "minimax_rocm.models", "minimax_rocm.native"])
def test_only_the_integration_layer_imports_integrations(layer):
    edges = _graph()
    assert _importers_of(edges, (layer,), ("minimax_rocm.integrations",)) == set()
