// The fast CUDA kernels: one thread block per row (rows looped over the grid's x dimension, never y/z).
//
//   k1 (KERNEL_K1_TWO_PASS): papo_rows<PHASE_FORWARD> reads both rows once for their statistics and the token terms,
//       then papo_rows<PHASE_BACKWARD> reads them again and writes both gradients: 2 reads + 1 write of [N,V]
//       per path where 1 read + 1 write is the minimum.
//   k2 (KERNEL_K2_FUSED): one launch, the block computes the statistics, the token terms and both gradient rows of
//       its row pair back to back, so the second read of a row comes from L2 when the rows in flight fit in
//       it. The grid is sized for that (shape_k2).
//   forward only (logProbs, and the check pass before an in-place gradient): PHASE_FORWARD, one read.
//
// The per-token math is token_terms() from core/token_math.h, the same code the CPU backend runs, evaluated in
// doubles by the block's first thread.
#include <algorithm>

#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/device_facts.h"
#include "cuda/launch.cuh"
#include "cuda/papo_cuda.h"
#include "row_block.cuh"
#include "row_terms.cuh"

namespace papo {
namespace cuda {

namespace {

__device__ RowOut row_out(const DeviceCall& c, int64_t row, const RowStats& s, const RowStats& ms) {
  RowOut o{};
  o.s = s;
  o.ms = ms;
  o.lp = (double)s.targetScaled - s.lse;
  o.a = (double)ms.targetScaled - ms.lse;
  finish_row(c, row, o);
  return o;
}

template <class SI, class SO>
__global__ void __launch_bounds__(kThreads, 2) papo_rows(const DeviceCall c, const Chunk ch, const int32_t phase) {
  using TI = typename SI::T;
  using TO = typename SO::T;
  __shared__ StatsScratch sh;
  __shared__ RowOut ro;
  const int64_t V = c.V;
  for (int64_t r = blockIdx.x; r < ch.rows; r += gridDim.x) {
    const int64_t row = ch.rowBegin + r;
    const int64_t target = c.tok.tokens[row];
    const TI* x = static_cast<const TI*>(ch.logits) + r * V;
    const TI* xm = c.hasMaskedLogits ? static_cast<const TI*>(ch.maskedLogits) + r * V : nullptr;
    if (phase & PHASE_FORWARD) {
      const RowStats s = block_row_stats<SI>(x, V, c.invTau, target, sh);
      RowStats ms{};
      if (xm) ms = block_row_stats<SI>(xm, V, c.invTau, target, sh);
      if (threadIdx.x == 0) {
        ro = row_out(c, row, s, ms);
        c.out[row] = ro;
      }
    } else if (threadIdx.x == 0) {
      ro = c.out[row];
    }
    __syncthreads();
    if ((phase & PHASE_BACKWARD) && ro.status == ROW_OK) {  // block-uniform: ro is shared
      if (ch.grad)
        block_row_grad<SI, SO>(x, static_cast<TO*>(ch.grad) + r * V, V,
                               grad_coef(c.invTau, ro.s, ro.t.gLp, ro.t.gH, target));
      if (ch.maskedGrad)
        block_row_grad<SI, SO>(xm, static_cast<TO*>(ch.maskedGrad) + r * V, V,
                               grad_coef(c.invTau, ro.ms, ro.t.gA, ro.t.gHm, target));
    }
    __syncthreads();  // ro and sh are rewritten by the next row
  }
}

template <class SI, class SO>
void launch(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>(ch.rows, std::max(c.launch.blocks, 1));
  launch_kernel("papo_rows", papo_rows<SI, SO>, dim3((unsigned)blocks), dim3(kThreads), 0, stream, c, ch, phase);
}

using Kernel = void (*)(DeviceCall, Chunk, int32_t);
using Launch = void (*)(const DeviceCall&, const Chunk&, int32_t, cudaStream_t);

// The instance for these dtypes: the kernel and its launch.
template <class F>
auto with_kernel(int32_t dtype, int32_t gradType, F&& f) {
  return with_types(dtype, gradType, [&](auto si, auto so) {
    using SI = decltype(si);
    using SO = decltype(so);
    return f(papo_rows<SI, SO>, launch<SI, SO>);
  });
}

// Every SM full: as many blocks as are resident at once.
int64_t full_grid(const ShapeKey& key) {
  const int perSm = with_kernel(key.dtype, key.gradType, [&](Kernel k, Launch) { return blocks_per_sm(k, key.device, kThreads); });
  return (int64_t)device_facts(key.device).sms * std::max(perSm, 1);
}

}  // namespace

void run_rows_k2(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  with_kernel(c.dtype, c.gradType, [&](Kernel, Launch run) {
    run(c, ch, phase, stream);
    return 0;
  });
}

// The same kernel, a fused call's chunk as a forward launch, then a backward launch.
void run_rows_k1(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  if (phase != PHASE_BOTH) return run_rows_k2(c, ch, phase, stream);
  run_rows_k2(c, ch, PHASE_FORWARD, stream);
  run_rows_k2(c, ch, PHASE_BACKWARD, stream);
}

bool shape_k1(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  shape.blocks = tuning.blocks ? tuning.blocks : (int)full_grid(key);
  return true;
}

bool shape_k2(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  if (tuning.blocks) {
    shape.blocks = tuning.blocks;
    return true;
  }
  // The fused kernel re-reads each row of its pair after the statistics: keep the pairs in flight within half of
  // L2 (the other half serves the streaming traffic), but never fewer blocks than SMs.
  const DeviceFacts& f = device_facts(key.device);
  const int64_t pairBytes = key.V * (int64_t)dtype_bytes(key.dtype) * (key.masked ? 2 : 1);
  const int64_t fit = (int64_t)f.l2 / 2 / std::max<int64_t>(pairBytes, 1);
  shape.blocks = (int)std::max<int64_t>(f.sms, std::min(full_grid(key), fit));
  return true;
}

}  // namespace cuda
}  // namespace papo
