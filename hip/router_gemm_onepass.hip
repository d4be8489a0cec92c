// router_gemm, the one-pass kernel (overview of the op: include/router_gemm.h).
//
// Each block owns KE rows of W, its threads split K (16-byte loads of W and x),
// and each thread keeps KE x MT accumulators, so every W element is loaded
// once and used for all M rows. Partial sums meet in one block-wide
// reduction (shuffles, then shared memory, in a fixed order: deterministic,
// no atomics, no workspace). KE (1, 2 or 4 rows per block) trades the grid
// size against how often x is re-read from L2 (the oracle picks it).
//
// For M > 8 that layout leaves too few blocks (E / KE < SM count) and each
// thread's FMA chain too long, so router_gemm_splitk.hip splits K across
// blocks, or across a thread-block cluster on NVIDIA sm90+ with bf16 x.
#include "mmr/mmr.h"
#include "router_gemm.h"

namespace {

using router::kThreads;
using router::kVec;
constexpr int kWaves = kThreads / mmr::kWave;

template <typename XT>
MMR_DEVICE void load_x8(const XT* p, float* v);

template <>
MMR_DEVICE void load_x8<uint16_t>(const uint16_t* p, float* v) {
  const mmr::Vec16 a = mmr::load16(p);
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    v[2 * q] = mmr::bf16_lo(a.w[q]);
    v[2 * q + 1] = mmr::bf16_hi(a.w[q]);
  }
}

template <>
MMR_DEVICE void load_x8<float>(const float* p, float* v) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// W rows [e0, e0 + KE) at K vector k (rows past E: zeros).
template <int KE>
MMR_DEVICE void load_w_rows(const float* __restrict__ w, int e0, int E, int H, int k, float (&wv)[KE][kVec]) {
#pragma unroll
  for (int r = 0; r < KE; ++r) {
    if (e0 + r < E) {
      load_x8<float>(w + int64_t(e0 + r) * H + k, wv[r]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) wv[r][i] = 0.f;
    }
  }
}

// Rows [blockIdx.x * KE, +KE) of W against all M (<= MT) rows of x.
// (One thread per K vector, up to 768 threads, was slower: benchmarks/history/router_gemm.md.)
//
// kPre: K vectors per thread whose W loads go out before the PDL wait (see
// below). 3 covers hidden sizes to 3 x 8 x 256 = 6144 (both MiniMax gates);
// 2 at 5-8 rows, where 3 would take two blocks per SM out of reach.
template <typename XT, int MT, int KE,
          int kPre = (sizeof(XT) == 2 && MT <= 4 ? 3 : sizeof(XT) == 2 && MT <= 8 ? 2 : 1)>
MMR_DEVICE void router_block(const XT* __restrict__ x, const float* __restrict__ w, float* __restrict__ out, int M,
                             int H, int E) {
  __shared__ float partial[kWaves][KE * MT];
  const int e0 = blockIdx.x * KE;
  const int lane = mmr::lane_id(), wave = int(threadIdx.x) / mmr::kWave;
  float acc[KE][MT];
#pragma unroll
  for (int r = 0; r < KE; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;

  // One K vector (8 elements at k) of the W rows in wv against all x rows.
  const auto step = [&](int k, const float (&wv)[KE][kVec]) {
    // x rows in batches of kBatch whose loads are all issued before the
    // first FMA: a branch on m < M per row would serialise them (one L2
    // round trip per row). Rows past M re-read row M - 1 and are dropped.
    // One batch up to 16 rows (faster than two batches of 8: benchmarks/history/router_gemm.md);
    // 32 rows would not fit the registers beside 128 sums.
    constexpr int kBatch = MT <= 16 ? MT : 8;
#pragma unroll
    for (int mb = 0; mb < MT; mb += kBatch) {
      float xv[kBatch][kVec];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) load_x8<XT>(x + int64_t(min(mb + j, M - 1)) * H + k, xv[j]);
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
#pragma unroll
        for (int r = 0; r < KE; ++r)
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[r][mb + j] = fmaf(wv[r][i], xv[j][i], acc[r][mb + j]);
    }
  };
  // W is a weight, written by no kernel while the model serves: a thread's
  // first W vectors go out before the PDL wait and overlap the previous
  // kernel's tail (x, which that kernel writes, only after it).
  const int nvec = H / kVec;
  int v = int(threadIdx.x);
  if constexpr (kPre > 1) {
    static_assert(sizeof(XT) == 2, "x vectors are loaded raw as bf16");
    // bf16 x, few rows: kPre K vectors of W before the wait, then all their
    // x vectors at once (raw, 4 registers each), so one L2 round trip after
    // the wait covers them (M2's 3072 and M3's 6144 take 1.5 and 3 per thread).
    float wv[kPre][KE][kVec];
#pragma unroll
    for (int p = 0; p < kPre; ++p) {
      if (v + p * kThreads >= nvec) break;
      load_w_rows<KE>(w, e0, E, H, (v + p * kThreads) * kVec, wv[p]);
    }
    mmr::pdl_wait();
    mmr::pdl_launch_dependents();
    mmr::Vec16 xr[kPre][MT];
#pragma unroll
    for (int p = 0; p < kPre; ++p) {
      if (v + p * kThreads >= nvec) break;
#pragma unroll
      for (int j = 0; j < MT; ++j)  // rows past M re-read row M - 1 (dropped)
        xr[p][j] = mmr::load16(x + int64_t(min(j, M - 1)) * H + (v + p * kThreads) * kVec);
    }
#pragma unroll
    for (int p = 0; p < kPre; ++p) {
      if (v + p * kThreads >= nvec) break;
#pragma unroll
      for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float lo = mmr::bf16_lo(xr[p][j].w[q]), hi = mmr::bf16_hi(xr[p][j].w[q]);
#pragma unroll
          for (int r = 0; r < KE; ++r) {
            acc[r][j] = fmaf(wv[p][r][2 * q], lo, acc[r][j]);
            acc[r][j] = fmaf(wv[p][r][2 * q + 1], hi, acc[r][j]);
          }
        }
    }
    v += kPre * kThreads;
  } else {
    // The first iteration is peeled: a W buffer live across the loop spills at MT = 32.
    float wv[KE][kVec];
    if (v < nvec) load_w_rows<KE>(w, e0, E, H, v * kVec, wv);
    mmr::pdl_wait();
    mmr::pdl_launch_dependents();
    if (v < nvec) step(v * kVec, wv);
    v += kThreads;
  }
  for (; v < nvec; v += kThreads) {
    float wv[KE][kVec];
    load_w_rows<KE>(w, e0, E, H, v * kVec, wv);
    step(v * kVec, wv);
  }
#pragma unroll
  for (int r = 0; r < KE; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const float s = mmr::wave_sum(acc[r][m]);
      if (lane == 0) partial[wave][r * MT + m] = s;
    }
  __syncthreads();
  for (int i = threadIdx.x; i < KE * MT; i += kThreads) {
    const int r = i / MT, m = i % MT;
    if (m >= M || e0 + r >= E) continue;
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < kWaves; ++q) s += partial[q][i];
    out[int64_t(m) * E + e0 + r] = s;
  }
}

// One kernel per (x dtype, M bucket): non-template entry points, so the
// device-only gfx942 compile emits every one of them.
#define MMR_ROUTER_KERNEL(NAME, XT, MT, KE)                                                            \
  __global__ void __launch_bounds__(kThreads) NAME(const XT* __restrict__ x, const float* __restrict__ w, \
                                                   float* __restrict__ out, int M, int H, int E) {      \
    router_block<XT, MT, KE>(x, w, out, M, H, E);                                                      \
  }

// bf16 x, M <= 8: 1, 2 or 4 W rows per block, chosen by the oracle (router_onepass_rows).
MMR_ROUTER_KERNEL(router_gemm_bf16_m1_r1, uint16_t, 1, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m2_r1, uint16_t, 2, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m4_r1, uint16_t, 4, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m8_r1, uint16_t, 8, 1)
#if MMR_AMD
// AMD keeps one W row per block (router_onepass_rows): the 2- and 4-row kernels could never run there.
#else
MMR_ROUTER_KERNEL(router_gemm_bf16_m1_r2, uint16_t, 1, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m1_r4, uint16_t, 1, 4)
MMR_ROUTER_KERNEL(router_gemm_bf16_m2_r2, uint16_t, 2, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m2_r4, uint16_t, 2, 4)
MMR_ROUTER_KERNEL(router_gemm_bf16_m4_r2, uint16_t, 4, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m4_r4, uint16_t, 4, 4)
MMR_ROUTER_KERNEL(router_gemm_bf16_m8_r2, uint16_t, 8, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m8_r4, uint16_t, 8, 4)
#endif
MMR_ROUTER_KERNEL(router_gemm_bf16_m16, uint16_t, 16, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m32, uint16_t, 32, 4)
MMR_ROUTER_KERNEL(router_gemm_f32_m1, float, 1, 1)
MMR_ROUTER_KERNEL(router_gemm_f32_m2, float, 2, 1)
MMR_ROUTER_KERNEL(router_gemm_f32_m4, float, 4, 1)
MMR_ROUTER_KERNEL(router_gemm_f32_m8, float, 8, 1)
MMR_ROUTER_KERNEL(router_gemm_f32_m16, float, 16, 2)
MMR_ROUTER_KERNEL(router_gemm_f32_m32, float, 32, 4)

}  // namespace

#ifndef MMR_DEVICE_ONLY
namespace {

using router::check_args;

template <typename XT>
hipError_t launch(void (*kernel)(const XT*, const float*, float*, int, int, int), int rows_per_block, const void* x,
                  const float* w, float* out, int M, int H, int E, hipStream_t stream, bool pdl) {
  const int blocks = (E + rows_per_block - 1) / rows_per_block;
  return mmr::launch_kernel(kernel, dim3(blocks), dim3(kThreads), 0, stream, pdl, static_cast<const XT*>(x), w, out,
                            M, H, E);
}

// Whether a one-pass kernel with `rows` W rows per block is built for this x:
// bf16 x with M <= 8 has 1, 2 and 4 (AMD: 1); every other M bucket and dtype
// has the one in its MMR_ROUTER_KERNEL line. The oracle picks among them
// (router_onepass_rows): the kernels choose nothing.
bool rows_built(bool bf16, int M, int rows) {
  if (M > 16) return rows == 4;
  if (M > 8) return rows == 2;
  if (!bf16) return rows == 1;
#if MMR_AMD
  return rows == 1;
#else
  return rows == 1 || rows == 2 || rows == 4;
#endif
}

// rows: W rows per block (rows_built); pdl: launch with programmatic
// dependent launch (NVIDIA sm90+; the kernels load only W before
// mmr::pdl_wait()).
void router_gemm(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, int64_t rows, bool pdl) {
  const char* op = "router_gemm";
  const auto [M, H, E] = check_args(op, x, w, out);
  MMR_CHECK(op, "rows", rows_built(x.scalar_type() == at::kBFloat16, M, int(rows)),
            "names no one-pass kernel built for this x (bf16 M <= 8: 1, 2, 4 on NVIDIA, 1 on AMD; fp32 M <= 8: 1; "
            "M 9-16: 2; M 17-32: 4)");
  const c10::DeviceGuard guard(x.device());
  const hipStream_t s = mmr::current_stream();
  float* o = out.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const void* xp = x.data_ptr();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
#define MMR_ROUTER_LAUNCH(MT, KE)                                                                        \
  (bf16 ? launch<uint16_t>(router_gemm_bf16_m##MT, KE, xp, wp, o, M, H, E, s, pdl)                       \
        : launch<float>(router_gemm_f32_m##MT, KE, xp, wp, o, M, H, E, s, pdl))
  hipError_t e;
  if (M <= 8) {
    const int mi = M <= 1 ? 0 : M <= 2 ? 1 : M <= 4 ? 2 : 3;  // kernels for 1, 2, 4, 8 rows of x
    if (bf16) {
      using Kernel = void (*)(const uint16_t*, const float*, float*, int, int, int);
#if MMR_AMD
      // rows is 1 (checked): only the 1-row kernels are built for AMD.
      static constexpr Kernel kernels[4] = {router_gemm_bf16_m1_r1, router_gemm_bf16_m2_r1, router_gemm_bf16_m4_r1,
                                            router_gemm_bf16_m8_r1};
      e = launch<uint16_t>(kernels[mi], 1, xp, wp, o, M, H, E, s, pdl);
#else
      static constexpr Kernel kernels[4][3] = {
          {router_gemm_bf16_m1_r1, router_gemm_bf16_m1_r2, router_gemm_bf16_m1_r4},
          {router_gemm_bf16_m2_r1, router_gemm_bf16_m2_r2, router_gemm_bf16_m2_r4},
          {router_gemm_bf16_m4_r1, router_gemm_bf16_m4_r2, router_gemm_bf16_m4_r4},
          {router_gemm_bf16_m8_r1, router_gemm_bf16_m8_r2, router_gemm_bf16_m8_r4}};
      const int ri = rows == 1 ? 0 : rows == 2 ? 1 : 2;
      e = launch<uint16_t>(kernels[mi][ri], int(rows), xp, wp, o, M, H, E, s, pdl);
#endif
    } else {  // fp32 x: one W row per block
      using Kernel = void (*)(const float*, const float*, float*, int, int, int);
      static constexpr Kernel kernels[4] = {router_gemm_f32_m1, router_gemm_f32_m2, router_gemm_f32_m4,
                                            router_gemm_f32_m8};
      e = launch<float>(kernels[mi], 1, xp, wp, o, M, H, E, s, pdl);
    }
  } else if (M <= 16) e = MMR_ROUTER_LAUNCH(16, 2);
  else e = MMR_ROUTER_LAUNCH(32, 4);
#undef MMR_ROUTER_LAUNCH
  MMR_CHECK_LAUNCH_RESULT(op, e);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("router_gemm(Tensor x, Tensor w, Tensor(a!) out, int rows, bool pdl=False) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("router_gemm", &router_gemm); }
#endif  // MMR_DEVICE_ONLY
