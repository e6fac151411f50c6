// The CUDA backend's host side: per-token inputs up, per-row results down (both O(N)), the logits either
// already on the device or staged through pinned memory in chunks of rows on two streams (copies of one chunk
// overlap the kernels of the other), and the same reduction as the CPU backend (aggregation.cpp).
//
// In place, every row is checked by a forward pass before the first gradient overwrites a logit, as on the
// CPU: a rejected call leaves the caller's logits intact.
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../aggregation.h"
#include "../thread_pool.h"
#include "../row_errors.h"
#include "cuda_resources.h"
#include "device_call.h"
#include "papo_cuda.h"

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

int64_t env_int64(const char* name, int64_t fallback) {
  const char* v = getenv(name);
  return v && *v ? atoll(v) : fallback;
}

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

// The per-token arrays in one device buffer (one copy), 16-byte aligned parts.
struct TokenUpload {
  DeviceBuffer buf;
  cuda::TokenInputs tok;
};

TokenUpload upload_tokens(const PapoCall* call, const int32_t* tokens, int64_t N, const TokenWeights* w) {
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
  size_t oAdv = SIZE_MAX, oMask = SIZE_MAX, oOld = SIZE_MAX, oRef = SIZE_MAX, oMlp = SIZE_MAX, oWa = SIZE_MAX, oWe = SIZE_MAX;
  if (call) {
    oAdv = add(call->advantages, n * 4);
    oMask = add(call->mask, n * 4);
    oOld = add(call->oldLogProbs, n * 4);
    oRef = add(call->refLogProbs, n * 4);
    oMlp = add(call->maskedLogProbs, n * 4);
    oWa = add(w->agg.data(), n * 8);
    oWe = add(w->entropy.data(), n * 8);
  }
  std::vector<char> host(total);
  for (const Part& p : parts) memcpy(host.data() + p.off, p.src, p.bytes);
  TokenUpload up{DeviceBuffer(total, "the per-token inputs"), {}};
  // Synchronous from pageable memory: complete before any kernel of this call runs, on whatever stream.
  cuda_check(cudaMemcpy(up.buf.as(), host.data(), total, cudaMemcpyHostToDevice), "cudaMemcpy (per-token inputs)");
  char* base = up.buf.as<char>();
  auto at = [base](size_t off) -> void* { return off == SIZE_MAX ? nullptr : base + off; };
  up.tok.tokens = static_cast<const int32_t*>(at(oTok));
  up.tok.advantages = static_cast<const float*>(at(oAdv));
  up.tok.mask = static_cast<const float*>(at(oMask));
  up.tok.oldLogProbs = static_cast<const float*>(at(oOld));
  up.tok.refLogProbs = static_cast<const float*>(at(oRef));
  up.tok.maskedLogProbs = static_cast<const float*>(at(oMlp));
  up.tok.wAgg = static_cast<const double*>(at(oWa));
  up.tok.wEnt = static_cast<const double*>(at(oWe));
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

void run_on_device(const DeviceCall& dc, const Tensors& t, int32_t phase, RunRows run, cudaStream_t stream) {
  const bool back = phase & cuda::PHASE_BACKWARD;
  run(dc, Chunk{0, dc.N, t.logits, t.maskedLogits, back ? t.grad : nullptr, back ? t.maskedGrad : nullptr}, phase,
      stream);
}

// Host data: chunks of rows through two pinned staging slots, each with its own stream and device buffers.
// Device memory stays bounded by PAPO_CUDA_STAGING_MB (per slot, default 256) whatever N is.
class Staging {
 public:
  Staging(const DeviceCall& dc, const Tensors& t, int32_t phase) : dc_(dc), t_(t), phase_(phase) {
    const int64_t V = dc.V;
    esz_ = dtype_size(dc.dtype);
    gsz_ = dtype_size(dc.gradType);
    paths_ = t.maskedLogits ? 2 : 1;
    const bool back = phase & cuda::PHASE_BACKWARD;
    g1_ = back && t.grad;
    g2_ = back && t.maskedGrad;
    const int64_t rowBytes = V * (esz_ * paths_ + gsz_ * ((int)g1_ + (int)g2_));
    const int64_t budget = std::max<int64_t>(1, env_int64("PAPO_CUDA_STAGING_MB", 256)) << 20;
    R_ = std::min<int64_t>(dc.N, std::max<int64_t>(1, budget / rowBytes));
    const int nslots = R_ < dc.N ? 2 : 1;
    for (int i = 0; i < nslots; ++i) slots_.emplace_back(new Slot(R_ * V * esz_ * paths_, R_ * V * gsz_ * ((int)g1_ + (int)g2_)));
  }

  void run(RunRows run) {
    const int64_t V = dc_.V;
    int64_t c = 0;
    for (int64_t r0 = 0; r0 < dc_.N; r0 += R_, ++c) {
      Slot& s = *slots_[c % slots_.size()];
      finish(s);
      const int64_t rows = std::min(R_, dc_.N - r0);
      const int64_t inBytes = rows * V * esz_, outBytes = rows * V * gsz_;
      char* pin = s.hostIn.as<char>();
      char* din = s.devIn.as<char>();
      host_copy(pin, static_cast<const char*>(t_.logits) + r0 * V * esz_, inBytes);
      if (paths_ == 2) host_copy(pin + R_ * V * esz_, static_cast<const char*>(t_.maskedLogits) + r0 * V * esz_, inBytes);
      cuda_check(cudaMemcpyAsync(din, pin, inBytes, cudaMemcpyHostToDevice, s.stream.get()), "cudaMemcpyAsync (logits)");
      if (paths_ == 2)
        cuda_check(cudaMemcpyAsync(din + R_ * V * esz_, pin + R_ * V * esz_, inBytes, cudaMemcpyHostToDevice,
                                   s.stream.get()), "cudaMemcpyAsync (maskedLogits)");
      char* dout = s.devOut.as<char>();
      char* dout2 = dout + (g1_ ? R_ * V * gsz_ : 0);
      run(dc_, Chunk{r0, rows, din, paths_ == 2 ? din + R_ * V * esz_ : nullptr, g1_ ? dout : nullptr,
                     g2_ ? dout2 : nullptr}, phase_, s.stream.get());
      if (g1_) cuda_check(cudaMemcpyAsync(s.hostOut.as(), dout, outBytes, cudaMemcpyDeviceToHost, s.stream.get()), "cudaMemcpyAsync (gradLogits)");
      if (g2_)
        cuda_check(cudaMemcpyAsync(s.hostOut.as<char>() + (dout2 - dout), dout2, outBytes, cudaMemcpyDeviceToHost,
                                   s.stream.get()), "cudaMemcpyAsync (gradMaskedLogits)");
      s.done.record(s.stream.get());
      s.pendingBegin = r0;
      s.pendingRows = rows;
    }
    for (auto& s : slots_) finish(*s);
  }

 private:
  struct Slot {
    PinnedBuffer hostIn, hostOut;
    DeviceBuffer devIn, devOut;
    Stream stream;
    Event done;
    int64_t pendingBegin = -1, pendingRows = 0;
    Slot(int64_t inBytes, int64_t outBytes)
        : hostIn(inBytes, "the pinned staging of the logits"),
          hostOut(outBytes, "the pinned staging of the gradients"),
          devIn(inBytes, "a chunk of logits"),
          devOut(outBytes, "a chunk of gradients") {}
    ~Slot() { cudaStreamSynchronize(stream.get()); }  // nothing may still use the buffers freed after this
  };

  // Waits for the slot's chunk and copies its gradients out to the caller's buffers.
  void finish(Slot& s) {
    if (s.pendingBegin < 0) return;
    s.done.sync();
    const int64_t V = dc_.V, bytes = s.pendingRows * V * gsz_, off = s.pendingBegin * V * gsz_;
    if (g1_) host_copy(static_cast<char*>(t_.grad) + off, s.hostOut.as(), bytes);
    if (g2_) host_copy(static_cast<char*>(t_.maskedGrad) + off, s.hostOut.as<char>() + (g1_ ? R_ * V * gsz_ : 0), bytes);
    s.pendingBegin = -1;
  }

  const DeviceCall& dc_;
  Tensors t_;
  int32_t phase_;
  int64_t esz_, gsz_, R_;
  int paths_;
  bool g1_, g2_;
  std::vector<std::unique_ptr<Slot>> slots_;
};

void run_phase(const DeviceCall& dc, const Tensors& t, int32_t phase, bool onDevice, cudaStream_t stream) {
  const RunRows run = dc.kernel == KERNEL_NAIVE ? cuda::run_rows_naive : cuda::run_rows_fused;
  if (onDevice) run_on_device(dc, t, phase, run, stream);
  else Staging(dc, t, phase).run(run);
}

std::vector<RowOut> fetch_rows(const DeviceBuffer& out, int64_t N, cudaStream_t stream) {
  std::vector<RowOut> rows(N);
  cuda_check(cudaMemcpyAsync(rows.data(), out.as(), N * sizeof(RowOut), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync (per-row results)");
  cuda_check(cudaStreamSynchronize(stream), "the CUDA kernels");
  return rows;
}

void check_rows(const std::vector<RowOut>& rows, const int32_t* tokens) {
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].status != ROW_OK)
      throw_row_error(rows[i].status, (int64_t)i, rows[i].onMasked ? "maskedLogits" : "logits", tokens[i]);
}

int32_t kernel_choice(int32_t requested) {
  // PAPO_CUDA_KERNEL=1|2 picks the fast family for experiments; the naive backend is always the naive chain.
  if (requested == KERNEL_NAIVE) return KERNEL_NAIVE;
  const int64_t forced = env_int64("PAPO_CUDA_KERNEL", 0);
  return forced == KERNEL_TWO_PASS || forced == KERNEL_FUSED ? (int32_t)forced : requested;
}

DeviceCall device_call(int64_t N, int64_t V, double temperature, int32_t dtype, const cuda::TokenInputs& tok,
                       const DeviceBuffer& out) {
  DeviceCall dc;
  dc.N = N;
  dc.V = V;
  dc.invTau = (float)(1.0 / temperature);
  dc.dtype = dtype;
  dc.tok = tok;
  dc.out = out.as<RowOut>();
  return dc;
}

}  // namespace

PapoMetrics papo_loss_cuda(const PapoCall& call, const CudaExec& exec) {
  DeviceScope scope(exec.device);
  Stream stream(exec.onDevice ? exec.stream : 0);
  const TokenWeights w = token_weights(call);
  TokenUpload up = upload_tokens(&call, call.tokens, call.N, &w);
  DeviceBuffer out(call.N * sizeof(RowOut), "the per-row results");

  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up.tok, out);
  dc.gradType = call.gradLogits ? call.gradType : call.gradMaskedType;
  dc.hasMaskedLogits = call.maskedLogits != nullptr;
  dc.params = call.params;
  dc.kernel = kernel_choice(exec.kernel);
  dc.blocks = cuda::fused_blocks(dc);
  if (call.maskedLogits && call.maskedDtype != call.dtype)
    throw Error(ErrorCode::InvalidArgument, "maskedLogits: the CUDA backend needs the same dtype as logits");
  if (call.gradLogits && call.gradMaskedLogits && call.gradType != call.gradMaskedType)
    throw Error(ErrorCode::InvalidArgument, "gradMaskedType: the CUDA backend needs one gradient type for both paths");

  const Tensors t{call.logits, call.maskedLogits, call.gradLogits, call.gradMaskedLogits};
  const bool wantGrad = t.grad || t.maskedGrad;
  const bool inPlace = (t.grad && t.grad == t.logits) || (t.maskedGrad && t.maskedGrad == t.maskedLogits);
  std::vector<RowOut> rows;
  if (wantGrad && inPlace) {
    run_phase(dc, t, cuda::PHASE_FORWARD, exec.onDevice, stream.get());
    rows = fetch_rows(out, call.N, stream.get());
    check_rows(rows, call.tokens);
    run_phase(dc, t, cuda::PHASE_BACKWARD, exec.onDevice, stream.get());
    stream.sync();
  } else {
    run_phase(dc, t, wantGrad ? cuda::PHASE_BOTH : cuda::PHASE_FORWARD, exec.onDevice, stream.get());
    rows = fetch_rows(out, call.N, stream.get());
    check_rows(rows, call.tokens);
  }

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
  Stream stream(exec.onDevice ? exec.stream : 0);
  TokenUpload up = upload_tokens(nullptr, call.tokens, call.N, nullptr);
  DeviceBuffer out(call.N * sizeof(RowOut), "the per-row results");
  DeviceCall dc = device_call(call.N, call.V, call.temperature, call.dtype, up.tok, out);
  dc.terms = false;
  dc.kernel = kernel_choice(exec.kernel) == KERNEL_NAIVE ? KERNEL_NAIVE : KERNEL_TWO_PASS;  // full grid: no re-read
  dc.blocks = cuda::fused_blocks(dc);
  run_phase(dc, Tensors{call.logits, nullptr, nullptr, nullptr}, cuda::PHASE_FORWARD, exec.onDevice, stream.get());
  const std::vector<RowOut> rows = fetch_rows(out, call.N, stream.get());
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
  int previous = 0;
  cudaGetDevice(&previous);
  if (cudaSetDevice(device) == cudaSuccess) cudaFree(ptr);
  cudaSetDevice(previous);
  cudaGetLastError();
}

void cuda_copy(void* dst, const void* src, size_t bytes, bool toDevice, int device, uint64_t stream) {
  DeviceScope scope(device);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  cuda_check(cudaMemcpyAsync(dst, src, bytes, toDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s),
             toDevice ? "cudaMemcpyAsync (upload)" : "cudaMemcpyAsync (download)");
  cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (copy)");
}

void cuda_copy_d2d(void* dst, const void* src, size_t bytes, int device) {
  DeviceScope scope(device);
  cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy (device to device)");
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (copy)");
}

void cuda_memset_zero(void* ptr, size_t bytes, int device) {
  DeviceScope scope(device);
  cuda_check(cudaMemset(ptr, 0, bytes), "cudaMemset");
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (memset)");
}

void cuda_check_pointer(const void* ptr, int device, const char* name) {
  cudaPointerAttributes a{};
  cuda_check(cudaPointerGetAttributes(&a, ptr), "cudaPointerGetAttributes");
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer is not CUDA device memory");
  if (a.device != device)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer belongs to device " +
                                                std::to_string(a.device) + ", not device " + std::to_string(device));
}

CudaMemInfo cuda_mem_info(int device) {
  DeviceScope scope(device);
  CudaMemInfo m;
  cuda_check(cudaMemGetInfo(&m.free, &m.total), "cudaMemGetInfo");
  return m;
}

}  // namespace papo
