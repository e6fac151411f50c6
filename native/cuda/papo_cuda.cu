// The CUDA backend's host side: per-token inputs up, per-row results down (both O(N)), the logits either
// already on the device or staged through pinned memory in chunks of rows on two streams (copies of one chunk
// overlap the kernels of the other), and the reduction of the CPU backend (aggregation.cpp) over the per-token
// terms the kernels computed.
//
// Ordering. Every call has one stream: the logits' own for device data (CudaExec), else a non-blocking stream
// of the call's. The per-token upload is enqueued on it; the staging slots' streams wait for it (an event) before
// their first chunk, and it waits for the slots (events) before the per-row results are read back. Nothing
// relies on the legacy stream's implicit synchronisation: our own streams are non-blocking.
//
// In place, every row is checked by a forward pass before the first gradient overwrites a logit, as on the
// CPU: a rejected call leaves the caller's logits intact.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../aggregation.h"
#include "../sequence_terms.h"
#include "../thread_pool.h"
#include "../row_errors.h"
#include "cuda_resources.h"
#include "device_call.h"
#include "driver_api.h"
#include "papo_cuda.h"
#include "staging_pool.h"

namespace papo {

void throw_out_of_memory(const char* kind, size_t bytes, const char* what) {
  std::string msg = std::string("out of ") + kind + " memory: " + what + " needs " + std::to_string(bytes) + " bytes";
  size_t freeB = 0, totalB = 0;
  if (std::string(kind) == "device" && cudaMemGetInfo(&freeB, &totalB) == cudaSuccess)
    msg += " (" + std::to_string(freeB) + " of " + std::to_string(totalB) + " bytes free)";
  cudaGetLastError();
  throw Error(ErrorCode::OutOfMemory, msg);
}

namespace {

using cuda::Chunk;
using cuda::DeviceCall;
using cuda::RowOut;

int64_t dtype_size(int32_t dtype) { return dtype == DT_F32 ? 4 : 2; }

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

// A call's small device data in one pooled buffer (staging_pool.h): the per-token arrays (uploaded with one
// copy, 16-byte aligned parts), then the per-row results. The host image of the upload stays alive with it: the
// copy is asynchronous, so its source must outlive it (the call synchronises its stream before this goes).
struct CallBuffers {
  std::vector<char> host;
  PooledBuffer dev;
  cuda::TokenInputs tok;
  RowOut* out = nullptr;
};

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
         oWa = SIZE_MAX, oWe = SIZE_MAX, oWk = SIZE_MAX, oWs = SIZE_MAX;
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
  }
  CallBuffers up;
  up.host.resize(total);
  for (const Part& p : parts) memcpy(up.host.data() + p.off, p.src, p.bytes);
  const size_t outOffset = (total + 255) & ~(size_t)255;
  up.dev = PooledBuffer(PoolKind::Device, device, outOffset + n * sizeof(RowOut),
                        "the per-token inputs and per-row results");
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
  return up;
}

using RunRows = void (*)(const DeviceCall&, const Chunk&, int32_t, cudaStream_t);

// Where the logits and gradients of the call live, host or device; null: absent.
struct Tensors {
  const void* logits;
  const void* maskedLogits;
  void* grad;
  void* maskedGrad;
};

// Host data: chunks of rows through two staging slots, each with its own stream, a pinned buffer and a device
// buffer (both lent by the staging pool, staging_pool.h). Device memory stays bounded by PAPO_CUDA_STAGING_MB
// (per slot, default 256) whatever N is. The slots are sized for the call's gradients, so that the forward and
// the backward phase of an in-place call use the same chunks and buffers.
class Staging {
 public:
  Staging(const DeviceCall& dc, const Tensors& t, int device) : dc_(dc), t_(t) {
    const int64_t V = dc.V;
    esz_ = dtype_size(dc.dtype);
    gsz_ = dtype_size(dc.gradType);
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

  // One phase over every row. Its work is ordered after what `callStream` holds so far (the per-token upload;
  // before a backward phase, the forward's per-row results), and callStream's later work after it.
  void run(RunRows run, int32_t phase, cudaStream_t callStream) {
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

 private:
  struct Slot {
    PooledBuffer host, dev;  // [logits | masked logits | gradients | masked gradients] of one chunk
    Stream stream = Stream::own();
    Event done;
    bool recorded = false;
    bool pendingGrads = false;
    int64_t pendingBegin = -1, pendingRows = 0;
    Slot(int device, int64_t bytes)
        : host(PoolKind::Pinned, device, (size_t)bytes, "the pinned staging of the logits and gradients"),
          dev(PoolKind::Device, device, (size_t)bytes, "a chunk of logits and gradients") {}
    // Nothing may still use the buffers when they go back to the pool (members are destroyed after this).
    ~Slot() {
      cudaStreamSynchronize(stream.get());
      cudaGetLastError();
    }
  };

  // Waits for the slot's chunk and copies its gradients out to the caller's buffers.
  void finish(Slot& s) {
    if (s.pendingBegin < 0) return;
    s.done.sync();
    const int64_t V = dc_.V, bytes = s.pendingRows * V * gsz_, off = s.pendingBegin * V * gsz_;
    const char* pout = s.host.as<char>() + outOffset_;
    if (s.pendingGrads && g1_) host_copy(static_cast<char*>(t_.grad) + off, pout, bytes);
    if (s.pendingGrads && g2_) host_copy(static_cast<char*>(t_.maskedGrad) + off, pout + (g1_ ? R_ * V * gsz_ : 0), bytes);
    s.pendingBegin = -1;
  }

  const DeviceCall& dc_;
  Tensors t_;
  int64_t esz_, gsz_, R_, outOffset_;
  int paths_;
  bool g1_, g2_;
  std::vector<std::unique_ptr<Slot>> slots_;
};

// Runs the phases of one call on its stream: directly on device data, through the staging slots for host data.
class Phases {
 public:
  Phases(const DeviceCall& dc, const Tensors& t, const CudaExec& exec, cudaStream_t stream)
      : dc_(dc), t_(t), stream_(stream), run_(dc.kernel == KERNEL_NAIVE ? cuda::run_rows_naive : cuda::run_rows_fused) {
    if (!exec.onDevice) staging_.reset(new Staging(dc, t, exec.device));
  }
  void run(int32_t phase) {
    if (staging_) return staging_->run(run_, phase, stream_);
    const bool back = phase & cuda::PHASE_BACKWARD;
    run_(dc_, Chunk{0, dc_.N, t_.logits, t_.maskedLogits, back ? t_.grad : nullptr, back ? t_.maskedGrad : nullptr},
         phase, stream_);
  }

 private:
  const DeviceCall& dc_;
  Tensors t_;
  cudaStream_t stream_;
  RunRows run_;
  std::unique_ptr<Staging> staging_;
};

std::vector<RowOut> fetch_rows(const RowOut* out, int64_t N, cudaStream_t stream) {
  std::vector<RowOut> rows(N);
  cuda_check(cudaMemcpyAsync(rows.data(), out, N * sizeof(RowOut), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync (per-row results)");
  cuda_check(cudaStreamSynchronize(stream), "the CUDA kernels");
  return rows;
}

void check_rows(const std::vector<RowOut>& rows, const int32_t* tokens) {
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].status != ROW_OK)
      throw_row_error(rows[i].status, (int64_t)i, rows[i].onMasked ? "maskedLogits" : "logits", tokens[i]);
}

// The sequence phase between the forward and the backward: every row's terms on the host from the per-row
// results (sequence_terms.h), written into them and uploaded for the backward phase to read.
void host_terms(const PapoCall& call, const TokenWeights& w, std::vector<RowOut>& rows, RowOut* out,
                cudaStream_t stream) {
  std::vector<RowValues> values(call.N);
  for (int64_t i = 0; i < call.N; ++i)
    values[i] = RowValues{rows[i].lp, rows[i].a, rows[i].s.entropy, call.maskedLogits ? rows[i].ms.entropy : 0.0};
  std::vector<TokenTerms> terms(call.N);
  sequence_terms(call, w, values.data(), terms.data());
  for (int64_t i = 0; i < call.N; ++i) rows[i].t = terms[i];
  // From pageable memory: the copy has taken the source before it returns, so `rows` may change afterwards.
  cuda_check(cudaMemcpyAsync(out, rows.data(), call.N * sizeof(RowOut), cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync (token terms)");
}

int32_t kernel_choice(int32_t requested) {
  // PAPO_CUDA_KERNEL=1|2|3 picks the fast family for experiments; the naive backend is always the naive chain.
  if (requested == KERNEL_NAIVE) return KERNEL_NAIVE;
  const int64_t forced = env_int64("PAPO_CUDA_KERNEL", 0);
  return forced == KERNEL_TWO_PASS || forced == KERNEL_FUSED || forced == KERNEL_CLUSTER ? (int32_t)forced : requested;
}

DeviceCall device_call(int64_t N, int64_t V, double temperature, int32_t dtype, const CallBuffers& up) {
  DeviceCall dc;
  dc.N = N;
  dc.V = V;
  dc.invTau = (float)(1.0 / temperature);
  dc.dtype = dtype;
  dc.tok = up.tok;
  dc.out = up.out;
  return dc;
}

// Device data whose masked logits belong to another stream than the logits (CudaExec::maskedStream): the call
// runs on the logits' stream after the masked stream's work so far (its producer's writes), and the masked
// stream's later work waits for the call (which reads those logits and may write their gradient or, in place,
// over them). Both through events: neither stream blocks the host.
class MaskedStreamJoin {
 public:
  MaskedStreamJoin(const CudaExec& exec, cudaStream_t call) : call_(call) {
    if (!exec.onDevice || !exec.hasMaskedStream || exec.maskedStream == exec.stream) return;
    masked_ = reinterpret_cast<cudaStream_t>(exec.maskedStream);
    stream_after(call_, masked_, "cudaStreamWaitEvent (the call after maskedLogits' stream)");
    pending_ = true;
  }
  // At the end of a successful call (errors reported); the destructor does it on the way out of a failed one.
  void finish() {
    if (!pending_) return;
    pending_ = false;
    stream_after(masked_, call_, "cudaStreamWaitEvent (maskedLogits' stream after the call)");
  }
  ~MaskedStreamJoin() {
    try {
      finish();
    } catch (...) {
    }
  }
  MaskedStreamJoin(const MaskedStreamJoin&) = delete;
  MaskedStreamJoin& operator=(const MaskedStreamJoin&) = delete;

 private:
  cudaStream_t call_, masked_ = nullptr;
  bool pending_ = false;
};

// Waits for the call's stream when the call ends, also when it ends with an exception: the buffers the call
// took (declared before this) must not go back to the pool under kernels still running.
struct DrainOnExit {
  cudaStream_t stream;
  ~DrainOnExit() {
    cudaStreamSynchronize(stream);
    cudaGetLastError();
  }
};

}  // namespace

PapoMetrics papo_loss_cuda(const PapoCall& call, const CudaExec& exec) {
  if (call.maskedLogits && call.maskedDtype != call.dtype)
    throw Error(ErrorCode::InvalidArgument, "maskedLogits: the CUDA backend needs the same dtype as logits");
  if (call.gradLogits && call.gradMaskedLogits && call.gradType != call.gradMaskedType)
    throw Error(ErrorCode::InvalidArgument, "gradMaskedType: the CUDA backend needs one gradient type for both paths");

  DeviceScope scope(exec.device);
  Stream stream = exec.onDevice ? Stream::borrow(exec.stream) : Stream::own();
  MaskedStreamJoin join(exec, stream.get());
  const TokenWeights w = token_weights(call);
  const CallBuffers up = upload_tokens(&call, call.tokens, call.N, &w, exec.device, stream.get());
  DrainOnExit drain{stream.get()};

  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up);
  dc.gradType = call.gradLogits ? call.gradType : call.gradMaskedType;
  dc.hasMaskedLogits = call.maskedLogits != nullptr;
  dc.params = call.params;
  // GSPO and perception top-p: statistics of every row, the terms per sequence on the host, then the gradients
  // (one more read of the logits).
  dc.kernel = kernel_choice(exec.kernel);
  if (needs_sequence_phase(call.params)) {
    dc.terms = cuda::TERMS_HOST;
    // Two streaming phases: v1's full grid (v2 sizes its grid to re-read rows from L2, which no phase does here).
    if (dc.kernel != KERNEL_NAIVE) dc.kernel = KERNEL_TWO_PASS;
  }
  dc.blocks = cuda::fused_blocks(dc);

  const Tensors t{call.logits, call.maskedLogits, call.gradLogits, call.gradMaskedLogits};
  const bool wantGrad = t.grad || t.maskedGrad;
  const bool inPlace = (t.grad && t.grad == t.logits) || (t.maskedGrad && t.maskedGrad == t.maskedLogits);
  Phases phases(dc, t, exec, stream.get());
  std::vector<RowOut> rows;
  if (dc.terms == cuda::TERMS_HOST) {
    phases.run(cuda::PHASE_FORWARD);
    rows = fetch_rows(up.out, call.N, stream.get());
    check_rows(rows, call.tokens);
    host_terms(call, w, rows, up.out, stream.get());
    if (wantGrad) phases.run(cuda::PHASE_BACKWARD);
    stream.sync();
  } else if (wantGrad && inPlace) {
    phases.run(cuda::PHASE_FORWARD);
    rows = fetch_rows(up.out, call.N, stream.get());
    check_rows(rows, call.tokens);
    phases.run(cuda::PHASE_BACKWARD);
    stream.sync();
  } else {
    phases.run(wantGrad ? cuda::PHASE_BOTH : cuda::PHASE_FORWARD);
    rows = fetch_rows(up.out, call.N, stream.get());
    check_rows(rows, call.tokens);
  }
  join.finish();

  std::vector<TokenTerms> terms(call.N);
  std::vector<double> H(call.N), Hm(call.maskedLogits ? call.N : 0);
  for (int64_t i = 0; i < call.N; ++i) {
    const RowOut& o = rows[i];
    terms[i] = o.t;
    H[i] = o.s.entropy;
    call.outLogProbs[i] = (float)o.lp;
    call.outEntropy[i] = (float)o.s.entropy;
    if (call.maskedLogits) {
      Hm[i] = o.ms.entropy;
      call.outMaskedLogProbs[i] = (float)o.a;
      call.outMaskedEntropy[i] = (float)o.ms.entropy;
    }
  }
  return reduce_terms(call, w, terms.data(), H.data(), call.maskedLogits ? Hm.data() : nullptr);
}

void log_probs_cuda(const LogProbsCall& call, const CudaExec& exec) {
  DeviceScope scope(exec.device);
  Stream stream = exec.onDevice ? Stream::borrow(exec.stream) : Stream::own();
  const CallBuffers up = upload_tokens(nullptr, call.tokens, call.N, nullptr, exec.device, stream.get());
  DrainOnExit drain{stream.get()};
  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up);
  dc.terms = cuda::TERMS_NONE;
  dc.kernel = kernel_choice(exec.kernel) == KERNEL_NAIVE ? KERNEL_NAIVE : KERNEL_TWO_PASS;  // full grid: no re-read
  dc.blocks = cuda::fused_blocks(dc);
  Phases phases(dc, Tensors{call.logits, nullptr, nullptr, nullptr}, exec, stream.get());
  phases.run(cuda::PHASE_FORWARD);
  const std::vector<RowOut> rows = fetch_rows(up.out, call.N, stream.get());
  check_rows(rows, call.tokens);
  for (int64_t i = 0; i < call.N; ++i) {
    call.outLogProbs[i] = (float)rows[i].lp;
    call.outEntropy[i] = (float)rows[i].s.entropy;
  }
}

// ---- DeviceTensor memory ---------------------------------------------------------------------------------------

void* cuda_alloc(size_t bytes, int device) {
  DeviceScope scope(device);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw_out_of_memory("device", bytes, "the DeviceTensor");
  }
  cuda_check(err, "cudaMalloc");
  return p;
}

void cuda_free(void* ptr, int device) noexcept {
  try {
    DeviceScope scope(device);
    cudaFree(ptr);
  } catch (...) {  // the device cannot be made current: nothing can free the memory now
  }
  cudaGetLastError();
}

void cuda_copy(void* dst, const void* src, size_t bytes, bool toDevice, int device, uint64_t stream) {
  DeviceScope scope(device);
  const Stream s = Stream::borrow(stream);
  cuda_check(cudaMemcpyAsync(dst, src, bytes, toDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s.get()),
             toDevice ? "cudaMemcpyAsync (upload)" : "cudaMemcpyAsync (download)");
  s.sync();
}

// Both on a stream of their own and waiting for that stream only: a device-wide synchronisation would wait for
// (and delay) every other stream's work on the device.
void cuda_copy_d2d(void* dst, const void* src, size_t bytes, int device) {
  DeviceScope scope(device);
  const Stream s = Stream::own();
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s.get()), "cudaMemcpyAsync (device to device)");
  s.sync();
}

void cuda_memset_zero(void* ptr, size_t bytes, int device) {
  DeviceScope scope(device);
  const Stream s = Stream::own();
  cuda_check(cudaMemsetAsync(ptr, 0, bytes, s.get()), "cudaMemsetAsync");
  s.sync();
}

namespace {
std::string hex(uintptr_t a) {
  char buf[2 + 16 + 1];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)a);
  return buf;
}
}  // namespace

void cuda_check_pointer(const void* ptr, size_t bytes, int device, const char* name) {
  // With the call's device current: without a current context the runtime would create one for whatever
  // device the thread reports (0 on a fresh thread).
  DeviceScope scope(device);
  cudaPointerAttributes a{};
  cuda_check(cudaPointerGetAttributes(&a, ptr), "cudaPointerGetAttributes");
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer is not CUDA device memory");
  if (a.device != device)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer belongs to device " +
                                                std::to_string(a.device) + ", not device " + std::to_string(device));
  // The whole range must lie in the allocation the pointer starts in: a tensor wrapped with dims too large for
  // its memory would otherwise have the kernels read (and write) past its end.
  // Memory mapped in pieces (cuMemMap, e.g. PyTorch's expandable segments) reports only the piece holding an
  // address: follow the pieces while each starts exactly where the last one ended.
  uintptr_t base = 0;
  size_t size = 0;
  if (!driver_address_range(ptr, &base, &size)) return;  // the driver cannot tell (no entry point): trust the caller
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t end = base + size;
  for (int piece = 0; piece < 4096 && p >= base && end - p < bytes; ++piece) {
    uintptr_t nextBase = 0;
    size_t nextSize = 0;
    if (!driver_address_range(reinterpret_cast<const void*>(end), &nextBase, &nextSize) || nextBase != end) break;
    end = nextBase + nextSize;
  }
  if (p < base || p >= end || bytes > end - p)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the device tensor needs " + std::to_string(bytes) +
                                                " bytes from " + hex(p) + ", but its allocation ends after " +
                                                std::to_string(p < end && p >= base ? end - p : 0) + " bytes (at " +
                                                hex(end) + ")");
}

CudaMemInfo cuda_mem_info(int device) {
  DeviceScope scope(device);
  CudaMemInfo m;
  cuda_check(cudaMemGetInfo(&m.free, &m.total), "cudaMemGetInfo");
  return m;
}

uint64_t cuda_stream_create(int device) {
  DeviceScope scope(device);
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return (uint64_t)reinterpret_cast<uintptr_t>(s);
}

void cuda_stream_destroy(uint64_t stream, int device) {
  if (!stream) throw Error(ErrorCode::InvalidArgument, "stream: the legacy default stream (0n) cannot be destroyed");
  DeviceScope scope(device);
  cuda_check(cudaStreamDestroy(reinterpret_cast<cudaStream_t>((uintptr_t)stream)), "cudaStreamDestroy");
}

}  // namespace papo
