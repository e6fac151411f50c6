// The CUDA backend's environment settings, for experiments and tests, read once per process (a call reads none):
//   PAPO_CUDA_KERNEL          a kernel version for every 'cuda' call (1 k1, 2 k2, 3 k3, 4 k4; plan.cu lists them)
//   PAPO_CUDA_BLOCKS          the row kernels' grid (k3: at most this many blocks)
//   PAPO_CUDA_CLUSTER         k3's blocks per cluster (1, 2, 4 or 8)
//   PAPO_CUDA_K3_BUFFERS      k3's row pairs in flight per cluster (1 or 2)
//   PAPO_CUDA_K3_CO_RESIDENT  k3's clusters per SM (1, or 2: blocks of 256 threads with one buffer each)
//   PAPO_CUDA_K4_SLICE        k4's 16-byte groups per column slice (default: 16 KB of each path)
//   PAPO_CUDA_STAGING_MB      device memory per staging slot of host data (default 256)
//   PAPO_CUDA_POOL_KEEP_MB    freed device memory the stream-ordered pool keeps (default: an eighth of the device's)
//   PAPO_CUDA_PINNED_IDLE_MS  how long an idle pinned buffer is kept (default 2000; 0: none is kept)
// A value that is not a number in its range is an error (InvalidArgument naming the variable) at the first call.
// Code that runs calls with other tunings passes its own (CudaExec::tuning): papo_cuda_test does.
#pragma once

#include <stdint.h>

#include "cuda/papo_cuda.h"

namespace papo {
namespace cuda {

struct CudaSettings {
  CudaTuning tuning;
  int64_t poolKeepBytes = -1;  // -1: an eighth of the device's memory
  int64_t pinnedIdleMs = 2000;
};

// The environment's settings, read by the first call that needs them.
const CudaSettings& settings();

}  // namespace cuda
}  // namespace papo
