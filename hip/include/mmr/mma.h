// Warp-level tensor-core products (NVIDIA mma.sync, sm80+). AMD's matrix
// cores (MFMA) take other fragment layouts and have no wrapper here yet: code
// that uses this header sits in an NVIDIA arch block with a portable path
// beside it.
#pragma once

#include "platform.h"

namespace mmr {

#if MMR_AMD
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// d[4] += A[16 x 16] (bf16, row-major) x B[16 x 8] (bf16, column-major), fp32.
// Lane (g = lane / 4, t = lane % 4) holds, as bf16 pairs (lower k in the low half):
//   a[0] A[g][2t..2t+1], a[1] A[g+8][2t..], a[2] A[g][2t+8..], a[3] A[g+8][2t+8..]
//   b[0] B[2t..2t+1][g], b[1] B[2t+8..][g]
//   d[0] D[g][2t], d[1] D[g][2t+1], d[2] D[g+8][2t], d[3] D[g+8][2t+1]
MMR_DEVICE void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
#endif

}  // namespace mmr
