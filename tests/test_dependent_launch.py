"""triton/dependent_launch.py: the PDL constexpr and the launch attribute only
ever travel together, and only where the GPU supports them."""
import torch

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
