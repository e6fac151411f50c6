// The types that the CPU and CUDA backends share: storage types, a row's verdict and its softmax statistics.
#pragma once

#include <stdint.h>

namespace papo {

enum DType : int32_t { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

// A row with NaN anywhere is ROW_NAN, whatever else it holds; +Infinity without NaN is ROW_POS_INF. Both
// backends apply this precedence, so one bad row gives one message whichever backend found it.
enum RowStatus : int32_t { ROW_OK = 0, ROW_NAN = 1, ROW_POS_INF = 2, ROW_NO_FINITE = 3 };

// Statistics of x = z / tau over one row. lse = maxScaled + logSum, entropy = logSum - sum(e (x - max)) / sum(e).
struct RowStats {
  double lse;
  double entropy;
  float maxScaled;     // max_j x_j
  float logSum;        // log sum_j exp(x_j - max)
  float targetScaled;  // x_o, the sampled token's scaled logit
  int32_t status;
};

}  // namespace papo
