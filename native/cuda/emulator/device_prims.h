// The emulator's twin of native/cuda/device_prims.cuh: the same primitives, checked where a GPU would trap.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

namespace papo {
namespace cuda {

inline uint4 load16(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) & 15)
    papo_emu::device_fault(cudaErrorMisalignedAddress, "16-byte vector load from 0x%llx, which is not 16-byte aligned",
                           (unsigned long long)reinterpret_cast<uintptr_t>(p));
  uint4 v;
  memcpy(&v, p, 16);
  return v;
}

inline void store16(void* p, const uint4& v) {
  if (reinterpret_cast<uintptr_t>(p) & 15)
    papo_emu::device_fault(cudaErrorMisalignedAddress, "16-byte vector store to 0x%llx, which is not 16-byte aligned",
                           (unsigned long long)reinterpret_cast<uintptr_t>(p));
  memcpy(p, &v, 16);
}

inline unsigned char* dynamic_smem() { return papo_emu::dynamic_smem(); }

}  // namespace cuda
}  // namespace papo
