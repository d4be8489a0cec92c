"""No Docker engine runs here: check the Dockerfiles against the repository
and the README instead."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def test_both_images_exist():
    assert {f.name for f in FILES} >= {"Dockerfile.rocm", "Dockerfile.cuda"}


@pytest.mark.parametrize("df", FILES, ids=lambda p: p.name)
def test_copied_paths_exist(df):
    copies = [l.split()[1:-1] for l in df.read_text().splitlines() if l.startswith("COPY ")]
    assert copies
    for srcs in copies:
        for s in srcs:
            assert (ROOT / s).exists(), f"{df.name}: COPY {s} does not exist"


@pytest.mark.parametrize("df", FILES, ids=lambda p: p.name)
def test_installs_the_repo_and_smoke_tests(df):
    text = df.read_text()
    assert re.search(r"pip install --no-build-isolation \"?\.(\[|\"|\s)", text), "pip install of the repo"
    assert "python -m minimax_rocm info" in text
    assert "MINIMAX_ROCM_BUILD_EXT=1" in text  # a missing toolkit must fail the image, not go silent


def test_rocm_image_builds_for_mi300x():
    text = (ROOT / "docker" / "Dockerfile.rocm").read_text()
    assert re.search(r"FROM rocm/pytorch:", text)
    assert 'PYTORCH_ROCM_ARCH="gfx942;gfx950"' in text


def test_readme_documents_the_images_and_quick_start():
    readme = (ROOT / "README.md").read_text()
    for f in FILES:
        assert f"docker/{f.name}" in readme
    for cmd in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert cmd in readme
        assert (ROOT / cmd.split()[1]).exists()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
