// vocabShardStats on the CUDA backend: the shard's logits read once by vocab_shard_stats (kernels/vocab_shard.cu),
// on the device (the caller's stream) or staged from the host in chunks of rows, and only the statistics come back:
// 4 float64 and a verdict per row, O(N) bytes.
#include <string.h>

#include <vector>

#include "core/row_status.h"
#include "core/vocab_stats.h"
#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/papo_cuda.h"
#include "cuda/call_io.h"
#include "cuda/plan.h"
#include "cuda/staging.h"

namespace papo {

void vocab_shard_stats_cuda(const VocabStatsCall& call, const CudaExec& exec) {
  const int64_t N = call.N;
  DeviceScope scope(exec.device);
  Stream stream = exec.onDevice ? Stream::borrow(exec.stream) : Stream::own();
  // The statistics, then the verdicts: what comes back. Declared before `io`, whose end (a wait for the stream,
  // also on the way out of a failed call) the copy into `back` and the buffer's stream-ordered free must precede.
  const size_t statBytes = (size_t)N * VS_FIELDS * sizeof(double), bytes = statBytes + (size_t)N * sizeof(int32_t);
  std::vector<char> back(bytes);
  StreamBuffer result(bytes, stream.get(), "a vocabulary shard's statistics", exec.device);
  cuda::CallIo io(nullptr, call.tokens, N, nullptr, false, false, exec.device, stream.get());

  cuda::DeviceCall dc;
  dc.N = N;
  dc.V = call.V;
  dc.invTau = (float)(1.0 / call.temperature);
  dc.dtype = call.dtype;
  dc.tok = io.tok();
  dc.tok.vocabStart = call.vocabStart;
  dc.shardStats = result.as<double>();
  dc.shardStatus = reinterpret_cast<int32_t*>(result.as<char>() + statBytes);
  if (exec.onDevice) {
    cuda::vocab_shard_stats(dc, cuda::Chunk{0, N, call.logits, nullptr, nullptr, nullptr}, cuda::PHASE_FORWARD,
                            stream.get());
  } else {
    cuda::Staging staging(dc, cuda::Tensors{call.logits, nullptr, nullptr, nullptr}, exec.device,
                          cuda::tuning_of(exec).stagingBytes);
    staging.run(cuda::vocab_shard_stats, cuda::PHASE_FORWARD, stream.get());
  }
  cuda_check(cudaMemcpyAsync(back.data(), result.as<char>(), bytes, cudaMemcpyDeviceToHost, stream.get()),
             "cudaMemcpyAsync (shard statistics)");
  result = StreamBuffer();
  io.finish();

  const int32_t* status = reinterpret_cast<const int32_t*>(back.data() + statBytes);
  for (int64_t i = 0; i < N; ++i)
    if (status[i] != ROW_OK) throw_row_error(status[i], i, call.tensorName.c_str(), call.tokens[i]);
  memcpy(call.out, back.data(), statBytes);
}

}  // namespace papo
