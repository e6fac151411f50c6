// Stream-ordered allocation: cudaMallocAsync / cudaMallocFromPoolAsync and cudaFreeAsync, with memory pools
// that keep freed blocks for reuse up to their release threshold, as CUDA's do. Modelled:
//   - a free is an operation of its stream: until the stream runs it the block stays usable by the work enqueued
//     before it; once run, the block's pages are inaccessible, so a later kernel that touches it faults
//     (cudaErrorIllegalAddress, "after its cudaFreeAsync") and a copy or memset reports the same;
//   - an allocation reuses an idle block of the same size freed on the same stream (stream order makes that
//     safe at once), or freed on another stream once that free has run; otherwise the pool grows (a new mapping);
//   - a block is usable from the allocation's place in its stream: the reuse is itself an operation there;
//   - idle memory beyond the pool's release threshold (default 0) is given back once the frees have run, and
//     cudaMemPoolTrimTo gives back idle memory down to what it is told to keep.
// Neither allocation nor free waits for the device. Counters: poolAllocs, poolFrees, poolGrowths, poolReleases.
#include <string.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include "internal.h"

struct CUmemPoolHandle_st {
  int device = 0;
  uint64_t threshold = 0;
  struct Idle {
    void* ptr;
    size_t bytes;
    cudaStream_t freedOn;
    papo_emu::CompletionPtr freed;  // the free operation
  };
  std::vector<Idle> idle;  // oldest first
  uint64_t reserved = 0, used = 0, reservedHigh = 0, usedHigh = 0;
};

namespace papo_emu {

namespace {

// Never destroyed: detached stream threads may still free into a pool while the process runs its exit handlers.
std::mutex& mu = *new std::mutex;
std::map<void*, std::pair<cudaMemPool_t, size_t>>& live = *new std::map<void*, std::pair<cudaMemPool_t, size_t>>;  // pool allocations in use: their pool and size
std::vector<cudaMemPool_t>& pools = *new std::vector<cudaMemPool_t>;                          // every pool that has allocated (for pool_owned)
CUmemPoolHandle_st defaultPools[16];
std::atomic<int64_t> nAllocs{0}, nFrees{0}, nGrowths{0}, nReleases{0};

bool run(const CompletionPtr& op) { return op->finished(); }

// With mu held: idle blocks whose free has run (or is running: `freeing`), beyond `keep` idle bytes, oldest
// first, out of the pool.
std::vector<void*> take_excess(cudaMemPool_t pool, uint64_t keep, const void* freeing = nullptr) {
  std::vector<void*> out;
  uint64_t idleBytes = 0;
  for (const auto& b : pool->idle) idleBytes += b.bytes;
  for (auto it = pool->idle.begin(); it != pool->idle.end() && idleBytes > keep;) {
    if (it->ptr != freeing && !run(it->freed)) {
      ++it;
      continue;
    }
    idleBytes -= it->bytes;
    pool->reserved -= it->bytes;
    out.push_back(it->ptr);
    it = pool->idle.erase(it);
  }
  return out;
}

void give_back(const std::vector<void*>& blocks) {
  for (void* p : blocks) {
    release(p, Space::Device);
    ++nReleases;
  }
}

cudaError_t alloc_from(void** ptr, size_t bytes, cudaMemPool_t pool, cudaStream_t stream) {
  if (!ptr || !pool) return fail(cudaErrorInvalidValue);
  ensure_context();
  ++nAllocs;
  if (should_fail(FaultKind::Malloc)) return fail(cudaErrorMemoryAllocation, "injected stream-ordered allocation failure");
  void* reuse = nullptr;
  bool grown = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = pool->idle.begin(); it != pool->idle.end(); ++it)
      if (it->bytes == bytes && (it->freedOn == stream || run(it->freed))) {
        reuse = it->ptr;
        pool->idle.erase(it);
        break;
      }
  }
  if (reuse) {
    enqueue(stream, "stream-ordered allocation", [reuse](std::string&) {
      set_freed_async(reuse, false);
      return cudaSuccess;
    });
  } else {
    if ((int64_t)(live_device_bytes(pool->device) + bytes) > (int64_t)device_prop(pool->device).totalGlobalMem)
      return fail(cudaErrorMemoryAllocation, "beyond the emulated device's memory (PAPO_EMU_MEMORY_MB)");
    const cudaError_t e = device_alloc(&reuse, bytes, pool->device);
    if (e != cudaSuccess) return fail(e);
    ++nGrowths;
    grown = true;
  }
  std::lock_guard<std::mutex> lock(mu);
  live[reuse] = {pool, bytes};
  if (std::find(pools.begin(), pools.end(), pool) == pools.end()) pools.push_back(pool);
  if (grown) pool->reserved += bytes;  // a reused block was reserved already
  pool->reservedHigh = std::max(pool->reservedHigh, pool->reserved);
  pool->used += bytes;
  pool->usedHigh = std::max(pool->usedHigh, pool->used);
  *ptr = reuse;
  return cudaSuccess;
}

}  // namespace

bool pool_owned(const void* ptr) {
  std::lock_guard<std::mutex> lock(mu);
  if (live.count(const_cast<void*>(ptr))) return true;
  for (cudaMemPool_t pool : pools)
    for (const auto& b : pool->idle)
      if (b.ptr == ptr) return true;
  return false;
}

void pool_stats(Stats& s) {
  s.poolAllocs = nAllocs;
  s.poolFrees = nFrees;
  s.poolGrowths = nGrowths;
  s.poolReleases = nReleases;
}

void reset_pool_stats() {
  nAllocs = 0;
  nFrees = 0;
  nGrowths = 0;
  nReleases = 0;
}

}  // namespace papo_emu

using namespace papo_emu;

cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props) {
  EMU_API("cudaMemPoolCreate");
  if (!pool || !props || props->allocType != cudaMemAllocationTypePinned || props->location.type != cudaMemLocationTypeDevice ||
      props->location.id < 0 || props->location.id >= device_count())
    return fail(cudaErrorInvalidValue, "cudaMemPoolCreate: a pinned pool on an existing device");
  ensure_context();
  *pool = new CUmemPoolHandle_st;
  (*pool)->device = props->location.id;
  return cudaSuccess;
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
  EMU_API("cudaMemPoolDestroy");
  if (!pool) return fail(cudaErrorInvalidValue);
  std::vector<void*> drop;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& kv : live)
      if (kv.second.first == pool) return fail(cudaErrorInvalidValue, "cudaMemPoolDestroy of a pool with live allocations");
    drop = take_excess(pool, 0);
    if (!pool->idle.empty()) return fail(cudaErrorInvalidValue, "cudaMemPoolDestroy before its frees ran (synchronize first)");
  }
  give_back(drop);
  {
    std::lock_guard<std::mutex> lock(mu);
    pools.erase(std::remove(pools.begin(), pools.end(), pool), pools.end());
  }
  if (pool < defaultPools || pool >= defaultPools + 16) delete pool;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  EMU_API("cudaDeviceGetDefaultMemPool");
  if (!pool || device < 0 || device >= device_count()) return fail(cudaErrorInvalidValue);
  defaultPools[device].device = device;
  *pool = &defaultPools[device];
  return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  EMU_API("cudaMemPoolSetAttribute");
  if (!pool || !value) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(mu);
  if (attr == cudaMemPoolAttrReleaseThreshold) pool->threshold = *static_cast<uint64_t*>(value);
  else if (attr == cudaMemPoolAttrReservedMemHigh) pool->reservedHigh = pool->reserved;
  else if (attr == cudaMemPoolAttrUsedMemHigh) pool->usedHigh = pool->used;
  else if (attr > cudaMemPoolAttrUsedMemHigh) return fail(cudaErrorInvalidValue, "memory pool attribute not emulated");
  return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  EMU_API("cudaMemPoolGetAttribute");
  if (!pool || !value) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(mu);
  uint64_t v = 0;
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: v = pool->threshold; break;
    case cudaMemPoolAttrReservedMemCurrent: v = pool->reserved; break;
    case cudaMemPoolAttrReservedMemHigh: v = pool->reservedHigh; break;
    case cudaMemPoolAttrUsedMemCurrent: v = pool->used; break;
    case cudaMemPoolAttrUsedMemHigh: v = pool->usedHigh; break;
    default: *static_cast<int*>(value) = 1; return cudaSuccess;  // the reuse policies: all allowed
  }
  *static_cast<uint64_t*>(value) = v;
  return cudaSuccess;
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t minBytesToKeep) {
  EMU_API("cudaMemPoolTrimTo");
  if (!pool) return fail(cudaErrorInvalidValue);
  std::vector<void*> drop;
  {
    std::lock_guard<std::mutex> lock(mu);
    drop = take_excess(pool, minBytesToKeep);
  }
  give_back(drop);
  return cudaSuccess;
}

cudaError_t cudaMallocFromPoolAsync(void** ptr, size_t bytes, cudaMemPool_t pool, cudaStream_t stream) {
  EMU_API("cudaMallocFromPoolAsync");
  return alloc_from(ptr, bytes, pool, stream);
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  EMU_API("cudaMallocAsync");
  cudaMemPool_t pool = nullptr;
  const cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, stream_device(stream));
  return e == cudaSuccess ? alloc_from(ptr, bytes, pool, stream) : e;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  EMU_API("cudaFreeAsync");
  ensure_context();
  if (!ptr) return cudaSuccess;
  ++nFrees;
  cudaMemPool_t pool;
  size_t bytes;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(ptr);
    if (it == live.end())
      return fail(cudaErrorInvalidValue, "cudaFreeAsync of a pointer that no stream-ordered allocation returned (or freed twice)");
    pool = it->second.first;
    bytes = it->second.second;
    live.erase(it);
    pool->used -= bytes;
  }
  CompletionPtr op = enqueue(stream, "cudaFreeAsync", [ptr, pool](std::string&) {
    set_freed_async(ptr, true);
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      drop = take_excess(pool, pool->threshold, ptr);
    }
    give_back(drop);
    return cudaSuccess;
  });
  std::lock_guard<std::mutex> lock(mu);
  pool->idle.push_back({ptr, bytes, stream, op});
  return cudaSuccess;
}
