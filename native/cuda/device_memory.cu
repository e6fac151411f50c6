// The device memory behind DeviceTensor (lib/device-tensor.ts) and the caller's own streams: allocation, copies,
// pointer checks and memory queries, each on the device the caller names.
#include <cuda_runtime.h>
#include <stdio.h>

#include <map>
#include <mutex>
#include <string>

#include "cuda/cuda_resources.h"
#include "cuda/driver_api.h"
#include "cuda/papo_cuda.h"
#include "cuda/stream_memory.h"

namespace papo {

void throw_out_of_memory(const char* kind, size_t bytes, const char* what) {
  std::string msg = std::string("out of ") + kind + " memory: " + what + " needs " + std::to_string(bytes) + " bytes";
  size_t freeB = 0, totalB = 0;
  if (std::string(kind) == "device" && cudaMemGetInfo(&freeB, &totalB) == cudaSuccess)
    msg += " (" + std::to_string(freeB) + " of " + std::to_string(totalB) + " bytes free)";
  cudaGetLastError();
  throw Error(ErrorCode::OutOfMemory, msg);
}


namespace {

// The live allocations of cuda_alloc, by start: a pointer check that falls inside one of them needs no driver
// query (the pointer checks of a call on papo-kernels' own tensors then cost no runtime call).
struct Owned {
  size_t bytes;
  int device;
};
std::mutex& ownedMu = *new std::mutex;  // never destroyed: DeviceTensor finalizers may run at exit
std::map<uintptr_t, Owned>& owned = *new std::map<uintptr_t, Owned>;

bool within_owned(const void* ptr, size_t bytes, int device) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  std::lock_guard<std::mutex> lock(ownedMu);
  auto it = owned.upper_bound(p);
  if (it == owned.begin()) return false;
  --it;
  const size_t at = p - it->first;
  return it->second.device == device && at <= it->second.bytes && bytes <= it->second.bytes - at;
}

}  // namespace

void* cuda_alloc(size_t bytes, int device, uint64_t stream) {
  DeviceScope scope(device);
  void* p = stream_alloc(bytes, reinterpret_cast<cudaStream_t>((uintptr_t)stream), "the DeviceTensor", device);
  try {
    std::lock_guard<std::mutex> lock(ownedMu);
    owned[reinterpret_cast<uintptr_t>(p)] = Owned{bytes, device};
  } catch (...) {  // no memory for the entry: its pointer checks ask the driver instead
  }
  return p;
}

void cuda_free(void* ptr, int device, uint64_t stream) noexcept {
  {
    std::lock_guard<std::mutex> lock(ownedMu);
    owned.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  try {
    DeviceScope scope(device);
    stream_free(ptr, reinterpret_cast<cudaStream_t>((uintptr_t)stream));
  } catch (...) {  // the device cannot be made current: nothing can free the memory now
  }
  cudaGetLastError();
}

void cuda_copy(void* dst, const void* src, size_t bytes, bool toDevice, int device, uint64_t stream) {
  DeviceScope scope(device);
  const Stream s = Stream::borrow(stream);
  cuda_check(cudaMemcpyAsync(dst, src, bytes, toDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s.get()),
             toDevice ? "cudaMemcpyAsync (upload)" : "cudaMemcpyAsync (download)");
  s.sync();
}

// Both on a stream of their own and waiting for that stream only: a device-wide synchronisation would wait for
// (and delay) every other stream's work on the device.
void cuda_copy_d2d(void* dst, const void* src, size_t bytes, int device) {
  DeviceScope scope(device);
  const Stream s = Stream::own();
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s.get()), "cudaMemcpyAsync (device to device)");
  s.sync();
}

void cuda_memset_zero(void* ptr, size_t bytes, int device, uint64_t stream) {
  DeviceScope scope(device);
  const Stream s = Stream::borrow(stream);
  cuda_check(cudaMemsetAsync(ptr, 0, bytes, s.get()), "cudaMemsetAsync");
  s.sync();
}

namespace {
std::string hex(uintptr_t a) {
  char buf[2 + 16 + 1];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)a);
  return buf;
}
}  // namespace

void cuda_check_pointer(const void* ptr, size_t bytes, int device, const char* name) {
  if (within_owned(ptr, bytes, device)) return;
  // With the call's device current: without a current context the runtime would create one for whatever
  // device the thread reports (0 on a fresh thread).
  DeviceScope scope(device);
  cudaPointerAttributes a{};
  cuda_check(cudaPointerGetAttributes(&a, ptr), "cudaPointerGetAttributes");
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer is not CUDA device memory");
  if (a.device != device)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the pointer belongs to device " +
                                                std::to_string(a.device) + ", not device " + std::to_string(device));
  // The whole range must lie in the allocation the pointer starts in: a tensor wrapped with dims too large for
  // its memory would otherwise have the kernels read (and write) past its end.
  // Memory mapped in pieces (cuMemMap, e.g. PyTorch's expandable segments) reports only the piece holding an
  // address: follow the pieces while each starts exactly where the last one ended.
  uintptr_t base = 0;
  size_t size = 0;
  if (!driver_address_range(ptr, &base, &size)) return;  // the driver cannot tell (no entry point): trust the caller
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t end = base + size;
  for (int piece = 0; piece < 4096 && p >= base && end - p < bytes; ++piece) {
    uintptr_t nextBase = 0;
    size_t nextSize = 0;
    if (!driver_address_range(reinterpret_cast<const void*>(end), &nextBase, &nextSize) || nextBase != end) break;
    end = nextBase + nextSize;
  }
  if (p < base || p >= end || bytes > end - p)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the device tensor needs " + std::to_string(bytes) +
                                                " bytes from " + hex(p) + ", but its allocation ends after " +
                                                std::to_string(p < end && p >= base ? end - p : 0) + " bytes (at " +
                                                hex(end) + ")");
}

CudaMemInfo cuda_mem_info(int device) {
  DeviceScope scope(device);
  CudaMemInfo m;
  cuda_check(cudaMemGetInfo(&m.free, &m.total), "cudaMemGetInfo");
  return m;
}

uint64_t cuda_stream_create(int device) {
  DeviceScope scope(device);
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return (uint64_t)reinterpret_cast<uintptr_t>(s);
}

void cuda_stream_destroy(uint64_t stream, int device) {
  if (!stream) throw Error(ErrorCode::InvalidArgument, "stream: the legacy default stream (0n) cannot be destroyed");
  DeviceScope scope(device);
  cuda_check(cudaStreamDestroy(reinterpret_cast<cudaStream_t>((uintptr_t)stream)), "cudaStreamDestroy");
}

}  // namespace papo
