// moe_align: group this EP rank's routes by LOCAL expert, each group padded
// to block_m rows, for the sparse-local MoE GEMMs.
//
// topk_ids [T, k] (global ids, int32 or int64) and expert_map [E_glob]
// (global -> local, -1 remote; absent = every expert local) give each route a
// local expert or none. Outputs (contract: reference.moe_align):
//   sorted_route_ids [cap] int32: routes of local expert 0, padding, expert 1, ...
//                                 padding and unused slots hold T * k
//   block_expert_ids [cap / block_m] int32: local expert of each block, -1 unused
//   num_post_padded [1] int32
// One block; each wave owns experts e = wave, wave + waves, ... and scans
// the routes in order with ballots, so the order inside a group is the route
// order (deterministic, the same as the reference) and nothing is sized by
// the GLOBAL expert count. Ids outside the map are remote: never an index.
#include "mmr/mmr.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kMaxLocalExperts = 1024;

template <typename IdT>
MMR_DEVICE int local_id(const IdT* ids, const int* map, int64_t r, int num_global, int num_local) {
  const int64_t g = int64_t(ids[r]);
  if (g < 0 || g >= num_global) return -1;
  const int l = map ? map[g] : int(g);
  return (l >= 0 && l < num_local) ? l : -1;
}

template <typename IdT>
MMR_DEVICE void align(const IdT* __restrict__ ids, const int* __restrict__ map, int* __restrict__ sorted,
                      int* __restrict__ block_ids, int* __restrict__ num_post_padded, int64_t numel, int num_global,
                      int num_local, int block_m, int64_t cap) {
  __shared__ int counts[kMaxLocalExperts];
  __shared__ int offsets[kMaxLocalExperts + 1];
  const int lane = mmr::lane_id(), wave = int(threadIdx.x) / mmr::kWave, waves = kThreads / mmr::kWave;

  for (int e = wave; e < num_local; e += waves) {
    int n = 0;
    for (int64_t base = 0; base < numel; base += mmr::kWave) {
      const int64_t r = base + lane;
      const bool mine = r < numel && local_id(ids, map, r, num_global, num_local) == e;
      n += __popcll(mmr::ballot(mine));
    }
    if (lane == 0) counts[e] = n;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int pos = 0;
    for (int e = 0; e < num_local; ++e) {
      offsets[e] = pos;
      pos += (counts[e] + block_m - 1) / block_m * block_m;
    }
    offsets[num_local] = pos;
    *num_post_padded = pos;
  }
  __syncthreads();
  const int used = offsets[num_local];
  // Padding (inside groups and after the last one) and block ids first...
  for (int64_t i = threadIdx.x; i < cap; i += kThreads) sorted[i] = int(numel);
  for (int64_t b = threadIdx.x; b < cap / block_m; b += kThreads) {
    int e = -1;
    if (b * block_m < used) {  // the group holding row b * block_m
      int lo = 0, hi = num_local - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= b * block_m) lo = mid; else hi = mid - 1;
      }
      e = lo;
    }
    block_ids[b] = e;
  }
  __syncthreads();
  // ...then each wave writes its experts' routes in route order.
  for (int e = wave; e < num_local; e += waves) {
    int next = offsets[e];
    for (int64_t base = 0; base < numel; base += mmr::kWave) {
      const int64_t r = base + lane;
      const bool mine = r < numel && local_id(ids, map, r, num_global, num_local) == e;
      const uint64_t mask = mmr::ballot(mine);
      if (mine) sorted[next + mmr::rank_in(mask)] = int(r);
      next += __popcll(mask);
    }
  }
}

__global__ void __launch_bounds__(kThreads) moe_align_i32(const int* ids, const int* map, int* sorted, int* block_ids,
                                                          int* npp, int64_t numel, int num_global, int num_local,
                                                          int block_m, int64_t cap) {
  align(ids, map, sorted, block_ids, npp, numel, num_global, num_local, block_m, cap);
}

__global__ void __launch_bounds__(kThreads) moe_align_i64(const int64_t* ids, const int* map, int* sorted,
                                                          int* block_ids, int* npp, int64_t numel, int num_global,
                                                          int num_local, int block_m, int64_t cap) {
  align(ids, map, sorted, block_ids, npp, numel, num_global, num_local, block_m, cap);
}

}  // namespace

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

namespace {

// Outputs are allocated by the caller with the sizes of reference.align_buffer_size.
void moe_align(const at::Tensor& topk_ids, const c10::optional<at::Tensor>& expert_map, int64_t num_local_experts,
               int64_t block_m, at::Tensor& sorted, at::Tensor& block_ids, at::Tensor& num_post_padded) {
  const char* op = "moe_align";
  MMR_CHECK(op, "topk_ids", topk_ids.is_cuda() && topk_ids.dim() == 2 && topk_ids.is_contiguous() &&
                                (topk_ids.scalar_type() == at::kInt || topk_ids.scalar_type() == at::kLong),
            "must be a contiguous [T, k] int32/int64 GPU tensor");
  MMR_CHECK(op, "num_local_experts", num_local_experts > 0 && num_local_experts <= kMaxLocalExperts,
            "must be in [1, 1024]");
  MMR_CHECK(op, "block_m", block_m > 0 && (block_m & (block_m - 1)) == 0, "must be a power of two");
  const int64_t numel = topk_ids.numel();
  int num_global = int(num_local_experts);
  const int* map = nullptr;
  if (expert_map.has_value()) {
    const at::Tensor& m = *expert_map;
    MMR_CHECK(op, "expert_map", m.is_cuda() && m.device() == topk_ids.device() && m.scalar_type() == at::kInt &&
                                    m.dim() == 1 && m.is_contiguous(),
              "must be a contiguous 1-D int32 tensor on topk_ids' device");
    num_global = int(m.numel());
    map = m.data_ptr<int>();
  }
  const int64_t cap = sorted.numel();
  MMR_CHECK(op, "sorted", sorted.is_cuda() && sorted.scalar_type() == at::kInt && sorted.is_contiguous() &&
                              cap % block_m == 0 && cap >= numel,
            "must be an int32 buffer of align_buffer_size rows (a multiple of block_m)");
  MMR_CHECK(op, "block_ids", block_ids.is_cuda() && block_ids.scalar_type() == at::kInt &&
                                 block_ids.numel() == cap / block_m,
            "must hold sorted.numel() / block_m int32");
  MMR_CHECK(op, "num_post_padded", num_post_padded.is_cuda() && num_post_padded.scalar_type() == at::kInt &&
                                       num_post_padded.numel() == 1,
            "must be one int32");
  const c10::DeviceGuard guard(topk_ids.device());
  const hipStream_t s = mmr::current_stream();
  if (topk_ids.scalar_type() == at::kInt) {
    moe_align_i32<<<1, kThreads, 0, s>>>(topk_ids.data_ptr<int>(), map, sorted.data_ptr<int>(),
                                         block_ids.data_ptr<int>(), num_post_padded.data_ptr<int>(), numel,
                                         num_global, int(num_local_experts), int(block_m), cap);
  } else {
    moe_align_i64<<<1, kThreads, 0, s>>>(topk_ids.data_ptr<int64_t>(), map, sorted.data_ptr<int>(),
                                         block_ids.data_ptr<int>(), num_post_padded.data_ptr<int>(), numel,
                                         num_global, int(num_local_experts), int(block_m), cap);
  }
  MMR_CHECK_LAUNCH(op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("moe_align(Tensor topk_ids, Tensor? expert_map, int num_local_experts, int block_m, Tensor(a!) sorted, "
        "Tensor(b!) block_ids, Tensor(c!) num_post_padded) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("moe_align", &moe_align); }
#endif  // MMR_DEVICE_ONLY
