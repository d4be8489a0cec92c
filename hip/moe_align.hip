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
// One block, parallel over routes: the routes are cut into contiguous
// ranges, one wave each. A wave counts its range's routes per expert (LDS
// atomics: a count does not depend on their order), one thread per expert
// turns the (range, expert) counts into each range's first slot in the
// expert's group, and each wave walks its range again in order, giving the
// lanes of one expert consecutive slots. So the order inside a group is the
// route order (deterministic, the same as the reference), each route is read
// twice, and nothing is sized by the GLOBAL expert count. Ids outside the
// map are remote: never an index.
#include "mmr/mmr.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kWaves = kThreads / mmr::kWave;
constexpr int kMaxLocalExperts = 1024;
constexpr int kCursorInts = 8192;  // (range, expert) counters: 32 KB of LDS, >= 8 ranges

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
  __shared__ int cursor[kCursorInts];  // [range][expert]: counts, then the next free slot
  __shared__ int offsets[kMaxLocalExperts + 1];
  __shared__ int scan_scratch[kWaves];
  const int lane = mmr::lane_id(), wave = int(threadIdx.x) / mmr::kWave;
  const int ranges = min(kWaves, kCursorInts / num_local);
  const int64_t per = (numel + ranges - 1) / ranges;
  const int64_t r0 = wave * per, r1 = min(numel, r0 + per);  // empty for waves >= ranges
  // this wave's counters (a wave without a range never touches them: its
  // pointer stays inside the array all the same)
  int* mine = cursor + min(wave, ranges - 1) * num_local;

  for (int i = threadIdx.x; i < ranges * num_local; i += kThreads) cursor[i] = 0;
  __syncthreads();
  if (wave < ranges)
    for (int64_t base = r0; base < r1; base += mmr::kWave) {
      const int64_t r = base + lane;
      const int e = r < r1 ? local_id(ids, map, r, num_global, num_local) : -1;
      if (e >= 0) atomicAdd(mine + e, 1);
    }
  __syncthreads();

  // Thread e: its ranges' first ranks inside group e, then (after the scan
  // of padded group sizes) their absolute first slots.
  const int e = int(threadIdx.x);  // num_local <= kThreads
  int n = 0;
  if (e < num_local)
    for (int g = 0; g < ranges; ++g) {
      const int c = cursor[g * num_local + e];
      cursor[g * num_local + e] = n;
      n += c;
    }
  int used;
  const int start = mmr::block_exclusive_scan((n + block_m - 1) / block_m * block_m, scan_scratch, used);
  if (e < num_local) {
    offsets[e] = start;
    for (int g = 0; g < ranges; ++g) cursor[g * num_local + e] += start;
  }
  if (threadIdx.x == 0) {
    offsets[num_local] = used;
    *num_post_padded = used;
  }
  __syncthreads();

  // Padding (inside groups and after the last one) and block ids first...
  for (int64_t i = threadIdx.x; i < cap; i += kThreads) sorted[i] = int(numel);
  for (int64_t b = threadIdx.x; b < cap / block_m; b += kThreads) {
    int be = -1;
    if (b * block_m < used) {  // the group holding row b * block_m
      int lo = 0, hi = num_local - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= b * block_m) lo = mid; else hi = mid - 1;
      }
      be = lo;
    }
    block_ids[b] = be;
  }
  __syncthreads();

  // ...then each wave places its range in order: per 1-wave chunk, one round
  // per distinct expert among the lanes (the lowest such lane reads and
  // advances the range's cursor; the others take the next slots by lane).
  if (wave < ranges)
    for (int64_t base = r0; base < r1; base += mmr::kWave) {
      const int64_t r = base + lane;
      const int le = r < r1 ? local_id(ids, map, r, num_global, num_local) : -1;
      uint64_t left = mmr::ballot(le >= 0);
      while (left) {
        const int leader = mmr::first_lane(left);
        const int el = mmr::shfl(le, leader, mmr::kWave);
        const uint64_t group = mmr::ballot(le == el);
        const int slot = mmr::shfl(lane == leader ? mine[el] : 0, leader, mmr::kWave);
        if (le == el) sorted[slot + mmr::rank_in(group)] = int(r);
        if (lane == leader) mine[el] = slot + __popcll(group);
        left &= ~group;
        mmr::wave_sync();  // the next chunk's reader of mine[el] may be another lane
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
