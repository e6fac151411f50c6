// CPU-only builds (PAPO_CPU_ONLY=1, no nvcc, or the node-gyp fallback): CUDA is reported as not built.
#include "device_probe.h"

#ifndef PAPO_CUDA_SKIP_REASON
#define PAPO_CUDA_SKIP_REASON "built without CUDA"
#endif

namespace papo {

CudaProbe probe_cuda() {
  CudaProbe p;
  p.status = PAPO_CUDA_SKIP_REASON;
  return p;
}

}  // namespace papo
