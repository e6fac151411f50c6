// The native half of DeviceTensor (lib/cuda.ts): device allocations owned by JavaScript objects, copies
// between typed arrays and device memory, and the memory counters the soak tests read.
#pragma once

#include <napi.h>

namespace papo {

void init_device_tensors(Napi::Env env, Napi::Object exports);

}  // namespace papo
