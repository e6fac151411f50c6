// The device-side primitives that the emulator cannot run as written (vector memory operations whose
// alignment a GPU enforces, dynamic shared memory, and later inline PTX), in one small header: on nvcc these
// definitions, in the emulated build (PAPO_CUDA_EMULATED) their twins in papo_emulator/device_prims.h (tools/cuda-emulator), which check
// what the hardware would trap on.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#if defined(PAPO_CUDA_EMULATED)
#include <papo_emulator/device_prims.h>
#else

// A device function kept out of line (its caller's register budget); the emulated build has no use for it, and a
// macro named __noinline__ there would break the standard library's own __attribute__((__noinline__)).
#define PAPO_OUT_OF_LINE __noinline__

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

// 2^x in one instruction, subnormal results flushed to +0 (ex2.approx.ftz: about 2 ulp; -inf gives +0, NaN NaN).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// A 16-byte store that bypasses the caches' keep policy (evict first): gradients are written once, never read.
__device__ __forceinline__ void store16_streaming(void* p, const uint4& v) { __stcs(reinterpret_cast<uint4*>(p), v); }

// ---- blocks of one grid that hand work to each other (kernel k4): counters, flags and the data they publish ----
// A value published by another block (written before its release or its fenced atomic) is read from L2, never
// from this SM's L1, which other SMs' writes do not update: a line there may hold a neighbour's stale bytes.
__device__ __forceinline__ float4 load_cg(const float4* p) { return __ldcg(p); }
__device__ __forceinline__ unsigned long long load_cg(const unsigned long long* p) { return __ldcg(p); }

// A flag other blocks wait on: the release orders every write before it (made visible to the GPU by a
// __threadfence) before the flag; the acquire orders the reads after it after the flag.
__device__ __forceinline__ void store_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t load_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// One round of a spin wait on another block: off the issue slots for a while.
__device__ __forceinline__ void spin_pause() { __nanosleep(200); }

// ---- Hopper (sm_90): thread-block clusters, distributed shared memory, mbarriers, bulk copies ----------------
// Compiled for every architecture; below sm_90 they trap (the host launches cluster kernels on sm_90+ only).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PAPO_SM90 1
#else
#define PAPO_SM90 0
#endif

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// Every thread of every block of the cluster; orders shared-memory writes before it with reads after it.
__device__ __forceinline__ void cluster_sync() {
#if PAPO_SM90
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ unsigned cluster_rank() {
  unsigned r = 0;
#if PAPO_SM90
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}

__device__ __forceinline__ unsigned cluster_size() {
  unsigned n = 1;
#if PAPO_SM90
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
#endif
  return n;
}

// The same shared-memory variable in block `rank` of the cluster (a generic address: plain loads work).
template <class T>
__device__ __forceinline__ T* map_shared_rank(T* p, unsigned rank) {
  uint64_t out = 0;
#if PAPO_SM90
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(out) : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
#else
  __trap();
#endif
  return reinterpret_cast<T*>(out);
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
#if PAPO_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // visible to the bulk-copy engine
#else
  __trap();
#endif
}

// One arrival that also expects `bytes` of bulk copies to complete on the barrier.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
#if PAPO_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#else
  __trap();
#endif
}

// Global to this block's shared memory by the copy engine; dst, src and bytes multiples of 16.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
#if PAPO_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(smem_u32(dst)), "l"((uint64_t)__cvta_generic_to_global(src)), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
#else
  __trap();
#endif
}

// Waits until the barrier's phase with this parity completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
#if PAPO_SM90
  uint32_t done = 0;
  while (!done)
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
                 : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
#else
  __trap();
#endif
}

// Generic-proxy reads of shared memory done before the copy engine overwrites it.
__device__ __forceinline__ void fence_proxy_async() {
#if PAPO_SM90
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

}  // namespace cuda
}  // namespace papo

#endif
