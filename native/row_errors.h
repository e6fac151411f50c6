// A bad row of logits becomes one error message, whichever backend found it: NaN, +Infinity, a row with no
// finite entry, or a response token whose own logit is -Infinity (probability 0, log-prob -Infinity).
#pragma once

#include <stdint.h>

namespace papo {

// Row problems beyond RowStatus (cpu/row_kernels.h): the sampled token is excluded but the token counts.
constexpr int32_t kTargetExcluded = 100;

// Throws Error(InvalidArgument) naming the tensor, the row and, for kTargetExcluded, the token.
[[noreturn]] void throw_row_error(int32_t kind, int64_t row, const char* tensor, int32_t token);

}  // namespace papo
