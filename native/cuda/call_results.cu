#include "cuda/call_results.h"

#include "cuda/launch.cuh"

namespace papo {
namespace cuda {

namespace {

constexpr int kResultThreads = 256;  // the sums' scratch: 256 x 120 bytes of shared memory

__global__ void __launch_bounds__(kResultThreads) call_results(const DeviceCall c, ResultHeader* header, float* outs) {
  __shared__ TermSums sums[kResultThreads];
  __shared__ int64_t bad[kResultThreads];
  const int t = threadIdx.x;
  const int64_t N = c.N;
  float* lp = outs;
  float* H = outs + N;
  float* A = outs + 2 * N;
  float* Hm = outs + 3 * N;
  TermSums s{};
  int64_t first = N;  // none yet
  for (int64_t r = t; r < N; r += kResultThreads) {
    const RowOut& o = c.out[r];
    lp[r] = (float)o.lp;
    H[r] = (float)o.s.entropy;
    if (c.hasMaskedLogits) {
      A[r] = (float)o.a;
      Hm[r] = (float)o.ms.entropy;
    }
    if (o.status != ROW_OK) {
      if (first == N) first = r;
      continue;
    }
    if (c.terms != TERMS_PER_ROW) continue;
    const double m = c.tok.mask ? c.tok.mask[r] : 1.0;
    if (m == 0.0) continue;  // zero terms; the values of a masked-out row may be padding
    add_token(s, o.t, m, c.tok.wAgg[r], c.tok.wEnt[r], c.tok.wSft ? c.tok.wSft[r] : 0.0, o.s.entropy,
              c.hasMaskedLogits ? o.ms.entropy : 0.0);
  }
  sums[t] = s;
  bad[t] = first;
  __syncthreads();
  for (int w = kResultThreads / 2; w > 0; w >>= 1) {
    if (t < w) {
      add_sums(sums[t], sums[t + w]);
      if (bad[t + w] < bad[t]) bad[t] = bad[t + w];
    }
    __syncthreads();
  }
  if (t == 0) {
    ResultHeader h;
    h.sums = sums[0];
    if (bad[0] < N) {
      h.badRow = bad[0];
      h.badStatus = c.out[bad[0]].status;
      h.badOnMasked = c.out[bad[0]].onMasked;
    }
    *header = h;
  }
}

}  // namespace

void launch_results(const DeviceCall& c, void* results, cudaStream_t stream) {
  char* base = static_cast<char*>(results);
  launch_kernel("call_results", call_results, dim3(1), dim3(kResultThreads), 0, stream, c,
                reinterpret_cast<ResultHeader*>(base), reinterpret_cast<float*>(base + results_offset()));
}

}  // namespace cuda
}  // namespace papo
