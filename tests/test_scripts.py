"""scripts/: every script a file of the repository names exists, and the shell
scripts stay thin (Python lives in the package, not in heredocs)."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_REF = re.compile(r"\bscripts/([A-Za-z0-9_.-]+\.(?:sh|py))\b")
# moe_configs.py's why_* strings still name the runner their measurements
# were taken with; drop this entry once they cite
# benchmarks/history/fused_moe_mxfp8.md (and the spread command) instead.
EXEMPT: set[str] = set()


def _repository_files() -> list[Path]:
    """Tracked files and new ones git does not ignore (a plain walk where git is absent)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        files = [ROOT / f for f in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv-vllm", "build", "__pycache__"}
        files = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [f for f in files if f.is_file() and f.suffix in {".md", ".py", ".sh", ".toml", ".cfg", ".txt", ""}]


def test_no_file_names_a_script_that_is_not_there():
    missing = []
    for f in _repository_files():
        rel = f.relative_to(ROOT).as_posix()
        if rel in EXEMPT:
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        missing += [f"{rel}: scripts/{m}" for m in SCRIPT_REF.findall(text) if not (ROOT / "scripts" / m).exists()]
    assert missing == []


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.sh")))
def test_shell_scripts_embed_no_python_program(script):
    text = (ROOT / "scripts" / script).read_text()
    assert "<<" not in text, f"{script}: a heredoc; put the program in the package"


def test_every_script_is_documented():
    docs = "".join((ROOT / d).read_text() for d in ("README.md", "DESIGN.md", "BENCHMARKS.md"))
    assert [p.name for p in sorted((ROOT / "scripts").iterdir()) if f"scripts/{p.name}" not in docs] == []
