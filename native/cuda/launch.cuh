// Every kernel launch of the project goes through launch_kernel(): nvcc turns it into <<<...>>>, the emulated
// build (PAPO_CUDA_EMULATED, native/cuda/emulator/) into a launch on the emulated device. Either way a bad
// configuration is a papo::Error at once and a fault in the kernel is reported by the stream's next
// synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <tuple>
#include <utility>

#include "cuda_resources.h"
#if defined(PAPO_CUDA_EMULATED)
#include "emulator/emulator.h"
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

// The same for a kernel whose blocks run in clusters of `cluster` along x (sm_90+; the grid a multiple of it).
template <class... P, class... A>
void launch_kernel_cluster(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t stream, unsigned cluster, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch_kernel_cluster: one argument per kernel parameter");
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             "cudaFuncSetAttribute (dynamic shared memory)");
#if defined(PAPO_CUDA_EMULATED)
  papo_emu::launch(name, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                   [kernel, params = std::tuple<P...>(std::forward<A>(args)...)]() { std::apply(kernel, params); },
                   dim3(cluster));
#else
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  cuda_check(cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(std::forward<A>(args))...), name);
#endif
  check_launch(name);
}

}  // namespace cuda
}  // namespace papo
