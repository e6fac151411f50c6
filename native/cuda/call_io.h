// A CUDA call's O(N) traffic with the host, on the call's stream: the per-token inputs up in one copy, the results
// down in one copy (call_results.h), both through one pinned buffer lent by the pool (staging_pool.h), to and
// from one stream-ordered device buffer (stream_memory.h).
//
//   device: [per-token inputs | every row's RowOut | results]
//   pinned: [per-token inputs | results], with rows on the host (the sequence phase) [inputs | RowOut | results]
//
// The sequence phase (GSPO, perception top-p) needs every row's statistics on the host between its phases: it
// copies the rows' RowOut down and, with the terms the host wrote into them, up again (2 x ~216 bytes a row).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "core/call.h"
#include "core/token_weights.h"
#include "cuda/call_results.h"
#include "cuda/device_call.h"
#include "cuda/staging_pool.h"
#include "cuda/stream_memory.h"

namespace papo {
namespace cuda {

class CallIo {
 public:
  // Copies the per-token arrays (and, with a call, its weights w and a vocabulary shard's merged statistics) to
  // the device on `stream`. hostRows: room for every row's RowOut on the host.
  CallIo(const PapoCall* call, const int32_t* tokens, int64_t N, const TokenWeights* w, bool masked, bool hostRows,
         int device, cudaStream_t stream);
  // On the way out of a failed call: what the stream still does with the buffers is waited for first.
  ~CallIo();
  CallIo(const CallIo&) = delete;
  CallIo& operator=(const CallIo&) = delete;

  const TokenInputs& tok() const { return tok_; }
  RowOut* device_rows() const { return rows_; }

  // Enqueues the results of the kernels enqueued so far (launch_results) and their copy to the host.
  void fetch_results(const DeviceCall& dc);
  // Enqueues the copy of every row's RowOut to host_rows(), and host_rows() back to the device.
  void fetch_rows();
  void upload_rows();
  RowOut* host_rows() const { return hostRows_; }

  // Waits for the call's stream: what was fetched is on the host from then on.
  void wait();
  // The end of the call: the device buffer freed in stream order, then the wait.
  void finish();

  // Valid after fetch_results and a wait.
  const ResultHeader& header() const { return *reinterpret_cast<const ResultHeader*>(hostResults_); }
  const float* outputs() const { return reinterpret_cast<const float*>(hostResults_ + results_offset()); }

 private:
  cudaStream_t stream_;
  int64_t N_;
  PooledBuffer host_;
  StreamBuffer dev_;
  TokenInputs tok_;
  RowOut* rows_ = nullptr;
  RowOut* hostRows_ = nullptr;
  char* results_ = nullptr;
  char* hostResults_ = nullptr;
  size_t resultsBytes_ = 0;
  bool finished_ = false;
};

}  // namespace cuda
}  // namespace papo
