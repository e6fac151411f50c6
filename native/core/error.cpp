#include "error.h"

namespace papo {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return "PAPO_INVALID_ARGUMENT";
    case ErrorCode::CudaError:
      return "PAPO_CUDA_ERROR";
    case ErrorCode::OutOfMemory:
      return "PAPO_OUT_OF_MEMORY";
    case ErrorCode::Unsupported:
      return "PAPO_UNSUPPORTED";
    default:
      return "PAPO_INTERNAL";
  }
}

}  // namespace papo
