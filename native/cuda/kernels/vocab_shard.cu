// The kernels of one vocabulary shard: logits [N, V] that are the columns [vocabStart, vocabStart + V) of the
// vocabulary the tokens index (core/vocab_stats.h, docs/objective.md "Logits split over the vocabulary").
//
//   vocab_shard_stats: one block per row, the row's online softmax as k1/k2 compute it (row_block.cuh: fp32, the
//       ftz exponentials of natural units), written out as the shard's statistics in float64 (max, sumExp,
//       sumExpX = t + max sumExp, and the sampled token's x where the shard holds it) with the row's verdict. A row
//       of -Infinity only is no error here: another shard may hold its finite logits.
//   vocab_shard_rows: papoLoss's forward from the merged statistics of every shard, one thread per row: the
//       row's RowOut exactly as k1's forward makes it from its own statistics (row_terms.cuh), no logit read.
//   vocab_shard_grad: the gradient of the shard's columns from that RowOut (block_row_grad), the one-hot term
//       only where the shard holds the sampled token.
#include <algorithm>

#include "core/vocab_stats.h"
#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/device_facts.h"
#include "cuda/launch.cuh"
#include "row_block.cuh"
#include "row_terms.cuh"

namespace papo {
namespace cuda {

namespace {

constexpr int kRowThreads = 128;  // vocab_shard_rows: one thread per row, O(1) work each

// One row's statistics from its totals (the block's first thread).
template <class S>
__device__ void write_shard_stats(const DeviceCall& c, int64_t row, const typename S::T* x, const OnlineSoftmax& tot) {
  const int64_t N = c.N, column = (int64_t)c.tok.tokens[row] - c.tok.vocabStart;
  int32_t status = ROW_OK;
  double m = -INFINITY, s = 0.0, u = 0.0;
  if (tot.bad()) {
    status = classify_row<S>(x, c.V, c.invTau);
    if (status == ROW_OK) status = ROW_NAN;  // the sums went NaN without a NaN logit: never expected
  } else if (tot.m != -INFINITY) {
    m = tot.m;
    s = tot.s;
    u = (double)tot.t + m * s;  // t sums e^(x - m) (x - m)
  }
  c.shardStats[VS_MAX * N + row] = m;
  c.shardStats[VS_SUM_EXP * N + row] = s;
  c.shardStats[VS_SUM_EXP_X * N + row] = u;
  c.shardStats[VS_TARGET * N + row] = column >= 0 && column < c.V ? (double)(S::to_float(x[column]) * c.invTau) : 0.0;
  c.shardStatus[row] = status;
}

template <class S>
__global__ void __launch_bounds__(kThreads, 2) vocab_shard_stats_rows(const DeviceCall c, const Chunk ch) {
  __shared__ StatsScratch sh;
  for (int64_t r = blockIdx.x; r < ch.rows; r += gridDim.x) {
    const typename S::T* x = static_cast<const typename S::T*>(ch.logits) + r * c.V;
    const OnlineSoftmax tot = block_row_totals<S>(x, c.V, c.invTau, sh);  // ends with a barrier: sh is free again
    if (threadIdx.x == 0) write_shard_stats<S>(c, ch.rowBegin + r, x, tot);
  }
}

// (kRowThreads, 4): with the block size alone ptxas spilled 16 bytes of token_terms() on sm_90.
__global__ void __launch_bounds__(kRowThreads, 4) vocab_shard_rows(const DeviceCall c, const Chunk ch) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= ch.rows) return;
  const int64_t row = ch.rowBegin + r;
  RowOut o{};
  o.s = merged_row_stats(c.tok.vocabStats, c.N, row);
  if (c.hasMaskedLogits) o.ms = merged_row_stats(c.tok.maskedVocabStats, c.N, row);
  o.lp = (double)o.s.targetScaled - o.s.lse;
  o.a = (double)o.ms.targetScaled - o.ms.lse;
  finish_row(c, row, o);
  c.out[row] = o;
}

template <class SI, class SO>
__global__ void __launch_bounds__(kThreads, 2) vocab_shard_grad(const DeviceCall c, const Chunk ch) {
  using TI = typename SI::T;
  using TO = typename SO::T;
  __shared__ RowOut ro;
  const int64_t V = c.V;
  for (int64_t r = blockIdx.x; r < ch.rows; r += gridDim.x) {
    const int64_t row = ch.rowBegin + r;
    if (threadIdx.x == 0) ro = c.out[row];
    __syncthreads();
    if (ro.status == ROW_OK) {  // block-uniform: ro is shared
      const int64_t column = (int64_t)c.tok.tokens[row] - c.tok.vocabStart;
      const int64_t target = column >= 0 && column < V ? column : -1;
      if (ch.grad)
        block_row_grad<SI, SO>(static_cast<const TI*>(ch.logits) + r * V, static_cast<TO*>(ch.grad) + r * V, V,
                               grad_coef(c.invTau, ro.s, ro.t.gLp, ro.t.gH, target));
      if (ch.maskedGrad)
        block_row_grad<SI, SO>(static_cast<const TI*>(ch.maskedLogits) + r * V, static_cast<TO*>(ch.maskedGrad) + r * V,
                               V, grad_coef(c.invTau, ro.ms, ro.t.gA, ro.t.gHm, target));
    }
    __syncthreads();  // ro is rewritten by the next row
  }
}

// The grid of a block-per-row kernel: every block the device holds at once, never more than the rows.
template <class... P>
dim3 row_grid(void (*kernel)(P...), int64_t rows) {
  const int dev = current_device();
  const int perSm = blocks_per_sm(kernel, dev, kThreads);
  return dim3((unsigned)std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t)device_facts(dev).sms * std::max(perSm, 1))));
}

template <class SI, class SO>
void launch_grad(const DeviceCall& c, const Chunk& ch, cudaStream_t stream) {
  launch_kernel("vocab_shard_grad", vocab_shard_grad<SI, SO>, row_grid(vocab_shard_grad<SI, SO>, ch.rows), dim3(kThreads),
                0, stream, c, ch);
}

template <class S>
void launch_stats(const DeviceCall& c, const Chunk& ch, cudaStream_t stream) {
  launch_kernel("vocab_shard_stats", vocab_shard_stats_rows<S>, row_grid(vocab_shard_stats_rows<S>, ch.rows),
                dim3(kThreads), 0, stream, c, ch);
}

}  // namespace

void run_rows_shard(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  if (phase & PHASE_FORWARD)
    launch_kernel("vocab_shard_rows", vocab_shard_rows, dim3((unsigned)((ch.rows + kRowThreads - 1) / kRowThreads)),
                  dim3(kRowThreads), 0, stream, c, ch);
  if (!(phase & PHASE_BACKWARD)) return;
  with_types(c.dtype, c.gradType, [&](auto si, auto so) { launch_grad<decltype(si), decltype(so)>(c, ch, stream); });
}

void vocab_shard_stats(const DeviceCall& c, const Chunk& ch, int32_t, cudaStream_t stream) {
  with_type(c.dtype, [&](auto s) { launch_stats<decltype(s)>(c, ch, stream); });
}

}  // namespace cuda
}  // namespace papo
