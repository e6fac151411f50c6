// The CUDA backend as the rest of the addon sees it (no CUDA headers here, so CPU-only builds compile it too;
// cuda_stub.cpp implements it there by throwing Unsupported).
//
// Logits and gradients are either host memory (staged through pinned buffers in chunks of rows, so device
// memory stays bounded for any N) or device memory (CudaExec::onDevice: the caller's pointers, never copied).
// The small per-token arrays are always host memory.
//
// The kernels compute the same quantities as the CPU backend by the same definitions, but not in the same
// order nor with the same exp (ex2.approx in base 2): the backends agree within floating-point tolerance, not bit
// for bit.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/call.h"

namespace papo {

// The kernel versions, numbered from naive to fast as in native/cuda/kernels/ (plan.cu's table says what each
// runs; PAPO_CUDA_KERNEL forces one).
enum CudaKernel : int32_t {
  KERNEL_K0_NAIVE = 0,     // the eager chain: log-softmax, softmax, gather, entropy, terms, backward (cuda-naive)
  KERNEL_K1_TWO_PASS = 1,  // fused statistics + terms, then a fused backward: reads each row twice from memory
  KERNEL_K2_FUSED = 2,     // one kernel per row pair: the backward re-reads the row from L2 where it fits
  KERNEL_K3_CLUSTER = 3,   // sm_90+: a thread-block cluster holds the row pair in shared memory (k2 elsewhere)
  KERNEL_K4_SPLIT = 4,     // a row pair split over blocks by column slices: few rows in flight, re-read from L2
};

// How the plan may be steered (cuda/settings.h reads these from PAPO_CUDA_* once per process): 0 everywhere
// leaves every choice to the plan.
struct CudaTuning {
  int32_t kernel = 0;   // a fast version for calls that ask for k2 (the 'cuda' backend); 0: as asked
  int blocks = 0;       // the row kernels' grid; k3: at most this many blocks
  int cluster = 0;      // k3's blocks per cluster
  int k3Buffers = 0;    // k3's row pairs in flight per cluster
  int k3CoResident = 1; // k3's clusters per SM: 2 asks for blocks of 256 threads, one buffer each
  int64_t k4Slice = 0;  // k4's 16-byte groups per slice; 0: 16 KB a path
  int64_t stagingBytes = (int64_t)256 << 20;  // device memory per staging slot of host data
};

// Where and on which stream a call runs.
//
// Host data (onDevice false): the call creates a non-blocking stream of its own, and stream is ignored.
// Device data (onDevice true): every kernel and copy of the call runs on `stream`, the cudaStream_t the logits
// belong to, ordered after what the caller enqueued there before; 0 is the legacy default stream. The call
// returns once its work on that stream is complete.
struct CudaExec {
  int device = 0;
  uint64_t stream = 0;
  bool onDevice = false;
  // Device data whose masked logits belong to another stream: the call's work also waits for what was enqueued
  // on maskedStream before the call (0: the legacy default stream), and later work on maskedStream waits for
  // the call's. Without hasMaskedStream, the masked logits belong to `stream`.
  bool hasMaskedStream = false;
  uint64_t maskedStream = 0;
  int32_t kernel = KERNEL_K2_FUSED;
  const CudaTuning* tuning = nullptr;  // null: the process's (PAPO_CUDA_*); papo_cuda_test passes its own
};

PapoMetrics papo_loss_cuda(const PapoCall& call, const CudaExec& exec);
void log_probs_cuda(const LogProbsCall& call, const CudaExec& exec);
// One vocabulary shard's statistics (core/vocab_stats.h) into call.out, a host array: only they cross back.
void vocab_shard_stats_cuda(const VocabStatsCall& call, const CudaExec& exec);

// Device memory for DeviceTensor (lib/cuda.ts). All throw papo::Error (CudaError, OutOfMemory with the bytes).
// None of them makes a device other than `device` current, nor leaves one current that the thread did not
// already use (see DeviceScope, cuda_resources.h).
// Allocation and free are stream-ordered (stream_memory.h) on `stream` (0: the legacy default stream): the memory is
// usable by work on that stream from there on, and freed once the stream's work before the free is done; neither
// waits for the device.
void* cuda_alloc(size_t bytes, int device, uint64_t stream);
void cuda_free(void* ptr, int device, uint64_t stream) noexcept;
// bytes between host memory and device memory, ordered on `stream` (0: the legacy default stream); returns
// when the copy is complete.
void cuda_copy(void* dst, const void* src, size_t bytes, bool toDevice, int device, uint64_t stream);
// Zeroes device memory on `stream` (its allocation's); returns when done (other streams are not waited for).
void cuda_memset_zero(void* ptr, size_t bytes, int device, uint64_t stream);
// A device-to-device copy on a stream of its own, complete on return: the benchmarks' roofline.
void cuda_copy_d2d(void* dst, const void* src, size_t bytes, int device);
// Checks that [ptr, ptr + bytes) is device (or managed) memory of `device` within one allocation, as far as the
// driver can tell; throws InvalidArgument naming `name` otherwise. Within a live cuda_alloc allocation it asks
// the driver nothing.
void cuda_check_pointer(const void* ptr, size_t bytes, int device, const char* name);
struct CudaMemInfo {
  size_t free = 0, total = 0;
};
CudaMemInfo cuda_mem_info(int device);
// A non-blocking stream on `device` for the caller's own work (cuda.createStream), and its release. Destroying
// returns at once; work already on the stream completes.
uint64_t cuda_stream_create(int device);
void cuda_stream_destroy(uint64_t stream, int device);

}  // namespace papo
