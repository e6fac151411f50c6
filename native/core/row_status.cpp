#include "row_status.h"

#include <string>

#include "error.h"

namespace papo {

void throw_row_error(int32_t kind, int64_t row, const char* tensor, int32_t token) {
  const std::string name = tensor, r = std::to_string(row);
  switch (kind) {
    case ROW_NAN:
      throw Error(ErrorCode::InvalidArgument, name + " contains NaN in row " + r);
    case ROW_POS_INF:
      throw Error(ErrorCode::InvalidArgument,
                  name + " contains +Infinity in row " + r + " (only -Infinity, an excluded token, is allowed)");
    case ROW_NO_FINITE:
      throw Error(ErrorCode::InvalidArgument, name + " row " + r + " has no finite entry (every token excluded)");
    default:
      throw Error(ErrorCode::InvalidArgument, "tokens[" + r + "] = " + std::to_string(token) +
                                                  " has logit -Infinity in " + name +
                                                  " (probability 0) but is a response token");
  }
}

}  // namespace papo
