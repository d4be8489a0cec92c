// The native extension's Python module. Each hip/*.hip registers its own ops
// in the torch library `minimax_rocm_ext` (TORCH_LIBRARY_FRAGMENT); loading
// this module is what makes them visible as torch.ops.minimax_rocm_ext.*.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "minimax-rocm native kernels (ops in torch.ops.minimax_rocm_ext)"; }
