// JavaScript -> PapoCall / LogProbsCall. lib/validate.ts has already checked everything with messages aimed at
// users; this checks again (types, lengths, ranges, aliasing) so that no JS caller can make native code read or
// write out of bounds. Failures throw papo::Error(InvalidArgument).
#pragma once

#include <napi.h>

#include "../papo_call.h"

namespace papo {

enum class Backend { Cpu = 0, Cuda = 1, CudaNaive = 2 };

PapoCall parse_papo_call(const Napi::Object& desc);
LogProbsCall parse_log_probs_call(const Napi::Object& desc);
Backend parse_backend(const Napi::Object& desc);

}  // namespace papo
