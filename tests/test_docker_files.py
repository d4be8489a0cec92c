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
    assert re.search(r"pip install --no-build-isolation --no-deps \.(\s|$)", text), "pip install of the repo"
    assert "python3 -m minimax_rocm info" in text
    assert "MINIMAX_ROCM_BUILD_EXT=1" in text  # a missing toolkit must fail the image, not go silent


def test_rocm_image_builds_for_mi300x():
    text = (ROOT / "docker" / "Dockerfile.rocm").read_text()
    assert re.search(r"ARG VLLM_IMAGE=vllm/vllm-openai-rocm:v", text)
    assert 'PYTORCH_ROCM_ARCH="gfx942;gfx950"' in text


def _setup_torch_range() -> tuple[tuple[int, int], tuple[int, int]]:
    m = re.search(r'"torch>=(\d+)\.(\d+),<(\d+)\.(\d+)"', (ROOT / "setup.py").read_text())
    assert m, "setup.py's torch range"
    a, b, c, d = map(int, m.groups())
    return (a, b), (c, d)


@pytest.mark.parametrize("df", FILES, ids=lambda p: p.name)
def test_base_image_is_a_tested_vllm_with_a_torch_in_range(df):
    """The base is vLLM's own image of a release the plugin is tested with,
    whose torch (as the file states it) is inside the package's range, so
    pip keeps it; the install never resolves dependencies."""
    from minimax_rocm.integrations.vllm import version_supported
    text = df.read_text()
    image = re.search(r"ARG VLLM_IMAGE=(\S+)", text).group(1)
    assert re.search(r"^FROM \$\{VLLM_IMAGE\}$", text, re.M)
    tag = image.rsplit(":", 1)[1].lstrip("v")
    assert version_supported(tag), f"{image}: vLLM {tag} is outside the plugin's tested range"
    torch_v = re.search(r"# torch (\d+)\.(\d+) ", text)
    assert torch_v, "the image's torch version, stated"
    lo, hi = _setup_torch_range()
    assert lo <= tuple(map(int, torch_v.groups())) < hi
    installs = [l for l in text.splitlines() if "pip install" in l]
    assert not any(re.search(r"\btorch\b|vllm", l) for l in installs), installs


@pytest.mark.parametrize("df", FILES, ids=lambda p: p.name)
def test_plugin_entry_point_is_checked_in_the_image(df):
    text = df.read_text()
    assert "group='vllm.general_plugins'" in text and "'minimax_rocm'" in text
    assert 'minimax_rocm = minimax_rocm.integrations.vllm:register' in (ROOT / "setup.py").read_text()


def test_readme_documents_the_images_and_quick_start():
    readme = (ROOT / "README.md").read_text()
    for f in FILES:
        assert f"docker/{f.name}" in readme
    for cmd in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert cmd in readme
        assert (ROOT / cmd.split()[1]).exists()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
