// The device language's built-ins on the emulated device (included by include/cuda_runtime.h).
//
// threadIdx and friends read the current fiber's ids. __syncthreads and the warp intrinsics park the fiber at
// the block scheduler (blocks.cpp), which releases a barrier only when every live thread of the block waits at
// the same one, and a warp operation only when every lane of its mask waits at it with that mask; anything
// else is reported as a kernel fault, so a divergent barrier fails the call instead of hanging it.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

namespace papo_emu {

// What device code sees of the CUDA thread that runs on the current fiber.
struct DeviceThread {
  uint3 tid;   // threadIdx
  uint3 bid;   // blockIdx
  dim3 bdim;   // blockDim
  dim3 gdim;   // gridDim
};
extern thread_local DeviceThread* tl_current;

enum BarrierKind : int { BAR_SYNC = 0, BAR_OR = 1, BAR_AND = 2, BAR_COUNT = 3 };
enum WarpKind : int { W_SYNC = 0, W_SHFL = 1, W_SHFL_XOR = 2, W_SHFL_UP = 3, W_SHFL_DOWN = 4, W_BALLOT = 5 };

int block_barrier(int kind, int predicate, const char* file, int line);
uint64_t warp_op(int kind, unsigned mask, uint64_t value, int param, int width, const char* file, int line);
// Ends the current kernel with `code` (the launch fails, the stream reports it at the next synchronisation).
[[noreturn]] void device_fault(cudaError_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// The block's dynamic shared memory (the launch's smem bytes, 16-byte aligned, poisoned at block start).
unsigned char* dynamic_smem();
// One round of a wait on another block of the grid (device_prims.h): a short sleep, or a fault of this block
// when a block of the grid has faulted (the block waited for may be that one).
void spin_pause();

// Thread-block clusters (device_prims.h wraps these): the cluster barrier, the block's rank, distributed shared
// memory, and mbarriers with bulk copies into shared memory.
void cluster_barrier(const char* file, int line);
unsigned cluster_rank();
unsigned cluster_size();
void* map_shared_rank(void* p, unsigned rank);
void mbar_init(uint64_t* bar, unsigned count);
void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes);
void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar);
void mbar_wait(uint64_t* bar, unsigned parity);

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a register-sized value");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace papo_emu

#define threadIdx (::papo_emu::tl_current->tid)
#define blockIdx (::papo_emu::tl_current->bid)
#define blockDim (::papo_emu::tl_current->bdim)
#define gridDim (::papo_emu::tl_current->gdim)
static constexpr int warpSize = 32;

#define __syncthreads() ((void)::papo_emu::block_barrier(::papo_emu::BAR_SYNC, 0, __FILE__, __LINE__))
#define __syncthreads_or(p) ::papo_emu::block_barrier(::papo_emu::BAR_OR, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_and(p) ::papo_emu::block_barrier(::papo_emu::BAR_AND, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_count(p) ::papo_emu::block_barrier(::papo_emu::BAR_COUNT, (p) != 0, __FILE__, __LINE__)

inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  papo_emu::warp_op(papo_emu::W_SYNC, mask, 0, 0, 32, file, line);
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = 32, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  return papo_emu::from_bits<T>(papo_emu::warp_op(papo_emu::W_SHFL, mask, papo_emu::to_bits(v), srcLane, width, file, line));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  return papo_emu::from_bits<T>(
      papo_emu::warp_op(papo_emu::W_SHFL_XOR, mask, papo_emu::to_bits(v), laneMask, width, file, line));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  return papo_emu::from_bits<T>(
      papo_emu::warp_op(papo_emu::W_SHFL_UP, mask, papo_emu::to_bits(v), (int)delta, width, file, line));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  return papo_emu::from_bits<T>(
      papo_emu::warp_op(papo_emu::W_SHFL_DOWN, mask, papo_emu::to_bits(v), (int)delta, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return (unsigned)papo_emu::warp_op(papo_emu::W_BALLOT, mask, predicate != 0, 0, 32, file, line);
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, predicate, file, line) != 0;
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, !predicate, file, line) == 0;  // over the lanes that take part (exited ones do not)
}

// ---- arithmetic intrinsics: the accurate libm functions stand in for the hardware approximations ----------
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __uint_as_float(unsigned u) { return papo_emu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)papo_emu::to_bits(f); }
inline float __int_as_float(int i) { return papo_emu::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)papo_emu::to_bits(f); }

// ---- memory: real atomics, because the blocks of a grid run on several OS threads --------------------------
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  float old, next;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do {
    next = old + v;
  } while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicCAS(int* p, int compare, int v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
