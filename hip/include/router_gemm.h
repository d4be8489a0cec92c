// Shared by the router GEMM's kernel files: logits[M, E] (fp32) = x[M, H]
// (bf16 or fp32) @ W[E, H]^T (fp32), for decode-sized M (<= 32). The op is
// bound by reading W once (3 MB for MiniMax-M2's 256 x 3072).
//
// Kernel families (the oracle picks one per call: KERNEL_RULES in oracle.py):
// - router_gemm_onepass.hip: op router_gemm; a block per 1, 2 or 4 W rows,
//   K split across its threads; every platform.
// - router_gemm_splitk.hip: op router_gemm_splitk, K split across blocks that
//   meet through a workspace (every platform); and op router_gemm_tc, tensor-
//   core products with K split across a thread-block cluster (NVIDIA sm90+,
//   bf16 x). The cluster kernels build nothing for AMD and every hip/*.hip
//   must build gfx942 kernels (compile checks), so they sit beside split-K,
//   the kernel they replace on NVIDIA.
#pragma once

#include "mmr/mmr.h"

namespace router {

constexpr int kThreads = 256;  // threads per block of the one-pass and split-K kernels
constexpr int kVec = 8;  // K elements per thread step: 16 bytes of bf16 x, 2 x 16 bytes of W
constexpr int kMaxM = 32;  // most x rows any router kernel takes

}  // namespace router

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

namespace router {

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

struct Shape {
  int M, H, E;
};

// x [M, H] bf16/fp32, w [E, H] fp32, out [M, E] fp32.
inline Shape check_args(const char* op, const at::Tensor& x, const at::Tensor& w, const at::Tensor& out) {
  MMR_CHECK(op, "x", x.is_cuda() && x.dim() == 2 && x.is_contiguous() &&
                         (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat),
            "must be a contiguous [M, H] bf16 or fp32 GPU tensor");
  const int M = int(x.size(0)), H = int(x.size(1));
  MMR_CHECK(op, "x", M >= 1 && M <= kMaxM, "must have 1..32 rows (the native kernel is for decode batches)");
  MMR_CHECK(op, "x", H % kVec == 0 && mmr::aligned16(x.data_ptr()), "hidden size must be a multiple of 8, 16-byte aligned");
  MMR_CHECK(op, "w", w.is_cuda() && w.device() == x.device() && w.scalar_type() == at::kFloat && w.dim() == 2 &&
                         w.is_contiguous() && w.size(1) == H && mmr::aligned16(w.data_ptr()),
            "must be a contiguous, 16-byte aligned [E, H] fp32 tensor on x's device");
  const int E = int(w.size(0));
  MMR_CHECK(op, "w", E >= 1, "must have at least one row");
  MMR_CHECK(op, "out", out.is_cuda() && out.device() == x.device() && out.scalar_type() == at::kFloat &&
                           out.is_contiguous() && out.dim() == 2 && out.size(0) == M && out.size(1) == E,
            "must be a contiguous [M, E] fp32 tensor on x's device");
  return {M, H, E};
}

}  // namespace router
#endif  // MMR_DEVICE_ONLY
