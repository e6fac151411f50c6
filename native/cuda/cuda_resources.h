// Checked CUDA calls and the RAII owners of what a call allocates (device and pinned buffers, streams, events,
// the current device), so that an exception on any path frees everything and nothing aborts the process.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "../papo_call.h"

namespace papo {

// A failed CUDA call becomes papo::Error carrying the CUDA error name; allocation failures are OutOfMemory.
inline void cuda_check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so that the next call starts clean
  const ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::CudaError;
  throw Error(code, std::string("CUDA: ") + what + " failed: " + cudaGetErrorName(err) + " (" +
                        cudaGetErrorString(err) + ")");
}

[[noreturn]] void throw_out_of_memory(const char* kind, size_t bytes, const char* what);

// cudaSetDevice for the lifetime of the scope, restoring the thread's previous device.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous_);
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

template <bool Pinned>
class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t err = Pinned ? cudaHostAlloc(&p_, bytes, cudaHostAllocDefault) : cudaMalloc(&p_, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw_out_of_memory(Pinned ? "pinned host" : "device", bytes, what);
    }
    cuda_check(err, Pinned ? "cudaHostAlloc" : "cudaMalloc");
  }
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(o.bytes_) {}
  Buffer& operator=(Buffer&& o) noexcept {
    reset();
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = o.bytes_;
    return *this;
  }
  template <class T = void>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void reset() {
    if (p_) Pinned ? cudaFreeHost(p_) : cudaFree(p_);
    p_ = nullptr;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
};
using DeviceBuffer = Buffer<false>;
using PinnedBuffer = Buffer<true>;

// The caller's stream, or one of our own (non-blocking, so it does not serialise with the legacy stream).
class Stream {
 public:
  explicit Stream(uint64_t borrowed = 0) : s_(reinterpret_cast<cudaStream_t>(borrowed)), owned_(borrowed == 0) {
    if (owned_) cuda_check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~Stream() {
    if (owned_ && s_) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { cuda_check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t s_ = nullptr;
  bool owned_ = true;
};

class Event {
 public:
  Event() { cuda_check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t s) { cuda_check(cudaEventRecord(e_, s), "cudaEventRecord"); }
  void sync() { cuda_check(cudaEventSynchronize(e_), "cudaEventSynchronize"); }

 private:
  cudaEvent_t e_ = nullptr;
};

// A kernel launch's configuration errors show up in cudaGetLastError, its execution errors at the next sync.
inline void check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

}  // namespace papo
