#include "cuda/call_io.h"

#include <string.h>

#include <vector>

#include "core/vocab_stats.h"
#include "cuda/cuda_resources.h"

namespace papo {
namespace cuda {

namespace {

size_t align(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

CallIo::CallIo(const PapoCall* call, const int32_t* tokens, int64_t N, const TokenWeights* w, bool masked,
               bool hostRows, int device, cudaStream_t stream)
    : stream_(stream), N_(N) {
  struct Part {
    const void* src;
    size_t bytes, off;
  };
  std::vector<Part> parts;
  size_t total = 0;
  auto add = [&](const void* src, size_t bytes) -> size_t {
    if (!src) return SIZE_MAX;
    total = align(total, 16);
    parts.push_back({src, bytes, total});
    total += bytes;
    return parts.back().off;
  };
  const size_t n = (size_t)N;
  const size_t oTok = add(tokens, n * 4);
  size_t oAdv = SIZE_MAX, oMask = SIZE_MAX, oOld = SIZE_MAX, oRef = SIZE_MAX, oRoll = SIZE_MAX, oMlp = SIZE_MAX,
         oWa = SIZE_MAX, oWe = SIZE_MAX, oWk = SIZE_MAX, oWs = SIZE_MAX, oVs = SIZE_MAX, oMvs = SIZE_MAX;
  if (call) {
    oAdv = add(call->advantages, n * 4);
    oMask = add(call->mask, n * 4);
    oOld = add(call->oldLogProbs, n * 4);
    oRef = add(call->refLogProbs, n * 4);
    oRoll = add(call->rolloutLogProbs, n * 4);
    oMlp = add(call->maskedLogProbs, n * 4);
    oWa = add(w->agg.data(), n * 8);
    oWe = w->entropyIsAgg ? oWa : add(w->entropy.data(), n * 8);  // uploaded once when they are the same
    oWk = add(w->kp.empty() ? nullptr : w->kp.data(), n * 8);
    oWs = add(w->sft.empty() ? nullptr : w->sft.data(), n * 8);
    oVs = add(call->vocabStats, n * 8 * VS_FIELDS);
    oMvs = add(call->maskedVocabStats, n * 8 * VS_FIELDS);
  }
  resultsBytes_ = results_bytes(N, masked);
  const size_t rowsOffset = align(total, 256), rowsBytes = n * sizeof(RowOut);
  const size_t devResults = align(rowsOffset + rowsBytes, 256);
  const size_t hostResults = hostRows ? devResults : rowsOffset;
  host_ = PooledBuffer(PoolKind::CallIo, device, hostResults + resultsBytes_, "the per-token inputs and results");
  char* pin = host_.as<char>();
  for (const Part& p : parts) memcpy(pin + p.off, p.src, p.bytes);
  if (hostRows) hostRows_ = reinterpret_cast<RowOut*>(pin + rowsOffset);
  hostResults_ = pin + hostResults;

  dev_ = StreamBuffer(devResults + resultsBytes_, stream, "the per-token inputs and per-row results", device);
  char* base = dev_.as<char>();
  rows_ = reinterpret_cast<RowOut*>(base + rowsOffset);
  results_ = base + devResults;
  // On the call's stream: every kernel of the call is ordered after it (directly, or through the staging
  // slots' wait for this stream). The source is pinned: the copy reads it when the stream gets there, and the
  // buffer goes back to the pool only after the stream's last wait.
  cuda_check(cudaMemcpyAsync(base, pin, total, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (per-token inputs)");
  auto at = [base](size_t off) -> void* { return off == SIZE_MAX ? nullptr : base + off; };
  tok_.tokens = static_cast<const int32_t*>(at(oTok));
  tok_.advantages = static_cast<const float*>(at(oAdv));
  tok_.mask = static_cast<const float*>(at(oMask));
  tok_.oldLogProbs = static_cast<const float*>(at(oOld));
  tok_.refLogProbs = static_cast<const float*>(at(oRef));
  tok_.rolloutLogProbs = static_cast<const float*>(at(oRoll));
  tok_.maskedLogProbs = static_cast<const float*>(at(oMlp));
  tok_.wAgg = static_cast<const double*>(at(oWa));
  tok_.wEnt = static_cast<const double*>(at(oWe));
  tok_.wKp = static_cast<const double*>(at(oWk));
  tok_.wSft = static_cast<const double*>(at(oWs));
  tok_.vocabStats = static_cast<const double*>(at(oVs));
  tok_.maskedVocabStats = static_cast<const double*>(at(oMvs));
  if (call) tok_.vocabStart = call->vocabStart;
}

CallIo::~CallIo() {
  if (finished_) return;
  dev_ = StreamBuffer();
  cudaStreamSynchronize(stream_);
  cudaGetLastError();
}

void CallIo::fetch_results(const DeviceCall& dc) {
  launch_results(dc, results_, stream_);
  cuda_check(cudaMemcpyAsync(hostResults_, results_, resultsBytes_, cudaMemcpyDeviceToHost, stream_),
             "cudaMemcpyAsync (results)");
}

void CallIo::fetch_rows() {
  cuda_check(cudaMemcpyAsync(hostRows_, rows_, N_ * sizeof(RowOut), cudaMemcpyDeviceToHost, stream_),
             "cudaMemcpyAsync (per-row results)");
}

void CallIo::upload_rows() {
  cuda_check(cudaMemcpyAsync(rows_, hostRows_, N_ * sizeof(RowOut), cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync (token terms)");
}

void CallIo::wait() { cuda_check(cudaStreamSynchronize(stream_), "the CUDA kernels"); }

void CallIo::finish() {
  dev_ = StreamBuffer();
  finished_ = true;  // whatever the wait says: the destructor has nothing left to wait for
  wait();
}

}  // namespace cuda
}  // namespace papo
