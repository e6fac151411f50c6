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

struct RowKernels {
  const char* isa;
  RowStats (*stats)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target);
  RowSums (*sums)(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target);  // target < 0: none
  // out may alias row (in-place gradient); outType is the input's type or DT_F32.
  void (*grad)(const void* row, int32_t dtype, void* out, int32_t outType, int64_t V, const RowGrad& g);
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
