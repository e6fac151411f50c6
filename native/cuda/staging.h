// Host-resident logits and gradients moved in chunks of rows through two staging slots (pinned and device buffers
// lent by staging_pool.h and stream_memory.h), so that the copies of one chunk overlap the kernels of the other and
// device memory stays bounded whatever N is. (The per-token inputs and results: call_io.h.)
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <memory>
#include <vector>

#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/staging_pool.h"
#include "cuda/stream_memory.h"

namespace papo {
namespace cuda {

// Where the logits and gradients of the call live, host or device; null: absent.
struct Tensors {
  const void* logits;
  const void* maskedLogits;
  void* grad;
  void* maskedGrad;
};

// Host data: chunks of rows through two staging slots, each with its own stream, a pinned buffer (lent by the
// staging pool, staging_pool.h) and a device buffer (stream-ordered on the slot's stream, stream_memory.h).
// Device memory stays bounded by `budget` bytes per slot (CudaTuning::stagingBytes) whatever N is. The slots are
// sized for the call's gradients, so that the forward and the backward phase of an in-place call use the same
// chunks and buffers.
class Staging {
 public:
  Staging(const DeviceCall& dc, const Tensors& t, int device, int64_t budget);

  // One phase over every row. Its work is ordered after what `callStream` holds so far (the per-token upload;
  // before a backward phase, the forward's per-row results), and callStream's later work after it.
  void run(RunRows run, int32_t phase, cudaStream_t callStream);

 private:
  struct Slot {
    Stream stream = Stream::own();  // first: destroyed after the device buffer's free is enqueued on it
    PooledBuffer host;
    StreamBuffer dev;  // [logits | masked logits | gradients | masked gradients] of one chunk, as host
    Event done;
    bool recorded = false;
    bool pendingGrads = false;
    int64_t pendingBegin = -1, pendingRows = 0;
    Slot(int device, int64_t bytes)
        : host(PoolKind::Staging, device, (size_t)bytes, "the pinned staging of the logits and gradients"),
          dev((size_t)bytes, stream.get(), "a chunk of logits and gradients", device) {}
    // Nothing may still use the pinned buffer when it goes back to the pool (members are destroyed after this).
    // The device buffer's free completes with the wait, so that the next call's slots (other streams) reuse it.
    ~Slot() {
      dev = StreamBuffer();
      cudaStreamSynchronize(stream.get());
      cudaGetLastError();
    }
  };

  // Waits for the slot's chunk and copies its gradients out to the caller's buffers.
  void finish(Slot& s);

  const DeviceCall& dc_;
  Tensors t_;
  int64_t esz_, gsz_, R_, outOffset_;
  int paths_;
  bool g1_, g2_;
  std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace cuda
}  // namespace papo
