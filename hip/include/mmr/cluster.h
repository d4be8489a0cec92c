// Thread-block clusters (NVIDIA sm90+): the blocks of one cluster are resident
// at the same time and can store into each other's shared memory, so a
// split-K reduction needs no round trip through global memory, no workspace
// and no arrival ticket. AMD GPUs have nothing like it: code that uses this
// header sits in an NVIDIA arch block and keeps an AMD path of its own.
#pragma once

#include "dependent_launch.h"
#include "platform.h"

#if !defined(MMR_DEVICE_ONLY)
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>
#endif

namespace mmr {

#if MMR_AMD
#else
constexpr unsigned kMaxClusterBlocks = 16;  // 8 is portable; 16 needs the non-portable opt-in below
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// This block's rank in its cluster.
MMR_DEVICE unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// Blocks in this block's cluster.
MMR_DEVICE unsigned cluster_size() {
  unsigned n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
  return n;
}
// Split barrier: arrive early (relaxed: orders nothing), wait later. Before a
// block stores into a peer's shared memory it must know the peer has started;
// an arrive at entry and a wait just before the first remote store hide that
// barrier behind the block's own work. Every thread of the block calls both.
MMR_DEVICE void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
MMR_DEVICE void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }
// `p` (this block's shared memory) as a shared::cluster address in block `rank`.
MMR_DEVICE unsigned cluster_shared_address(const void* p, unsigned rank) {
  const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(p));
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
}

// Transaction barriers (mbarrier): a block expects a number of bytes that
// its peers store into it with store_async_cluster; its threads then wait on
// the barrier alone, not on the whole cluster. One phase per launch here.
// Call before cluster_arrive_relaxed (one thread): the init is made visible
// to the peers by that barrier.
MMR_DEVICE void mbarrier_init_expecting(uint64_t* bar, unsigned bytes) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(bar));
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(a) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(a), "r"(bytes) : "memory");
}
// v stored at remote_p = cluster_shared_address(p, rank), counted against
// that block's barrier remote_bar = cluster_shared_address(bar, rank). The
// addresses come in mapped, so that a caller can map them early, off the
// path of the store.
MMR_DEVICE void store_async_cluster(unsigned remote_p, float4 v, unsigned remote_bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                   remote_p),
               "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(remote_bar)
               : "memory");
}
// Until every expected byte has landed (phase 0 completes); the stores are
// then visible to the caller.
MMR_DEVICE void mbarrier_wait_first_phase(uint64_t* bar) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(bar));
  unsigned done = 0;
  while (!done)
    asm volatile(
        "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], 0;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(a)
        : "memory");
}
#endif
#endif

#if !defined(MMR_DEVICE_ONLY)
#if MMR_AMD
#else
namespace detail {
// Clusters of more than 8 blocks need a per-kernel opt-in; set once per
// device and kernel (a runtime call per launch costs host time).
template <typename... Params>
cudaError_t allow_non_portable_clusters(void (*kernel)(Params...)) {
  static std::mutex mu;
  static std::set<std::pair<int, const void*>> allowed;
  int dev = 0;
  (void)cudaGetDevice(&dev);
  const auto key = std::make_pair(dev, reinterpret_cast<const void*>(kernel));
  std::lock_guard<std::mutex> lock(mu);
  if (allowed.count(key)) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (e == cudaSuccess) allowed.insert(key);
  return e;
}
}  // namespace detail
#endif

// How many clusters of `cluster_x` blocks of `kernel` (threads per block,
// dynamic shared memory) the current device holds at once: a grid of more
// runs in waves. GPCs differ in SM count, so this is less than SMs / cluster_x
// (an H200: 30 clusters of 8 blocks of 256 threads, 14 of 16).
// `one_block_per_sm`: as many, had each SM room for one block only (the
// query asks for more than half an SM's shared memory): whether a grid can
// sit one block per SM in one wave (an H200: 17 clusters of 6, 15 of 8, 7 of
// 12 or 16). Cached per device and kernel; 0 on AMD.
template <typename... Params>
int max_active_clusters(void (*kernel)(Params...), unsigned cluster_x, unsigned threads, size_t smem,
                        bool one_block_per_sm = false) {
#if MMR_AMD
  (void)kernel; (void)cluster_x; (void)threads; (void)smem; (void)one_block_per_sm;
  return 0;
#else
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, unsigned, unsigned, size_t, bool>, int> cache;
  int dev = 0;
  (void)cudaGetDevice(&dev);
  const auto key =
      std::make_tuple(dev, reinterpret_cast<const void*>(kernel), cluster_x, threads, smem, one_block_per_sm);
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cluster_x > 8) (void)detail::allow_non_portable_clusters(kernel);  // else 0 clusters fit: C is halved
  cudaFuncAttributes fa = {};
  int restore = -1;  // the kernel's dynamic shared memory limit, raised for the query only
  if (one_block_per_sm) {
    int per_sm = 0, optin = 0;
    (void)cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
    (void)cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) fa.sharedSizeBytes = optin;
    const size_t half = size_t(per_sm) / 2 + 1;
    const size_t dyn = half > fa.sharedSizeBytes + smem ? half - fa.sharedSizeBytes : smem;
    if (fa.sharedSizeBytes + dyn > size_t(optin) ||
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dyn)) != cudaSuccess) {
      (void)cudaGetLastError();
      cache.emplace(key, 0);
      return 0;
    }
    restore = fa.maxDynamicSharedSizeBytes;
    smem = dyn;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(cluster_x);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1] = {detail::cluster_dimension(cluster_x)};
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  if (restore >= 0) (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, restore);
  cache.emplace(key, n);
  return n;
#endif
}

// launch_kernel with clusters of `cluster_x` consecutive blocks along x
// (grid.x a multiple of it). hipErrorNotSupported on AMD.
template <typename... Params, typename... Args>
hipError_t launch_kernel_clustered(void (*kernel)(Params...), unsigned cluster_x, dim3 grid, dim3 block, size_t smem,
                                   hipStream_t stream, bool pdl, Args&&... args) {
#if MMR_AMD
  (void)kernel; (void)cluster_x; (void)grid; (void)block; (void)smem; (void)stream; (void)pdl;
  return hipErrorNotSupported;
#else
  if (cluster_x > 8) {
    const cudaError_t e = detail::allow_non_portable_clusters(kernel);
    if (e != cudaSuccess) return e;
  }
  return detail::launch_kernel_ex(kernel, grid, block, smem, stream, pdl, cluster_x, std::forward<Args>(args)...);
#endif
}
#endif

}  // namespace mmr
