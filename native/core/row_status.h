// A row's verdict and its softmax statistics, shared by the CPU and CUDA backends, and the one message each bad
// verdict becomes whichever backend found it: NaN, +Infinity, a row with no finite entry, or a response token
// whose own logit is -Infinity (probability 0, log-prob -Infinity).
#pragma once

#include <stdint.h>

namespace papo {

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

// Row problems beyond RowStatus: the sampled token is excluded but the token counts.
constexpr int32_t kTargetExcluded = 100;

// Throws Error(InvalidArgument) naming the tensor, the row and, for kTargetExcluded, the token.
[[noreturn]] void throw_row_error(int32_t kind, int64_t row, const char* tensor, int32_t token);

}  // namespace papo
