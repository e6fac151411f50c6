// The emulated device checked against what a GPU does (run by test/emulator.test.ts; emulated build only).
// Each case is a small kernel that is right, or wrong in the one way the emulator must catch: a barrier not
// every thread reaches, a shuffle outside its mask, an access past an allocation, a misaligned vector load, a
// missing stream synchronisation, an injected failure. Prints one line per case and "N passed, M failed".
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <thread>
#include <vector>

#include "cuda/device_prims.cuh"
#include <papo_emulator/emulator.h>
#include "cuda/launch.cuh"

using papo::cuda::launch_kernel;

namespace {

int passed = 0, failed = 0;

void check(bool ok, const char* name, const std::string& why = "") {
  printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, ok || why.empty() ? "" : ": ", ok ? "" : why.c_str());
  (ok ? passed : failed)++;
}

// Launches, synchronises, and returns the error with the emulator's diagnosis.
template <class K, class... A>
cudaError_t run(std::string* msg, K kernel, dim3 grid, dim3 block, cudaStream_t s, A... args) {
  try {
    launch_kernel("test_kernel", kernel, grid, block, 0, s, args...);
  } catch (const papo::Error& e) {
    if (msg) *msg = e.what();
    return cudaErrorLaunchOutOfResources;
  }
  const cudaError_t e = cudaStreamSynchronize(s);
  if (msg) *msg = e == cudaSuccess ? "" : cudaGetErrorString(e);
  cudaGetLastError();
  return e;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// ---- kernels -------------------------------------------------------------------------------------------------

// Block 0 waits for a flag (flags[1]) that block 1 never raises: once block 0 is waiting (flags[0]), block 1
// faults. (The blocks run at once: the stream's thread and a helper.)
__global__ void wait_for_faulting_block(uint32_t* flags, const char* p) {
  if (threadIdx.x != 0) return;
  if (blockIdx.x == 0) {
    papo::cuda::store_release(flags, 1u);
    while (!papo::cuda::load_acquire(flags + 1)) papo::cuda::spin_pause();
  } else {
    while (!papo::cuda::load_acquire(flags)) papo::cuda::spin_pause();
    (void)papo::cuda::load16(p + 1);
  }
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x < 10) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers(int* out) {
  if (threadIdx.x & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void warp_sum(int* out) {
  int v = (int)threadIdx.x;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x] = v;
}

__global__ void shuffle_outside_mask(int* out) {
  // Lanes 0..15 shuffle among themselves but lane 0 reads lane 16, which is not in the mask.
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, threadIdx.x == 0 ? 16 : 1);
}

__global__ void ballot_after_exit(int* out) {
  if (threadIdx.x >= 20) return;  // lanes 20..31 exit: a full-mask ballot of the rest is legal
  const unsigned b = __ballot_sync(0xffffffffu, threadIdx.x % 2 == 0);
  out[threadIdx.x] = (int)b;
}

// p is an allocation of 1000 floats: its span rounds up to 1024 floats, and the guard page of its own mapping
// begins right there. A write farther away could land in whatever else is mapped (a fiber stack) and not fault.
__global__ void fault_then_nothing(float* p) {
  if (threadIdx.x == 0) p[1024] = 1.f;
}

// Each block of a cluster of 4 publishes its rank in shared memory; every block sums all four through DSMEM.
__global__ void cluster_ranks(int* out, int waitForCopies) {
  int* mine = reinterpret_cast<int*>(papo::cuda::dynamic_smem());
  if (threadIdx.x == 0) *mine = (int)papo::cuda::cluster_rank() + 1;
  papo::cuda::cluster_sync();
  int sum = 0;
  for (unsigned q = 0; q < papo::cuda::cluster_size(); ++q) sum += *papo::cuda::map_shared_rank(mine, q);
  if (threadIdx.x == 0) out[blockIdx.x] = sum;
  papo::cuda::cluster_sync();
}

// A bulk copy into shared memory, read after (ok) or without (poison) waiting on its mbarrier.
__global__ void bulk_then_read(const float* src, float* out, int wait) {
  unsigned char* smem = papo::cuda::dynamic_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 256);
  if (threadIdx.x == 0) {
    papo::cuda::mbar_init(bar, 1);
    papo::cuda::mbar_arrive_expect_tx(bar, 256);
    papo::cuda::bulk_copy_g2s(smem, src, 256, bar);
  }
  __syncthreads();
  if (wait) papo::cuda::mbar_wait(bar, 0);
  if (threadIdx.x < 64) out[threadIdx.x] = reinterpret_cast<float*>(smem)[threadIdx.x];
  if (!wait) papo::cuda::mbar_wait(bar, 0);  // the phase must complete before the block exits
}

// Shared memory that held data before a bulk copy into it was issued: read after the issue without waiting.
__global__ void bulk_refill_then_read(const float* src, float* out) {
  float* smem = reinterpret_cast<float*>(papo::cuda::dynamic_smem());
  uint64_t* bar = reinterpret_cast<uint64_t*>(papo::cuda::dynamic_smem() + 256);
  smem[threadIdx.x] = 1.f;
  __syncthreads();
  if (threadIdx.x == 0) {
    papo::cuda::mbar_init(bar, 1);
    papo::cuda::mbar_arrive_expect_tx(bar, 256);
    papo::cuda::bulk_copy_g2s(smem, src, 256, bar);
  }
  __syncthreads();
  out[threadIdx.x] = smem[threadIdx.x];
  papo::cuda::mbar_wait(bar, 0);
}

// Phases of one mbarrier: the first (no bytes) completes without anybody waiting, so the second's arrival is
// legal (twice = 1: its copy is then waited for and read); a second arrival while the phase still expects
// bytes is not (twice = 2).
__global__ void mbar_phases(const float* src, float* out, int twice) {
  float* smem = reinterpret_cast<float*>(papo::cuda::dynamic_smem());
  uint64_t* bar = reinterpret_cast<uint64_t*>(papo::cuda::dynamic_smem() + 256);
  if (threadIdx.x == 0) {
    papo::cuda::mbar_init(bar, 1);
    papo::cuda::mbar_arrive_expect_tx(bar, twice == 2 ? 256 : 0);
    papo::cuda::mbar_arrive_expect_tx(bar, 256);
    papo::cuda::bulk_copy_g2s(smem, src, 256, bar);
  }
  __syncthreads();
  papo::cuda::mbar_wait(bar, 1);
  out[threadIdx.x] = smem[threadIdx.x];
}

__global__ void bulk_misaligned(const float* src) {
  unsigned char* smem = papo::cuda::dynamic_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 256);
  if (threadIdx.x == 0) {
    papo::cuda::mbar_init(bar, 1);
    papo::cuda::mbar_arrive_expect_tx(bar, 64);
    papo::cuda::bulk_copy_g2s(smem, src + 1, 64, bar);
  }
}

__global__ void cluster_barrier_after_exit(int* out) {
  if (papo::cuda::cluster_rank() == 1 && threadIdx.x == 0) return;
  papo::cuda::cluster_sync();
  out[threadIdx.x] = 1;
}

__global__ void barrier_or(int* out) {
  const int any = __syncthreads_or(threadIdx.x == 77);
  const int count = __syncthreads_count(threadIdx.x % 3 == 0);
  out[threadIdx.x] = any * 1000 + count;
}

// Thread 0 publishes a value in shared memory; the others read it with (ok) or without (race) a barrier.
__global__ void publish(int* out, int withBarrier) {
  __shared__ int value;
  if (threadIdx.x == 0) value = 0;
  __syncthreads();
  if (threadIdx.x == 0) value = 42;
  if (withBarrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}

__global__ void read_at(const float* p, int64_t i, float* out) {
  if (threadIdx.x == 0) *out = p[i];
}

__global__ void write_at(float* p, int64_t i) {
  if (threadIdx.x == 0) p[i] = 1.f;
}

__global__ void vector_load(const char* p, int offset, unsigned* out) {
  const uint4 v = papo::cuda::load16(p + offset);
  if (threadIdx.x == 0) *out = v.x;
}

__global__ void copy_ints(const int* src, int* dst, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

// ---- cases ---------------------------------------------------------------------------------------------------

void device_properties() {
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  int sms = 0, l2 = 0, smem = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0);
  check(sms == 132 && l2 == 50 << 20 && smem == 228 << 10 && p.major == 9 && contains(p.name, "mulat"),
        "the device reports an H100's properties and says it is emulated");
}

void barriers(int* d) {
  std::string msg;
  cudaError_t e = run(&msg, early_exit_then_barrier, dim3(1), dim3(64), nullptr, d);
  check(e == cudaErrorIllegalInstruction && contains(msg, "reached by 54 of 64 threads") && contains(msg, "emulator_test.cpp"),
        "a barrier that some threads never reach is reported, with its line", msg);
  e = run(&msg, two_barriers, dim3(1), dim3(64), nullptr, d);
  check(e == cudaErrorIllegalInstruction && contains(msg, "different barriers"), "threads at different barriers are reported", msg);
  e = run(&msg, barrier_or, dim3(1), dim3(128), nullptr, d);
  std::vector<int> h(128);
  cudaMemcpy(h.data(), d, 128 * 4, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && h[5] == 1000 + 43, "__syncthreads_or and __syncthreads_count reduce over the block", msg);
}

void warps(int* d) {
  std::string msg;
  cudaError_t e = run(&msg, warp_sum, dim3(1), dim3(64), nullptr, d);
  std::vector<int> h(64);
  cudaMemcpy(h.data(), d, 64 * 4, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && h[0] == 496 && h[31] == 496 && h[32] == 32 * 32 + 496 && h[63] == h[32],
        "__shfl_xor_sync butterflies within each warp", msg);
  e = run(&msg, ballot_after_exit, dim3(1), dim3(32), nullptr, d);
  cudaMemcpy(h.data(), d, 32 * 4, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && h[0] == 0x55555 && h[19] == 0x55555, "a full-mask ballot after some lanes exited counts the rest", msg);
  e = run(&msg, shuffle_outside_mask, dim3(1), dim3(32), nullptr, d);
  check(e == cudaErrorIllegalInstruction && contains(msg, "not in mask"), "a shuffle that reads a lane outside its mask is reported", msg);
}

void races(int* d) {
  const int blocks = 64, threads = 128;
  std::vector<int> h(blocks * threads);
  run(nullptr, publish, dim3(blocks), dim3(threads), nullptr, d, 1);
  cudaMemcpy(h.data(), d, h.size() * 4, cudaMemcpyDeviceToHost);
  bool allRight = true;
  for (int v : h) allRight = allRight && v == 42;
  check(allRight, "shared memory published behind a barrier is seen by every thread");
  run(nullptr, publish, dim3(blocks), dim3(threads), nullptr, d, 0);
  cudaMemcpy(h.data(), d, h.size() * 4, cudaMemcpyDeviceToHost);
  int stale = 0;
  for (int v : h) stale += v != 42;
  check(stale > 0, "without the barrier some threads read the old value (threads run in a random order)",
        "every thread saw the write: a missing barrier would pass by luck");
}

void memory() {
  std::string msg;
  float *a = nullptr, *out = nullptr;
  cudaMalloc(&a, 1024 * 4);  // a multiple of 256 bytes: its end touches the guard page
  cudaMalloc(&out, 4);
  cudaError_t e = run(&msg, read_at, dim3(1), dim3(32), nullptr, (const float*)a, (int64_t)1024, out);
  check(e == cudaErrorIllegalAddress && contains(msg, "past the end of a 4096-byte device allocation"),
        "a read one element past an allocation fails the launch", msg);
  e = run(&msg, read_at, dim3(1), dim3(32), nullptr, (const float*)a, (int64_t)-1, out);
  check(e == cudaErrorIllegalAddress && contains(msg, "4 bytes before a 4096-byte device allocation"),
        "a read one element before an allocation fails the launch", msg);
  float got = 0;
  float* b = nullptr;
  cudaMalloc(&b, 1000 * 4);  // not a multiple of 256: 96 bytes of poisoned slack before the guard page
  e = run(&msg, read_at, dim3(1), dim3(32), nullptr, (const float*)b, (int64_t)1003, out);
  cudaMemcpy(&got, out, 4, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && isnan(got), "a read into the slack after an allocation gives NaN poison", msg);
  e = run(&msg, write_at, dim3(1), dim3(32), nullptr, b, (int64_t)1001);
  check(e == cudaErrorIllegalAddress && contains(msg, "wrote 4 bytes past the end"), "a write into the slack fails the launch", msg);
  std::vector<float> fresh(4);
  cudaMemcpy(fresh.data(), b, 16, cudaMemcpyDeviceToHost);
  check(isnan(fresh[0]), "fresh device memory is poisoned (NaN), so reading it before writing shows");
  e = cudaMemcpy(fresh.data(), b + 998, 16, cudaMemcpyDeviceToHost);
  cudaGetLastError();
  check(e == cudaErrorInvalidValue, "a copy that runs past an allocation is rejected");
  unsigned* u = nullptr;
  cudaMalloc(&u, 4);
  e = run(&msg, vector_load, dim3(1), dim3(32), nullptr, (const char*)a, 8, u);
  check(e == cudaErrorMisalignedAddress && contains(msg, "not 16-byte aligned"), "a misaligned 16-byte load fails the launch", msg);
  // An asynchronous fault is reported by the next synchronising call, cudaMemcpy from pageable memory included.
  launch_kernel("fault_then_nothing", fault_then_nothing, dim3(1), dim3(32), 0, nullptr, b);
  e = cudaMemcpy(b, fresh.data(), 16, cudaMemcpyHostToDevice);
  cudaGetLastError();
  check(e == cudaErrorIllegalAddress, "cudaMemcpy reports an earlier kernel's fault", cudaGetErrorName(e));
  cudaFree(a);
  e = run(&msg, read_at, dim3(1), dim3(32), nullptr, (const float*)a, (int64_t)0, out);
  check(e == cudaErrorIllegalAddress, "a read after cudaFree fails the launch", msg);
  cudaFree(b);
  cudaFree(u);
  cudaFree(out);
}

// Stream-ordered allocation: reuse in stream order, across streams only once the free has run, a use after the
// free caught in kernels and copies, and the release threshold.
void pools() {
  std::string msg;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = 0;
  cudaMemPool_t pool = nullptr;
  check(cudaMemPoolCreate(&pool, &props) == cudaSuccess, "cudaMemPoolCreate makes a pool of device 0");
  uint64_t keep = 1 << 20;
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  cudaStream_t s1 = nullptr, s2 = nullptr;
  cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
  float *a = nullptr, *b = nullptr, *c = nullptr, *out = nullptr;
  cudaMalloc(&out, 4);
  papo_emu::reset_stats();
  cudaMallocFromPoolAsync(reinterpret_cast<void**>(&a), 4096, pool, s1);
  cudaFreeAsync(a, s1);
  cudaMallocFromPoolAsync(reinterpret_cast<void**>(&b), 4096, pool, s1);
  papo_emu::Stats st = papo_emu::stats();
  check(b == a && st.poolGrowths == 1 && st.poolAllocs == 2 && st.mallocs == 0,
        "a block freed on a stream is reused by that stream's next allocation at once");
  cudaFreeAsync(b, s1);
  cudaMallocFromPoolAsync(reinterpret_cast<void**>(&c), 4096, pool, s2);
  check(c != b, "another stream does not reuse it before the free has run");
  cudaFreeAsync(c, s2);
  cudaStreamSynchronize(s1);
  cudaStreamSynchronize(s2);
  cudaMallocFromPoolAsync(reinterpret_cast<void**>(&c), 4096, pool, s2);
  check(c == b || c == a, "once it has run, any stream reuses it");
  cudaError_t e = run(&msg, read_at, dim3(1), dim3(32), s2, (const float*)c, (int64_t)0, out);
  check(e == cudaSuccess, "a reused block is usable on its stream", msg);
  cudaFreeAsync(c, s2);
  e = run(&msg, read_at, dim3(1), dim3(32), s2, (const float*)c, (int64_t)0, out);
  check(e == cudaErrorIllegalAddress && contains(msg, "after its cudaFreeAsync"),
        "a kernel reading a block after its stream-ordered free fails the launch", msg);
  std::vector<float> h(4);
  e = cudaMemcpyAsync(h.data(), c, 16, cudaMemcpyDeviceToHost, s2);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s2);
  cudaGetLastError();
  check(e == cudaErrorIllegalAddress, "so does a copy from it", cudaGetErrorName(e));
  check(cudaFree(c) == cudaErrorInvalidValue, "cudaFree of a stream-ordered allocation is refused");
  cudaGetLastError();
  float* big = nullptr;
  cudaMallocFromPoolAsync(reinterpret_cast<void**>(&big), 4 << 20, pool, s1);
  cudaFreeAsync(big, s1);
  cudaStreamSynchronize(s1);
  uint64_t reserved = 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
  st = papo_emu::stats();
  check(reserved <= keep && st.poolReleases >= 1, "idle memory beyond the release threshold goes back to the device");
  cudaMemPoolTrimTo(pool, 0);
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
  check(reserved == 0 && cudaMemPoolDestroy(pool) == cudaSuccess, "cudaMemPoolTrimTo(0) empties it; then it can be destroyed");
  st = papo_emu::stats();
  check(st.deviceSyncs == 0 && st.deviceDrains == 0 && st.frees == 0, "none of it waits for the device");
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
  cudaFree(out);
}

// The defect this project had: per-token data copied from pageable memory on the legacy stream, then read by a
// kernel on a non-blocking stream. CUDA does not order them; neither does the emulator.
void streams() {
  const int n = 4096;
  std::vector<int> host(n), back(n);
  for (int i = 0; i < n; ++i) host[i] = i;
  int *src = nullptr, *dst = nullptr;
  cudaMalloc(&src, n * 4);
  cudaMalloc(&dst, n * 4);
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  int racy = 0;
  for (int k = 0; k < 3; ++k) {
    cudaMemset(src, 0xFF, n * 4);
    cudaDeviceSynchronize();
    cudaMemcpy(src, host.data(), n * 4, cudaMemcpyHostToDevice);  // returns once staged
    run(nullptr, copy_ints, dim3(1), dim3(256), s, (const int*)src, dst, n);
    cudaMemcpy(back.data(), dst, n * 4, cudaMemcpyDeviceToHost);
    racy += back != host;
  }
  check(racy > 0, "a non-blocking stream is not ordered after a legacy-stream copy (the race shows)");
  cudaEvent_t ev;
  cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  cudaMemset(src, 0xFF, n * 4);
  cudaDeviceSynchronize();
  cudaMemcpyAsync(src, host.data(), n * 4, cudaMemcpyHostToDevice, nullptr);
  cudaEventRecord(ev, nullptr);
  cudaStreamWaitEvent(s, ev, 0);
  run(nullptr, copy_ints, dim3(1), dim3(256), s, (const int*)src, dst, n);
  cudaMemcpy(back.data(), dst, n * 4, cudaMemcpyDeviceToHost);
  check(back == host, "cudaStreamWaitEvent orders it");
  cudaStream_t blocking;
  cudaStreamCreate(&blocking);
  cudaMemset(src, 0xFF, n * 4);
  cudaDeviceSynchronize();
  cudaMemcpyAsync(src, host.data(), n * 4, cudaMemcpyHostToDevice, nullptr);
  run(nullptr, copy_ints, dim3(1), dim3(256), blocking, (const int*)src, dst, n);
  cudaMemcpy(back.data(), dst, n * 4, cudaMemcpyDeviceToHost);
  check(back == host, "a blocking stream is ordered after earlier legacy-stream work");
  cudaEventDestroy(ev);
  cudaStreamDestroy(s);
  cudaStreamDestroy(blocking);
  cudaFree(src);
  cudaFree(dst);
}

void clusters(int* d) {
  std::string msg;
  auto run_cluster = [&](auto kernel, dim3 grid, dim3 block, size_t smem, unsigned cluster, auto... args) {
    try {
      papo::cuda::launch_kernel_cluster("test_cluster", kernel, grid, block, smem, nullptr, cluster, args...);
    } catch (const papo::Error& e) {
      msg = e.what();
      return cudaErrorInvalidConfiguration;
    }
    const cudaError_t e = cudaStreamSynchronize(nullptr);
    msg = e == cudaSuccess ? "" : cudaGetErrorString(e);
    cudaGetLastError();
    return e;
  };
  cudaError_t e = run_cluster(cluster_ranks, dim3(8), dim3(64), 256, 4u, d, 0);
  std::vector<int> h(8);
  cudaMemcpy(h.data(), d, 8 * 4, cudaMemcpyDeviceToHost);
  bool all10 = true;
  for (int v : h) all10 = all10 && v == 10;
  check(e == cudaSuccess && all10, "blocks of a cluster read each other's shared memory after a cluster barrier", msg);
  float* src = nullptr;
  float* out = nullptr;
  cudaMalloc(&src, 256);
  cudaMalloc(&out, 256);
  std::vector<float> host(64), back(64);
  for (int i = 0; i < 64; ++i) host[i] = (float)i;
  cudaMemcpy(src, host.data(), 256, cudaMemcpyHostToDevice);
  e = run_cluster(bulk_then_read, dim3(1), dim3(64), 272, 1u, (const float*)src, out, 1);
  cudaMemcpy(back.data(), out, 256, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && back == host, "a bulk copy lands once its mbarrier phase completes", msg);
  e = run_cluster(bulk_then_read, dim3(1), dim3(64), 272, 1u, (const float*)src, out, 0);
  cudaMemcpy(back.data(), out, 256, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && isnan(back[0]), "shared memory read before the mbarrier wait holds poison", msg);
  e = run_cluster(bulk_refill_then_read, dim3(1), dim3(64), 272, 1u, (const float*)src, out);
  cudaMemcpy(back.data(), out, 256, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && isnan(back[0]) && isnan(back[63]),
        "shared memory read after a bulk copy into it was issued, before its wait, holds poison", msg);
  e = run_cluster(mbar_phases, dim3(1), dim3(64), 272, 1u, (const float*)src, out, 1);
  cudaMemcpy(back.data(), out, 256, cudaMemcpyDeviceToHost);
  check(e == cudaSuccess && back == host, "an mbarrier phase that nobody waited for completes; the next one works", msg);
  e = run_cluster(mbar_phases, dim3(1), dim3(64), 272, 1u, (const float*)src, out, 2);
  check(e == cudaErrorIllegalInstruction && contains(msg, "more arrivals"),
        "an arrival on an mbarrier whose phase still expects bytes is reported", msg);
  e = run_cluster(bulk_misaligned, dim3(1), dim3(32), 272, 1u, (const float*)src);
  check(e == cudaErrorMisalignedAddress && contains(msg, "multiples of 16"), "a misaligned bulk copy fails the launch", msg);
  e = run_cluster(cluster_barrier_after_exit, dim3(2), dim3(32), 16, 2u, d);
  check(e == cudaErrorIllegalInstruction && contains(msg, "cluster barrier"), "a cluster barrier some threads never reach is reported", msg);
  e = run_cluster(cluster_ranks, dim3(6), dim3(32), 256, 4u, d, 0);
  check(e != cudaSuccess && contains(msg, "cluster"), "a grid that is not a multiple of the cluster is rejected", msg);
  cudaFree(src);
  cudaFree(out);
}

// The kernel trace with a delay: two streams' kernels, waited for by two threads at once, overlap in it unless an
// event orders one after the other.
void trace(int* d) {
  cudaStream_t s1, s2;
  cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
  auto both = [&](bool ordered) {
    papo_emu::reset_stats();
    papo_emu::set_kernel_delay("test_kernel", 150);
    launch_kernel("test_kernel", warp_sum, dim3(1), dim3(32), 0, s1, d);
    if (ordered) {
      cudaEvent_t ev;
      cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
      cudaEventRecord(ev, s1);
      cudaStreamWaitEvent(s2, ev, 0);
      cudaEventDestroy(ev);
    }
    launch_kernel("test_kernel", warp_sum, dim3(1), dim3(32), 0, s2, d + 32);
    std::thread other([&] { cudaStreamSynchronize(s2); });  // both wanted at once: streams are lazy
    cudaStreamSynchronize(s1);
    other.join();
    return papo_emu::kernel_runs();
  };
  std::vector<papo_emu::KernelRun> r = both(false);
  const bool two = r.size() == 2 && r[0].name == "test_kernel" && r[0].endMs - r[0].startMs >= 150;
  check(two && r[0].startMs < r[1].endMs && r[1].startMs < r[0].endMs, "the delayed kernels of two streams overlap");
  r = both(true);
  check(r.size() == 2 && r[1].startMs >= r[0].endMs, "an event wait orders them one after the other");
  papo_emu::reset_stats();
  check(papo_emu::kernel_runs().empty(), "reset_stats forgets the kernels run");
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

void faults(int* d) {
  papo_emu::inject_fault("cudaMalloc", 1);
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, 64);
  cudaGetLastError();
  check(e == cudaErrorMemoryAllocation, "an injected cudaMalloc failure");
  papo_emu::inject_fault("launch", 1);
  std::string msg;
  e = run(&msg, warp_sum, dim3(1), dim3(32), nullptr, d);
  check(e != cudaSuccess && contains(msg, "injected launch failure"), "an injected launch failure", msg);
  papo_emu::inject_fault("memcpy", 1);
  std::vector<int> h(32);
  e = cudaMemcpyAsync(d, h.data(), 128, cudaMemcpyHostToDevice, nullptr);
  const cudaError_t later = cudaStreamSynchronize(nullptr);
  cudaGetLastError();
  check(e == cudaSuccess && later == cudaErrorLaunchFailure, "an injected copy failure shows at the next synchronisation");
  e = run(&msg, warp_sum, dim3(1), dim3(32), nullptr, d);
  check(e == cudaSuccess, "the device works again once a failure was reported", msg);
  uint32_t* flag = nullptr;
  cudaMalloc(&flag, 16);
  cudaMemset(flag, 0, 16);
  e = run(&msg, wait_for_faulting_block, dim3(2), dim3(32), nullptr, flag, (const char*)d);
  check(e == cudaErrorMisalignedAddress, "a block waiting for a block of its grid that faulted fails the launch, no hang", msg);
  cudaFree(flag);
}

}  // namespace

// The counters behind the host-cost tests: every entry point counts once (a nested one is part of its caller),
// a launch is an API call, and copies count by direction, bytes and pageable host memory.
void counters() {
  float* dev = nullptr;
  float* pinned = nullptr;
  std::vector<float> pageable(256);
  cudaMalloc(&dev, 1024);
  cudaMallocHost(reinterpret_cast<void**>(&pinned), 1024);  // cudaMallocHost calls cudaHostAlloc: one call
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  papo_emu::reset_stats();
  cudaMemcpyAsync(dev, pinned, 1024, cudaMemcpyHostToDevice, s);
  cudaMemcpyAsync(pageable.data(), dev, 512, cudaMemcpyDeviceToHost, s);
  cudaMemcpyAsync(dev, dev + 128, 256, cudaMemcpyDeviceToDevice, s);
  cudaStreamSynchronize(s);
  cudaGetLastError();
  papo_emu::Stats st = papo_emu::stats();
  int64_t named = 0;
  for (const auto& kv : st.apiCallsByName) named += kv.second;
  check(st.apiCalls == 5 && named == 5, "five API calls, each counted once and by name");
  check(st.copiesToDevice == 1 && st.bytesToDevice == 1024 && st.copiesToHost == 1 && st.bytesToHost == 512 &&
            st.pageableCopies == 1,
        "copies count by direction and bytes, the pageable one apart, device-to-device in neither");
  papo_emu::reset_stats();
  float* again = nullptr;
  cudaMallocHost(reinterpret_cast<void**>(&again), 64);
  st = papo_emu::stats();
  check(st.apiCalls == 1 && st.apiCallsByName.size() == 1 && st.apiCallsByName[0].first == "cudaMallocHost",
        "a call another entry point makes is part of the outer one");
  cudaFreeHost(again);
  cudaFreeHost(pinned);
  cudaStreamDestroy(s);
  cudaFree(dev);
}

int main() {
  int* d = nullptr;
  cudaMalloc(&d, 64 * 128 * 4);
  device_properties();
  barriers(d);
  warps(d);
  races(d);
  memory();
  pools();
  streams();
  clusters(d);
  trace(d);
  faults(d);
  counters();
  cudaFree(d);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
