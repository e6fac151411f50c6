// The one exception type of the native code: every failure carries a stable code that JavaScript sees as
// error.code (napi/js_errors.cpp) and a message that names the argument or the CUDA call.
#pragma once

#include <stdexcept>
#include <string>

namespace papo {

// Stable error codes, surfaced to JavaScript as error.code.
enum class ErrorCode { InvalidArgument, CudaError, OutOfMemory, Unsupported, Internal };
const char* error_code_name(ErrorCode code);

struct Error : std::runtime_error {
  ErrorCode code;
  Error(ErrorCode c, const std::string& message) : std::runtime_error(message), code(c) {}
};

}  // namespace papo
