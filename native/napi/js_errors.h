// C++ exceptions -> JavaScript errors with a stable `code` (README "Errors"). Nothing native may abort the
// process: every entry point runs its work through guarded().
#pragma once

#include <napi.h>

#include <functional>
#include <string>

#include "core/call.h"

namespace papo {

// InvalidArgument becomes a RangeError, everything else an Error; both carry error.code.
Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message);

// Runs fn, mapping every C++ exception to (code, message). Returns false on failure.
bool guarded(const std::function<void()>& fn, ErrorCode& code, std::string& message);

// For synchronous entry points: runs fn and throws the JavaScript error on failure (returning undefined).
Napi::Value guarded_js(Napi::Env env, const std::function<Napi::Value()>& fn);

}  // namespace papo
