#include "driver_api.h"

#include <cuda_runtime.h>

namespace papo {

namespace {

// The driver's signatures, declared here instead of including cuda.h: CUresult is an int-sized enum (0 is
// CUDA_SUCCESS), CUcontext an opaque pointer, CUdeviceptr an unsigned long long on every 64-bit platform.
using CUresultInt = int;
using CtxGetCurrentFn = CUresultInt (*)(void** ctx);
using MemGetAddressRangeFn = CUresultInt (*)(unsigned long long* base, size_t* size, unsigned long long dptr);

// The ABI of CUDA 12.0: a newer driver still serves it, an older one reports the symbol missing.
constexpr unsigned kDriverAbi = 12000;

void* entry_point(const char* symbol) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
  const cudaError_t err = cudaGetDriverEntryPointByVersion(symbol, &fn, kDriverAbi, cudaEnableDefault, &status);
  if (err != cudaSuccess || status != cudaDriverEntryPointSuccess) {
    cudaGetLastError();  // no driver here is an answer, not an error for whoever calls the runtime next
    return nullptr;
  }
  return fn;
}

// Looked up once per process (thread-safe static initialisation); null when unavailable.
template <class Fn>
Fn resolve(const char* symbol) {
  return reinterpret_cast<Fn>(entry_point(symbol));
}

}  // namespace

bool driver_current_context(bool* has) {
  static const CtxGetCurrentFn fn = resolve<CtxGetCurrentFn>("cuCtxGetCurrent");
  if (!fn) return false;
  void* ctx = nullptr;
  if (fn(&ctx) != 0) return false;
  *has = ctx != nullptr;
  return true;
}

bool driver_address_range(const void* p, uintptr_t* base, size_t* size) {
  static const MemGetAddressRangeFn fn = resolve<MemGetAddressRangeFn>("cuMemGetAddressRange");
  if (!fn) return false;
  unsigned long long b = 0;
  size_t s = 0;
  if (fn(&b, &s, (unsigned long long)(uintptr_t)p) != 0) return false;
  *base = (uintptr_t)b;
  *size = s;
  return true;
}

}  // namespace papo
