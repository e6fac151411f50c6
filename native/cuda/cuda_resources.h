// Checked CUDA calls and the RAII owners of what a call allocates (device and pinned buffers, streams, events,
// the current device), so that an exception on any path frees everything and nothing aborts the process.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <string>
#include <utility>

#include "core/call.h"
#include "driver_api.h"

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

// Makes `device` current for the lifetime of the scope without touching any other device.
//
// cudaSetDevice creates the device's primary context (CUDA 12+), so a blind save/restore would create a context
// on the device the thread merely *reported*: a fresh worker thread reports device 0 without having a context,
// and restoring "device 0" after a call on device 1 would cost device 0 a context (hundreds of MiB) it never
// needed. So: set the device only when it differs from the current one (then nothing else is asked), and restore
// only when the thread had a context before the scope (asked of the driver; when the driver cannot say, do not
// restore).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) {
      cudaGetLastError();  // cudaSetDevice below reports what is wrong
      current = -1;
    }
    if (current == device) return;
    bool hadContext = false;
    const bool known = driver_current_context(&hadContext);
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    restore_ = known && hadContext && current >= 0;
    previous_ = current;
  }
  ~DeviceScope() {
    if (!restore_) return;
    cudaSetDevice(previous_);
    cudaGetLastError();
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
  bool restore_ = false;
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

// The stream a call's work is ordered on: a caller's stream used as given (handle 0 is the legacy default
// stream: this library is not built with per-thread default streams), or one of our own, non-blocking so that
// it neither waits for nor holds up the legacy stream of whoever else shares the process.
class Stream {
 public:
  static Stream borrow(uint64_t handle) { return Stream(reinterpret_cast<cudaStream_t>(handle), false); }
  static Stream own() {
    cudaStream_t s = nullptr;
    cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return Stream(s, true);
  }
  ~Stream() {
    if (owned_) cudaStreamDestroy(s_);
  }
  Stream(Stream&& o) noexcept : s_(o.s_), owned_(std::exchange(o.owned_, false)) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream& operator=(Stream&&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { cuda_check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

 private:
  Stream(cudaStream_t s, bool owned) : s_(s), owned_(owned) {}
  cudaStream_t s_ = nullptr;
  bool owned_ = false;
};

class Event {
 public:
  Event() { cuda_check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreateWithFlags"); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s) { cuda_check(cudaEventRecord(e_, s), "cudaEventRecord"); }
  void sync() { cuda_check(cudaEventSynchronize(e_), "cudaEventSynchronize"); }

 private:
  cudaEvent_t e_ = nullptr;
};

// Orders everything enqueued on `waiter` from now on after everything enqueued on `producer` so far, without
// blocking the host (an event recorded on the producer, waited for on the waiter).
inline void stream_after(cudaStream_t waiter, cudaStream_t producer, const char* what) {
  Event e;
  e.record(producer);
  cuda_check(cudaStreamWaitEvent(waiter, e.get(), 0), what);
}  // destroying a recorded event is fine: the wait keeps what it needs

// A kernel launch's configuration errors show up in cudaGetLastError, its execution errors at the next sync.
inline void check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

}  // namespace papo
