// 16-byte vectors: the load/store width both vendors coalesce best
// (global_load_dwordx4 on CDNA, LDG.128 on NVIDIA).
#pragma once

#include "platform.h"

namespace mmr {

struct alignas(16) Vec16 {
  uint32_t w[4];
};

MMR_DEVICE Vec16 load16(const void* p) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  return Vec16{{v.x, v.y, v.z, v.w}};
}

MMR_DEVICE void store16(void* p, const Vec16& v) {
  *reinterpret_cast<uint4*>(p) = make_uint4(v.w[0], v.w[1], v.w[2], v.w[3]);
}

// Reads that must not be cached in L1 across blocks are not needed here; plain
// loads suffice for data written by earlier kernels.
MMR_HOST_DEVICE bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace mmr
