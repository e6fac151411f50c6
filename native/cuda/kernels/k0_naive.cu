// Backend 'cuda-naive': the PAPO loss as an eager framework computes it, one op per kernel, every intermediate
// materialised in fp32 [rows, V]:
//   logp = log_softmax(z / tau)   (block per row: max, sum of exp, write)
//   p    = exp(logp)              (elementwise)
//   lp   = gather(logp, tokens)   (thread per row)
//   H    = -sum(p * logp)         (block per row)
//   terms                         (thread per row, token_terms() from core/token_math.h)
//   grad = (1/tau)(gLp (onehot - p) - gH p (logp + H)), cast to the output type   (elementwise)
// It is the baseline of the benchmarks and a second oracle for the fused kernels, so it stays simple: plain
// scalar loads, no fusion. Its only concessions are the guards for p = 0 (p log p = 0, and an exact +0
// gradient), without which -inf logits give NaN (a known pitfall, docs/objective.md) or -0.
#include <algorithm>
#include <memory>

#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/launch.cuh"
#include "cuda/stream_memory.h"
#include "row_block.cuh"
#include "row_terms.cuh"

namespace papo {
namespace cuda {

namespace {

constexpr int kNaiveThreads = 256;

__device__ float block_reduce(float v, bool isMax) {
  __shared__ float sh[kNaiveThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] = isMax ? fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]) : sh[threadIdx.x] + sh[threadIdx.x + s];
    __syncthreads();
  }
  const float r = sh[0];
  __syncthreads();
  return r;
}

template <class S>
__global__ void naive_log_softmax(const typename S::T* z, float* logp, int64_t rows, int64_t V, float invTau,
                                  int32_t* status) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const typename S::T* x = z + r * V;
    float mx = -INFINITY;
    int bad = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float v = S::to_float(x[j]) * invTau;
      bad |= (v != v) | ((v == INFINITY) << 1);
      mx = fmaxf(mx, v);
    }
    const int nan = __syncthreads_or(bad & 1), inf = __syncthreads_or(bad & 2);
    mx = block_reduce(mx, true);
    float sum = 0.f;
    if (mx != -INFINITY)
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += __expf(S::to_float(x[j]) * invTau - mx);
    sum = block_reduce(sum, false);
    const float lse = mx + logf(sum);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) logp[r * V + j] = S::to_float(x[j]) * invTau - lse;
    if (threadIdx.x == 0) status[r] = nan ? ROW_NAN : inf ? ROW_POS_INF : mx == -INFINITY ? ROW_NO_FINITE : ROW_OK;
  }
}

__global__ void naive_exp(const float* logp, float* p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = __expf(logp[i]);
}

__global__ void naive_gather(const float* logp, const int32_t* tokens, int64_t rows, int64_t V, float* lp) {
  const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (r < rows) lp[r] = logp[r * V + tokens[r]];
}

__global__ void naive_entropy(const float* p, const float* logp, int64_t rows, int64_t V, float* H) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float acc = 0.f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float pj = p[r * V + j];
      if (pj > 0.f) acc -= pj * logp[r * V + j];
    }
    acc = block_reduce(acc, false);
    if (threadIdx.x == 0) H[r] = fmaxf(acc, 0.f);
  }
}

// One thread per row of the chunk; rows are global in c.out / c.tok, chunk-local in the scratch arrays.
__global__ void naive_terms(const DeviceCall c, int64_t rowBegin, int64_t rows, const float* lp, const float* H,
                            const int32_t* st, const float* mlp, const float* mH, const int32_t* mst) {
  const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int64_t row = rowBegin + r;
  RowOut o{};
  o.s.entropy = H[r];
  o.s.status = st[r];
  o.lp = lp[r];
  if (mst) {
    o.ms.entropy = mH[r];
    o.ms.status = mst[r];
    o.a = mlp[r];
  }
  finish_row(c, row, o);
  c.out[row] = o;
}

template <class SO>
__global__ void naive_backward(const float* p, const float* logp, typename SO::T* grad, const RowOut* out,
                               const int32_t* tokens, int64_t rows, int64_t V, float invTau, bool masked) {
  const int64_t n = rows * V;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / V, j = i - r * V;
    const RowOut& o = out[r];
    const float gLp = (float)(masked ? o.t.gA : o.t.gLp), gH = (float)(masked ? o.t.gHm : o.t.gH);
    const float H = (float)(masked ? o.ms.entropy : o.s.entropy);
    const float onehot = j == tokens[r] ? 1.f : 0.f;
    const float ent = p[i] > 0.f ? p[i] * (logp[i] + H) : 0.f;  // p = 0 where logp = -inf
    // An excluded token (p = 0, not the target) and a token without loss (gLp = gH = 0) get exactly +0, not a
    // signed zero from 0 * gLp.
    const bool zero = (p[i] == 0.f && onehot == 0.f) || (gLp == 0.f && gH == 0.f);
    grad[i] = SO::from_float(zero ? 0.f : invTau * (gLp * (onehot - p[i]) - gH * ent));
  }
}

unsigned elementwise_blocks(int64_t n) { return (unsigned)std::min<int64_t>((n + 255) / 256, 65535 * 8); }

// Stream-ordered on the call's stream: freed in order after the chain, without waiting for the device.
struct PathScratch {
  StreamBuffer logp, p, lp, H, status;
  PathScratch(int64_t rows, int64_t V, cudaStream_t stream)
      : logp(rows * V * 4, stream, "cuda-naive log-softmax"),
        p(rows * V * 4, stream, "cuda-naive softmax"),
        lp(rows * 4, stream, "cuda-naive log-probs"),
        H(rows * 4, stream, "cuda-naive entropy"),
        status(rows * 4, stream, "cuda-naive row status") {}
};

template <class S>
void forward_path(const DeviceCall& c, const void* z, int64_t rowBegin, int64_t rows, PathScratch& s,
                  cudaStream_t stream) {
  const unsigned rowBlocks = (unsigned)std::min<int64_t>(rows, 65535 * 8);
  launch_kernel("naive_log_softmax", naive_log_softmax<S>, dim3(rowBlocks), dim3(kNaiveThreads), 0, stream,
                static_cast<const typename S::T*>(z), s.logp.as<float>(), rows, c.V, c.invTau, s.status.as<int32_t>());
  launch_kernel("naive_exp", naive_exp, dim3(elementwise_blocks(rows * c.V)), dim3(256), 0, stream,
                s.logp.as<float>(), s.p.as<float>(), rows * c.V);
  launch_kernel("naive_gather", naive_gather, dim3((unsigned)((rows + 255) / 256)), dim3(256), 0, stream,
                s.logp.as<float>(), c.tok.tokens + rowBegin, rows, c.V, s.lp.as<float>());
  launch_kernel("naive_entropy", naive_entropy, dim3(rowBlocks), dim3(kNaiveThreads), 0, stream, s.p.as<float>(),
                s.logp.as<float>(), rows, c.V, s.H.as<float>());
}

template <class SO>
void backward_path(const DeviceCall& c, int64_t rowBegin, int64_t rows, PathScratch& s, void* grad, bool masked,
                   cudaStream_t stream) {
  launch_kernel("naive_backward", naive_backward<SO>, dim3(elementwise_blocks(rows * c.V)), dim3(256), 0, stream,
                s.p.as<float>(), s.logp.as<float>(), static_cast<typename SO::T*>(grad), c.out + rowBegin,
                c.tok.tokens + rowBegin, rows, c.V, c.invTau, masked);
}

template <class S>
void run_typed(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  // The scratch of a few GiB at most: longer chunks run in slices of rows (an eager framework would simply
  // need that much memory).
  const int64_t perRow = c.V * 8 * (c.hasMaskedLogits ? 2 : 1);
  const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(ch.rows, ((int64_t)4 << 30) / perRow));
  PathScratch s(slice, c.V, stream);
  std::unique_ptr<PathScratch> ms(c.hasMaskedLogits ? new PathScratch(slice, c.V, stream) : nullptr);
  const int64_t esz = (int64_t)dtype_bytes(c.dtype), gsz = dtype_bytes(c.gradType);
  for (int64_t r0 = 0; r0 < ch.rows; r0 += slice) {
    const int64_t rows = std::min(slice, ch.rows - r0), rowBegin = ch.rowBegin + r0;
    forward_path<S>(c, static_cast<const char*>(ch.logits) + r0 * c.V * esz, rowBegin, rows, s, stream);
    if (ms) forward_path<S>(c, static_cast<const char*>(ch.maskedLogits) + r0 * c.V * esz, rowBegin, rows, *ms, stream);
    // A backward-only phase reads the RowOut of its forward phase (and of the host's sequence terms) as it is.
    if (phase != PHASE_BACKWARD)
      launch_kernel("naive_terms", naive_terms, dim3((unsigned)((rows + 255) / 256)), dim3(256), 0, stream, c, rowBegin,
                    rows, s.lp.as<float>(), s.H.as<float>(), s.status.as<int32_t>(), ms ? ms->lp.as<float>() : nullptr,
                    ms ? ms->H.as<float>() : nullptr, ms ? ms->status.as<int32_t>() : nullptr);
    if (!(phase & PHASE_BACKWARD)) continue;
    for (int path = 0; path < 2; ++path) {
      void* g = path ? ch.maskedGrad : ch.grad;
      if (!g) continue;
      g = static_cast<char*>(g) + r0 * c.V * gsz;
      PathScratch& ps = path ? *ms : s;
      if (c.gradType == DT_F32) backward_path<F32>(c, rowBegin, rows, ps, g, path == 1, stream);
      else backward_path<S>(c, rowBegin, rows, ps, g, path == 1, stream);
    }
  }
}

}  // namespace

void run_rows_k0(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  with_type(c.dtype, [&](auto s) { run_typed<decltype(s)>(c, ch, phase, stream); });
}

// Each op of the chain sizes its own grid from the rows it gets.
bool shape_k0(const ShapeKey&, const CudaTuning&, LaunchShape&) { return true; }

}  // namespace cuda
}  // namespace papo
