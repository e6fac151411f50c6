#include "host_buffers.h"

#include <stdint.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace papo {

namespace {

// A gradient of [N, V] is tens of MB written once per call. Fresh memory costs a page fault per 4 KB page (the
// kernel zeroing each one): 75-80% of a CPU call with plain typed arrays. Transparent huge pages cut the faults
// 512-fold, but on kernels set to 'madvise' only memory that asks for them gets them. The buffer stays V8's own
// (its sweeper frees it as soon as it is unreachable, on any thread): an external ArrayBuffer's finaliser runs
// only once the event loop turns, so a synchronous training loop would hold every step's gradients until then.
constexpr uintptr_t kHuge = (uintptr_t)2 << 20;
constexpr uintptr_t kAlign = 64;  // a cache line: the kernels' vector loads and stores never straddle two

// adviseHostBuffer(arrayBuffer) -> the byte offset (< 64) at which its memory is 64-byte aligned. Advises the
// whole huge pages inside it before anything touches them (a fresh ArrayBuffer of this size is untouched mmap
// memory); where the kernel has no transparent huge pages the advice is ignored and plain pages remain.
Napi::Value AdviseHostBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "adviseHostBuffer: expected an ArrayBuffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  const uintptr_t p = (uintptr_t)ab.Data(), end = p + ab.ByteLength();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t a = (p + kHuge - 1) & ~(kHuge - 1), b = end & ~(kHuge - 1);
  if (b > a) madvise((void*)a, b - a, MADV_HUGEPAGE);
#endif
  return Napi::Number::New(env, (double)((kAlign - p % kAlign) % kAlign));
}

}  // namespace

void init_host_buffers(Napi::Env env, Napi::Object exports) {
  exports.Set("adviseHostBuffer", Napi::Function::New(env, AdviseHostBuffer, "adviseHostBuffer"));
}

}  // namespace papo
