// The emulated build's test hooks (PAPO_CUDA_EMULATED only): fault injection and the emulator's counters.
#pragma once

#include <napi.h>

namespace papo {

void init_emulator_hooks(Napi::Env env, Napi::Object exports);

}  // namespace papo
