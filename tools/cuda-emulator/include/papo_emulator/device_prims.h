// The emulator's twin of native/cuda/device_prims.cuh: the same primitives, checked where a GPU would trap.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#define PAPO_OUT_OF_LINE

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

inline void store16_streaming(void* p, const uint4& v) { store16(p, v); }

// The blocks of a grid run on several OS threads here: the flags are real atomics, and a spinning thread sleeps a
// little, leaving the core to the block it waits for (which runs on another OS thread), or fails when a block of
// the grid has faulted.
inline float4 load_cg(const float4* p) {
  float4 v;
  memcpy(&v, p, sizeof v);
  return v;
}
inline unsigned long long load_cg(const unsigned long long* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline uint32_t load_acquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void spin_pause() { papo_emu::spin_pause(); }

inline float exp2_ftz(float x) {
  const float y = exp2f(x);
  return y < 1.17549435e-38f ? 0.f : y;  // flush subnormals, as .ftz does (NaN passes: the comparison is false)
}

inline void cluster_sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  papo_emu::cluster_barrier(file, line);
}
inline unsigned cluster_rank() { return papo_emu::cluster_rank(); }
inline unsigned cluster_size() { return papo_emu::cluster_size(); }
template <class T>
inline T* map_shared_rank(T* p, unsigned rank) {
  return static_cast<T*>(papo_emu::map_shared_rank(const_cast<void*>(static_cast<const void*>(p)), rank));
}
inline void mbar_init(uint64_t* bar, unsigned count) { papo_emu::mbar_init(bar, count); }
inline void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) { papo_emu::mbar_arrive_expect_tx(bar, bytes); }
inline void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  papo_emu::bulk_copy_g2s(dst, src, bytes, bar);
}
inline void mbar_wait(uint64_t* bar, unsigned parity) { papo_emu::mbar_wait(bar, parity); }
inline void fence_proxy_async() {}

}  // namespace cuda
}  // namespace papo
