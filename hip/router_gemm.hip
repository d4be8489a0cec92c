// router_gemm: logits[M, E] (fp32) = x[M, H] (bf16 or fp32) @ W[E, H]^T (fp32),
// for decode-sized M (<= 32).
//
// The op is bound by reading W once (3 MB for MiniMax-M2's 256 x 3072): each
// block owns KE rows of W, its threads split K (16-byte loads of W and x),
// and each thread keeps KE x MT accumulators, so every W element is loaded
// once and used for all M rows. Partial sums meet in one block-wide
// reduction (shuffles, then shared memory, in a fixed order: deterministic,
// no atomics, no workspace). KE grows with M (1, 2, 4 rows per block) to
// trade grid size against how often x is re-read from L2.
#include "mmr/mmr.h"

namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;  // K elements per thread step: 16 bytes of bf16 x, 2 x 16 bytes of W
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

// Rows [blockIdx.x * KE, +KE) of W against all M (<= MT) rows of x.
template <typename XT, int MT, int KE>
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

  for (int v = threadIdx.x; v < H / kVec; v += kThreads) {
    const int k = v * kVec;
    float wv[KE][kVec];
#pragma unroll
    for (int r = 0; r < KE; ++r) {
      if (e0 + r < E) {
        load_x8<float>(w + int64_t(e0 + r) * H + k, wv[r]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) wv[r][i] = 0.f;
      }
    }
    // x rows in batches of kBatch whose loads are all issued before the
    // first FMA: a branch on m < M per row would serialise them (one L2
    // round trip per row). Rows past M re-read row M - 1 and are dropped.
    constexpr int kBatch = MT < 8 ? MT : 8;
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

MMR_ROUTER_KERNEL(router_gemm_bf16_m1, uint16_t, 1, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m2, uint16_t, 2, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m4, uint16_t, 4, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m8, uint16_t, 8, 1)
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
#include "mmr/torch_glue.h"

namespace {

constexpr int kMaxM = 32;

template <typename XT>
void launch(void (*kernel)(const XT*, const float*, float*, int, int, int), int rows_per_block, const void* x,
            const float* w, float* out, int M, int H, int E, hipStream_t stream) {
  const int blocks = (E + rows_per_block - 1) / rows_per_block;
  kernel<<<dim3(blocks), dim3(kThreads), 0, stream>>>(static_cast<const XT*>(x), w, out, M, H, E);
}

// x [M, H] bf16/fp32, w [E, H] fp32, out [M, E] fp32.
void router_gemm(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  const char* op = "router_gemm";
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
  MMR_CHECK(op, "out", out.is_cuda() && out.device() == x.device() && out.scalar_type() == at::kFloat &&
                           out.is_contiguous() && out.dim() == 2 && out.size(0) == M && out.size(1) == E,
            "must be a contiguous [M, E] fp32 tensor on x's device");
  const c10::DeviceGuard guard(x.device());
  const hipStream_t s = mmr::current_stream();
  float* o = out.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const void* xp = x.data_ptr();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
#define MMR_ROUTER_LAUNCH(MT, KE)                                                                        \
  (bf16 ? launch<uint16_t>(router_gemm_bf16_m##MT, KE, xp, wp, o, M, H, E, s)                            \
        : launch<float>(router_gemm_f32_m##MT, KE, xp, wp, o, M, H, E, s))
  if (M <= 1) MMR_ROUTER_LAUNCH(1, 1);
  else if (M <= 2) MMR_ROUTER_LAUNCH(2, 1);
  else if (M <= 4) MMR_ROUTER_LAUNCH(4, 1);
  else if (M <= 8) MMR_ROUTER_LAUNCH(8, 1);
  else if (M <= 16) MMR_ROUTER_LAUNCH(16, 2);
  else MMR_ROUTER_LAUNCH(32, 4);
#undef MMR_ROUTER_LAUNCH
  MMR_CHECK_LAUNCH(op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("router_gemm(Tensor x, Tensor w, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("router_gemm", &router_gemm); }
#endif  // MMR_DEVICE_ONLY
