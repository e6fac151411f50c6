// A process-wide pool of pinned host buffers, per device and kind: the staging slots that host-data CUDA calls
// copy their logits and gradients through (class Staging, staging.cu), and every call's per-token inputs and
// results (class CallIo, call_io.cu). (Device memory is stream-ordered instead: stream_memory.h.)
//
// Pinning memory with cudaHostAlloc costs tens of microseconds to tens of milliseconds (the pages are locked one
// by one) and cudaFreeHost waits for all work on the device, every stream's, so a call that allocated and freed
// them every time would spend much of a training step doing that and hold up other streams' producers. The pool
// lends buffers out instead:
//   - a buffer is lent to one call at a time (taken, then given back when the call's streams are idle);
//   - idle buffers kept per device: 2 staging buffers (two slots' worth), 8 per-call buffers (calls on several
//     threads at once); beyond that the least recently returned goes;
//   - sizes are rounded up (staging: to 2 MiB; per-call: to a power of two from 64 KiB), so that calls of nearby
//     shapes, and of a training loop's varying N, share buffers;
//   - an idle buffer is freed after PAPO_CUDA_PINNED_IDLE_MS milliseconds (default 2000, read once per
//     process; 0 disables the pool) by a background thread, so the memory comes back without another call;
//   - when an allocation runs out of memory, the idle buffers are freed and the allocation is tried again.
#pragma once

#include <stddef.h>

namespace papo {

enum class PoolKind { Staging, CallIo };

// A buffer of the pool, lent for this object's lifetime (move-only). Its memory is uninitialised and may be
// larger than asked. Give it back (destroy it) only when no stream still uses it.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  // At least `bytes` (> 0) of `kind` for `device`, which must be the current device (a new buffer is
  // allocated there). Throws papo::Error: OutOfMemory naming `what`, or CudaError.
  PooledBuffer(PoolKind kind, int device, size_t bytes, const char* what);
  ~PooledBuffer();
  PooledBuffer(PooledBuffer&& o) noexcept;
  PooledBuffer& operator=(PooledBuffer&& o) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;

  template <class T = void>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t capacity() const { return capacity_; }

 private:
  void give_back() noexcept;
  PoolKind kind_ = PoolKind::Staging;
  int device_ = 0;
  void* p_ = nullptr;
  size_t capacity_ = 0;
};


}  // namespace papo
