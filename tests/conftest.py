"""Test setup shared by every test module.

Without a GPU, Triton kernels run under the interpreter (TRITON_INTERPRET=1);
it must be set before any @triton.jit decorator runs, so it is set here, at
collection start. GPU tests are marked `gpu` (one GPU) or `multigpu` and skip,
with the reason printed, where no GPU is present. Modules marked
`interpreter` hand CPU tensors to Triton kernels: their unmarked tests skip
where torch sees a GPU and the interpreter is off. (Hiding the GPUs runs them
there, given a Triton whose interpreter works: on the H200 machine, Triton
3.6's failed in these tests with "only 0-dimensional arrays can be converted
to Python scalars".)
"""
import importlib.util
import os

import pytest
import torch

# tests/vllm_engine runs in the isolated vLLM environment (scripts/test.sh);
# the main suite's Python has no vLLM.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm_engine"]

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_collection_modifyitems(config, items):
    n = torch.cuda.device_count() if HAS_GPU else 0
    for item in items:
        if "multigpu" in item.keywords and n < 2:
            item.add_marker(pytest.mark.skip(reason=f"multigpu: needs 2 GPUs, found {n}"))
        elif "gpu" in item.keywords and n < 1:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA/ROCm device on this machine"))
        elif n and not INTERPRET and "interpreter" in item.keywords and not {"gpu", "multigpu"} & set(item.keywords):
            # It hands CPU tensors to Triton kernels, which only the
            # interpreter takes; here Triton compiles for the GPU.
            item.add_marker(pytest.mark.skip(
                reason="interpreter: CPU tensors to Triton kernels, which Triton here "
                       "compiles for the GPU (the CPU suite runs them)"))


@pytest.fixture
def device():
    return torch.device("cuda" if HAS_GPU else "cpu")


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs each run, but reproducible from the printed seed.
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


@pytest.fixture(scope="session")
def native():
    """torch.ops.minimax_rocm_ext after loading (or JIT-building) the native
    extension; skips with the loader's reason where it is not available."""
    from minimax_rocm.native import ext
    m = ext.load()
    if m is None:
        pytest.skip(f"native extension not loaded: {ext.load_error()}")
    return m
