// The codes of every enum that crosses from TypeScript into native code, keyed by the names TypeScript uses, so
// that lib/codes.ts is checked against the C++ enums (test/contract.test.ts) instead of trusted by position.
#pragma once

#include <napi.h>

namespace papo {

Napi::Object enum_tables(Napi::Env env);

}  // namespace papo
