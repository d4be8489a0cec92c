// Does a thread-block-cluster launch cost more than a plain one inside a CUDA
// graph (H100/H200)? Empty kernels and a minimal DSMEM exchange, 128 blocks of
// 256 threads, clusters of 1/2/4/8, 24 KB or 96 KB of dynamic LDS; per-launch
// time from a graph of 20 launches replayed 100 times. For the router_gemm
// split-K (issue 5): a cluster reduction only helps if this overhead is small.
//   nvcc -arch=sm_90a -O3 -o /tmp/cl scripts/experiments/cluster_launch.cu && /tmp/cl
#include <cooperative_groups.h>
#include <cstdio>
#include <cuda_runtime.h>
namespace cg = cooperative_groups;

__global__ void empty_kernel(float* out) {
  if (out && threadIdx.x == 1023) out[0] = 1.f;
}

__global__ void dsmem_kernel(float* out) {
  extern __shared__ float smem[];
  cg::cluster_group cl = cg::this_cluster();
  const unsigned rank = cl.block_rank(), n = cl.num_blocks();
  for (int i = threadIdx.x; i < 512; i += blockDim.x) smem[i] = float(i + rank);
  cl.sync();
  float s = 0.f;
  for (int i = threadIdx.x * n + rank; i < 512; i += blockDim.x * n)
    for (unsigned q = 0; q < n; ++q) s += cl.map_shared_rank(smem, q)[i];
  if (s == -1.f) out[0] = s;
  cl.sync();
}

// The reduction a split-K cluster needs, with the cluster size known at
// compile time: every block leaves a [32 x 16] partial in LDS, one barrier,
// each of the 512 outputs summed by one thread of block (o % C) over the C
// blocks' LDS (C independent remote loads in flight), a second barrier so no
// block exits while a peer still reads its LDS.
template <int C>
__global__ void reduce_kernel(float* out) {
  extern __shared__ float smem[];
  cg::cluster_group cl = cg::this_cluster();
  const unsigned rank = cl.block_rank();
  for (int i = threadIdx.x; i < 512; i += blockDim.x) smem[i] = float(i + rank);
  cl.sync();
  for (int o = threadIdx.x * C + int(rank); o < 512; o += blockDim.x * C) {
    float v[C];
#pragma unroll
    for (int q = 0; q < C; ++q) v[q] = cl.map_shared_rank(smem, q)[o];
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < C; ++q) s += v[q];
    if (s == -1.f) out[0] = s;
  }
  cl.sync();
}

// Only the two barriers.
__global__ void barrier_kernel(float* out) {
  cg::cluster_group cl = cg::this_cluster();
  cl.sync();
  if (out && threadIdx.x == 1023) out[0] = 1.f;
  cl.sync();
}

static float time_launch(void (*k)(float*), int cluster, size_t smem, float* buf) {
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(128 / (cluster > 0 ? cluster : 1), cluster > 0 ? cluster : 1);
  cfg.blockDim = dim3(256);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = cluster > 0 ? cluster : 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = cluster > 0 ? 1 : 0;
  cudaStream_t s;
  cudaStreamCreate(&s);
  cfg.stream = s;
  for (int i = 0; i < 10; ++i) cudaLaunchKernelEx(&cfg, k, buf);
  cudaStreamSynchronize(s);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  for (int i = 0; i < 20; ++i) cudaLaunchKernelEx(&cfg, k, buf);
  cudaStreamEndCapture(s, &g);
  cudaGraphInstantiate(&ge, g, 0);
  cudaGraphLaunch(ge, s);
  cudaStreamSynchronize(s);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < 100; ++i) cudaGraphLaunch(ge, s);
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0.f;
  cudaEventElapsedTime(&ms, a, b);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) printf("error %s\n", cudaGetErrorString(e));
  int nclusters = 0;
  if (cluster > 1) cudaOccupancyMaxActiveClusters(&nclusters, (void*)k, &cfg);
  printf("  cluster %d smem %3zu KB: %.2f us per launch (max active clusters %d)\n", cluster, smem / 1024,
         ms * 1000.f / 2000.f, nclusters);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return ms;
}

int main() {
  float* buf;
  cudaMalloc(&buf, 1024);
  printf("empty kernel, 128 blocks x 256 threads\n");
  for (int c : {0, 2, 4, 8})
    for (size_t kb : {24, 96}) time_launch(empty_kernel, c, kb * 1024, buf);
  printf("DSMEM exchange, cluster size a runtime value (remote loads one after another)\n");
  for (int c : {2, 4, 8}) time_launch(dsmem_kernel, c, 24 * 1024, buf);
  printf("two cluster barriers only\n");
  for (int c : {2, 4, 8}) time_launch(barrier_kernel, c, 24 * 1024, buf);
  printf("split-K style reduction, cluster size at compile time (remote loads batched)\n");
  time_launch(reduce_kernel<2>, 2, 24 * 1024, buf);
  time_launch(reduce_kernel<4>, 4, 24 * 1024, buf);
  time_launch(reduce_kernel<8>, 8, 24 * 1024, buf);
  return 0;
}
