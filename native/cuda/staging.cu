#include "cuda/staging.h"

#include <string.h>

#include <algorithm>

#include "core/thread_pool.h"
#include "core/vocab_stats.h"

namespace papo {
namespace cuda {

namespace {

// memcpy of large host ranges on the thread pool: one core copies ~10 GB/s, the staging needs more.
void host_copy(void* dst, const void* src, size_t bytes) {
  constexpr int64_t kPiece = 4 << 20;
  if ((int64_t)bytes <= kPiece) {
    memcpy(dst, src, bytes);
    return;
  }
  const int64_t pieces = ((int64_t)bytes + kPiece - 1) / kPiece;
  ThreadPool::instance().parallel_for(pieces, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const size_t off = (size_t)i * kPiece, n = std::min<size_t>(kPiece, bytes - off);
      memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, n);
    }
  });
}

}  // namespace

CallBuffers upload_tokens(const PapoCall* call, const int32_t* tokens, int64_t N, const TokenWeights* w, int device,
                          cudaStream_t stream) {
  struct Part {
    const void* src;
    size_t bytes, off;
  };
  std::vector<Part> parts;
  size_t total = 0;
  auto add = [&](const void* src, size_t bytes) -> size_t {
    if (!src) return SIZE_MAX;
    total = (total + 15) & ~(size_t)15;
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
    oWe = add(w->entropy.data(), n * 8);
    oWk = add(w->kp.empty() ? nullptr : w->kp.data(), n * 8);
    oWs = add(w->sft.empty() ? nullptr : w->sft.data(), n * 8);
    oVs = add(call->vocabStats, n * 8 * VS_FIELDS);
    oMvs = add(call->maskedVocabStats, n * 8 * VS_FIELDS);
  }
  CallBuffers up;
  up.host.resize(total);
  for (const Part& p : parts) memcpy(up.host.data() + p.off, p.src, p.bytes);
  const size_t outOffset = (total + 255) & ~(size_t)255;
  up.dev = StreamBuffer(outOffset + n * sizeof(RowOut), stream, "the per-token inputs and per-row results");
  char* base = up.dev.as<char>();
  up.out = reinterpret_cast<RowOut*>(base + outOffset);
  // On the call's stream: every kernel of the call is ordered after it (directly, or through the staging
  // slots' wait for this stream).
  cuda_check(cudaMemcpyAsync(base, up.host.data(), total, cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync (per-token inputs)");
  auto at = [base](size_t off) -> void* { return off == SIZE_MAX ? nullptr : base + off; };
  up.tok.tokens = static_cast<const int32_t*>(at(oTok));
  up.tok.advantages = static_cast<const float*>(at(oAdv));
  up.tok.mask = static_cast<const float*>(at(oMask));
  up.tok.oldLogProbs = static_cast<const float*>(at(oOld));
  up.tok.refLogProbs = static_cast<const float*>(at(oRef));
  up.tok.rolloutLogProbs = static_cast<const float*>(at(oRoll));
  up.tok.maskedLogProbs = static_cast<const float*>(at(oMlp));
  up.tok.wAgg = static_cast<const double*>(at(oWa));
  up.tok.wEnt = static_cast<const double*>(at(oWe));
  up.tok.wKp = static_cast<const double*>(at(oWk));
  up.tok.wSft = static_cast<const double*>(at(oWs));
  up.tok.vocabStats = static_cast<const double*>(at(oVs));
  up.tok.maskedVocabStats = static_cast<const double*>(at(oMvs));
  if (call) up.tok.vocabStart = call->vocabStart;
  return up;
}


std::vector<RowOut> fetch_rows(const RowOut* out, int64_t N, cudaStream_t stream) {
  std::vector<RowOut> rows(N);
  cuda_check(cudaMemcpyAsync(rows.data(), out, N * sizeof(RowOut), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync (per-row results)");
  cuda_check(cudaStreamSynchronize(stream), "the CUDA kernels");
  return rows;
}


Staging::Staging(const DeviceCall& dc, const Tensors& t, int device) : dc_(dc), t_(t) {
  const int64_t V = dc.V;
  esz_ = (int64_t)dtype_bytes(dc.dtype);
  gsz_ = (int64_t)dtype_bytes(dc.gradType);
  paths_ = t.maskedLogits ? 2 : 1;
  g1_ = t.grad != nullptr;
  g2_ = t.maskedGrad != nullptr;
  const int64_t rowBytes = V * (esz_ * paths_ + gsz_ * ((int)g1_ + (int)g2_));
  const int64_t budget = std::max<int64_t>(1, env_int64("PAPO_CUDA_STAGING_MB", 256)) << 20;
  R_ = std::min<int64_t>(dc.N, std::max<int64_t>(1, budget / rowBytes));
  outOffset_ = (R_ * V * esz_ * paths_ + 255) / 256 * 256;
  const int64_t bytes = outOffset_ + R_ * V * gsz_ * ((int)g1_ + (int)g2_);
  const int nslots = R_ < dc.N ? 2 : 1;
  for (int i = 0; i < nslots; ++i) slots_.emplace_back(new Slot(device, bytes));
}

void Staging::run(RunRows run, int32_t phase, cudaStream_t callStream) {
  const bool back = phase & cuda::PHASE_BACKWARD;
  const bool w1 = back && g1_, w2 = back && g2_;
  {
    Event ready;
    ready.record(callStream);
    for (auto& s : slots_)
      cuda_check(cudaStreamWaitEvent(s->stream.get(), ready.get(), 0), "cudaStreamWaitEvent (staging after the call)");
  }
  const int64_t V = dc_.V;
  int64_t c = 0;
  for (int64_t r0 = 0; r0 < dc_.N; r0 += R_, ++c) {
    Slot& s = *slots_[c % slots_.size()];
    finish(s);
    const int64_t rows = std::min(R_, dc_.N - r0);
    const int64_t inBytes = rows * V * esz_, outBytes = rows * V * gsz_;
    char* pin = s.host.as<char>();
    char* din = s.dev.as<char>();
    char* pinM = pin + R_ * V * esz_;  // the masked chunk follows the whole chunk of logits
    char* dinM = din + R_ * V * esz_;
    host_copy(pin, static_cast<const char*>(t_.logits) + r0 * V * esz_, inBytes);
    if (paths_ == 2) host_copy(pinM, static_cast<const char*>(t_.maskedLogits) + r0 * V * esz_, inBytes);
    cuda_check(cudaMemcpyAsync(din, pin, inBytes, cudaMemcpyHostToDevice, s.stream.get()), "cudaMemcpyAsync (logits)");
    if (paths_ == 2)
      cuda_check(cudaMemcpyAsync(dinM, pinM, inBytes, cudaMemcpyHostToDevice, s.stream.get()),
                 "cudaMemcpyAsync (maskedLogits)");
    // Gradients after the logits: grad at outOffset_, the masked one a whole chunk further.
    char* dout = din + outOffset_;
    char* doutM = dout + (g1_ ? R_ * V * gsz_ : 0);
    char* pout = pin + outOffset_;
    char* poutM = pout + (doutM - dout);
    run(dc_, Chunk{r0, rows, din, paths_ == 2 ? dinM : nullptr, w1 ? dout : nullptr, w2 ? doutM : nullptr}, phase,
        s.stream.get());
    if (w1) cuda_check(cudaMemcpyAsync(pout, dout, outBytes, cudaMemcpyDeviceToHost, s.stream.get()), "cudaMemcpyAsync (gradLogits)");
    if (w2)
      cuda_check(cudaMemcpyAsync(poutM, doutM, outBytes, cudaMemcpyDeviceToHost, s.stream.get()),
                 "cudaMemcpyAsync (gradMaskedLogits)");
    s.done.record(s.stream.get());
    s.recorded = true;
    s.pendingBegin = r0;
    s.pendingRows = rows;
    s.pendingGrads = back;
  }
  for (auto& s : slots_) {
    finish(*s);
    // The host has seen the slot finish, but the call's stream must not depend on that: order it explicitly.
    if (s->recorded) cuda_check(cudaStreamWaitEvent(callStream, s->done.get(), 0), "cudaStreamWaitEvent (the call after staging)");
  }
}

void Staging::finish(Slot& s) {
  if (s.pendingBegin < 0) return;
  s.done.sync();
  const int64_t V = dc_.V, bytes = s.pendingRows * V * gsz_, off = s.pendingBegin * V * gsz_;
  const char* pout = s.host.as<char>() + outOffset_;
  if (s.pendingGrads && g1_) host_copy(static_cast<char*>(t_.grad) + off, pout, bytes);
  if (s.pendingGrads && g2_) host_copy(static_cast<char*>(t_.maskedGrad) + off, pout + (g1_ ? R_ * V * gsz_ : 0), bytes);
  s.pendingBegin = -1;
}

}  // namespace cuda
}  // namespace papo
