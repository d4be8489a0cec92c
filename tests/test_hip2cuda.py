"""The HIP -> CUDA translator."""
import pytest

from minimax_rocm.native import compile_checks, hip2cuda
from minimax_rocm.native.hip2cuda import TranslationError, translate_text

HIP_FILES = sorted(compile_checks.HIP_DIR.rglob("*.hip")) + sorted(compile_checks.HIP_DIR.rglob("*.h"))


def test_there_are_sources():
    assert any(p.suffix == ".hip" for p in HIP_FILES)


@pytest.mark.parametrize("src", HIP_FILES, ids=lambda p: p.name)
def test_every_source_translates_without_hip_left_outside_arch_blocks(src, tmp_path):
    out = hip2cuda.translate_file(src, tmp_path).read_text()
    assert "hip/hip_runtime.h" not in out
    # Outside AMD blocks only CUDA names remain: re-translating finds nothing new.
    assert translate_text(out) == out


@pytest.mark.parametrize("src", HIP_FILES, ids=lambda p: p.name)
def test_translation_is_deterministic(src, tmp_path):
    a = hip2cuda.translate_file(src, tmp_path / "a").read_text()
    hip2cuda.reverse_table.cache_clear()
    b = hip2cuda.translate_file(src, tmp_path / "b").read_text()
    assert a == b


RUNTIME_NAMES = ["cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStream_t", "cudaGetLastError", "cudaSuccess",
                 "cudaDeviceSynchronize", "cudaIpcOpenMemHandle", "cudaIpcGetMemHandle", "cudaIpcMemHandle_t",
                 "cudaMemsetAsync", "cudaGetDevice", "cudaDeviceGetAttribute", "cudaDevAttrMultiProcessorCount",
                 "cudaIpcMemLazyEnablePeerAccess", "cudaGetErrorString", "cudaEvent_t", "cudaStreamSynchronize"]


def test_runtime_names_round_trip_through_torchs_table():
    from torch.utils.hipify.cuda_to_hip_mappings import CUDA_TO_HIP_MAPPINGS
    fwd = {}
    for t in CUDA_TO_HIP_MAPPINGS:
        for c, h in t.items():
            fwd.setdefault(c, h if isinstance(h, str) else h[0])
    for name in RUNTIME_NAMES:
        hip = fwd[name]
        assert hip.startswith("hip"), (name, hip)
        assert translate_text(hip) == name, (name, hip, translate_text(hip))


def test_snippet_round_trip():
    hip = ('#include <hip/hip_runtime.h>\n'
           'void f(void* p, hipStream_t s) {\n'
           '  hipError_t e = hipMemsetAsync(p, 0, 16, s);  // hipMemsetAsync clears\n'
           '  if (e != hipSuccess) printf("%s hipFoo", hipGetErrorString(e));\n'
           '}\n')
    cuda = translate_text(hip)
    assert cuda == ('#include <cuda_runtime.h>\n'
                    'void f(void* p, cudaStream_t s) {\n'
                    '  cudaError_t e = cudaMemsetAsync(p, 0, 16, s);  // hipMemsetAsync clears\n'
                    '  if (e != cudaSuccess) printf("%s hipFoo", cudaGetErrorString(e));\n'
                    '}\n')


def test_plain_c_is_never_rewritten():
    # torch's table maps some CUDA names onto plain C (nvtxRangeId_t -> int):
    # reversed, that must not turn `int` into anything.
    code = "int f(int x) { unsigned int y = x; return y; }\n"
    assert translate_text(code) == code


def test_planted_unmappable_identifier_fails_with_file_line_and_name():
    src = "__global__ void k() {}\n\nvoid g() {\n  hipExtMallocWithFlags(nullptr, 4, 0);\n}\n"
    with pytest.raises(TranslationError) as e:
        translate_text(src, "planted.hip")
    assert "planted.hip:4" in str(e.value) and "hipExtMallocWithFlags" in str(e.value)


def test_amdgcn_builtin_outside_arch_block_fails():
    with pytest.raises(TranslationError, match="__builtin_amdgcn_readfirstlane"):
        translate_text("int x = __builtin_amdgcn_readfirstlane(1);\n", "k.hip")


def test_arch_blocks_are_copied_verbatim():
    src = ("#if MMR_AMD\n  hipExtMallocWithFlags(&p, n, hipDeviceMallocUncached);\n"
           "#else\n  hipMalloc(&p, n);\n#endif\n")
    out = translate_text(src)
    assert "hipExtMallocWithFlags(&p, n, hipDeviceMallocUncached);" in out
    assert "cudaMalloc(&p, n);" in out and "hipMalloc" not in out.split("#else")[1]
    nested = "#if defined(MMR_AMD)\n#if X\n__builtin_amdgcn_s_sleep(1);\n#endif\n#else\nhipFree(p);\n#endif\n"
    out = translate_text(nested)
    assert "__builtin_amdgcn_s_sleep(1);" in out and "cudaFree(p);" in out


def test_cli(tmp_path, capsys):
    src = tmp_path / "k.hip"
    src.write_text("#include <hip/hip_runtime.h>\n")
    assert hip2cuda.main([str(src), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "k.cu").read_text() == "#include <cuda_runtime.h>\n"
    bad = tmp_path / "bad.hip"
    bad.write_text("hipNotAThing();\n")
    assert hip2cuda.main([str(bad), "-o", str(tmp_path / "out")]) == 1
    assert "bad.hip:1" in capsys.readouterr().err
