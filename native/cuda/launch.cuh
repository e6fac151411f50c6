// Every kernel launch of the project goes through launch_kernel(): nvcc turns it into <<<...>>>, the emulated
// build (PAPO_CUDA_EMULATED, tools/cuda-emulator/) into a launch on the emulated device. Either way a bad
// configuration is a papo::Error at once and a fault in the kernel is reported by the stream's next
// synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <tuple>
#include <utility>

#include "cuda_resources.h"
#include "device_facts.h"
#if defined(PAPO_CUDA_EMULATED)
#include <papo_emulator/emulator.h>
#endif

namespace papo {
namespace cuda {

template <class... P, class... A>
void launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch_kernel: one argument per kernel parameter");
#if defined(PAPO_CUDA_EMULATED)
  papo_emu::launch(name, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                   [kernel, params = std::tuple<P...>(std::forward<A>(args)...)]() { std::apply(kernel, params); });
#else
  kernel<<<grid, block, smem, stream>>>(static_cast<P>(std::forward<A>(args))...);
#endif
  check_launch(name);
}

// Lets the kernel use the device's whole opt-in shared memory per block. Always the same value, so calls on other
// threads with other sizes cannot undo each other's setting between it and their launch.
template <class... P>
void allow_max_dynamic_smem(void (*kernel)(P...)) {
  const int optin = device_facts(current_device()).optinSmem;
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin),
             "cudaFuncSetAttribute (dynamic shared memory)");
}

#if !defined(PAPO_CUDA_EMULATED)
// A launch configuration with clusters of `cluster` blocks along x (attr is where its one attribute lives).
inline cudaLaunchConfig_t cluster_config(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, unsigned cluster,
                                         cudaLaunchAttribute& attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = cluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}
#endif

// How many clusters of `cluster` blocks of this kernel the device can run at once (a cluster must fit in one
// GPC, and GPCs differ in size); 0 when none can, which the caller must handle instead of launching.
template <class... P>
int query_active_clusters(void (*kernel)(P...), dim3 block, size_t smem, unsigned cluster) {
  allow_max_dynamic_smem(kernel);
#if defined(PAPO_CUDA_EMULATED)
  return papo_emu::max_active_clusters(block, smem, cluster);
#else
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_config(dim3(cluster), block, smem, nullptr, cluster, attr);
  int n = 0;
  const cudaError_t err = cudaOccupancyMaxActiveClusters(&n, kernel, &cfg);
  if (err != cudaSuccess) {
    cudaGetLastError();  // a configuration the device cannot run: none fits
    return 0;
  }
  return n;
#endif
}

// The same, asked once per device and configuration (device_facts.h).
template <class... P>
int max_active_clusters(void (*kernel)(P...), dim3 block, size_t smem, unsigned cluster) {
  const int64_t shape = ((int64_t)cluster << 32) | (int64_t)(block.x * block.y * block.z);
  return kernel_fact(FACT_ACTIVE_CLUSTERS, reinterpret_cast<const void*>(kernel), current_device(), (int64_t)smem,
                     shape, [&]() { return query_active_clusters(kernel, block, smem, cluster); });
}

// Blocks of this kernel resident per SM at this block size and dynamic shared memory, asked once per device and
// configuration (device_facts.h); a kernel with dynamic shared memory is first allowed the device's whole opt-in.
template <class... P>
int blocks_per_sm(void (*kernel)(P...), int device, int threads, size_t smem = 0) {
  return kernel_fact(FACT_BLOCKS_PER_SM, reinterpret_cast<const void*>(kernel), device, threads, (int64_t)smem, [&]() {
    if (smem) allow_max_dynamic_smem(kernel);
    int n = 0;
    cuda_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return n;
  });
}

// The architecture the kernel's machine code was built for (90 for sm_90); a kernel JIT-compiled from older
// PTX reports that older version, and must not use sm_90 instructions.
template <class... P>
int kernel_binary_version(void (*kernel)(P...)) {
#if defined(PAPO_CUDA_EMULATED)
  (void)kernel;
  return 90;
#else
  return kernel_fact(FACT_BINARY_VERSION, reinterpret_cast<const void*>(kernel), current_device(), 0, 0, [&]() {
    cudaFuncAttributes a{};
    cuda_check(cudaFuncGetAttributes(&a, kernel), "cudaFuncGetAttributes");
    return a.binaryVersion;
  });
#endif
}

// The same for a kernel whose blocks run in clusters of `cluster` along x (sm_90+; the grid a multiple of it).
// The kernel must have been allowed its dynamic shared memory on this device already (max_active_clusters does
// it, when the plan asks it once per device): a launch sets no attribute.
template <class... P, class... A>
void launch_kernel_cluster(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t stream, unsigned cluster, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch_kernel_cluster: one argument per kernel parameter");
#if defined(PAPO_CUDA_EMULATED)
  papo_emu::launch(name, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                   [kernel, params = std::tuple<P...>(std::forward<A>(args)...)]() { std::apply(kernel, params); },
                   dim3(cluster));
#else
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_config(grid, block, smem, stream, cluster, attr);
  cuda_check(cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(std::forward<A>(args))...), name);
#endif
  check_launch(name);
}

}  // namespace cuda
}  // namespace papo
