#include "js_errors.h"

#include <new>

namespace papo {

Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message) {
  Napi::Error e = code == ErrorCode::InvalidArgument ? Napi::Error(Napi::RangeError::New(env, message))
                                                     : Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, error_code_name(code)));
  return e;
}

bool guarded(const std::function<void()>& fn, ErrorCode& code, std::string& message) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    code = e.code;
    message = e.what();
  } catch (const std::bad_alloc&) {
    code = ErrorCode::OutOfMemory;
    message = "out of host memory";
  } catch (const std::exception& e) {
    code = ErrorCode::Internal;
    message = e.what();
  } catch (...) {
    code = ErrorCode::Internal;
    message = "unknown native error";
  }
  return false;
}


Napi::Value guarded_js(Napi::Env env, const std::function<Napi::Value()>& fn) {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
  Napi::Value result = env.Undefined();
  if (!guarded([&] { result = fn(); }, code, message)) {
    make_error(env, code, message).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return result;
}

}  // namespace papo
