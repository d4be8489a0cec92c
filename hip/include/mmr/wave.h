// Wave (warp) size as a compile-time constant, and shuffles / reductions that
// name their width. No kernel may assume 32: CDNA waves are 64 wide.
#pragma once

#include "platform.h"

#if MMR_AMD
// gfx9 (CDNA: gfx90a, gfx942, gfx950) runs wave64; RDNA would be wave32.
#if defined(__GFX9__) || !defined(__AMDGCN_WAVEFRONT_SIZE)
#define MMR_WAVE 64
#else
#define MMR_WAVE __AMDGCN_WAVEFRONT_SIZE
#endif
#else
#define MMR_WAVE 32
#endif

namespace mmr {

constexpr int kWave = MMR_WAVE;

// XOR shuffle within groups of `width` lanes (width a power of two <= kWave).
template <typename T>
MMR_DEVICE T shfl_xor(T v, int lane_mask, int width) {
#if MMR_AMD
  return __shfl_xor(v, lane_mask, width);
#else
  return __shfl_xor_sync(0xffffffffu, v, lane_mask, width);
#endif
}

// Lane `src` of each group of `width` lanes, to every lane of the group.
template <typename T>
MMR_DEVICE T shfl(T v, int src, int width) {
#if MMR_AMD
  return __shfl(v, src, width);
#else
  return __shfl_sync(0xffffffffu, v, src, width);
#endif
}

// Bit i set when lane i's predicate holds (wave-wide; 64 bits on CDNA).
MMR_DEVICE uint64_t ballot(bool pred) {
#if MMR_AMD
  return __ballot(pred);
#else
  return __ballot_sync(0xffffffffu, pred);
#endif
}

MMR_DEVICE int lane_id() { return int(threadIdx.x) % kWave; }

// Lowest set lane of a non-zero ballot mask.
MMR_DEVICE int first_lane(uint64_t mask) {
#if MMR_AMD
  return __builtin_ctzll(mask);
#else
  return __ffsll(static_cast<long long>(mask)) - 1;
#endif
}

// Orders the wave's shared-memory accesses before it against those after it,
// for lanes that hand values to each other through LDS (NVIDIA lanes may
// diverge in time; a CDNA wave issues its LDS operations in order).
MMR_DEVICE void wave_sync() {
#if MMR_AMD
  __builtin_amdgcn_wave_barrier();
#else
  __syncwarp();
#endif
}

// Lanes below this one whose bit is set in `mask`.
MMR_DEVICE int rank_in(uint64_t mask) {
  const int lane = lane_id();
  return __popcll(mask & ((uint64_t(1) << lane) - 1));
}

// Sum over groups of WIDTH consecutive lanes; every lane of a group gets it.
template <int WIDTH, typename T>
MMR_DEVICE T group_sum(T v) {
  static_assert(WIDTH > 0 && (WIDTH & (WIDTH - 1)) == 0 && WIDTH <= kWave, "width: power of two <= wave");
#pragma unroll
  for (int m = WIDTH / 2; m > 0; m >>= 1) v += shfl_xor(v, m, WIDTH);
  return v;
}

template <int WIDTH, typename T>
MMR_DEVICE T group_max(T v) {
  static_assert(WIDTH > 0 && (WIDTH & (WIDTH - 1)) == 0 && WIDTH <= kWave, "width: power of two <= wave");
#pragma unroll
  for (int m = WIDTH / 2; m > 0; m >>= 1) {
    T o = shfl_xor(v, m, WIDTH);
    v = v > o ? v : o;
  }
  return v;
}

template <typename T>
MMR_DEVICE T wave_sum(T v) { return group_sum<kWave>(v); }

// Sum over the whole block (blockDim.x a multiple of kWave, at most 1024):
// every thread gets the result. `scratch` holds at least blockDim.x / kWave
// values in shared memory.
template <typename T>
MMR_DEVICE T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWave, wave = threadIdx.x / kWave, waves = blockDim.x / kWave;
  v = wave_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[wave] = v;
  __syncthreads();
  T t = lane < waves ? scratch[lane] : T(0);
  return wave_sum(t);
}

// Inclusive prefix sum over the lanes of a wave.
template <typename T>
MMR_DEVICE T wave_inclusive_scan(T v) {
  const int lane = lane_id();
#pragma unroll
  for (int d = 1; d < kWave; d <<= 1) {
    const T u = shfl(v, lane >= d ? lane - d : lane, kWave);
    if (lane >= d) v += u;
  }
  return v;
}

// Exclusive prefix sum over the block in thread order (blockDim.x a multiple
// of kWave, at most 1024); `total` gets the block's sum. `scratch` holds at
// least blockDim.x / kWave values in shared memory.
template <typename T>
MMR_DEVICE T block_exclusive_scan(T v, T* scratch, T& total) {
  const int lane = threadIdx.x % kWave, wave = threadIdx.x / kWave, waves = blockDim.x / kWave;
  const T inc = wave_inclusive_scan(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == kWave - 1) scratch[wave] = inc;
  __syncthreads();
  if (wave == 0) {
    const T w = wave_inclusive_scan(lane < waves ? scratch[lane] : T(0));
    if (lane < waves) scratch[lane] = w;
  }
  __syncthreads();
  total = scratch[waves - 1];
  return (wave > 0 ? scratch[wave - 1] : T(0)) + inc - v;
}

}  // namespace mmr
