#include <cuda_runtime.h>

#include "device_probe.h"

#ifndef PAPO_CUDA_ARCHITECTURES
#define PAPO_CUDA_ARCHITECTURES ""
#endif

namespace papo {

namespace {

CudaProbe probe_once() {
  CudaProbe p;
  p.built = true;
  p.architectures = PAPO_CUDA_ARCHITECTURES;
  cudaRuntimeGetVersion(&p.runtimeVersion);
  if (cudaDriverGetVersion(&p.driverVersion) != cudaSuccess) p.driverVersion = 0;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // cudaErrorNoDevice / cudaErrorInsufficientDriver on a machine without a GPU or driver: not a failure. With no
    // driver at all (driver version 0) the runtime still says "insufficient", which reads as "upgrade it".
    p.status = p.driverVersion == 0
        ? std::string("no NVIDIA driver found (") + cudaGetErrorName(err) + ")"
        : std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return p;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    p.devices.push_back(CudaDevice{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount});
  }
  if (p.devices.empty()) p.status = "no CUDA device found";
  return p;
}

}  // namespace

// The devices of a process do not change: probe once (every 'cuda'/'auto' call asks, and device properties are
// slow to query), thread-safely on first use.
CudaProbe probe_cuda() {
  static const CudaProbe probe = probe_once();
  return probe;
}

}  // namespace papo
