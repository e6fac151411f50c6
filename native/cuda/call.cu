// The CUDA backend's host side: the plan (plan.h) says which kernels run and in which phases; the per-token inputs
// go up and the results come down in one copy each (call_io.h: the loss terms reduced on the device, O(N) bytes);
// the logits are either already on the device or staged through pinned memory in chunks of rows on two streams
// (staging.h: copies of one chunk overlap the kernels of the other).
//
// Ordering. Every call has one stream: the logits' own for device data (CudaExec), else a non-blocking stream
// of the call's. The per-token upload is enqueued on it; the staging slots' streams wait for it (an event) before
// their first chunk, and it waits for the slots (events) before the results are reduced and read back. Nothing
// relies on the legacy stream's implicit synchronisation: our own streams are non-blocking.
//
// A steady-state call on device data whose gradients go into `out` makes 10 runtime calls: cudaGetDevice, the
// scratch's cudaMallocFromPoolAsync, the upload, the row kernel and the results kernel (each a launch and
// cudaGetLastError), the download, cudaFreeAsync and cudaStreamSynchronize. Flows with phases apart wait for the
// forward phase once more in the middle: in place (to check every row before the first gradient overwrites a
// logit, as on the CPU: a rejected call leaves the caller's logits intact), and the sequence phase (whose terms
// the host computes from every row's statistics, copied down and up again, ~216 bytes a row each way). A
// vocabulary shard runs as in place does, its forward from the merged statistics (kernels/vocab_shard.cu).
#include <algorithm>
#include <memory>
#include <vector>

#include "core/reduce.h"
#include "core/row_status.h"
#include "core/sequence_phase.h"
#include "core/token_weights.h"
#include "cuda/call_io.h"
#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/papo_cuda.h"
#include "cuda/plan.h"
#include "cuda/staging.h"

namespace papo {

namespace {

using cuda::CallIo;
using cuda::Chunk;
using cuda::DeviceCall;
using cuda::Plan;
using cuda::RowOut;
using cuda::Staging;
using cuda::Tensors;

// Runs the phases of one call on its stream: directly on device data, through the staging slots for host data.
class Phases {
 public:
  Phases(const DeviceCall& dc, const Plan& p, const Tensors& t, const CudaExec& exec, cudaStream_t stream)
      : dc_(dc), plan_(p), t_(t), stream_(stream) {
    if (!exec.onDevice) staging_.reset(new Staging(dc, t, exec.device, cuda::tuning_of(exec).stagingBytes));
  }
  void run(int32_t phase) {
    // A vocabulary shard's forward reads the merged statistics, no logits: nothing to stage.
    if (dc_.tok.vocabStats && phase == cuda::PHASE_FORWARD)
      return plan_.run(dc_, Chunk{0, dc_.N, nullptr, nullptr, nullptr, nullptr}, phase, stream_);
    if (staging_) return staging_->run(plan_.run, phase, stream_);
    const bool back = phase & cuda::PHASE_BACKWARD;
    const Chunk all{0, dc_.N, t_.logits, t_.maskedLogits, back ? t_.grad : nullptr, back ? t_.maskedGrad : nullptr};
    plan_.run(dc_, all, phase, stream_);
  }

 private:
  const DeviceCall& dc_;
  const Plan& plan_;
  Tensors t_;
  cudaStream_t stream_;
  std::unique_ptr<Staging> staging_;
};

// The first failed row, as the CPU backend reports it.
void check_results(const cuda::ResultHeader& h, const int32_t* tokens) {
  if (h.badRow < 0) return;
  throw_row_error(h.badStatus, h.badRow, h.badOnMasked ? "maskedLogits" : "logits", tokens[h.badRow]);
}

void check_rows(const RowOut* rows, int64_t N, const int32_t* tokens) {
  for (int64_t i = 0; i < N; ++i)
    if (rows[i].status != ROW_OK)
      throw_row_error(rows[i].status, i, rows[i].onMasked ? "maskedLogits" : "logits", tokens[i]);
}

// The sequence phase between the forward and the backward: every row's terms on the host from the per-row
// results (core/sequence_phase.h), written into them for the upload that the backward phase reads.
void host_terms(const PapoCall& call, const TokenWeights& w, RowOut* rows) {
  std::vector<RowValues> values(call.N);
  for (int64_t i = 0; i < call.N; ++i)
    values[i] = RowValues{rows[i].lp, rows[i].a, rows[i].s.entropy, call.maskedLogits ? rows[i].ms.entropy : 0.0};
  std::vector<TokenTerms> terms(call.N);
  sequence_terms(call, w, values.data(), terms.data());
  for (int64_t i = 0; i < call.N; ++i) rows[i].t = terms[i];
}

DeviceCall device_call(int64_t N, int64_t V, double temperature, int32_t dtype, const CallIo& io, const Plan& p) {
  DeviceCall dc;
  dc.N = N;
  dc.V = V;
  dc.invTau = (float)(1.0 / temperature);
  dc.dtype = dtype;
  dc.tok = io.tok();
  dc.out = io.device_rows();
  dc.kernel = p.kernel;
  dc.terms = p.terms;
  dc.launch = p.launch;
  return dc;
}

// The per-token outputs of the results (call_results.h) into the caller's arrays.
void copy_outputs(const float* outs, int64_t N, float* lp, float* H, float* a, float* Hm) {
  std::copy(outs, outs + N, lp);
  std::copy(outs + N, outs + 2 * N, H);
  if (a) std::copy(outs + 2 * N, outs + 3 * N, a);
  if (Hm) std::copy(outs + 3 * N, outs + 4 * N, Hm);
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

}  // namespace

PapoMetrics papo_loss_cuda(const PapoCall& call, const CudaExec& exec) {
  if (call.maskedLogits && call.maskedDtype != call.dtype)
    throw Error(ErrorCode::InvalidArgument, "maskedLogits: the CUDA backend needs the same dtype as logits");
  if (call.gradLogits && call.gradMaskedLogits && call.gradType != call.gradMaskedType)
    throw Error(ErrorCode::InvalidArgument, "gradMaskedType: the CUDA backend needs one gradient type for both paths");

  DeviceScope scope(exec.device);
  const Tensors t{call.logits, call.maskedLogits, call.gradLogits, call.gradMaskedLogits};
  const bool wantGrad = t.grad || t.maskedGrad;
  const bool inPlace = (t.grad && t.grad == t.logits) || (t.maskedGrad && t.maskedGrad == t.maskedLogits);
  const cuda::Flow flow = needs_sequence_phase(call.params) ? cuda::FLOW_SEQUENCE
                          : !wantGrad                       ? cuda::FLOW_FORWARD
                          : inPlace || call.vocabStats      ? cuda::FLOW_CHECKED
                                                            : cuda::FLOW_FUSED;
  cuda::ShapeKey key;
  key.device = exec.device;
  key.dtype = call.dtype;
  key.gradType = call.gradLogits ? call.gradType : call.gradMaskedType;
  key.V = call.V;
  key.masked = call.maskedLogits != nullptr;
  Plan p = cuda::plan(key, exec.kernel, flow, cuda::tuning_of(exec));
  if (call.vocabStats) p.run = cuda::run_rows_shard;  // a shard's own kernels, whatever the version

  Stream stream = exec.onDevice ? Stream::borrow(exec.stream) : Stream::own();
  MaskedStreamJoin join(exec, stream.get());
  const TokenWeights w = token_weights(call);
  CallIo io(&call, call.tokens, call.N, &w, key.masked, flow == cuda::FLOW_SEQUENCE, exec.device, stream.get());
  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, io, p);
  dc.gradType = key.gradType;
  dc.hasMaskedLogits = key.masked;
  dc.params = call.params;

  Phases phases(dc, p, t, exec, stream.get());
  if (flow == cuda::FLOW_SEQUENCE) {
    phases.run(cuda::PHASE_FORWARD);
    io.fetch_rows();
    io.wait();
    RowOut* rows = io.host_rows();
    check_rows(rows, call.N, call.tokens);
    host_terms(call, w, rows);
    if (wantGrad) {
      io.upload_rows();
      phases.run(cuda::PHASE_BACKWARD);
    }
    io.finish();
    join.finish();
    std::vector<TokenTerms> terms(call.N);
    std::vector<double> H(call.N), Hm(key.masked ? call.N : 0);
    for (int64_t i = 0; i < call.N; ++i) {
      const RowOut& o = rows[i];
      terms[i] = o.t;
      H[i] = o.s.entropy;
      call.outLogProbs[i] = (float)o.lp;
      call.outEntropy[i] = (float)o.s.entropy;
      if (key.masked) {
        Hm[i] = o.ms.entropy;
        call.outMaskedLogProbs[i] = (float)o.a;
        call.outMaskedEntropy[i] = (float)o.ms.entropy;
      }
    }
    return reduce_terms(call, w, terms.data(), H.data(), key.masked ? Hm.data() : nullptr);
  }
  if (flow == cuda::FLOW_CHECKED) {
    phases.run(cuda::PHASE_FORWARD);
    io.fetch_results(dc);
    io.wait();
    check_results(io.header(), call.tokens);
    phases.run(cuda::PHASE_BACKWARD);
  } else {
    phases.run(flow == cuda::FLOW_FUSED ? cuda::PHASE_BOTH : cuda::PHASE_FORWARD);
    io.fetch_results(dc);
  }
  io.finish();
  join.finish();
  check_results(io.header(), call.tokens);
  copy_outputs(io.outputs(), call.N, call.outLogProbs, call.outEntropy, key.masked ? call.outMaskedLogProbs : nullptr,
               key.masked ? call.outMaskedEntropy : nullptr);
  return metrics_of(call, w, io.header().sums, {}, {});
}

void log_probs_cuda(const LogProbsCall& call, const CudaExec& exec) {
  DeviceScope scope(exec.device);
  cuda::ShapeKey key;
  key.device = exec.device;
  key.dtype = call.dtype;
  key.V = call.V;
  const Plan& p = cuda::plan(key, exec.kernel, cuda::FLOW_LOG_PROBS, cuda::tuning_of(exec));
  Stream stream = exec.onDevice ? Stream::borrow(exec.stream) : Stream::own();
  CallIo io(nullptr, call.tokens, call.N, nullptr, false, false, exec.device, stream.get());
  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, io, p);
  Phases phases(dc, p, Tensors{call.logits, nullptr, nullptr, nullptr}, exec, stream.get());
  phases.run(cuda::PHASE_FORWARD);
  io.fetch_results(dc);
  io.finish();
  check_results(io.header(), call.tokens);
  copy_outputs(io.outputs(), call.N, call.outLogProbs, call.outEntropy, nullptr, nullptr);
}

}  // namespace papo
