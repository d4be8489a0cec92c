// router_gemm: logits[M, E] (fp32) = x[M, H] (bf16 or fp32) @ W[E, H]^T (fp32),
// for decode-sized M (<= 32).
//
// The op is bound by reading W once (3 MB for MiniMax-M2's 256 x 3072), so
// every W element is loaded exactly once per call and used for all M rows:
// a wave owns kExperts rows of W over one K slice, and each lane keeps
// kExperts x MT accumulators in registers (x is re-read from L1/L2 once per
// group of kExperts rows, not once per row). K is split across waves so the
// grid fills the GPU (its CU/SM count is read at run time). The last wave to
// finish a row group sums the K-split partials in a fixed order, so results
// are deterministic, and resets the group's counter so that graph replays work.
#include "mmr/mmr.h"

namespace {

constexpr int kExperts = 4;  // W rows per wave: x reuse vs register pressure
constexpr int kVec = 8;      // K elements per lane step: 16 bytes of bf16 x, 2 x 16 bytes of W

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

// One wave: rows [g * kExperts, +kExperts) of W, K slice `split` of `splits`.
// MT is the M bucket (accumulator count); rows >= M are skipped.
template <typename XT, int MT>
MMR_DEVICE void router_wave(const XT* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                            float* __restrict__ partial, int* __restrict__ counters, int M, int H, int E, int g,
                            int split, int splits) {
  const int lane = threadIdx.x % mmr::kWave;
  const int e0 = g * kExperts;
  const int vecs = H / kVec;
  const int per_split = (vecs + splits - 1) / splits;
  const int v_begin = split * per_split;
  const int v_end = min(vecs, v_begin + per_split);

  float acc[kExperts][MT];
#pragma unroll
  for (int r = 0; r < kExperts; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;

  for (int v = v_begin + lane; v < v_end; v += mmr::kWave) {
    const int k = v * kVec;
    float wv[kExperts][kVec];
#pragma unroll
    for (int r = 0; r < kExperts; ++r) {
      if (e0 + r < E) {
        load_x8<float>(w + int64_t(e0 + r) * H + k, wv[r]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) wv[r][i] = 0.f;
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < M) {
        float xv[kVec];
        load_x8<XT>(x + int64_t(m) * H + k, xv);
#pragma unroll
        for (int r = 0; r < kExperts; ++r)
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[r][m] = fmaf(wv[r][i], xv[i], acc[r][m]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kExperts; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = mmr::wave_sum(acc[r][m]);

  if (splits == 1) {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kExperts; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m)
          if (m < M && e0 + r < E) out[int64_t(m) * E + e0 + r] = acc[r][m];
    }
    return;
  }

  // partial[split][m][e]
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kExperts; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m)
        if (m < M && e0 + r < E) partial[(int64_t(split) * M + m) * E + e0 + r] = acc[r][m];
  }
  __threadfence();  // this wave's partials before its arrival count
  int arrived = 0;
  if (lane == 0) arrived = atomicAdd(counters + g, 1);
  arrived = mmr::shfl(arrived, 0, mmr::kWave);
  if (arrived != splits - 1) return;

  // Last wave of the group: every other split's partials are visible (their
  // fences preceded their counter increments; this fence orders our reads
  // after the counter and, on CDNA, invalidates the non-coherent L1). Plain
  // loads, so they are all in flight at once. Sum in split order.
  __threadfence();
  for (int i = lane; i < kExperts * M; i += mmr::kWave) {
    const int r = i % kExperts, m = i / kExperts;
    if (e0 + r >= E) continue;
    float s = 0.f;
    for (int sp = 0; sp < splits; ++sp) s += partial[(int64_t(sp) * M + m) * E + e0 + r];
    out[int64_t(m) * E + e0 + r] = s;
  }
  if (lane == 0) counters[g] = 0;  // ready for the next call (and graph replay)
}

// One kernel per (x dtype, M bucket): non-template entry points, so the
// device-only gfx942 compile emits every one of them.
#define MMR_ROUTER_KERNEL(NAME, XT, MT)                                                                        \
  __global__ void __launch_bounds__(256) NAME(const XT* __restrict__ x, const float* __restrict__ w,          \
                                              float* __restrict__ out, float* __restrict__ partial,          \
                                              int* __restrict__ counters, int M, int H, int E, int splits) { \
    const int waves_per_block = blockDim.x / mmr::kWave;                                                      \
    const int item = blockIdx.x * waves_per_block + int(threadIdx.x) / mmr::kWave;                           \
    const int groups = (E + kExperts - 1) / kExperts;                                                         \
    if (item >= groups * splits) return;                                                                      \
    router_wave<XT, MT>(x, w, out, partial, counters, M, H, E, item % groups, item / groups, splits);         \
  }

MMR_ROUTER_KERNEL(router_gemm_bf16_m1, uint16_t, 1)
MMR_ROUTER_KERNEL(router_gemm_bf16_m2, uint16_t, 2)
MMR_ROUTER_KERNEL(router_gemm_bf16_m4, uint16_t, 4)
MMR_ROUTER_KERNEL(router_gemm_bf16_m8, uint16_t, 8)
MMR_ROUTER_KERNEL(router_gemm_bf16_m16, uint16_t, 16)
MMR_ROUTER_KERNEL(router_gemm_bf16_m32, uint16_t, 32)
MMR_ROUTER_KERNEL(router_gemm_f32_m1, float, 1)
MMR_ROUTER_KERNEL(router_gemm_f32_m2, float, 2)
MMR_ROUTER_KERNEL(router_gemm_f32_m4, float, 4)
MMR_ROUTER_KERNEL(router_gemm_f32_m8, float, 8)
MMR_ROUTER_KERNEL(router_gemm_f32_m16, float, 16)
MMR_ROUTER_KERNEL(router_gemm_f32_m32, float, 32)

}  // namespace

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

namespace {

constexpr int kMaxM = 32;
constexpr int kThreads = 256;


template <typename XT>
void launch(void (*kernel)(const XT*, const float*, float*, float*, int*, int, int, int, int), const void* x,
            const float* w, float* out, float* partial, int* counters, int M, int H, int E, int splits, int blocks,
            hipStream_t stream) {
  kernel<<<dim3(blocks), dim3(kThreads), 0, stream>>>(static_cast<const XT*>(x), w, out, partial, counters, M, H, E,
                                                       splits);
}

// K splits: enough waves for two full blocks per CU / SM (every CU streams its
// share of W), at least half the lanes of a wave busy, at most the
// workspace's split count.
int choose_splits(int groups, int H, int max_splits) {
  const int waves_per_block = kThreads / mmr::kWave;
  const int want_waves = mmr::multiprocessor_count() * waves_per_block * 2;
  int splits = (want_waves + groups - 1) / groups;
  const int max_by_k = std::max(1, H / (kVec * mmr::kWave / 2));
  return std::max(1, std::min({splits, max_by_k, max_splits}));
}

// x [M, H] bf16/fp32, w [E, H] fp32, out [M, E] fp32; workspace: partial
// fp32 [S * 32 * E] (S = max splits) and counters int32 [ceil(E / 4)], zeros
// at first use (the kernel leaves them zero).
void router_gemm(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, at::Tensor& partial,
                 at::Tensor& counters) {
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
  const int groups = (E + kExperts - 1) / kExperts;
  MMR_CHECK(op, "counters", counters.is_cuda() && counters.scalar_type() == at::kInt && counters.is_contiguous() &&
                                counters.numel() >= groups,
            "must be an int32 GPU tensor of at least ceil(E / 4) zeros");
  MMR_CHECK(op, "partial", partial.is_cuda() && partial.scalar_type() == at::kFloat && partial.is_contiguous() &&
                               partial.numel() >= int64_t(kMaxM) * E,
            "must be an fp32 GPU tensor of at least 32 * E elements");
  const int max_splits = int(partial.numel() / (int64_t(kMaxM) * E));
  const c10::DeviceGuard guard(x.device());
  const int splits = choose_splits(groups, H, max_splits);
  const int waves_per_block = kThreads / mmr::kWave;
  const int blocks = (groups * splits + waves_per_block - 1) / waves_per_block;
  const hipStream_t s = mmr::current_stream();
  float* o = out.data_ptr<float>();
  float* p = partial.data_ptr<float>();
  int* c = counters.data_ptr<int>();
  const float* wp = w.data_ptr<float>();
  const void* xp = x.data_ptr();
  const int mt = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : M <= 8 ? 8 : M <= 16 ? 16 : 32;
  if (x.scalar_type() == at::kBFloat16) {
    switch (mt) {
      case 1: launch<uint16_t>(router_gemm_bf16_m1, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 2: launch<uint16_t>(router_gemm_bf16_m2, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 4: launch<uint16_t>(router_gemm_bf16_m4, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 8: launch<uint16_t>(router_gemm_bf16_m8, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 16: launch<uint16_t>(router_gemm_bf16_m16, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      default: launch<uint16_t>(router_gemm_bf16_m32, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
    }
  } else {
    switch (mt) {
      case 1: launch<float>(router_gemm_f32_m1, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 2: launch<float>(router_gemm_f32_m2, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 4: launch<float>(router_gemm_f32_m4, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 8: launch<float>(router_gemm_f32_m8, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      case 16: launch<float>(router_gemm_f32_m16, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
      default: launch<float>(router_gemm_f32_m32, xp, wp, o, p, c, M, H, E, splits, blocks, s); break;
    }
  }
  MMR_CHECK_LAUNCH(op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("router_gemm(Tensor x, Tensor w, Tensor(a!) out, Tensor(b!) partial, Tensor(c!) counters) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("router_gemm", &router_gemm); }
#endif  // MMR_DEVICE_ONLY
