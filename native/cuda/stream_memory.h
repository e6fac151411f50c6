// Device memory in stream order (cudaMallocFromPoolAsync / cudaFreeAsync on a pool of papo-kernels' own per
// device): the gradients papoLoss returns as DeviceTensors, and every call's device scratch. Neither allocating nor
// freeing waits for the device (cudaFree waits for every stream of it), and a training loop's steady state reuses
// the pool's memory instead of allocating.
//
// Memory from stream_alloc is usable by work on `stream` from there on; stream_free returns it once the work
// enqueued on `stream` before it is done, so every other stream that used it must be ordered before the free.
// The pool keeps up to PAPO_CUDA_POOL_KEEP_MB (default: an eighth of the device's memory) of freed memory for
// reuse and gives the rest back to the device; an allocation that runs out of memory gives back all the idle
// memory whose frees are done and is tried once more.
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>

#include <utility>

namespace papo {

// At least `bytes` (0: 1) on `device`, which must be current (-1: whichever is; asking costs a runtime call).
// Throws papo::Error: OutOfMemory naming `what` with the bytes, or CudaError.
void* stream_alloc(size_t bytes, cudaStream_t stream, const char* what, int device = -1);
// Never throws; a null ptr is nothing to free.
void stream_free(void* ptr, cudaStream_t stream) noexcept;
// The most memory the current device's pool has held since the last reset (which gives back its idle memory
// first): the device memory of the calls in between, for papo_cuda_test's probe.
size_t stream_pool_peak(bool reset);

// A stream-ordered allocation for a scope, freed on its stream when the scope ends (move-only).
class StreamBuffer {
 public:
  StreamBuffer() = default;
  StreamBuffer(size_t bytes, cudaStream_t stream, const char* what, int device = -1)
      : p_(stream_alloc(bytes, stream, what, device)), stream_(stream) {}
  ~StreamBuffer() { stream_free(p_, stream_); }
  StreamBuffer(StreamBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), stream_(o.stream_) {}
  StreamBuffer& operator=(StreamBuffer&& o) noexcept {
    if (this != &o) {
      stream_free(p_, stream_);
      p_ = std::exchange(o.p_, nullptr);
      stream_ = o.stream_;
    }
    return *this;
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  template <class T = void>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace papo
