#include "cuda/stream_memory.h"

#include <stdint.h>

#include <mutex>

#include "cuda/cuda_resources.h"
#include "cuda/settings.h"

namespace papo {

namespace {

constexpr int kMaxDevices = 64;

// Created on first use per device and kept for the process: a pool of our own, so that its release threshold
// does not change what other libraries' allocations from the device's default pool keep.
cudaMemPool_t pool_of(int device) {
  static std::mutex m;
  static cudaMemPool_t pools[kMaxDevices] = {};
  if (device < 0 || device >= kMaxDevices) throw Error(ErrorCode::InvalidArgument, "device: index too large");
  std::lock_guard<std::mutex> lock(m);
  if (pools[device]) return pools[device];
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  cuda_check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate");
  size_t freeB = 0, totalB = 0;
  cuda_check(cudaMemGetInfo(&freeB, &totalB), "cudaMemGetInfo");
  const int64_t keepBytes = cuda::settings().poolKeepBytes;
  uint64_t keep = keepBytes >= 0 ? (uint64_t)keepBytes : (uint64_t)totalB / 8;
  cuda_check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  return pools[device] = pool;
}

int current_device() {
  int d = 0;
  cuda_check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

}  // namespace

void* stream_alloc(size_t bytes, cudaStream_t stream, const char* what, int device) {
  cudaMemPool_t pool = pool_of(device >= 0 ? device : current_device());
  void* p = nullptr;
  const size_t n = bytes ? bytes : 1;
  cudaError_t err = cudaMallocFromPoolAsync(&p, n, pool, stream);
  if (err == cudaErrorMemoryAllocation) {
    // What the pool keeps idle may be what is missing: give it back (what this stream freed once the stream has
    // got there; other streams' frees that are done) and try once more.
    cudaGetLastError();
    cudaStreamSynchronize(stream);
    cudaGetLastError();
    cudaMemPoolTrimTo(pool, 0);
    err = cudaMallocFromPoolAsync(&p, n, pool, stream);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw_out_of_memory("device", bytes, what);
  }
  cuda_check(err, "cudaMallocFromPoolAsync");
  return p;
}

void stream_free(void* ptr, cudaStream_t stream) noexcept {
  if (!ptr) return;
  if (cudaFreeAsync(ptr, stream) != cudaSuccess) cudaGetLastError();  // a failure must not be the next call's error
}

size_t stream_pool_peak(bool reset) {
  cudaMemPool_t pool = pool_of(current_device());
  uint64_t v = 0;
  if (reset) {
    cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    cuda_check(cudaMemPoolTrimTo(pool, 0), "cudaMemPoolTrimTo");
    cuda_check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &v), "cudaMemPoolSetAttribute");
  }
  cuda_check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &v), "cudaMemPoolGetAttribute");
  return (size_t)v;
}

}  // namespace papo
