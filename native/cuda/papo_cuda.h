// The CUDA backend as the rest of the addon sees it (no CUDA headers here, so CPU-only builds compile it too;
// cuda_stub.cpp implements it there by throwing Unsupported).
//
// Logits and gradients are either host memory (staged through pinned buffers in chunks of rows, so device
// memory stays bounded for any N) or device memory (PapoCall::onDevice: the caller's pointers, never copied).
// The small per-token arrays are always host memory.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../papo_call.h"

namespace papo {

// The kernel families, numbered from naive to fast as in native/cuda/*.cu (PAPO_CUDA_KERNEL forces one).
enum CudaKernel : int32_t {
  KERNEL_NAIVE = 0,     // the eager chain: log-softmax, softmax, gather, entropy, terms, backward (cuda-naive)
  KERNEL_TWO_PASS = 1,  // fused statistics + terms, then a fused backward: reads each row twice from memory
  KERNEL_FUSED = 2,     // one kernel per row pair: the backward re-reads the row from L2 where it fits
};

struct CudaExec {
  int device = 0;
  uint64_t stream = 0;  // a cudaStream_t of the caller's (device-resident data only); 0: a stream of our own
  bool onDevice = false;
  int32_t kernel = KERNEL_FUSED;
};

PapoMetrics papo_loss_cuda(const PapoCall& call, const CudaExec& exec);
void log_probs_cuda(const LogProbsCall& call, const CudaExec& exec);

// Device memory for DeviceTensor (lib/cuda.ts). All throw papo::Error (CudaError, OutOfMemory with the bytes).
void* cuda_alloc(size_t bytes, int device);
void cuda_free(void* ptr, int device) noexcept;
// bytes between host memory and device memory, synchronously (on `stream` when given).
void cuda_copy(void* dst, const void* src, size_t bytes, bool toDevice, int device, uint64_t stream);
void cuda_memset_zero(void* ptr, size_t bytes, int device);
// A device-to-device copy, synchronous: the benchmarks' roofline.
void cuda_copy_d2d(void* dst, const void* src, size_t bytes, int device);
// Checks that ptr is device (or managed) memory of `device`, as far as the driver can tell.
void cuda_check_pointer(const void* ptr, int device, const char* name);
struct CudaMemInfo {
  size_t free = 0, total = 0;
};
CudaMemInfo cuda_mem_info(int device);

}  // namespace papo
