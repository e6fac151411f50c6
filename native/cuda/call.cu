// The CUDA backend's host side: per-token inputs up, per-row results down (both O(N)), the logits either
// already on the device or staged through pinned memory in chunks of rows on two streams (copies of one chunk
// overlap the kernels of the other), and the reduction of the CPU backend (core/reduce.h) over the per-token
// terms the kernels computed.
//
// Ordering. Every call has one stream: the logits' own for device data (CudaExec), else a non-blocking stream
// of the call's. The per-token upload is enqueued on it; the staging slots' streams wait for it (an event) before
// their first chunk, and it waits for the slots (events) before the per-row results are read back. Nothing
// relies on the legacy stream's implicit synchronisation: our own streams are non-blocking.
//
// In place, every row is checked by a forward pass before the first gradient overwrites a logit, as on the
// CPU: a rejected call leaves the caller's logits intact.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/reduce.h"
#include "core/row_status.h"
#include "core/sequence_phase.h"
#include "core/token_weights.h"
#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/papo_cuda.h"
#include "cuda/staging.h"

namespace papo {

namespace {

using cuda::CallBuffers;
using cuda::Chunk;
using cuda::DeviceCall;
using cuda::RowOut;
using cuda::RunRows;
using cuda::Staging;
using cuda::Tensors;
using cuda::fetch_rows;
using cuda::upload_tokens;

// Runs the phases of one call on its stream: directly on device data, through the staging slots for host data.
class Phases {
 public:
  Phases(const DeviceCall& dc, const Tensors& t, const CudaExec& exec, cudaStream_t stream)
      : dc_(dc), t_(t), stream_(stream),
        run_(dc.kernel == KERNEL_K0_NAIVE   ? cuda::run_rows_k0
             : dc.kernel == KERNEL_K4_SPLIT ? cuda::run_rows_k4
                                            : cuda::run_rows_k1_k2) {
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

void check_rows(const std::vector<RowOut>& rows, const int32_t* tokens) {
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].status != ROW_OK)
      throw_row_error(rows[i].status, (int64_t)i, rows[i].onMasked ? "maskedLogits" : "logits", tokens[i]);
}

// The sequence phase between the forward and the backward: every row's terms on the host from the per-row
// results (core/sequence_phase.h), written into them and uploaded for the backward phase to read.
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
  // PAPO_CUDA_KERNEL=1|2|3|4 picks the fast family for experiments; the naive backend is always the naive chain.
  if (requested == KERNEL_K0_NAIVE) return KERNEL_K0_NAIVE;
  const int64_t forced = env_int64("PAPO_CUDA_KERNEL", 0);
  return forced >= KERNEL_K1_TWO_PASS && forced <= KERNEL_K4_SPLIT ? (int32_t)forced : requested;
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

// Waits for the call's stream when the call ends, also when it ends with an exception: the host image of the
// per-token upload (declared before this) must outlive the copy that reads it. The device scratch is freed in
// stream order first, so that the wait also completes its free and any stream's next call may reuse it.
struct DrainOnExit {
  cudaStream_t stream;
  StreamBuffer& scratch;
  ~DrainOnExit() {
    scratch = StreamBuffer();
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
  CallBuffers up = upload_tokens(&call, call.tokens, call.N, &w, exec.device, stream.get());
  DrainOnExit drain{stream.get(), up.dev};

  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up);
  dc.gradType = call.gradLogits ? call.gradType : call.gradMaskedType;
  dc.hasMaskedLogits = call.maskedLogits != nullptr;
  dc.params = call.params;
  // GSPO and perception top-p: statistics of every row, the terms per sequence on the host, then the gradients
  // (one more read of the logits).
  dc.kernel = kernel_choice(exec.kernel);
  if (needs_sequence_phase(call.params)) {
    dc.terms = cuda::TERMS_HOST;
    // Two streaming phases: k1's full grid (k2 sizes its grid to re-read rows from L2, which no phase does here).
    if (dc.kernel != KERNEL_K0_NAIVE) dc.kernel = KERNEL_K1_TWO_PASS;
  }
  dc.blocks = dc.kernel == KERNEL_K4_SPLIT ? cuda::k4_blocks(dc) : cuda::k2_blocks(dc);

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
  CallBuffers up = upload_tokens(nullptr, call.tokens, call.N, nullptr, exec.device, stream.get());
  DrainOnExit drain{stream.get(), up.dev};
  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up);
  dc.terms = cuda::TERMS_NONE;
  dc.kernel = kernel_choice(exec.kernel) == KERNEL_K0_NAIVE ? KERNEL_K0_NAIVE : KERNEL_K1_TWO_PASS;  // full grid: no re-read
  dc.blocks = cuda::k2_blocks(dc);
  Phases phases(dc, Tensors{call.logits, nullptr, nullptr, nullptr}, exec, stream.get());
  phases.run(cuda::PHASE_FORWARD);
  const std::vector<RowOut> rows = fetch_rows(up.out, call.N, stream.get());
  check_rows(rows, call.tokens);
  for (int64_t i = 0; i < call.N; ++i) {
    call.outLogProbs[i] = (float)rows[i].lp;
    call.outEntropy[i] = (float)rows[i].s.entropy;
  }
}

}  // namespace papo
