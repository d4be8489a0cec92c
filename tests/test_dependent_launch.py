"""triton/dependent_launch.py: the PDL constexpr and the launch attribute only
ever travel together, and only where the GPU supports them."""
import torch

from minimax_rocm import platform
from minimax_rocm.triton import dependent_launch as dl

HAS_GPU = torch.cuda.is_available()


def test_cpu_launch_has_no_pdl():
    assert dl.launch(torch.device("cpu")) == dict(PDL=False)
    with dl.forced(True):
        assert dl.launch(torch.device("cpu")) == dict(PDL=False)


def test_forced_off_and_env_switch(monkeypatch):
    dev = torch.device("cuda" if HAS_GPU else "cpu")
    with dl.forced(False):
        assert dl.launch(dev) == dict(PDL=False)
    monkeypatch.setenv("MINIMAX_ROCM_PDL", "0")
    assert not dl.supported(dev)
    assert dl.launch(dev) == dict(PDL=False)


def test_launch_pairs_the_attribute_with_the_constexpr():
    dev = torch.device("cuda" if HAS_GPU else "cpu")
    kw = dl.launch(dev)
    assert kw.get("launch_pdl", False) == kw["PDL"]
    assert kw["PDL"] == dl.supported(dev)


def test_native_kernels_follow_the_same_switch(monkeypatch):
    """The Lamport kernel's launcher asks `enabled(..., triton_kernel=False)`:
    sm90+ NVIDIA only (no Triton requirement), off under `forced(False)` and
    MINIMAX_ROCM_PDL=0."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("MINIMAX_ROCM_PDL", raising=False)
    monkeypatch.setattr(platform, "_cuda_capability", lambda index: (9, 0))
    monkeypatch.setattr(dl, "gdc_wait", None)          # a Triton without the ops: natives still may
    dev = torch.device("cuda", 0)
    assert dl.enabled(dev, triton_kernel=False)
    assert not dl.enabled(dev)                         # ... Triton kernels may not
    with dl.forced(False):
        assert not dl.enabled(dev, triton_kernel=False)
    monkeypatch.setattr(platform, "_cuda_capability", lambda index: (8, 0))
    assert not dl.enabled(dev, triton_kernel=False)
    monkeypatch.setattr(platform, "_cuda_capability", lambda index: (9, 0))
    monkeypatch.setenv("MINIMAX_ROCM_PDL", "0")
    assert not dl.enabled(dev, triton_kernel=False)
    assert not dl.enabled(torch.device("cpu"), triton_kernel=False)
