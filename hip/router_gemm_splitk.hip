// router_gemm_splitk and router_gemm_tc: K split across blocks, for the M
// (up to 32) where the one-pass kernel (router_gemm_onepass.hip) leaves too
// few blocks and too long FMA chains. Overview of the op: include/router_gemm.h.
#include "mmr/mmr.h"
#include "router_gemm.h"

namespace {

using router::kThreads;
using router::kVec;

// ---------------------------------------------------------------- split-K (8 < M <= 32)
// grid (tiles = ceil(E / KE), S): block (t, s) multiplies W rows
// [t * KE, +KE) by all M rows of x over K slice s, writes that [M, KE]
// partial to the workspace, and the block that arrives last for tile t (an
// atomic ticket per tile) sums the S partials in slice order and writes out.
// The order of every sum is fixed, so results are bitwise reproducible; the
// last block puts its counter back to 0 for the next launch (graph replays).
//
// In a block, thread (k lane, row group, x-row group) owns a 4 x 4 tile of
// (W row, x row) accumulators and walks its 16-byte K quads: a W quad is
// used for 4 x rows, an x quad (staged in LDS as fp32) for 4 W rows. The
// k lanes of a 4 x 4 tile (8 or 16 adjacent lanes) meet in a shuffle
// reduce-scatter, far cheaper than one wave_sum per value; each lane then
// writes its 1 or 2 sums.
constexpr int kSplitKE = 16;           // W rows per tile
constexpr int kSplitMaxSlices = 64;    // most K slices (S) a launch uses
constexpr int kSplitLdsFloats = 8192;  // x slice in LDS: 32 KB, 2 blocks per CU in AMD's 64 KB
constexpr int kSplitBlocksPerCU = 2;
constexpr int kSplitStageVecs = kSplitLdsFloats / kVec / kThreads;  // 8-element x vectors a thread stages
constexpr int kSplitMaxQuads = kSplitLdsFloats / 4 / kThreads;      // W quads a thread multiplies

// 8 elements of x as loaded (16 bytes of bf16, 32 of fp32), unpacked to fp32 later.
template <typename XT>
struct Raw8;
template <>
struct Raw8<uint16_t> {
  mmr::Vec16 a;
};
template <>
struct Raw8<float> {
  float4 a, b;
};

MMR_DEVICE Raw8<uint16_t> load_raw8(const uint16_t* p) { return {mmr::load16(p)}; }
MMR_DEVICE Raw8<float> load_raw8(const float* p) {
  return {*reinterpret_cast<const float4*>(p), *reinterpret_cast<const float4*>(p + 4)};
}
MMR_DEVICE void unpack8(const Raw8<uint16_t>& r, float* v) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    v[2 * q] = mmr::bf16_lo(r.a.w[q]);
    v[2 * q + 1] = mmr::bf16_hi(r.a.w[q]);
  }
}
MMR_DEVICE void unpack8(const Raw8<float>& r, float* v) {
  v[0] = r.a.x; v[1] = r.a.y; v[2] = r.a.z; v[3] = r.a.w;
  v[4] = r.b.x; v[5] = r.b.y; v[6] = r.b.z; v[7] = r.b.w;
}

// Sums N values over each group of W lanes (N >= W), leaving N / W sums per
// lane: at each step a lane keeps one half of its values (the upper half where
// its lane bit MASK is set) and adds its partner's copy of that half, so a
// step costs N / 2 shuffles instead of N. `base`: v[0]'s index among the N.
template <int N, int MASK, int W>
MMR_DEVICE void reduce_scatter(float (&v)[16], int lane, int& base) {
  if constexpr (MASK > 0) {
    static_assert(N > 1, "more lanes than values");
    constexpr int kHalf = N / 2;
    const bool upper = (lane & MASK) != 0;
#pragma unroll
    for (int a = 0; a < kHalf; ++a) {
      const float lo = v[a], hi = v[a + kHalf];
      v[a] = (upper ? hi : lo) + mmr::shfl_xor(upper ? lo : hi, MASK, W);
    }
    if (upper) base += kHalf;
    reduce_scatter<kHalf, MASK / 2, W>(v, lane, base);
  }
}

MMR_DEVICE void load_w4(float4 (&d)[4], const float* const (&rows)[4], int q) {
#pragma unroll
  for (int r = 0; r < 4; ++r) d[r] = *reinterpret_cast<const float4*>(rows[r] + 4 * q);
}

// acc[i][r] += x row i . W row r over quad q (x rows `stride` float4 apart:
// float4 indexing tells the compiler the 16-byte alignment ds_read_b128 needs).
MMR_DEVICE void fma_quad(float (&acc)[4][4], const float4 (&wq)[4], const float4* xrow, int stride, int q) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float4 xv = xrow[i * stride + q];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      acc[i][r] = fmaf(wq[r].x, xv.x, acc[i][r]);
      acc[i][r] = fmaf(wq[r].y, xv.y, acc[i][r]);
      acc[i][r] = fmaf(wq[r].z, xv.z, acc[i][r]);
      acc[i][r] = fmaf(wq[r].w, xv.w, acc[i][r]);
    }
  }
}

// partials: [tiles][S][M][KE] fp32; counters: [tiles] int32, 0 between launches.
// slice: K elements per slice (a multiple of 8; the last slice may be shorter).
template <typename XT, int MT>
MMR_DEVICE void splitk_block(const XT* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                             float* partials, int* counters, int M, int H, int E, int slice) {
  constexpr int kRowGroups = kSplitKE / 4, kMGroups = MT / 4;
  constexpr int kKLanes = kThreads / (kRowGroups * kMGroups);  // 8 (MT 32) or 16 (MT 16)
  constexpr int kKeep = 16 / kKLanes;                            // values per lane after the reduce-scatter
  static_assert(kKLanes * kRowGroups * kMGroups == kThreads && kKLanes <= 16 && kKLanes <= mmr::kWave, "layout");
  static_assert(MT * 256 <= kSplitLdsFloats, "an MT x 256 slice must fit the LDS budget");

  extern __shared__ float4 splitk_smem[];  // x slice [MT][slice] fp32, later the final reduction's scratch

  const int t = blockIdx.x, s = blockIdx.y, S = gridDim.y, tid = threadIdx.x;
  const int e0 = t * kSplitKE, k0 = s * slice;
  const int len = min(slice, H - k0), nq = len / 4;
  // Lanes of a wave share x rows (mg) on NVIDIA: a wave whose rows are all
  // past M skips its FMAs, leaving the issue slots to the others.
  const int kl = tid % kKLanes, rg = (tid / kKLanes) % kRowGroups, mg = tid / (kKLanes * kRowGroups);
  const bool active = mg * 4 < M;
  const int nj = active && kl < nq ? (nq - kl + kKLanes - 1) / kKLanes : 0;  // quads kl + j * kKLanes, j < nj

  // Rows past E re-read row E - 1 (dropped at the end): no branch in the loads.
  const float* wr[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) wr[r] = w + int64_t(min(e0 + rg * 4 + r, E - 1)) * H + k0;

  // The first two W quads are in flight while x is staged. W is a weight:
  // they go out before the PDL wait (see mmr/dependent_launch.h).
  float4 wq[2][4];
  if (nj > 0) load_w4(wq[0], wr, kl);
  if (nj > 1) load_w4(wq[1], wr, kl + kKLanes);
  mmr::pdl_wait();
  mmr::pdl_launch_dependents();

  // Stage x[0:Mpad, slice] as fp32; rows M..Mpad-1 (read by a partly used
  // 4-row group) are zero. Every load is issued before the first is used.
  {
    // Vector i = tid + j * kThreads is (row m[j], column c[j]) of the slice.
    const int mpad = min(MT, (M + 3) & ~3), nv = len / kVec, total = mpad * nv;
    const int dm = kThreads / nv, dc = kThreads - dm * nv;
    int m[kSplitStageVecs], c[kSplitStageVecs];
    m[0] = tid / nv;
    c[0] = tid - m[0] * nv;
#pragma unroll
    for (int j = 1; j < kSplitStageVecs; ++j) {
      const bool carry = c[j - 1] + dc >= nv;
      m[j] = m[j - 1] + dm + (carry ? 1 : 0);
      c[j] = c[j - 1] + dc - (carry ? nv : 0);
    }
    Raw8<XT> raw[kSplitStageVecs];
#pragma unroll
    for (int j = 0; j < kSplitStageVecs; ++j)
      if (m[j] < M) raw[j] = load_raw8(x + int64_t(m[j]) * H + k0 + c[j] * kVec);
#pragma unroll
    for (int j = 0; j < kSplitStageVecs; ++j) {
      if (tid + j * kThreads < total) {
        float v[kVec];
        unpack8(raw[j], v);
        float4* d = splitk_smem + (m[j] * slice + c[j] * kVec) / 4;
        d[0] = m[j] < M ? make_float4(v[0], v[1], v[2], v[3]) : make_float4(0.f, 0.f, 0.f, 0.f);
        d[1] = m[j] < M ? make_float4(v[4], v[5], v[6], v[7]) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  }
  __syncthreads();

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[i][r] = 0.f;
  // Fully unrolled so the two W buffers keep fixed registers: a rolled loop
  // copies them at the back edge, which waits for the loads just issued.
  const int stride4 = slice / 4;
  const float4* xrow = splitk_smem + mg * 4 * stride4;
#pragma unroll
  for (int j = 0; j < kSplitMaxQuads; ++j) {
    if (j >= nj) break;
    fma_quad(acc, wq[j & 1], xrow, stride4, kl + j * kKLanes);
    if (j + 2 < nj) load_w4(wq[j & 1], wr, kl + (j + 2) * kKLanes);
  }

  // Every lane takes part (shuffles need the whole wave), idle ones with zeros.
  float v[16];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int r = 0; r < 4; ++r) v[i * 4 + r] = acc[i][r];
  int base = 0;
  reduce_scatter<16, kKLanes / 2, kKLanes>(v, kl, base);
  float* part = partials + (int64_t(t) * S + s) * M * kSplitKE;
#pragma unroll
  for (int a = 0; a < kKeep; ++a) {
    const int idx = base + a, m = mg * 4 + idx / 4;
    if (m < M) part[m * kSplitKE + rg * 4 + idx % 4] = v[a];
  }

  // Publish the partial, take a ticket (release: every thread's fence, then
  // the barrier, then the atomic, as PyTorch's split reductions do).
  // The ticket lives past the final reduction's scratch, in the dead x slice
  // (the host sizes LDS for it): static LDS would push 2 blocks past 64 KB.
  int* ticket = reinterpret_cast<int*>(splitk_smem + kThreads);
  __threadfence();
  __syncthreads();
  if (tid == 0) *ticket = atomicAdd(counters + t, 1);
  __syncthreads();
  if (*ticket != S - 1) return;
  __threadfence();  // acquire: the other blocks' partials, not stale cache lines

  // Last block of tile t: out[m, e0 + 4 * f + c] for float4 f of row m. G
  // thread groups each sum every G-th slice in order, then one thread per
  // float4 sums the groups in order: a fixed order for given (M, S).
  const float4* tile = reinterpret_cast<const float4*>(partials + int64_t(t) * S * M * kSplitKE);
  const int P = M * (kSplitKE / 4), G = kThreads / P, g = tid / P, o = tid - g * P;
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
  if (g < G) {
    constexpr int kBatch = 16;  // loads in flight per thread
    for (int s0 = g; s0 < S; s0 += kBatch * G) {
      float4 p[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (s0 + b * G < S) p[b] = tile[(s0 + b * G) * P + o];
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (s0 + b * G < S) {
          sum.x += p[b].x; sum.y += p[b].y; sum.z += p[b].z; sum.w += p[b].w;
        }
    }
  }
  float4* scratch = splitk_smem;  // the x slice is dead: every thread passed the barrier above
  if (g < G) scratch[tid] = sum;
  __syncthreads();
  if (tid < P) {
    float4 a = scratch[tid];
    for (int q = 1; q < G; ++q) {
      const float4 b = scratch[q * P + tid];
      a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
    }
    const int m = tid / 4, e = e0 + (tid % 4) * 4;
    float* o_row = out + int64_t(m) * E;
    if (e + 0 < E) o_row[e + 0] = a.x;
    if (e + 1 < E) o_row[e + 1] = a.y;
    if (e + 2 < E) o_row[e + 2] = a.z;
    if (e + 3 < E) o_row[e + 3] = a.w;
  }
  if (tid == 0) counters[t] = 0;  // all S tickets are taken: nobody else touches it this launch
}

#define MMR_SPLITK_KERNEL(NAME, XT, MT)                                                                   \
  __global__ void __launch_bounds__(kThreads) NAME(const XT* __restrict__ x, const float* __restrict__ w,    \
                                                   float* __restrict__ out, float* partials, int* counters, \
                                                   int M, int H, int E, int slice) {                       \
    splitk_block<XT, MT>(x, w, out, partials, counters, M, H, E, slice);                                  \
  }

MMR_SPLITK_KERNEL(router_splitk_bf16_m16, uint16_t, 16)
MMR_SPLITK_KERNEL(router_splitk_bf16_m32, uint16_t, 32)
MMR_SPLITK_KERNEL(router_splitk_f32_m16, float, 16)
MMR_SPLITK_KERNEL(router_splitk_f32_m32, float, 32)

// ---------------------------------------------------------------- tensor cores + clusters (NVIDIA sm90+, bf16 x)
// Both kernels above do the products on the FMA pipes and meet across blocks
// through global memory, which costs 4-7 us at M = 16..32 on an H200
// (benchmarks/history/router_gemm.md). Here a cluster owns 16 W rows and its C blocks split K:
// - products on the tensor cores: W (fp32) = hi + mid + lo, three bf16 terms
//   that carry its 24 significand bits exactly, and x is bf16, so the three
//   bf16 MMAs of a K step form every product exactly and accumulate in fp32;
// - fragments load straight from global memory into registers (no LDS
//   staging): a dot product does not care in which order K is walked, so in
//   each 32-wide K unit lane (g, t) takes the 8 adjacent elements [8t, 8t + 8)
//   (two 16-byte loads per W row, one per x row) and feeds 0-3 to the unit's
//   first MMA and 4-7 to its second, as the k pairs that the fragment layout
//   calls 2t and 2t + 8 (a 48-wide unit adds a third MMA step, UnitFrag);
// - partial sums meet in shared memory: the block's warps in its own, then
//   the C blocks of the cluster in a reduce-scatter: each block owns about
//   1/C of the [M, 16] tile (C need not be a power of two) and its peers
//   store their sums into it with st.async, counted by a transaction
//   barrier, so a block waits for its own share's bytes, not at a
//   cluster-wide barrier. Every sum has a fixed order: bitwise repeatable.
//   No workspace, no ticket.
// On AMD (no clusters; MFMA layouts differ) the op keeps router_gemm_splitk.
#if MMR_AMD
#else
constexpr int kTcRows = 16;    // W rows per cluster: the MMA's A tile
constexpr int kTcThreads = 256;
constexpr int kTcWarps = kTcThreads / 32;
constexpr int kTcStepK = 16;  // K per MMA step (m16n8k16)
// K per unit: S (2 or 3) MMA steps; tc_unit_steps (host) picks S.
template <int S>
constexpr int kTcUnitK = kTcStepK * S;
// Units per warp whose loads are in flight together: as many as fit 128
// registers, so that two blocks fit an SM (more clusters resident at once).
template <int MN, int S>
constexpr int kTcBatch = S == 3 ? (MN >= 2 ? 1 : 2) : (MN >= 3 ? 2 : 3);

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Two fp32 values (k, k + 1) as three bf16 pairs whose sums are exact. The
// upper 16 bits of a float are its bf16 truncation, so hi is w's upper half,
// r = w - hi is exact with at most 16 significant bits, mid is r's upper half
// and lo = r - mid is exact and fits a bf16.
struct Bf16x3 {
  uint32_t hi, mid, lo;
};
MMR_DEVICE float bf16_trunc(float v) { return __uint_as_float(__float_as_uint(v) & 0xffff0000u); }
MMR_DEVICE uint32_t upper_halves(float k0, float k1) {
  return __byte_perm(__float_as_uint(k0), __float_as_uint(k1), 0x7632);
}
MMR_DEVICE Bf16x3 split_bf16x3(float a, float b) {
  const float ar = a - bf16_trunc(a), br = b - bf16_trunc(b);
  const float am = bf16_trunc(ar), bm = bf16_trunc(br);
  return {upper_halves(a, b), upper_halves(ar, br), upper_halves(ar - am, br - bm)};
}

// One K unit of a lane (S MMA steps): its elements of W rows g and g + 8 of
// the tile and of x rows 8n + g. Steps 0 and 1 take the 8 adjacent elements
// [8t, 8t + 8) (two 16-byte loads per W row, one per x row); step 2 of a
// 48-wide unit takes [32 + 4t, 36 + 4t) (one 16-byte load per W row, one
// 8-byte load per x row). x2 is dead when S = 2.
template <int MN, int S>
struct UnitFrag {
  float4 wg[S], wg8[S];
  uint4 x[MN];
  uint2 x2[MN];
};
MMR_DEVICE constexpr int tc_step_offset(int s, int t) { return s < 2 ? 8 * t + 4 * s : 32 + 4 * t; }

// acc[n] += W rows (g, g + 8) . x row (8n + g) over MMA step s of a unit.
template <int MN, int S>
MMR_DEVICE void mma_step(float (&acc)[MN][4], const UnitFrag<MN, S>& f, int s) {
  const float4 wg = f.wg[s], wg8 = f.wg8[s];
  const Bf16x3 a0 = split_bf16x3(wg.x, wg.y), a1 = split_bf16x3(wg8.x, wg8.y);
  const Bf16x3 a2 = split_bf16x3(wg.z, wg.w), a3 = split_bf16x3(wg8.z, wg8.w);
  const uint32_t hi[4] = {a0.hi, a1.hi, a2.hi, a3.hi};
  const uint32_t mid[4] = {a0.mid, a1.mid, a2.mid, a3.mid};
  const uint32_t lo[4] = {a0.lo, a1.lo, a2.lo, a3.lo};
#pragma unroll
  for (int n = 0; n < MN; ++n) {
    const uint32_t b0 = s == 0 ? f.x[n].x : s == 1 ? f.x[n].z : f.x2[n].x;
    const uint32_t b1 = s == 0 ? f.x[n].y : s == 1 ? f.x[n].w : f.x2[n].y;
    mmr::mma_bf16_16x8x16(acc[n], lo, b0, b1);  // smallest terms first
    mmr::mma_bf16_16x8x16(acc[n], mid, b0, b1);
    mmr::mma_bf16_16x8x16(acc[n], hi, b0, b1);
  }
}

// The fragments of units u0 + b kTcWarps (b < kTcBatch): W's (kW) and x's
// (kX), so that W's may be loaded before the PDL wait and x's after it.
// Units past `units` are not loaded (the same for the whole warp), and a
// lane's elements that lie past k_end (wholly: k_end and the unit's start
// are multiples of 8) are zeros, W and x both (0 times a stray inf would be
// NaN).
template <int MN, int S, bool kW, bool kX>
MMR_DEVICE void load_batch(UnitFrag<MN, S> (&f)[kTcBatch<MN, S>], const float* wg, const float* wg8,
                           const uint16_t* const (&xr)[MN], int k_begin, int k_end, int u0, int units, int t) {
  const float4 wzero = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int b = 0; b < kTcBatch<MN, S>; ++b) {
    if (u0 + b * kTcWarps >= units) break;
    const int base = k_begin + (u0 + b * kTcWarps) * kTcUnitK<S>;
    // Whether MMA step s's elements of this lane lie before k_end; kc is where
    // its loads read (k_begin when they do not: in range, values replaced).
    const auto step_in = [&](int s, int& kc) {
      const int k = base + tc_step_offset(s, t);
      kc = k < k_end ? k : k_begin;
      return k < k_end;
    };
    if (kW) {
#pragma unroll
      for (int s = 0; s < S; ++s) {
        int kc;
        const bool in = step_in(s, kc);
        f[b].wg[s] = *reinterpret_cast<const float4*>(wg + kc);
        f[b].wg8[s] = *reinterpret_cast<const float4*>(wg8 + kc);
        if (!in) f[b].wg[s] = f[b].wg8[s] = wzero;
      }
    }
    if (kX) {
      int kc;
      const bool in = step_in(0, kc);
#pragma unroll
      for (int n = 0; n < MN; ++n)
        f[b].x[n] = in ? *reinterpret_cast<const uint4*>(xr[n] + kc) : make_uint4(0u, 0u, 0u, 0u);
      if (S == 3) {
        int kc2;
        const bool in2 = step_in(2, kc2);
#pragma unroll
        for (int n = 0; n < MN; ++n)
          f[b].x2[n] = in2 ? *reinterpret_cast<const uint2*>(xr[n] + kc2) : make_uint2(0u, 0u);
      }
    }
  }
}
#endif

// Cluster blockIdx.x / C owns W rows [e0, e0 + 16); its block of rank r
// multiplies them by x rows [0, 8 MN) over K [r kblock, (r + 1) kblock).
template <int MN, int S>
MMR_DEVICE void tc_cluster_block(const uint16_t* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                 int M, int H, int E, int kblock) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kTile = kTcRows * 8 * MN;  // the [8 MN, 16] partial tile, m-major
  __shared__ float4 warp_part[kTcWarps][kTile / 4];
  // Each block owns share4 float4s of the tile (the last block fewer, maybe
  // none: C need not divide it); `owned` holds every block's sums of them.
  __shared__ float4 owned[kTile / 4 + mmr::kMaxClusterBlocks];  // [C][share4]
  __shared__ uint64_t owned_full;  // counts the bytes of `owned` that have landed
  const int C = int(mmr::cluster_size()), rank = int(mmr::cluster_rank());
  const int share4 = (kTile / 4 + C - 1) / C;
  const int mine = max(0, min(share4, kTile / 4 - rank * share4));
  // The reduction gives each thread at most one float4 of the tile to sum
  // and send. Where it goes is mapped here, off the reduction's path (mapa
  // is volatile, so the division by the runtime share4 before it, a chain of
  // some 15 instructions, stays here too).
  static_assert(kTile / 4 <= kTcThreads, "one float4 of the partial tile per thread");
  const int my4 = int(threadIdx.x), my4_owner = min(my4 / share4, C - 1);  // clamped: threads past the tile
  const unsigned my4_dst =
      mmr::cluster_shared_address(&owned[rank * share4 + my4 - my4_owner * share4], unsigned(my4_owner));
  const unsigned my4_bar = mmr::cluster_shared_address(&owned_full, unsigned(my4_owner));
  if (threadIdx.x == 0) mmr::mbarrier_init_expecting(&owned_full, unsigned(C * mine * sizeof(float4)));
  mmr::cluster_arrive_relaxed();  // waited on just before the first remote store

  const int e0 = int(blockIdx.x) / C * kTcRows;
  const int k_begin = rank * kblock, k_end = min(H, k_begin + kblock);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, g = lane / 4, t = lane % 4;
  // Rows past E or M re-read the last row (their sums are dropped): no branch in the loads.
  const float* wg = w + int64_t(min(e0 + g, E - 1)) * H;
  const float* wg8 = w + int64_t(min(e0 + g + 8, E - 1)) * H;
  const uint16_t* xr[MN];
#pragma unroll
  for (int n = 0; n < MN; ++n) xr[n] = x + int64_t(min(8 * n + g, M - 1)) * H;

  // Up to three tiles, two accumulators (MMA step s adds into s % 2): two
  // shorter MMA chains. Four tiles take one: the 16 registers it frees are
  // worth more at the 128-register cap (measured: benchmarks/history/router_gemm.md).
  constexpr int kChains = MN >= 4 ? 1 : 2;
  float acc[kChains][MN][4];
#pragma unroll
  for (int h = 0; h < kChains; ++h)
#pragma unroll
    for (int n = 0; n < MN; ++n) acc[h][n][0] = acc[h][n][1] = acc[h][n][2] = acc[h][n][3] = 0.f;
  const int units = k_end > k_begin ? (k_end - k_begin + kTcUnitK<S> - 1) / kTcUnitK<S> : 0;
  // Batches of kTcBatch units (u0 + b kTcWarps): all their loads issued,
  // then their MMAs. W is a weight, written by no kernel while the model
  // serves: the first batch's W loads go out before the PDL wait and overlap
  // the previous kernel's tail (for M2 that is all of the block's W). The
  // cluster barrier's wait sits behind the first batch's loads, where it
  // costs nothing.
  UnitFrag<MN, S> f[kTcBatch<MN, S>];
  int u0 = warp;
  load_batch<MN, S, true, false>(f, wg, wg8, xr, k_begin, k_end, u0, units, t);
  mmr::pdl_wait();
  mmr::pdl_launch_dependents();
  load_batch<MN, S, false, true>(f, wg, wg8, xr, k_begin, k_end, u0, units, t);
  mmr::cluster_wait();  // every peer has started (and set up its barrier): it may be stored into later
  while (u0 < units) {
#pragma unroll
    for (int b = 0; b < kTcBatch<MN, S>; ++b) {
      if (u0 + b * kTcWarps >= units) break;  // the same for the whole warp
#pragma unroll
      for (int s = 0; s < S; ++s) mma_step<MN, S>(acc[s % kChains], f[b], s);
    }
    u0 += kTcWarps * kTcBatch<MN, S>;
    if (u0 < units) load_batch<MN, S, true, true>(f, wg, wg8, xr, k_begin, k_end, u0, units, t);
  }

  float* part = reinterpret_cast<float*>(warp_part[warp]);
  const auto warp_sum = [&](int n, int j) {
    return kChains == 1 ? acc[0][n][j] : acc[0][n][j] + acc[kChains - 1][n][j];
  };
#pragma unroll
  for (int n = 0; n < MN; ++n) {
    float* p = part + (8 * n + 2 * t) * kTcRows + g;
    p[0] = warp_sum(n, 0);
    p[kTcRows] = warp_sum(n, 1);
    p[8] = warp_sum(n, 2);
    p[kTcRows + 8] = warp_sum(n, 3);
  }
  __syncthreads();
  if (my4 < kTile / 4) {
    float4 s = warp_part[0][my4];
#pragma unroll
    for (int q = 1; q < kTcWarps; ++q) {
      const float4 v = warp_part[q][my4];
      s.x += v.x; s.y += v.y; s.z += v.z; s.w += v.w;
    }
    mmr::store_async_cluster(my4_dst, s, my4_bar);
  }
  mmr::mbarrier_wait_first_phase(&owned_full);
  if (my4 < mine) {
    // All C loads in flight at once, then the sums in rank order (a loop to
    // the runtime C went out in rounds of 8, 4 and 1 loads: five dependent
    // rounds for C = 16).
    float4 v[mmr::kMaxClusterBlocks];
#pragma unroll
    for (int r = 0; r < int(mmr::kMaxClusterBlocks); ++r) v[r] = owned[min(r, C - 1) * share4 + my4];
    float4 s = v[0];
#pragma unroll
    for (int r = 1; r < int(mmr::kMaxClusterBlocks); ++r)
      if (r < C) {
        s.x += v[r].x; s.y += v[r].y; s.z += v[r].z; s.w += v[r].w;
      }
    const int o = 4 * (rank * share4 + my4), m = o / kTcRows, e = e0 + o % kTcRows;
    if (m < M) {
      float* row = out + int64_t(m) * E;
      if (e + 0 < E) row[e + 0] = s.x;
      if (e + 1 < E) row[e + 1] = s.y;
      if (e + 2 < E) row[e + 2] = s.z;
      if (e + 3 < E) row[e + 3] = s.w;
    }
  }
#endif
}

#define MMR_TC_KERNEL(NAME, MN, S)                                                                           \
  __global__ void __launch_bounds__(kTcThreads, 2) NAME(const uint16_t* __restrict__ x, const float* __restrict__ w, \
                                                     float* __restrict__ out, int M, int H, int E, int kblock) { \
    tc_cluster_block<MN, S>(x, w, out, M, H, E, kblock);                                                       \
  }

MMR_TC_KERNEL(router_tc_bf16_m8, 1, 2)
MMR_TC_KERNEL(router_tc_bf16_m16, 2, 2)
MMR_TC_KERNEL(router_tc_bf16_m24, 3, 2)
MMR_TC_KERNEL(router_tc_bf16_m32, 4, 2)
MMR_TC_KERNEL(router_tc_bf16_m8_s3, 1, 3)
MMR_TC_KERNEL(router_tc_bf16_m16_s3, 2, 3)
MMR_TC_KERNEL(router_tc_bf16_m24_s3, 3, 3)
MMR_TC_KERNEL(router_tc_bf16_m32_s3, 4, 3)
#endif  // MMR_AMD

}  // namespace

#ifndef MMR_DEVICE_ONLY
namespace {

using router::ceil_div;
using router::check_args;
using router::kMaxM;

// ---------------------------------------------------------------- split-K host

int splitk_tiles(int E) { return ceil_div(E, kSplitKE); }

// Largest hidden size: kSplitMaxSlices slices of the 256 elements an M = 32
// slice may hold in LDS.
constexpr int kSplitMaxH = kSplitMaxSlices * (kSplitLdsFloats / kMaxM);

struct SplitPlan {
  int mt, tiles, slices, slice;
};

// About kSplitBlocksPerCU blocks per CU/SM, with equal slices of a multiple of
// 8 elements that fit the LDS budget. `want` > 0 asks for that many slices
// instead (tests); either way the count is rounded to what equal slices give.
SplitPlan plan_splitk(int M, int H, int E, int want) {
  SplitPlan p;
  p.mt = M <= 16 ? 16 : 32;
  p.tiles = splitk_tiles(E);
  const int nvec = H / kVec, max_vec = kSplitLdsFloats / p.mt / kVec;
  int s = want > 0 ? want : std::max(1, kSplitBlocksPerCU * mmr::multiprocessor_count() / p.tiles);
  s = std::max(1, std::min({s, kSplitMaxSlices, nvec}));
  const int vps = std::min(ceil_div(nvec, s), max_vec);
  p.slices = ceil_div(nvec, vps);  // <= kSplitMaxSlices since H <= kSplitMaxH
  p.slice = vps * kVec;
  return p;
}

// [partials numel, counters numel] of a workspace that serves every call with
// this many experts (any M <= 32, any hidden size the op takes).
std::vector<int64_t> router_gemm_splitk_workspace(int64_t num_experts) {
  MMR_CHECK("router_gemm_splitk_workspace", "num_experts", num_experts >= 1 && num_experts <= (1 << 24),
            "must be in 1..2^24");
  const int64_t tiles = splitk_tiles(int(num_experts));
  return {tiles * kSplitMaxSlices * kMaxM * kSplitKE, tiles};
}

// router_gemm for any M <= 32 through split-K; partials fp32 and counters
// int32 (zero before the first call; each call leaves them zero) come from
// router_gemm_splitk_workspace. One workspace must not serve two calls that
// may run at the same time (two streams).
void router_gemm_splitk(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, at::Tensor& partials,
                        at::Tensor& counters, int64_t splits, bool pdl) {
  const char* op = "router_gemm_splitk";
  const auto [M, H, E] = check_args(op, x, w, out);
  MMR_CHECK(op, "x", H <= kSplitMaxH, "hidden size must be at most 16384 for the split-K kernel");
  MMR_CHECK(op, "splits", splits >= 0 && splits <= kSplitMaxSlices, "must be 0 (automatic) or 1..64");
  const c10::DeviceGuard guard(x.device());
  const SplitPlan p = plan_splitk(M, H, E, int(splits));
  MMR_CHECK(op, "partials", partials.is_cuda() && partials.device() == x.device() &&
                                partials.scalar_type() == at::kFloat && partials.is_contiguous() &&
                                mmr::aligned16(partials.data_ptr()) &&
                                partials.numel() >= int64_t(p.tiles) * p.slices * M * kSplitKE,
            "must be a contiguous, 16-byte aligned fp32 tensor on x's device with at least "
            "router_gemm_splitk_workspace(E)[0] elements");
  MMR_CHECK(op, "counters", counters.is_cuda() && counters.device() == x.device() &&
                                counters.scalar_type() == at::kInt && counters.is_contiguous() &&
                                counters.numel() >= p.tiles,
            "must be a contiguous int32 tensor on x's device with at least ceil(E / 16) elements, zero "
            "before the first call");
  // x slice, or the final reduction's scratch (kThreads float4) and the ticket.
  const size_t smem = std::max<size_t>(size_t(p.mt) * p.slice * sizeof(float), (kThreads + 1) * sizeof(float4));
  const dim3 grid(p.tiles, p.slices);
  const hipStream_t s = mmr::current_stream();
  float* o = out.data_ptr<float>();
  float* pp = partials.data_ptr<float>();
  int* cp = counters.data_ptr<int>();
  const float* wp = w.data_ptr<float>();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const auto* xb = static_cast<const uint16_t*>(x.data_ptr());
  const auto* xf = static_cast<const float*>(x.data_ptr());
  const dim3 block(kThreads);
  hipError_t e;
  if (bf16)
    e = mmr::launch_kernel(p.mt == 16 ? router_splitk_bf16_m16 : router_splitk_bf16_m32, grid, block, smem, s, pdl, xb,
                           wp, o, pp, cp, M, H, E, p.slice);
  else
    e = mmr::launch_kernel(p.mt == 16 ? router_splitk_f32_m16 : router_splitk_f32_m32, grid, block, smem, s, pdl, xf,
                           wp, o, pp, cp, M, H, E, p.slice);
  MMR_CHECK_LAUNCH_RESULT(op, e);
}

// ---------------------------------------------------------------- tensor-core cluster host

// Blocks per cluster for ceil(E / 16) clusters over H, automatic choice.
// First: the K slice that gives every warp two units (a block 16 units, 512
// elements), if its grid can sit one block per SM in one wave. The
// scheduler otherwise pairs blocks on an SM while other SMs idle (in a chain
// of these calls each launch finds the SMs its predecessor left free): M2's
// clusters of 8 doubled up on SMs; clusters of 6 (96 blocks) sit one per SM
// and were faster (benchmarks/history/router_gemm.md).
// M3 would take 12, but only 7 clusters of 12 fit one per SM (it needs 8).
// Else: the most (a power of two) whose clusters are all resident at once
// and fit the SMs one block each. A second wave costs about 2.5 us (benchmarks/history/router_gemm.md);
// an H200 fits 14 clusters of 16, so M3's 8 tiles take clusters of 16.
#if MMR_AMD
#else
template <typename Kernel>
int tc_cluster_blocks(Kernel kernel, int H, int tiles) {
  const int sms = mmr::multiprocessor_count();
  const int two_units = ceil_div(H, kTcWarps * 2 * kTcUnitK<2>);
  if (two_units >= 2 && two_units <= int(mmr::kMaxClusterBlocks) && tiles * two_units <= sms &&
      mmr::max_active_clusters(kernel, unsigned(two_units), kTcThreads, 0, /*one_block_per_sm=*/true) >= tiles)
    return two_units;
  int C = int(mmr::kMaxClusterBlocks);
  while (C > 1 && (tiles * C > sms || mmr::max_active_clusters(kernel, unsigned(C), kTcThreads, 0) < tiles)) C /= 2;
  return C;
}

// MMA steps per K unit (2 or 3) for a K slice of `kslice`: the fewer steps
// for the busiest warp (ties: 2). A slice of 384 (M3's with C = 16, M2's
// with C = 8) is 12 units of 32, two for four of the eight warps and one for
// the rest, or 8 units of 48, one per warp: 3 steps against 4.
int tc_unit_steps(int kslice) {
  const auto busiest = [&](int S) { return ceil_div(ceil_div(kslice, kTcStepK * S), kTcWarps) * S; };
  return busiest(3) < busiest(2) ? 3 : 2;
}

using TcKernel = void (*)(const uint16_t*, const float*, float*, int, int, int, int);

// x rows arrive in 8-row MMA tiles; after the W stream, their bytes set the
// time (each cluster reads all of x), so no more tiles than M needs (three at
// M = 17-24, not four: faster, benchmarks/history/router_gemm.md).
TcKernel tc_kernel(int M, int S) {
  static constexpr TcKernel kTable[2][4] = {
      {router_tc_bf16_m8, router_tc_bf16_m16, router_tc_bf16_m24, router_tc_bf16_m32},
      {router_tc_bf16_m8_s3, router_tc_bf16_m16_s3, router_tc_bf16_m24_s3, router_tc_bf16_m32_s3}};
  return kTable[S == 3][ceil_div(M, 8) - 1];
}
#endif

// router_gemm for bf16 x and any M <= 32 on NVIDIA sm90+ (tensor cores, K
// split across the blocks of a cluster). slices: blocks per cluster, 0 =
// automatic (tc_cluster_blocks), else 1 to 16. steps: MMA steps per K unit,
// 0 = automatic (tc_unit_steps), else 2 or 3.
void router_gemm_tc(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, int64_t slices, bool pdl,
                    int64_t steps) {
  const char* op = "router_gemm_tc";
  const auto [M, H, E] = check_args(op, x, w, out);
  MMR_CHECK(op, "x", x.scalar_type() == at::kBFloat16, "must be bf16 (fp32 activations take router_gemm_splitk)");
#if MMR_AMD
  // mmr::kMaxClusterBlocks exists on NVIDIA only; AMD checks the same bound
  // so that both vendors reject bad arguments alike.
  constexpr int64_t kMaxSlices = 16;
#else
  constexpr int64_t kMaxSlices = mmr::kMaxClusterBlocks;
#endif
  MMR_CHECK(op, "slices", slices >= 0 && slices <= kMaxSlices,
            "must be 0 (automatic) or 1 to 16 blocks per cluster");
  MMR_CHECK(op, "steps", steps == 0 || steps == 2 || steps == 3, "must be 0 (automatic), 2 or 3 MMA steps per K unit");
  const c10::DeviceGuard guard(x.device());
#if MMR_AMD
  (void)pdl;
  (void)steps;
  MMR_CHECK(op, "x", false, "needs an NVIDIA sm90+ GPU (thread-block clusters); AMD takes router_gemm_splitk");
#else
  int dev = 0, major = 0;
  (void)cudaGetDevice(&dev);
  (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  MMR_CHECK(op, "x", major >= 9, "needs an NVIDIA sm90+ GPU (thread-block clusters); older ones take router_gemm_splitk");
  const int tiles = ceil_div(E, kTcRows);
  // Both unit sizes' kernels take the same registers and shared memory: the
  // 2-step one stands in for the occupancy queries.
  const int C = slices ? int(slices) : tc_cluster_blocks(tc_kernel(M, 2), H, tiles);
  const int S = steps ? int(steps) : tc_unit_steps(ceil_div(H, C));
  const TcKernel kernel = tc_kernel(M, S);
  const int unit = kTcStepK * S;
  const int kblock = ceil_div(ceil_div(H, C), unit) * unit;
  const hipError_t e = mmr::launch_kernel_clustered(
      kernel, unsigned(C), dim3(tiles * C), dim3(kTcThreads), 0, mmr::current_stream(), pdl,
      static_cast<const uint16_t*>(x.data_ptr()), w.data_ptr<float>(), out.data_ptr<float>(), M, H, E, kblock);
  MMR_CHECK_LAUNCH_RESULT(op, e);
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("router_gemm_splitk(Tensor x, Tensor w, Tensor(a!) out, Tensor(b!) partials, Tensor(c!) counters, "
        "int splits=0, bool pdl=False) -> ()");
  m.def("router_gemm_tc(Tensor x, Tensor w, Tensor(a!) out, int slices=0, bool pdl=False, int steps=0) -> ()");
  m.def("router_gemm_splitk_workspace(int num_experts) -> int[]", &router_gemm_splitk_workspace);
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) {
  m.impl("router_gemm_splitk", &router_gemm_splitk);
  m.impl("router_gemm_tc", &router_gemm_tc);
}
#endif  // MMR_DEVICE_ONLY
