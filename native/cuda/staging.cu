#include "cuda/staging.h"

#include <string.h>

#include <algorithm>

#include "core/thread_pool.h"

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

Staging::Staging(const DeviceCall& dc, const Tensors& t, int device, int64_t budget) : dc_(dc), t_(t) {
  const int64_t V = dc.V;
  esz_ = (int64_t)dtype_bytes(dc.dtype);
  gsz_ = (int64_t)dtype_bytes(dc.gradType);
  paths_ = t.maskedLogits ? 2 : 1;
  g1_ = t.grad != nullptr;
  g2_ = t.maskedGrad != nullptr;
  const int64_t rowBytes = V * (esz_ * paths_ + gsz_ * ((int)g1_ + (int)g2_));
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
