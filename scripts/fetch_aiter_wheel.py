#!/usr/bin/env python3
"""Fetch the pinned amd-aiter wheel (no dependencies, no import) and check the
AITER adapter's contract against its sources.

AITER cannot be imported without ROCm, so its API is checked by parsing the
wheel's Python sources with `ast`: every "module:qualname" in
minimax_rocm.backends.aiter.CONTRACT must exist there and accept every keyword
the adapter passes, with no required parameter left unpassed; NAMES must be
module-level names, ATTRIBUTES instance attributes set in the class, ENUMS
members of the C++ enums, and the CK MoE codegen must still offer exactly the
activations the adapter's declines assume.

The wheel is cached (default ~/.cache/minimax_rocm/aiter, or
$MINIMAX_ROCM_CACHE/aiter) and read in place (a wheel is a zip archive; the few
sources needed are read from it). $MINIMAX_ROCM_AITER_WHEEL names a wheel file
to use instead of downloading.

  python scripts/fetch_aiter_wheel.py          # fetch + check, exit 1 on a mismatch
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "amd-aiter"

# pip's messages when the package index cannot be reached at all (as opposed
# to a version that does not exist there).
_NETWORK_ERRORS = re.compile(
    r"Max retries exceeded|NewConnectionError|ConnectTimeout|ReadTimeout|Network is unreachable|"
    r"Name or service not known|Temporary failure in name resolution|No route to host|"
    r"Connection refused|Could not fetch URL|ProxyError|SSLError")


class IndexUnreachable(RuntimeError):
    """The package index could not be reached (the only reason to skip)."""


def cache_dir() -> Path:
    base = os.environ.get("MINIMAX_ROCM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minimax_rocm")
    return Path(base) / "aiter"


def _pip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)


def fetch_wheel(version: str, dest: Optional[Path] = None) -> Path:
    """Path of the amd-aiter==version wheel, downloaded once into dest."""
    local = os.environ.get("MINIMAX_ROCM_AITER_WHEEL")
    if local:
        return Path(local)
    dest = dest or cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"amd_aiter-{version}-*.whl"
    have = sorted(dest.glob(pattern))
    if have:
        return have[0]
    try:
        # -vv: pip reports an unreachable index ("Could not fetch URL") only at debug level
        r = _pip("download", "-vv", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                 f"{PACKAGE}=={version}", "-d", str(dest))
    except subprocess.TimeoutExpired as e:
        raise IndexUnreachable(f"pip download {PACKAGE}=={version} timed out") from e
    have = sorted(dest.glob(pattern))
    if r.returncode == 0 and have:
        return have[0]
    out = r.stdout + r.stderr
    net = _NETWORK_ERRORS.search(out)
    if net and not _index_reachable():
        raise IndexUnreachable(f"package index unreachable ({net.group(0)})")
    raise RuntimeError(f"pip download {PACKAGE}=={version} failed (index reachable):\n{out}")


def _index_reachable() -> bool:
    """Ask the index about the package with pip's own client."""
    try:
        r = _pip("index", "versions", "-vv", "--pre", PACKAGE, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 or not _NETWORK_ERRORS.search(r.stdout + r.stderr)


# --------------------------------------------------------------------------- #
# reading sources from the wheel
# --------------------------------------------------------------------------- #


class Sources:
    """Text of files in the wheel, by path or by dotted module name."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        self._zip = zipfile.ZipFile(wheel)
        self._names = set(self._zip.namelist())
        self._trees: dict[str, ast.Module] = {}

    def text(self, path: str) -> Optional[str]:
        return self._zip.read(path).decode("utf-8") if path in self._names else None

    def module(self, dotted: str) -> Optional[ast.Module]:
        if dotted not in self._trees:
            base = dotted.replace(".", "/")
            src = self.text(base + ".py") or self.text(base + "/__init__.py")
            if src is None:
                return None
            self._trees[dotted] = ast.parse(src, filename=base)
        return self._trees[dotted]

    def version(self) -> Optional[str]:
        src = self.text("aiter/_version.py")
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", src or "")
        return m.group(1) if m else None


def _top(tree: ast.Module, name: str):
    """The last top-level def/class named name (a later one rebinds)."""
    found = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = node
    return found


def _resolve(tree: ast.Module, qualname: str):
    """(function node, skip_first_arg) for "f", "Class" (its __init__) or "Class.method"."""
    parts = qualname.split(".")
    node = _top(tree, parts[0])
    if node is None:
        return None, False
    if isinstance(node, ast.ClassDef):
        meth = parts[1] if len(parts) > 1 else "__init__"
        fn = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == meth), None)
        return fn, True
    return (node, False) if len(parts) == 1 else (None, False)


def check_call(src: Sources, entry: str, keywords: tuple[str, ...]) -> list[str]:
    module, qualname = entry.split(":")
    tree = src.module(module)
    if tree is None:
        return [f"{entry}: module {module} not in the wheel"]
    fn, is_method = _resolve(tree, qualname)
    if fn is None:
        return [f"{entry}: {qualname} not defined in {module}"]
    a = fn.args
    positional = a.posonlyargs + a.args
    if is_method:
        positional = positional[1:]  # self
    named = {x.arg for x in positional} | {x.arg for x in a.kwonlyargs}
    posonly = {x.arg for x in a.posonlyargs}
    errors = [f"{entry}: no parameter {k!r}" + (" (positional-only)" if k in posonly else "")
              for k in keywords if k not in named or k in posonly]
    required = [x.arg for x in positional[:len(positional) - len(a.defaults)]]
    required += [x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    errors += [f"{entry}: required parameter {r!r} is not passed by the adapter" for r in required
               if r not in keywords]
    return errors


def check_name(src: Sources, entry: str) -> list[str]:
    module, name = entry.split(":")
    tree = src.module(module)
    if tree is None:
        return [f"{entry}: module {module} not in the wheel"]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return []
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return []
    return [f"{entry}: no module-level {name} in {module}"]


def check_attributes(src: Sources, entry: str, attrs: tuple[str, ...]) -> list[str]:
    module, cls = entry.split(":")
    tree = src.module(module)
    node = _top(tree, cls) if tree is not None else None
    if not isinstance(node, ast.ClassDef):
        return [f"{entry}: class {cls} not in {module}"]
    set_on_self = {t.attr for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign))
                   for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                   if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    return [f"{entry}: attribute {a!r} never set on self" for a in attrs if a not in set_on_self]


def check_enum(src: Sources, entry: str, members: tuple[str, ...]) -> list[str]:
    path, enum = entry.split(":")
    text = src.text(path)
    if text is None:
        return [f"{entry}: {path} not in the wheel"]
    m = re.search(r"enum\s+class\s+" + re.escape(enum) + r"\b[^{]*\{([^}]*)\}", text)
    if not m:
        return [f"{entry}: enum {enum} not found in {path}"]
    have = set(re.findall(r"\b([A-Za-z_]\w*)\s*(?:=|,|$)", m.group(1), re.M))
    return [f"{entry}: enum {enum} has no member {x}" for x in members if x not in have]


def ck_moe_activations(src: Sources, path: str) -> Optional[tuple[str, ...]]:
    """The `choices` of the CK MoE codegen's -act/--activation argument."""
    text = src.text(path)
    if text is None:
        return None
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
                and any(isinstance(a, ast.Constant) and a.value in ("-act", "--activation") for a in node.args)):
            for k in node.keywords:
                if k.arg == "choices":
                    return tuple(ast.literal_eval(k.value))
    return None


def check_contract(src: Sources, adapter=None) -> tuple[list[str], list[str]]:
    """(errors, what was verified) for the adapter's declared contract."""
    if adapter is None:
        sys.path.insert(0, str(ROOT))
        from minimax_rocm.backends import aiter as adapter
    errors, verified = [], []
    for entry, kws in adapter.CONTRACT.items():
        e = check_call(src, entry, kws)
        errors += e
        if not e:
            verified.append(f"call {entry}({', '.join(kws)})")
    for entry in adapter.NAMES:
        e = check_name(src, entry)
        errors += e
        if not e:
            verified.append(f"name {entry}")
    for entry, attrs in adapter.ATTRIBUTES.items():
        e = check_attributes(src, entry, attrs)
        errors += e
        if not e:
            verified.append(f"attributes {entry}.{{{', '.join(attrs)}}}")
    for entry, members in adapter.ENUMS.items():
        e = check_enum(src, entry, members)
        errors += e
        if not e:
            verified.append(f"enum {entry}.{{{', '.join(members)}}}")
    acts = ck_moe_activations(src, adapter.CK_MOE_CODEGEN)
    if acts is None:
        errors.append(f"{adapter.CK_MOE_CODEGEN}: no -act choices found")
    elif set(acts) != set(adapter.CK_MOE_ACTIVATIONS):
        errors.append(f"CK MoE activations are now {acts}, the adapter assumes {adapter.CK_MOE_ACTIVATIONS}: "
                      f"revisit MOE_ACTIVATIONS and the SwiGLU-OAI decline")
    else:
        verified.append(f"CK MoE codegen activations {acts}")
    return errors, verified


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from minimax_rocm.backends import aiter as adapter
    try:
        wheel = fetch_wheel(adapter.PINNED_VERSION)
    except IndexUnreachable as e:
        print(f"SKIP: {e}")
        return 0
    src = Sources(wheel)
    print(f"{wheel} (version {src.version()})")
    errors, verified = check_contract(src, adapter)
    for v in verified:
        print(f"  ok   {v}")
    for e in errors:
        print(f"  FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
