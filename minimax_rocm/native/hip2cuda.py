"""HIP -> CUDA source translation: PyTorch's CUDA->HIP table run in reverse.

The table is `torch.utils.hipify.cuda_to_hip_mappings.CUDA_TO_HIP_MAPPINGS`, a
list of ordered dicts cuda_name -> hip_name (values are strings in torch 2.11+,
tuples whose first item is the HIP name in older releases). Reversed, many HIP
names have several CUDA origins (driver and runtime API: hipMalloc <-
cuMemAlloc, cuMemAlloc_v2, cudaMalloc); the runtime API name wins, chosen by a
fixed rule (`_pick`), so the output is deterministic. `PROJECT_TABLE` adds what
the torch table lacks or gets wrong for us.

Arch blocks: code between `#if MMR_AMD` (or `#ifdef MMR_AMD`,
`#if defined(MMR_AMD)`, `#if defined(__HIP_PLATFORM_AMD__)`) and its matching
`#else` / `#elif` / `#endif` is vendor code the NVIDIA compile never sees; it is
copied verbatim and may use HIP-only names. Everywhere else, an identifier that
looks HIP-specific (hip*, HIP*, __hip*, __HIP*, __builtin_amdgcn*) and has no
mapping is an error naming file, line and identifier. Comments and string
literals are neither translated nor checked.

CLI: python -m minimax_rocm.native.hip2cuda FILE_OR_DIR... -o OUTDIR
(.hip -> .cu, headers keep their names; a directory translates its tree).
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

# Names the torch table lacks (or maps ambiguously) that the kernels use.
PROJECT_TABLE: dict[str, str] = {
    "c10::hip::getCurrentHIPStream": "c10::cuda::getCurrentCUDAStream",
    "c10::hip::HIPStream": "c10::cuda::CUDAStream",
    "c10/hip/HIPStream.h": "c10/cuda/CUDAStream.h",
    "c10/hip/HIPGuard.h": "c10/cuda/CUDAGuard.h",
    "c10::hip::HIPGuard": "c10::cuda::CUDAGuard",
    "hip/hip_runtime.h": "cuda_runtime.h",
    "hipError_t": "cudaError_t",
    "hipStream_t": "cudaStream_t",
    "hipDeviceProp_t": "cudaDeviceProp",
    "hipIpcMemHandle_t": "cudaIpcMemHandle_t",
    "__HIPCC__": "__CUDACC__",
}

# Identifiers that are HIP's and would need a mapping (outside arch blocks).
_HIPISH = re.compile(r"^(hip|HIP|__hip|__HIP|__builtin_amdgcn)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_INCLUDE = re.compile(r'^(\s*#\s*include\s*[<"])([^>"]+)([>"].*)$')
_AMD_IF = re.compile(r"^\s*#\s*(if|ifdef)\b.*\b(MMR_AMD|__HIP_PLATFORM_AMD__|__HIP_PLATFORM_HCC__)\b")
_PP_IF = re.compile(r"^\s*#\s*(if|ifdef|ifndef)\b")
_PP_ELSE = re.compile(r"^\s*#\s*(else|elif)\b")
_PP_END = re.compile(r"^\s*#\s*endif\b")
_PP_ANY = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif|define|undef|pragma|error)\b")


class TranslationError(Exception):
    pass


def _pick(cuda_names: list[str]) -> str:
    """The runtime-API name among a HIP name's CUDA origins: 'cuda*' before the
    driver API's 'cu*' / 'CU*', then the shortest, then alphabetical."""
    return sorted(set(cuda_names), key=lambda c: (not c.startswith("cuda"), len(c), c))[0]


@functools.lru_cache(maxsize=1)
def reverse_table() -> dict[str, str]:
    """hip name -> cuda name."""
    from torch.utils.hipify.cuda_to_hip_mappings import CUDA_TO_HIP_MAPPINGS
    origins: dict[str, list[str]] = {}
    for table in CUDA_TO_HIP_MAPPINGS:
        for cuda, hip in table.items():
            h = hip if isinstance(hip, str) else hip[0]
            # Only HIP's own names are mapped back: the table also maps CUDA
            # names onto plain C ones (nvtxRangeId_t -> int), which reversed
            # would rewrite ordinary code.
            if h != cuda and ("hip" in h or "HIP" in h):
                origins.setdefault(h, []).append(cuda)
    rev = {h: _pick(c) for h, c in origins.items()}
    rev.update(PROJECT_TABLE)
    return rev


def _split_code(line: str, in_block_comment: bool) -> tuple[list[tuple[bool, str]], bool]:
    """Split a line into (is_code, text) pieces; comments and string/char
    literals are not code. Tracks /* */ across lines."""
    pieces: list[tuple[bool, str]] = []
    i, n, buf = 0, len(line), ""
    code = not in_block_comment
    while i < n:
        if not code:  # inside /* */
            j = line.find("*/", i)
            if j < 0:
                pieces.append((False, line[i:]))
                return pieces, True
            pieces.append((False, line[i:j + 2]))
            i, code = j + 2, True
            continue
        c = line[i]
        if line.startswith("//", i):
            if buf:
                pieces.append((True, buf))
            pieces.append((False, line[i:]))
            return pieces, False
        if line.startswith("/*", i):
            if buf:
                pieces.append((True, buf))
                buf = ""
            j = line.find("*/", i + 2)
            if j < 0:
                pieces.append((False, line[i:]))
                return pieces, True
            pieces.append((False, line[i:j + 2]))
            i = j + 2
            continue
        if c in "\"'":
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if line[j] == "\\" else 1
            if buf:
                pieces.append((True, buf))
                buf = ""
            pieces.append((False, line[i:j + 1]))
            i = j + 1
            continue
        buf += c
        i += 1
    if buf:
        pieces.append((True, buf))
    return pieces, not code


def translate_text(text: str, filename: str = "<string>") -> str:
    rev = reverse_table()
    out_lines = []
    errors = []
    # stack of frames: (is_amd_if, in_amd_branch)
    stack: list[list[bool]] = []
    in_comment = False
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        body = line.rstrip("\n")
        nl = line[len(body):]
        amd_code = any(f[0] and f[1] for f in stack)
        if _PP_IF.match(body):
            stack.append([bool(_AMD_IF.match(body)), bool(_AMD_IF.match(body))])
            out_lines.append(line)  # conditions are copied as they are
            continue
        if _PP_ELSE.match(body):
            if stack and stack[-1][0]:
                stack[-1][1] = False  # leaving the AMD branch: the rest is NVIDIA/portable
            out_lines.append(line)
            continue
        if _PP_END.match(body):
            if stack:
                stack.pop()
            out_lines.append(line)
            continue
        if amd_code:
            out_lines.append(line)
            _, in_comment = _split_code(body, in_comment)
            continue
        m = _INCLUDE.match(body)
        if m:
            path = m.group(2)
            out_lines.append(m.group(1) + rev.get(path, path) + m.group(3) + nl)
            if _HIPISH.match(Path(path).name) and path not in rev:
                errors.append(f"{filename}:{lineno}: unmappable include '{path}'")
            continue
        pieces, in_comment = _split_code(body, in_comment)
        new = []
        for is_code, seg in pieces:
            if not is_code:
                new.append(seg)
                continue

            def sub(mo):
                name = mo.group(0)
                if name in rev:
                    return rev[name]
                # a qualified name: map its last component (e.g. ns::hipFoo)
                last = name.rsplit("::", 1)[-1]
                if last in rev and last != name:
                    return name[: -len(last)] + rev[last]
                for part in name.split("::"):
                    if _HIPISH.match(part) and part not in rev:
                        errors.append(f"{filename}:{lineno}: no CUDA mapping for HIP identifier '{part}'")
                return name
            new.append(_IDENT.sub(sub, seg))
        out_lines.append("".join(new) + nl)
    if errors:
        raise TranslationError("\n".join(errors))
    return "".join(out_lines)


def output_name(src: Path) -> str:
    return src.stem + ".cu" if src.suffix == ".hip" else src.name


def translate_file(src: Path, out_dir: Path) -> Path:
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / output_name(src)
    text = translate_text(src.read_text(), str(src))
    if not dst.exists() or dst.read_text() != text:  # keep mtimes: ninja rebuilds only what changed
        dst.write_text(text)
    return dst


def translate_tree(root: Path, out_dir: Path) -> list[Path]:
    """Every .hip / .h / .hpp / .cpp under root, keeping relative paths."""
    root, out_dir = Path(root), Path(out_dir)
    outs = []
    for src in sorted(root.rglob("*")):
        if src.suffix in (".hip", ".h", ".hpp", ".cpp") and src.is_file():
            outs.append(translate_file(src, out_dir / src.parent.relative_to(root)))
    return outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimax_rocm.native.hip2cuda", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    try:
        for inp in map(Path, a.inputs):
            outs = translate_tree(inp, Path(a.out)) if inp.is_dir() else [translate_file(inp, Path(a.out))]
            for o in outs:
                print(o)
    except TranslationError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
