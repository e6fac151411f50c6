// The device-side primitives that the emulator cannot run as written (vector memory operations whose
// alignment a GPU enforces, dynamic shared memory, and later inline PTX), in one small header: on nvcc these
// definitions, in the emulated build (PAPO_CUDA_EMULATED) their twins in emulator/device_prims.h, which check
// what the hardware would trap on.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#if defined(PAPO_CUDA_EMULATED)
#include "emulator/device_prims.h"
#else

namespace papo {
namespace cuda {

// 16-byte global memory load and store; p must be 16-byte aligned (a misaligned one traps on the GPU).
__device__ __forceinline__ uint4 load16(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void store16(void* p, const uint4& v) { *reinterpret_cast<uint4*>(p) = v; }

// The launch's dynamic shared memory, 16-byte aligned.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char papo_dynamic_smem[];
  return papo_dynamic_smem;
}

}  // namespace cuda
}  // namespace papo

#endif
