// Programmatic dependent launch (NVIDIA sm90+). A grid launched with the
// programmatic-serialization attribute may start while its predecessor on the
// stream still runs; it waits in pdl_wait() until the predecessor has
// completed and its writes are visible. Short, latency-bound kernels (the
// Lamport all-reduce, the router GEMM) hide their launch behind the previous
// kernel this way; CUDA graphs keep the edge.
//
// The rule (as in minimax_rocm/triton/dependent_launch.py): a kernel that may
// be launched with PDL reads nothing an earlier kernel may write (activations,
// workspaces, peer buffers) and writes nothing before pdl_wait(), and lets the
// next grid launch (pdl_launch_dependents()) only after that wait. Inputs that
// no kernel writes while the model serves (weights) may be loaded before the
// wait: those loads then overlap the predecessor's tail. pdl_enter() is both
// calls, for a kernel that reads nothing before them. Launched plainly, on
// AMD or before sm90 the instructions are absent or no-ops.
#pragma once

#include "platform.h"

#if !defined(MMR_DEVICE_ONLY)
#include <utility>
#endif

namespace mmr {

// Until the predecessor grid has completed and its writes are visible.
MMR_DEVICE void pdl_wait() {
#if MMR_AMD
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#endif
}

// The next grid on the stream may launch (its blocks then run beside ours).
MMR_DEVICE void pdl_launch_dependents() {
#if MMR_AMD
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
#endif
}

MMR_DEVICE void pdl_enter() {
  pdl_wait();
  pdl_launch_dependents();
}

#if !defined(MMR_DEVICE_ONLY)
namespace detail {
#if MMR_AMD
#else
// Clusters of cluster_x consecutive blocks along x (mmr/cluster.h).
inline cudaLaunchAttribute cluster_dimension(unsigned cluster_x) {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = cluster_x;
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}
#endif

// The one place that launches with attributes: PDL here, cluster dimensions
// for mmr/cluster.h (cluster_x >= 1: a cluster launch, even of single blocks,
// whose cluster instructions would be illegal in a plain launch; NVIDIA only).
template <typename... Params, typename... Args>
hipError_t launch_kernel_ex(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, hipStream_t stream,
                            bool pdl, unsigned cluster_x, Args&&... args) {
#if MMR_AMD
  (void)pdl;
  if (cluster_x > 0) return hipErrorNotSupported;
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return hipGetLastError();
#else
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[3];
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 0) {
    attr[n++] = cluster_dimension(cluster_x);
    // The hardware may place a cluster's blocks where load is lowest: faster
    // for M3's clusters of 16, no change for M2's clusters of 6
    // (benchmarks/history/router_gemm.md, "row groups and the cluster scheduling policy").
    attr[n].id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
    attr[n].val.clusterSchedulingPolicyPreference = cudaClusterSchedulingPolicyLoadBalancing;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
#endif
}
}  // namespace detail

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when
// `pdl` (NVIDIA only; the kernel must follow the rule above). Returns the
// launch's error code.
template <typename... Params, typename... Args>
hipError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, hipStream_t stream, bool pdl,
                         Args&&... args) {
  return detail::launch_kernel_ex(kernel, grid, block, smem, stream, pdl, 0u, std::forward<Args>(args)...);
}
#endif

}  // namespace mmr
