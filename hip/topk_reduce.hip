// topk_reduce: out[t, :] = sum_j w[t, j] * x[t, j, :]   (w = 1 when absent)
// x [T, k, H] bf16, w [T, k] fp32, out [T, H] bf16; fp32 accumulation.
//
// Memory bound: each thread owns one 16-byte column slice (8 bf16) of one
// token and walks its k rows, so every load is a full 16-byte vector and the
// k loads of a slice are independent (in flight together). A grid-stride loop
// keeps the grid at a few waves per CU whatever T is.
#include "mmr/mmr.h"

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) topk_reduce_bf16_kernel(
    const uint16_t* __restrict__ x, const float* __restrict__ w, uint16_t* __restrict__ out, int64_t tokens,
    int k, int hidden) {
  const int slices = hidden / 8;
  const int64_t total = tokens * slices;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += int64_t(gridDim.x) * kThreads) {
    const int64_t t = i / slices;
    const int s = int(i - t * slices);
    const uint16_t* row = x + t * k * hidden + s * 8;
    float acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.f;
#pragma unroll 4
    for (int j = 0; j < k; ++j) {
      const mmr::Vec16 v = mmr::load16(row + int64_t(j) * hidden);
      const float wj = w ? w[t * k + j] : 1.f;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        acc[2 * q] += wj * mmr::bf16_lo(v.w[q]);
        acc[2 * q + 1] += wj * mmr::bf16_hi(v.w[q]);
      }
    }
    mmr::Vec16 o;
#pragma unroll
    for (int q = 0; q < 4; ++q) o.w[q] = mmr::pack_bf16x2(acc[2 * q], acc[2 * q + 1]);
    mmr::store16(out + t * hidden + s * 8, o);
  }
}

}  // namespace

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

namespace {

void topk_reduce(const at::Tensor& x, const c10::optional<at::Tensor>& weights, at::Tensor& out) {
  const char* op = "topk_reduce";
  MMR_CHECK(op, "x", x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 3 && x.is_contiguous(),
            "must be a contiguous [T, k, H] bf16 GPU tensor");
  const int64_t T = x.size(0), k = x.size(1), H = x.size(2);
  MMR_CHECK(op, "x", H % 8 == 0, "hidden size must be a multiple of 8 (16-byte vectors)");
  MMR_CHECK(op, "x", mmr::aligned16(x.data_ptr()), "must be 16-byte aligned");
  MMR_CHECK(op, "out", out.is_cuda() && out.scalar_type() == at::kBFloat16 && out.is_contiguous() &&
                           out.dim() == 2 && out.size(0) == T && out.size(1) == H && mmr::aligned16(out.data_ptr()),
            "must be a contiguous, 16-byte aligned [T, H] bf16 GPU tensor");
  MMR_CHECK(op, "out", out.device() == x.device(), "must be on x's device");
  const float* w = nullptr;
  if (weights.has_value()) {
    const at::Tensor& wt = *weights;
    MMR_CHECK(op, "weights", wt.is_cuda() && wt.device() == x.device() && wt.scalar_type() == at::kFloat &&
                                 wt.is_contiguous() && wt.dim() == 2 && wt.size(0) == T && wt.size(1) == k,
              "must be a contiguous [T, k] fp32 tensor on x's device");
    w = wt.data_ptr<float>();
  }
  if (T == 0) return;
  const c10::DeviceGuard guard(x.device());
  const int64_t total = T * (H / 8);
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(mmr::multiprocessor_count()) * 8);
  topk_reduce_bf16_kernel<<<dim3(unsigned(blocks)), dim3(kThreads), 0, mmr::current_stream()>>>(
      reinterpret_cast<const uint16_t*>(x.data_ptr()), w, reinterpret_cast<uint16_t*>(out.data_ptr()), T, int(k),
      int(H));
  MMR_CHECK_LAUNCH(op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("topk_reduce(Tensor x, Tensor? weights, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("topk_reduce", &topk_reduce); }
#endif  // MMR_DEVICE_ONLY
