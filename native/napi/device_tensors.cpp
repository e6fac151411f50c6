#include "device_tensors.h"

#include <atomic>
#include <string>
#include <utility>

#include "cuda/papo_cuda.h"
#include "args.h"
#include "js_errors.h"

namespace papo {

namespace {

// One stream-ordered allocation owned by a DeviceTensor, made on its stream. dispose() frees it in that stream's
// order, without waiting for the device; the garbage collector frees what was never disposed (the finalizer) on
// the legacy default stream, since the tensor's own stream may have been destroyed by then. A forgotten tensor
// costs memory for a while, not forever.
struct Allocation {
  void* ptr;
  int device;
  size_t bytes;
  uint64_t stream;
};
std::atomic<int64_t> liveAllocations{0};
std::atomic<int64_t> liveBytes{0};

void release(Allocation* a, uint64_t stream) {
  if (!a->ptr) return;
  cuda_free(a->ptr, a->device, stream);
  a->ptr = nullptr;
  liveAllocations--;
  liveBytes -= (int64_t)a->bytes;
}

int device_arg(const Napi::Value& v) {
  const double d = v.ToNumber().DoubleValue();
  if (!(d >= 0 && d < 1024) || d != (double)(int)d) throw Error(ErrorCode::InvalidArgument, "device: expected an index >= 0");
  return (int)d;
}

// Owns an Allocation until a JavaScript External takes it over: every failure before that (a failed memset, an
// exception from N-API) frees the device memory on the way out.
struct AllocationOwner {
  Allocation* a = nullptr;
  ~AllocationOwner() {
    if (!a) return;
    release(a, a->stream);
    delete a;
  }
  Allocation* hand_over() { return std::exchange(a, nullptr); }
};

#ifdef PAPO_CUDA_EMULATED
// Test hook of the emulated build (emuFailNextExternal): the next cudaAlloc fails right before the External
// is created, where a leak would hide.
std::atomic<bool> failNextExternal{false};
#endif

// cudaAlloc(bytes, device, zero, stream) -> { handle, ptr }, usable on `stream` (0n: the legacy default stream)
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    const Napi::Env env = info.Env();
    const double bytes = info[0].ToNumber().DoubleValue();
    if (!(bytes >= 0 && bytes <= 9007199254740991.0)) throw Error(ErrorCode::InvalidArgument, "bytes: expected a size >= 0");
    const int device = device_arg(info[1]);
    const uint64_t stream = parse_address(info[3], "stream");
    AllocationOwner owner;
    {
      void* p = cuda_alloc((size_t)bytes, device, stream);
      try {
        owner.a = new Allocation{p, device, (size_t)bytes, stream};
      } catch (...) {
        cuda_free(p, device, stream);
        throw;
      }
      liveAllocations++;
      liveBytes += (int64_t)owner.a->bytes;
    }
    if (info[2].ToBoolean().Value()) cuda_memset_zero(owner.a->ptr, owner.a->bytes, device, stream);
    Napi::Object o = Napi::Object::New(env);
    o.Set("ptr", Napi::BigInt::New(env, (uint64_t)(uintptr_t)owner.a->ptr));
#ifdef PAPO_CUDA_EMULATED
    if (failNextExternal.exchange(false))
      throw Error(ErrorCode::Internal, "emuFailNextExternal: Napi::External::New failed (injected)");
#endif
    // Once the External exists its finalizer owns the allocation (the garbage collector frees it even if what
    // follows throws); if creating it throws, the owner still does.
    const Napi::External<Allocation> handle = Napi::External<Allocation>::New(env, owner.a, [](Napi::Env, Allocation* a) {
      release(a, 0);
      delete a;
    });
    owner.hand_over();
    o.Set("handle", handle);
    return o;
  });
}

// cudaFree(handle): idempotent; in the order of the allocation's stream, returning at once.
Napi::Value Free(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsExternal()) throw Error(ErrorCode::InvalidArgument, "handle: expected a device allocation");
    Allocation* a = info[0].As<Napi::External<Allocation>>().Data();
    release(a, a->stream);
    return info.Env().Undefined();
  });
}

// cudaCopy(ptr, device, typedArray, toDevice, stream): the whole typed array, ordered on `stream` (0n: the legacy
// default stream), complete on return. The device range is checked first: a wrapped tensor may claim more
// bytes than its allocation has.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    void* ptr = reinterpret_cast<void*>((uintptr_t)parse_address(info[0], "ptr"));
    if (!ptr) throw Error(ErrorCode::InvalidArgument, "ptr: null device pointer");
    const int device = device_arg(info[1]);
    if (!info[2].IsTypedArray()) throw Error(ErrorCode::InvalidArgument, "data: expected a typed array");
    const Napi::TypedArray t = info[2].As<Napi::TypedArray>();
    void* host = static_cast<char*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    const bool toDevice = info[3].ToBoolean().Value();
    const uint64_t stream = parse_address(info[4], "stream");
    cuda_check_pointer(ptr, t.ByteLength(), device, toDevice ? "upload" : "download");
    if (toDevice) cuda_copy(ptr, host, t.ByteLength(), true, device, stream);
    else cuda_copy(host, ptr, t.ByteLength(), false, device, stream);
    return info.Env().Undefined();
  });
}

// cudaCopyDevice(dstPtr, srcPtr, bytes, device): the benchmarks' roofline.
Napi::Value CopyDevice(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    void* dst = reinterpret_cast<void*>((uintptr_t)parse_address(info[0], "dst"));
    const void* src = reinterpret_cast<const void*>((uintptr_t)parse_address(info[1], "src"));
    if (!dst || !src) throw Error(ErrorCode::InvalidArgument, "dst, src: null device pointer");
    cuda_copy_d2d(dst, src, (size_t)info[2].ToNumber().DoubleValue(), device_arg(info[3]));
    return info.Env().Undefined();
  });
}

// cudaStreamCreate(device) -> bigint; cudaStreamDestroy(stream, device)
Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    return Napi::BigInt::New(info.Env(), cuda_stream_create(device_arg(info[0])));
  });
}

Napi::Value StreamDestroy(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    cuda_stream_destroy(parse_address(info[0], "stream"), device_arg(info[1]));
    return info.Env().Undefined();
  });
}

// cudaMemInfo(device) -> { free, total, liveAllocations, liveBytes }
Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    const CudaMemInfo m = cuda_mem_info(device_arg(info[0]));
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("free", (double)m.free);
    o.Set("total", (double)m.total);
    o.Set("liveAllocations", (double)liveAllocations.load());
    o.Set("liveBytes", (double)liveBytes.load());
    return o;
  });
}

#ifdef PAPO_CUDA_EMULATED
Napi::Value EmuFailNextExternal(const Napi::CallbackInfo& info) {
  failNextExternal = true;
  return info.Env().Undefined();
}
#endif

}  // namespace

void init_device_tensors(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaAlloc", Napi::Function::New(env, Alloc, "cudaAlloc"));
  exports.Set("cudaFree", Napi::Function::New(env, Free, "cudaFree"));
  exports.Set("cudaCopy", Napi::Function::New(env, Copy, "cudaCopy"));
  exports.Set("cudaCopyDevice", Napi::Function::New(env, CopyDevice, "cudaCopyDevice"));
  exports.Set("cudaMemInfo", Napi::Function::New(env, MemInfo, "cudaMemInfo"));
  exports.Set("cudaStreamCreate", Napi::Function::New(env, StreamCreate, "cudaStreamCreate"));
  exports.Set("cudaStreamDestroy", Napi::Function::New(env, StreamDestroy, "cudaStreamDestroy"));
#ifdef PAPO_CUDA_EMULATED
  exports.Set("emuFailNextExternal", Napi::Function::New(env, EmuFailNextExternal, "emuFailNextExternal"));
#endif
}

}  // namespace papo
