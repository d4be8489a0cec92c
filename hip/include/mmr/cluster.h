// Thread-block clusters (NVIDIA sm90+): the blocks of one cluster run at the
// same time, read each other's shared memory and meet at one barrier, so a
// split-K reduction needs no round trip through global memory and no ticket.
// AMD GPUs have nothing like it; code that uses this header keeps an AMD path
// of its own (kHasClusters tells which applies).
#pragma once

#include "platform.h"

#if MMR_AMD
#else
#include <cooperative_groups.h>
#endif

namespace mmr {

#if MMR_AMD
constexpr bool kHasClusters = false;
#else
constexpr bool kHasClusters = true;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MMR_CLUSTER_DEVICE 1
MMR_DEVICE unsigned cluster_block_rank() { return cooperative_groups::this_cluster().block_rank(); }
// Every thread of every block of the cluster arrives; shared-memory writes
// before it are visible to the whole cluster after it.
MMR_DEVICE void cluster_sync() { cooperative_groups::this_cluster().sync(); }
// `p` (this block's shared memory) as the same variable in block `rank`.
template <typename T>
MMR_DEVICE T* cluster_shared(T* p, unsigned rank) {
  return cooperative_groups::this_cluster().map_shared_rank(p, rank);
}
#endif
#endif

}  // namespace mmr
