// Memory ordering for protocols that poll peer memory (the Lamport all-reduce):
// system-scope fences and relaxed system-scope loads / stores that bypass
// caches a peer's write would not invalidate.
#pragma once

#include "platform.h"

namespace mmr {

// Orders this thread's earlier writes before its later ones as seen by every
// agent in the system (peer GPUs over NVLink / Infinity Fabric, the host).
MMR_DEVICE void fence_system() { __threadfence_system(); }

MMR_DEVICE uint32_t load_relaxed_system(const uint32_t* p) {
#if MMR_AMD
  return __hip_atomic_load(p, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
#else
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
#endif
}

MMR_DEVICE void store_relaxed_system(uint32_t* p, uint32_t v) {
#if MMR_AMD
  __hip_atomic_store(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
#else
  asm volatile("st.relaxed.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
#endif
}

// 8-byte variants: one store carries a token's two partial sums (q and k), so
// a reader never sees one half of a pair.
MMR_DEVICE uint64_t load_relaxed_system(const uint64_t* p) {
#if MMR_AMD
  return __hip_atomic_load(p, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
#else
  uint64_t v;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
#endif
}

MMR_DEVICE void store_relaxed_system(uint64_t* p, uint64_t v) {
#if MMR_AMD
  __hip_atomic_store(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
#else
  asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#endif
}

// The Lamport "empty" sentinel is -0.0f; a real -0.0 is sent as +0.0.
constexpr uint32_t kLamportEmpty = 0x80000000u;
MMR_DEVICE uint32_t lamport_encode(float v) {
  const uint32_t u = __float_as_uint(v);
  return u == kLamportEmpty ? 0u : u;
}

}  // namespace mmr
