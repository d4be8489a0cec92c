// lamport_allreduce_rms: RMSNorm over a width split across tensor-parallel
// ranks, in ONE kernel: per-token sums of squares are exchanged through peer
// memory with a one-shot Lamport protocol (DESIGN.md, section 7), then
// each rank normalises its own slice in place.
//
//   allreduce_rms_qk: qkv [T, q + 2 kv] bf16 (this rank's shard): q over the
//                     full q width, k over the full k width, v untouched; the
//                     exchange sends both sums in one 8-byte pair.
//   allreduce_rms:    x [T, D] bf16: one tensor (second half of the pair = 0).
//
// Workspace (minimax_rocm/dist/lamport.py allocates it through the host ops at
// the end of this file): on every rank one buffer of
//   kBuffers x max_tokens x world x kSlotsPerRank slots x 8 bytes
// (slot = (sum0, sum1) fp32) that every peer can write (IPC-mapped), all slots
// holding the sentinel (-0.0, -0.0). A rank sends one pair per wave of its
// block, not one per block: no block-wide reduction (a barrier and a shared-
// memory round trip) stands before the stores, and the reader adds the
// world x waves pairs (faster than one pair per rank:
// benchmarks/history/allreduce_rms_qk.md). Call n uses buffer n % 3:
//   1. computes its partial sums per token and wave and stores the pair into
//      slot (rank, wave) of every rank's buffer with one relaxed system-scope
//      8-byte store (a reader never sees half a pair); a real -0.0 is sent as
//      +0.0.
//   2. clears its own buffer of call n-1 (the tokens that call used): every
//      peer's writes for call n-1 landed before this rank finished call n-1,
//      and no peer can write it again (call n+2) before this rank has written
//      its part of call n+1, i.e. after this kernel ended. Clearing the buffer
//      of call n+1 instead would race a fast peer.
//   3. polls its own slots until neither half of any slot is the sentinel and
//      sums them in one fixed order (rank, wave; bitwise identical on every
//      rank).
//   4. normalises its slice with the 16-byte vectors kept in registers from
//      step 1 (re-read from L2 for a block's further tokens) and the weights
//      loaded at the start (before the PDL wait: they are parameters).
// The buffer index lives in device memory (flags[0]) and is advanced by the
// kernel itself, so CUDA/HIP graph replays rotate buffers correctly: every
// block counts itself in once it has read the flags, and one thread of block 0
// (a spare wave where there is one) waits for the count to reach the grid size
// while the exchange is in flight, then advances the index: no grid-wide
// atomic round trip at the end of the kernel.
//
// Launched with programmatic dependent launch where the caller asks for it
// (NVIDIA sm90+, mmr/dependent_launch.h): the kernel waits for its
// predecessor first and lets its successor launch right away.
//
// The grid never exceeds the blocks that fit on the device at once: every
// block spins on peers' blocks, so a block must never wait for one that
// cannot be scheduled.
#include <stdio.h>

#include "mmr/mmr.h"

namespace {

constexpr int kMaxWorld = 8;
constexpr int kBuffers = 3;
constexpr int kMaxThreads = 256;
// 16-byte vectors per thread kept in registers between the exchange and the
// normalisation: 256 threads x 4 x 8 = 8192 columns (M2 at TP2 needs 3584).
constexpr int kCache = 4;
constexpr uint64_t kEmptyPair = (uint64_t(mmr::kLamportEmpty) << 32) | mmr::kLamportEmpty;
// Slots per rank and token: one per wave of the largest block (any vendor's
// wave has at least 32 lanes); a launch with fewer waves leaves the rest empty.
// minimax_rocm/dist/lamport.py's SLOTS_PER_RANK.
constexpr int kSlotsPerRank = kMaxThreads / 32;

// flags[] (int32, device memory of this rank only)
constexpr int kFlagBuffer = 0;      // the buffer this call uses, 0..kBuffers-1 (never wraps)
constexpr int kFlagStarted = 1;     // blocks of the running call that have read the flags
constexpr int kFlagPrevTokens = 2;  // tokens of the previous call (whose slots to clear)
constexpr int kFlagLaunches = 3;    // launches so far (diagnostics; may wrap)
constexpr int kNumFlags = 4;

struct Peers {
  uint64_t* buf[kMaxWorld];  // each rank's Lamport buffer, mapped here (own included)
};

struct Args {
  Peers peers;
  uint16_t* x;          // [T, row_stride] bf16, normalised in place
  const void* w0;       // weights of segment 0 (q / x): bf16 or fp32
  const void* w1;       // weights of segment 1 (k); unused when n1 == 0
  int64_t row_stride;   // elements
  int n0, n1;           // segment widths on this rank (segment 1 starts at column n0)
  float inv_full0, inv_full1;  // 1 / full widths across the group (the RMS denominators)
  float eps;
  int tokens, max_tokens, rank, world;
  int* flags;
  uint64_t timeout_ns;  // a peer that never writes: trap after this long (0: wait forever)
};

MMR_DEVICE uint64_t wall_ns() {
#if MMR_AMD
  return __builtin_amdgcn_s_memrealtime() * 10ull;  // 100 MHz constant clock (gfx9)
#else
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#endif
}

[[noreturn]] MMR_DEVICE void lamport_timeout(int token, int slot) {
#if MMR_AMD
  (void)token;
  (void)slot;
  __builtin_trap();
#else
  printf("minimax_rocm lamport_allreduce_rms: timed out waiting for rank %d, token %d\n", slot, token);
  __trap();
#endif
  __builtin_unreachable();
}

MMR_DEVICE float sumsq8(const mmr::Vec16& v) {
  float s = 0.f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float a = mmr::bf16_lo(v.w[q]), b = mmr::bf16_hi(v.w[q]);
    s += a * a;
    s += b * b;
  }
  return s;
}

// 8 weights as loaded (bf16: one 16-byte vector; fp32: two), converted to
// float only where the row is normalised. The weight dtype is a template
// argument: one kernel per dtype, no branch per load.
template <bool kWFp32>
struct RawW8 {
  mmr::Vec16 v[kWFp32 ? 2 : 1];
};

// The 8 weights of row vector v (segment 0 or 1; rows 16-byte aligned).
template <bool kWFp32>
MMR_DEVICE RawW8<kWFp32> weights_of(int v, int nvec0, const Args& a) {
  const bool seg0 = v < nvec0;
  const int i = seg0 ? v * 8 : (v - nvec0) * 8;
  const void* w = seg0 ? a.w0 : a.w1;
  RawW8<kWFp32> r;
  if constexpr (kWFp32) {
    r.v[0] = mmr::load16(static_cast<const float*>(w) + i);
    r.v[1] = mmr::load16(static_cast<const float*>(w) + i + 4);
  } else {
    r.v[0] = mmr::load16(static_cast<const uint16_t*>(w) + i);
  }
  return r;
}

template <bool kWFp32>
MMR_DEVICE void to_float(const RawW8<kWFp32>& r, float* o) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    if constexpr (kWFp32) {
      o[q] = __uint_as_float(r.v[0].w[q]);
      o[4 + q] = __uint_as_float(r.v[1].w[q]);
    } else {
      o[2 * q] = mmr::bf16_lo(r.v[0].w[q]);
      o[2 * q + 1] = mmr::bf16_hi(r.v[0].w[q]);
    }
  }
}

// Vector d (8 columns) times its segment's factor and the 8 weights w.
MMR_DEVICE mmr::Vec16 scale8(const mmr::Vec16& d, float inv, const float* w) {
  mmr::Vec16 o;
#pragma unroll
  for (int q = 0; q < 4; ++q)
    o.w[q] = mmr::pack_bf16x2(mmr::bf16_lo(d.w[q]) * inv * w[2 * q], mmr::bf16_hi(d.w[q]) * inv * w[2 * q + 1]);
  return o;
}

// The buffer index and friends, written by the previous launch. A plain
// L1-bypassing load: unlike the relaxed system-scope asm it is no compiler
// barrier, so the row loads are issued alongside it.
MMR_DEVICE int load_flag(const int* p) {
#if MMR_AMD
  return __hip_atomic_load(p, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
#else
  return __ldcg(p);
#endif
}

template <bool kWFp32>  // weights fp32 (else bf16)
__global__ void __launch_bounds__(kMaxThreads) lamport_allreduce_rms_kernel(Args a) {
  __shared__ float inv_s[2];
  const int nvec0 = a.n0 / 8, nvec = (a.n0 + a.n1) / 8;
  // Vector indices past the row are clamped to 0, not predicated: the loads
  // then all go out at once (a predicated row load was issued only after the
  // sums of the others, one more L2 round trip).
  auto in_row = [nvec](int v) { return v < nvec ? v : 0; };
  // A row's j-th cached vector of this thread.
  auto cached_vec = [&](const uint16_t* row, int j) {
    return mmr::load16(row + in_row(threadIdx.x + j * blockDim.x) * 8);
  };

  // The weights are model parameters that no kernel writes while serving: they
  // are loaded before the PDL wait (overlapping the previous kernel's tail, as
  // the router's W is) and converted to float only for the stores.
  RawW8<kWFp32> wraw[kCache];
#pragma unroll
  for (int j = 0; j < kCache; ++j) wraw[j] = weights_of<kWFp32>(in_row(threadIdx.x + j * blockDim.x), nvec0, a);

  // Launched with PDL, this grid is already resident while the previous
  // kernel finishes (its launch hidden); every block has passed this point
  // before the next grid may start, so the co-residency the spinning needs
  // holds.
  mmr::pdl_enter();

  // This block's first row first: it is on the way to the exchange, the flags
  // are not (they are only needed for the store's address).
  const int t0 = blockIdx.x;
  mmr::Vec16 cache[kCache];
  {
    const uint16_t* row = a.x + int64_t(t0 < a.tokens ? t0 : 0) * a.row_stride;  // (the grid never exceeds the tokens)
#pragma unroll
    for (int j = 0; j < kCache; ++j) cache[j] = cached_vec(row, j);
  }
  const int buf = load_flag(a.flags + kFlagBuffer);
  const int prev_tokens = load_flag(a.flags + kFlagPrevTokens);
  const int prev_buf = (buf + kBuffers - 1) % kBuffers;
  const int64_t buf_slots = int64_t(a.max_tokens) * a.world * kSlotsPerRank;
  const int lane = threadIdx.x % mmr::kWave, wave = threadIdx.x / mmr::kWave;
  const int waves = blockDim.x / mmr::kWave;
  uint64_t* mine = nullptr;
  uint64_t* dst = nullptr;  // lane p < world: rank p's buffer (no dynamic indexing of kernel args)
#pragma unroll
  for (int p = 0; p < kMaxWorld; ++p) {
    if (p == a.rank) mine = a.peers.buf[p];
    if (p == lane) dst = a.peers.buf[p];
  }
  uint64_t* cur = mine + buf * buf_slots;

  // 1. partial sums per wave -> slot (rank, wave) of every rank's buffer
  for (int t = t0; t < a.tokens; t += gridDim.x) {
    const bool first = t == t0;
    const uint16_t* row = a.x + int64_t(t) * a.row_stride;
    mmr::Vec16 d[kCache];
#pragma unroll
    for (int j = 0; j < kCache; ++j) d[j] = first ? cache[j] : cached_vec(row, j);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int j = 0; j < kCache; ++j) {  // selects, not branches: the sums of all vectors interleave
      const int v = threadIdx.x + j * blockDim.x;
      const float s = sumsq8(d[j]);
      s0 += v < nvec0 ? s : 0.f;
      s1 += v >= nvec0 && v < nvec ? s : 0.f;
    }
    for (int v = threadIdx.x + kCache * blockDim.x; v < nvec; v += blockDim.x) {
      const float s = sumsq8(mmr::load16(row + v * 8));
      if (v < nvec0) s0 += s; else s1 += s;
    }
    s0 = mmr::wave_sum(s0);
    s1 = mmr::wave_sum(s1);
    if (lane < a.world) {
      const uint64_t pair = uint64_t(mmr::lamport_encode(s0)) | (uint64_t(mmr::lamport_encode(s1)) << 32);
      mmr::store_relaxed_system(dst + buf * buf_slots + (int64_t(t) * a.world + a.rank) * kSlotsPerRank + wave, pair);
    }
  }

  // Count this block in (it has read the flags). The increment depends on the
  // values loaded (never negative), so it cannot become visible before those
  // loads were performed: block 0 never advances the flags under a block's feet.
  if (threadIdx.x == 0) atomicAdd(a.flags + kFlagStarted, (buf | prev_tokens) < 0 ? 2 : 1);

  // 2. reset the previous call's slots of this rank's own buffer (while the
  //    peers' pairs for this call are on their way)
  {
    // (32-bit indices: a 64-bit trip count calls a division routine)
    uint64_t* p = mine + prev_buf * buf_slots;
    const int n = prev_tokens * a.world * kSlotsPerRank;
    for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += int(gridDim.x * blockDim.x)) p[i] = kEmptyPair;
  }

  // Block 0 advances the flags once every block has read them (a spare wave
  // waits, alongside the polling wave 0).
  const int advancer = blockDim.x >= 2 * mmr::kWave ? mmr::kWave : 0;
  if (blockIdx.x == 0 && int(threadIdx.x) == advancer) {
    while (int(mmr::load_relaxed_system(reinterpret_cast<const uint32_t*>(a.flags + kFlagStarted))) <
           int(gridDim.x)) {
    }
    a.flags[kFlagStarted] = 0;
    a.flags[kFlagPrevTokens] = a.tokens;
    a.flags[kFlagBuffer] = (buf + 1) % kBuffers;
    a.flags[kFlagLaunches] = int(uint32_t(load_flag(a.flags + kFlagLaunches)) + 1u);
  }

  float wreg[kCache][8];
#pragma unroll
  for (int j = 0; j < kCache; ++j) to_float<kWFp32>(wraw[j], wreg[j]);

  // 3. wait for every (rank, wave) pair, sum in one fixed order; 4. normalise
  const int pairs = a.world * waves;  // up to 64: a lane polls every kWave-th
  for (int t = t0; t < a.tokens; t += gridDim.x) {
    if (wave == 0) {
      const uint64_t* slots = cur + int64_t(t) * a.world * kSlotsPerRank;
      float q = 0.f, k = 0.f;
      for (int i = lane; i < pairs; i += mmr::kWave) {
        const int r = i / waves;
        const uint64_t* slot = slots + r * kSlotsPerRank + i % waves;
        uint64_t v, start = 0;
        for (uint32_t spins = 0;; ++spins) {
          v = mmr::load_relaxed_system(slot);
          if (uint32_t(v) != mmr::kLamportEmpty && uint32_t(v >> 32) != mmr::kLamportEmpty) break;
          if (a.timeout_ns && (spins & 1023u) == 1023u) {  // the clock is read rarely: it is slow
            const uint64_t now = wall_ns();
            if (spins == 1023u) start = now;
            else if (now - start > a.timeout_ns) lamport_timeout(t, r);
          }
        }
        q += __uint_as_float(uint32_t(v));
        k += __uint_as_float(uint32_t(v >> 32));
      }
      // The slots sit in the same lanes on every rank, so lane 0's sum has
      // the same bits everywhere.
      q = mmr::wave_sum(q);
      k = mmr::wave_sum(k);
      if (lane == 0) {
        inv_s[0] = rsqrtf(q * a.inv_full0 + a.eps);
        inv_s[1] = a.n1 ? rsqrtf(k * a.inv_full1 + a.eps) : 0.f;
      }
    }
    __syncthreads();
    const float inv0 = inv_s[0], inv1 = inv_s[1];
    __syncthreads();  // inv_s is rewritten for the next token
    uint16_t* row = a.x + int64_t(t) * a.row_stride;
    if (t != t0) {  // a block's further tokens: re-read (L2), all loads in flight together
#pragma unroll
      for (int j = 0; j < kCache; ++j) cache[j] = cached_vec(row, j);
    }
#pragma unroll
    for (int j = 0; j < kCache; ++j) {
      const int v = threadIdx.x + j * blockDim.x;
      if (v < nvec) mmr::store16(row + v * 8, scale8(cache[j], v < nvec0 ? inv0 : inv1, wreg[j]));
    }
    for (int v = threadIdx.x + kCache * blockDim.x; v < nvec; v += blockDim.x) {
      float w[8];
      to_float<kWFp32>(weights_of<kWFp32>(v, nvec0, a), w);
      mmr::store16(row + v * 8, scale8(mmr::load16(row + v * 8), v < nvec0 ? inv0 : inv1, w));
    }
  }
}

// Both weight dtypes, also where no host code instantiates them (device-only
// compiles for the ISA report).
template __global__ void lamport_allreduce_rms_kernel<false>(Args);
template __global__ void lamport_allreduce_rms_kernel<true>(Args);

}  // namespace

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

#include <algorithm>
#include <cstring>

namespace {

#define MMR_HIP_OK(op, call)                                                                        \
  do {                                                                                              \
    hipError_t e_ = (call);                                                                         \
    TORCH_CHECK(e_ == hipSuccess, "minimax_rocm_ext.", op, ": ", #call, " failed: ", hipGetErrorString(e_)); \
  } while (0)

// --------------------------------------------------------------- workspace host ops

// Device memory peers can map and poll: fine-grained / uncached on ROCm so a
// peer's write is never hidden behind a stale cache line; plain device memory
// on NVIDIA (relaxed system-scope loads see NVLink/P2P writes).
int64_t lamport_alloc(int64_t nbytes, int64_t device) {
  TORCH_CHECK(nbytes > 0, "minimax_rocm_ext.lamport_alloc: nbytes must be > 0, got ", nbytes);
  const c10::DeviceGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  void* p = nullptr;
#if MMR_AMD
  MMR_HIP_OK("lamport_alloc", hipExtMallocWithFlags(&p, size_t(nbytes), hipDeviceMallocUncached));
#else
  MMR_HIP_OK("lamport_alloc", hipMalloc(&p, size_t(nbytes)));
#endif
  return int64_t(reinterpret_cast<uintptr_t>(p));
}

void lamport_free(int64_t ptr, int64_t device) {
  const c10::DeviceGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  MMR_HIP_OK("lamport_free", hipFree(reinterpret_cast<void*>(uintptr_t(ptr))));
}

// The IPC handle of an allocation, as bytes (a CPU uint8 tensor) to send to peers.
at::Tensor lamport_ipc_handle(int64_t ptr, int64_t device) {
  const c10::DeviceGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  hipIpcMemHandle_t h;
  MMR_HIP_OK("lamport_ipc_handle", hipIpcGetMemHandle(&h, reinterpret_cast<void*>(uintptr_t(ptr))));
  at::Tensor out = at::empty({int64_t(sizeof(h))}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(out.data_ptr(), &h, sizeof(h));
  return out;
}

int64_t lamport_ipc_open(const at::Tensor& handle, int64_t device) {
  MMR_CHECK("lamport_ipc_open", "handle",
            handle.device().is_cpu() && handle.scalar_type() == at::kByte && handle.is_contiguous() &&
                handle.numel() == int64_t(sizeof(hipIpcMemHandle_t)),
            "must be the contiguous CPU uint8 bytes of one IPC handle");
  const c10::DeviceGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  hipIpcMemHandle_t h;
  std::memcpy(&h, handle.data_ptr(), sizeof(h));
  void* p = nullptr;
  MMR_HIP_OK("lamport_ipc_open", hipIpcOpenMemHandle(&p, h, hipIpcMemLazyEnablePeerAccess));
  return int64_t(reinterpret_cast<uintptr_t>(p));
}

void lamport_ipc_close(int64_t ptr, int64_t device) {
  const c10::DeviceGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  MMR_HIP_OK("lamport_ipc_close", hipIpcCloseMemHandle(reinterpret_cast<void*>(uintptr_t(ptr))));
}

// An int32 tensor over raw device memory (not owned: the workspace frees it):
// the workspace fills the sentinel through it, tests read it back.
at::Tensor lamport_view(int64_t ptr, int64_t numel, int64_t device) {
  return at::from_blob(reinterpret_cast<void*>(uintptr_t(ptr)), {numel},
                       at::TensorOptions().dtype(at::kInt).device(c10::Device(c10::DeviceType::CUDA,
                                                                              c10::DeviceIndex(device))));
}

// --------------------------------------------------------------- the kernel launcher

bool is_16b_aligned(const at::Tensor& t) { return mmr::aligned16(t.data_ptr()); }

void check_weight(const char* op, const char* arg, const at::Tensor& w, int64_t n, const at::Tensor& x) {
  MMR_CHECK(op, arg, w.is_cuda() && w.device() == x.device(), "must be on the activations' device");
  MMR_CHECK(op, arg, w.dim() == 1 && w.size(0) == n && w.is_contiguous(), "must be a contiguous 1-D tensor of the slice width");
  MMR_CHECK(op, arg, w.scalar_type() == at::kBFloat16 || w.scalar_type() == at::kFloat, "must be bf16 or fp32");
  MMR_CHECK(op, arg, is_16b_aligned(w), "must be 16-byte aligned");
}

// The largest grid whose blocks are all resident at once (see the header),
// per kernel, device and block size; 0 = not asked yet.
template <bool kWFp32>
int max_resident_blocks(int threads) {
  static int cache[64][kMaxThreads / 32 + 1] = {};
  int dev = 0;
  MMR_HIP_OK("lamport_allreduce_rms", hipGetDevice(&dev));
  int* slot = dev < 64 ? &cache[dev][threads / 32] : nullptr;
  if (slot && *slot) return *slot;
  int per_sm = 0;
  MMR_HIP_OK("lamport_allreduce_rms",
             hipOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, lamport_allreduce_rms_kernel<kWFp32>, threads, 0));
  const int n = std::max(1, per_sm) * mmr::multiprocessor_count();
  if (slot) *slot = n;
  return n;
}

void launch(const char* op, at::Tensor& x, int64_t n0, int64_t n1, const at::Tensor& w0, const at::Tensor* w1,
            double eps, c10::IntArrayRef peers, at::Tensor& flags, int64_t rank, int64_t max_tokens,
            double timeout_s, bool pdl) {
  MMR_CHECK(op, "x", x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous(),
            "must be a contiguous 2-D bf16 GPU tensor");
  MMR_CHECK(op, "x", is_16b_aligned(x) && x.size(1) % 8 == 0, "must be 16-byte aligned with a row width that is a multiple of 8");
  MMR_CHECK(op, "x", n0 % 8 == 0 && n1 % 8 == 0 && n0 > 0 && n0 + n1 <= x.size(1),
            "normalised slice widths must be positive multiples of 8 within the row");
  check_weight(op, n1 ? "q_weight" : "weight", w0, n0, x);
  if (w1) {
    check_weight(op, "k_weight", *w1, n1, x);
    MMR_CHECK(op, "k_weight", w1->scalar_type() == w0.scalar_type(), "must have the dtype of q_weight");
  }
  const int64_t world = int64_t(peers.size());
  TORCH_CHECK(world == 2 || world == 4 || world == 8, "minimax_rocm_ext.", op,
              ": argument 'peers' implies world size ", world, "; supported: 2, 4, 8");
  for (int64_t p : peers) MMR_CHECK(op, "peers", p != 0 && (p & 15) == 0, "holds a null or misaligned buffer address");
  TORCH_CHECK(rank >= 0 && rank < world, "minimax_rocm_ext.", op, ": argument 'rank' is ", rank,
              "; expected [0, ", world, ")");
  MMR_CHECK(op, "flags", flags.is_cuda() && flags.device() == x.device() && flags.scalar_type() == at::kInt &&
                             flags.is_contiguous() && flags.numel() >= kNumFlags,
            "must be the workspace's int32 counters on the activations' device");
  MMR_CHECK(op, "max_tokens", max_tokens > 0 && max_tokens * world * kSlotsPerRank < (int64_t(1) << 31), "out of range");
  const int64_t T = x.size(0);
  TORCH_CHECK(T <= max_tokens, "minimax_rocm_ext.", op, ": argument 'x' has ", T,
              " tokens; the Lamport workspace holds at most ", max_tokens, " (open it with a larger max_tokens)");
  MMR_CHECK(op, "eps", eps > 0, "must be > 0");
  if (T == 0) return;  // every rank sees the same T: none launches, the counter stays in step

  Args a{};
  for (int64_t p = 0; p < world; ++p) a.peers.buf[p] = reinterpret_cast<uint64_t*>(uintptr_t(peers[p]));
  a.x = reinterpret_cast<uint16_t*>(x.data_ptr());
  a.w0 = w0.data_ptr();
  a.w1 = w1 ? w1->data_ptr() : w0.data_ptr();
  a.row_stride = x.size(1);
  a.n0 = int(n0);
  a.n1 = int(n1);
  a.inv_full0 = float(1.0 / double(n0 * world));
  a.inv_full1 = n1 ? float(1.0 / double(n1 * world)) : 0.f;
  a.eps = float(eps);
  a.tokens = int(T);
  a.max_tokens = int(max_tokens);
  a.rank = int(rank);
  a.world = int(world);
  a.flags = flags.data_ptr<int>();
  a.timeout_ns = timeout_s > 0 ? uint64_t(timeout_s * 1e9) : 0;

  const c10::DeviceGuard guard(x.device());
  const int nvec = int((n0 + n1) / 8);
  // About kCache vectors per thread (all of a row in registers, few threads
  // per token so more blocks are resident for large T), at most kMaxThreads.
  const int per_thread = (nvec + kCache - 1) / kCache;
  const int threads = int(std::min<int64_t>(
      kMaxThreads, std::max<int64_t>(mmr::kWave, (per_thread + mmr::kWave - 1) / mmr::kWave * mmr::kWave)));
  const bool w_fp32 = w0.scalar_type() == at::kFloat;
  const int resident = w_fp32 ? max_resident_blocks<true>(threads) : max_resident_blocks<false>(threads);
  const int blocks = int(std::min<int64_t>(T, resident));
  const hipError_t e =
      mmr::launch_kernel(w_fp32 ? lamport_allreduce_rms_kernel<true> : lamport_allreduce_rms_kernel<false>,
                         dim3(unsigned(blocks)), dim3(unsigned(threads)), 0, mmr::current_stream(), pdl, a);
  MMR_CHECK_LAUNCH_RESULT(op, e);
}

void lamport_allreduce_rms_qk(at::Tensor& qkv, const at::Tensor& q_weight, const at::Tensor& k_weight, double eps,
                              c10::IntArrayRef peers, at::Tensor& flags, int64_t rank, int64_t max_tokens,
                              double timeout_s, bool pdl) {
  const int64_t q = q_weight.dim() == 1 ? q_weight.size(0) : -1, kv = k_weight.dim() == 1 ? k_weight.size(0) : -1;
  MMR_CHECK("lamport_allreduce_rms_qk", "qkv", q > 0 && kv > 0 && qkv.dim() == 2 && qkv.size(1) == q + 2 * kv,
            "must have q + 2 kv columns for 1-D q_weight [q] and k_weight [kv]");
  launch("lamport_allreduce_rms_qk", qkv, q, kv, q_weight, &k_weight, eps, peers, flags, rank, max_tokens, timeout_s,
         pdl);
}

void lamport_allreduce_rms(at::Tensor& x, const at::Tensor& weight, double eps, c10::IntArrayRef peers,
                           at::Tensor& flags, int64_t rank, int64_t max_tokens, double timeout_s, bool pdl) {
  MMR_CHECK("lamport_allreduce_rms", "weight", weight.dim() == 1 && x.dim() == 2 && weight.size(0) == x.size(1),
            "must be 1-D with x's width");
  launch("lamport_allreduce_rms", x, x.size(1), 0, weight, nullptr, eps, peers, flags, rank, max_tokens, timeout_s,
         pdl);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("lamport_alloc(int nbytes, int device) -> int", &lamport_alloc);
  m.def("lamport_free(int ptr, int device) -> ()", &lamport_free);
  m.def("lamport_ipc_handle(int ptr, int device) -> Tensor", &lamport_ipc_handle);
  m.def("lamport_ipc_open(Tensor handle, int device) -> int", &lamport_ipc_open);
  m.def("lamport_ipc_close(int ptr, int device) -> ()", &lamport_ipc_close);
  m.def("lamport_view(int ptr, int numel, int device) -> Tensor", &lamport_view);
  m.def("lamport_allreduce_rms_qk(Tensor(a!) qkv, Tensor q_weight, Tensor k_weight, float eps, int[] peers, "
        "Tensor(b!) flags, int rank, int max_tokens, float timeout_s, bool pdl=False) -> ()");
  m.def("lamport_allreduce_rms(Tensor(a!) x, Tensor weight, float eps, int[] peers, Tensor(b!) flags, int rank, "
        "int max_tokens, float timeout_s, bool pdl=False) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) {
  m.impl("lamport_allreduce_rms_qk", &lamport_allreduce_rms_qk);
  m.impl("lamport_allreduce_rms", &lamport_allreduce_rms);
}
#endif  // MMR_DEVICE_ONLY
