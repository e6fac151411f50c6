// Fresh host gradients for calls given no options.out: typed arrays of V8's own memory, advised onto
// transparent huge pages where the kernel offers them and viewed 64-byte aligned (lib/host-gradient.ts).
#pragma once

#include <napi.h>

namespace papo {

void init_host_buffers(Napi::Env env, Napi::Object exports);

}  // namespace papo
