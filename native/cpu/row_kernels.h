// The O(V) work of one row, per instruction set: the softmax statistics of a row of logits and the gradient
// row. Both are dispatched at run time (select_row_kernels) to the widest instruction set the CPU has.
#pragma once

#include <stdint.h>

#include "core/dtype.h"
#include "core/row_status.h"

namespace papo {

// dL/dz_j = invTau * [ gLp (1[j = o] - p_j) - gH p_j (log p_j + H) ], p_j recomputed from the row statistics.
struct RowGrad {
  float invTau;
  RowStats stats;
  double gLp, gH;
  int64_t target;  // < 0: the sampled token is not in this row (a vocabulary shard without it)
};

// What a row's statistics are made of: M = max_j x_j, sumExp = sum_j e^(x_j - M), sumExpShifted =
// sum_j e^(x_j - M) (x_j - M) (finite x_j only), and x_target when asked for.
struct RowSums {
  float maxScaled, targetScaled;
  double sumExp, sumExpShifted;
  int32_t status;
};

// A row is swept in blocks of this many elements from its start (a block stays in L1 between its two sweeps).
// The gradient's p_j is e_j * exp(M_b - max - logSum), with e_j = exp(x_j - M_b) and M_b the running max of the
// row up to and including j's block: the exponentials the statistics already computed, so that the gradient
// costs no second exp where they are kept (stats_exps, then grad_from_exps), and grad, which recomputes them
// for a row whose exponentials were not kept, gives the same bits.
constexpr int64_t kRowBlock = 2048;
inline int64_t row_blocks(int64_t V) { return (V + kRowBlock - 1) / kRowBlock; }

struct RowKernels {
  const char* isa;
  RowStats (*stats)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target);
  RowSums (*sums)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target);  // target < 0: none
  // stats and sums, keeping e_j (V floats) and M_b (row_blocks(V) floats) for grad_from_exps.
  RowStats (*stats_exps)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target, float* exps,
                         float* blockMax);
  RowSums (*sums_exps)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target, float* exps,
                       float* blockMax);
  // out may alias row (in-place gradient); outType is the input's type or DT_F32. stream: non-temporal stores,
  // for gradients too large to stay in the caches until they are read (a plain store reads each line first).
  void (*grad)(const void* row, int32_t dtype, void* out, int32_t outType, int64_t V, const RowGrad& g, bool stream);
  // The same gradient from what stats_exps kept of the row (read again only for the entropy term).
  void (*grad_from_exps)(const void* row, int32_t dtype, const float* exps, const float* blockMax, void* out,
                         int32_t outType, int64_t V, const RowGrad& g, bool stream);
  // The benchmarks' floor: exponentials per second on the calling thread (the kernels' vexp over data in L1).
  double (*exp_rate)(int64_t reps);
};

namespace baseline {
const RowKernels& row_kernels();
}
namespace avx2 {
const RowKernels& row_kernels();
}
namespace avx512 {
const RowKernels& row_kernels();
}

// The kernels for this CPU; PAPO_CPU_ISA=baseline|avx2|avx512 forces one (an unsupported choice falls back
// to the best supported one below it, and isa says which ran).
const RowKernels& select_row_kernels();

}  // namespace papo
