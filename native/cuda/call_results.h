// What a CUDA call copies back to the host, made on the device so that it is one copy of O(N) bytes: the sums of
// the token terms (core/reduce.h), the first row that failed, and the per-token outputs the caller reads, packed
// as floats. The rows' full results (RowOut, ~216 bytes each) stay on the device.
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "core/reduce.h"
#include "cuda/device_call.h"

namespace papo {
namespace cuda {

struct ResultHeader {
  TermSums sums{};        // over the response tokens, with call.terms TERMS_PER_ROW (zero otherwise)
  int64_t badRow = -1;    // the first row whose status is not ROW_OK; -1: none
  int32_t badStatus = 0;  // its status, and whether the bad value is on the masked path
  int32_t badOnMasked = 0;
};

// After the header (16-byte aligned), N floats each: log-probs and entropies, then with masked logits the
// masked path's.
inline size_t results_offset() { return (sizeof(ResultHeader) + 15) & ~(size_t)15; }
inline size_t results_bytes(int64_t N, bool masked) { return results_offset() + (size_t)N * 4 * (masked ? 4 : 2); }

// Enqueues on `stream` the reduction of call.out (every row's RowOut, written by the kernels before) into
// `results` (device memory, results_bytes). One block sums the rows in a fixed order (thread t takes rows t,
// t + blockDim, ... in turn, then a fixed tree over the threads), so a call's sums have the same bits every time.
void launch_results(const DeviceCall& call, void* results, cudaStream_t stream);

}  // namespace cuda
}  // namespace papo
