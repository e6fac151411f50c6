// Emulated device memory: every cudaMalloc is its own mapping, 256-byte aligned as on a GPU, with its end as
// close to a PROT_NONE guard page as that alignment allows and another guard page before the page-rounded span
// (so up to a page of poisoned slack precedes a small allocation):
//
//   [guard][lead slack, poison][ptr ... ptr + bytes)[tail slack < 256 B, poison][guard]
//
// A read or write that reaches a guard page faults the kernel (blocks.cpp turns the SIGSEGV into
// cudaErrorIllegalAddress). The slack is filled with 0xFF, which is NaN in fp32, fp16 and bf16 and -1 as an
// index, so a short over-read poisons the result instead of passing; a write into the slack is found by
// check_canaries() after every kernel. Fresh allocations are poisoned the same way (a GPU gives whatever was
// there), and freed ones are unmapped, so a use after free faults.
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "internal.h"

namespace papo_emu {

namespace {

constexpr unsigned char kPoison = 0xFF;
constexpr size_t kAlign = 256;

struct Allocation {
  char* map;
  size_t mapBytes;
  char* ptr;
  size_t bytes;
  int device;
  Space space;
  char* slackLo;  // [slackLo, ptr) and [ptr + bytes, slackHi): poisoned slack of device allocations
  char* slackHi;
  bool freedAsync = false;  // a pool block freed in stream order: its pages are PROT_NONE until reused
};

// Never destroyed: detached stream threads may still allocate or free while the process runs its exit handlers.
std::mutex& mu = *new std::mutex;
std::map<uintptr_t, Allocation>& allocations = *new std::map<uintptr_t, Allocation>;  // by ptr
int64_t deviceBytes[16] = {};
int64_t pinnedBytes = 0;

size_t page_size() { return (size_t)sysconf(_SC_PAGESIZE); }

const Allocation* containing(uintptr_t a) {
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return nullptr;
  --it;
  const Allocation& al = it->second;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(al.ptr);
  return a >= lo && a < lo + std::max<size_t>(al.bytes, 1) ? &al : nullptr;
}

bool first_dirty(const char* p, const char* end, const char** at) {
  for (; p < end; ++p)
    if ((unsigned char)*p != kPoison) {
      *at = p;
      return true;
    }
  return false;
}

}  // namespace

cudaError_t device_alloc(void** out, size_t bytes, int device) {
  const size_t page = page_size();
  const size_t span = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  const size_t dataPages = (span + page - 1) / page * page;
  const size_t mapBytes = dataPages + 2 * page;
  void* map = mmap(nullptr, mapBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* m = static_cast<char*>(map);
  mprotect(m, page, PROT_NONE);
  mprotect(m + page + dataPages, page, PROT_NONE);
  char* end = m + page + dataPages;
  char* ptr = end - span;
  memset(m + page, kPoison, dataPages);
  Allocation a{m, mapBytes, ptr, bytes, device, Space::Device, m + page, end};
  std::lock_guard<std::mutex> lock(mu);
  allocations[reinterpret_cast<uintptr_t>(ptr)] = a;
  deviceBytes[device & 15] += (int64_t)bytes;
  *out = ptr;
  return cudaSuccess;
}

cudaError_t pinned_alloc(void** out, size_t bytes) {
  const size_t page = page_size();
  const size_t mapBytes = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  void* map = mmap(nullptr, mapBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* m = static_cast<char*>(map);
  Allocation a{m, mapBytes, m, bytes, -1, Space::Pinned, nullptr, nullptr};
  std::lock_guard<std::mutex> lock(mu);
  allocations[reinterpret_cast<uintptr_t>(m)] = a;
  pinnedBytes += (int64_t)bytes;
  *out = m;
  return cudaSuccess;
}

// Frees an allocation of the given space that starts exactly at p.
cudaError_t release(void* p, Space space) {
  Allocation a;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(p));
    if (it == allocations.end() || it->second.space != space) return cudaErrorInvalidValue;
    a = it->second;
    allocations.erase(it);
    if (space == Space::Device) deviceBytes[a.device & 15] -= (int64_t)a.bytes;
    else pinnedBytes -= (int64_t)a.bytes;
  }
  munmap(a.map, a.mapBytes);
  return cudaSuccess;
}

void set_freed_async(void* ptr, bool freed) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations.end()) return;
  Allocation& a = it->second;
  a.freedAsync = freed;
  // Reused, it is poisoned again as a fresh allocation is (a GPU gives whatever was there).
  mprotect(a.slackLo, a.slackHi - a.slackLo, freed ? PROT_NONE : PROT_READ | PROT_WRITE);
  if (!freed) memset(a.slackLo, kPoison, a.slackHi - a.slackLo);
}

bool freed_async(const void* p, std::string* detail) {
  std::lock_guard<std::mutex> lock(mu);
  const Allocation* al = containing(reinterpret_cast<uintptr_t>(p));
  if (!al || !al->freedAsync) return false;
  if (detail) *detail = "use of a device allocation after its cudaFreeAsync";
  return true;
}

Region find_region(const void* p, size_t bytes, std::string* error) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mu);
  const Allocation* al = containing(a);
  Region r;
  if (!al) {
    r.ptr = const_cast<char*>(static_cast<const char*>(p));
    r.bytes = bytes;
    return r;
  }
  r.ptr = al->ptr;
  r.bytes = al->bytes;
  r.device = al->device;
  r.space = al->space;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(al->ptr);
  if (error && a + bytes > lo + al->bytes) {
    char buf[200];
    snprintf(buf, sizeof buf, "%zu bytes from 0x%llx run %llu bytes past the end of a %zu-byte allocation", bytes,
             (unsigned long long)a, (unsigned long long)(a + bytes - lo - al->bytes), al->bytes);
    *error = buf;
  }
  return r;
}

std::string describe_address(uintptr_t address) {
  std::lock_guard<std::mutex> lock(mu);
  const Allocation* in = containing(address);
  if (in && in->freedAsync) return "inside a device allocation after its cudaFreeAsync (a use after free)";
  const Allocation* best = nullptr;
  int64_t bestDist = INT64_MAX;
  for (const auto& kv : allocations) {
    const Allocation& al = kv.second;
    if (al.space != Space::Device) continue;
    const int64_t lo = (int64_t)reinterpret_cast<uintptr_t>(al.ptr), hi = lo + (int64_t)al.bytes;
    const int64_t a = (int64_t)address;
    const int64_t d = a < lo ? lo - a : (a >= hi ? a - hi + 1 : 0);
    if (d < bestDist) bestDist = d, best = &al;
  }
  char buf[200];
  if (best && bestDist <= (int64_t)page_size() * 2) {
    const int64_t lo = (int64_t)reinterpret_cast<uintptr_t>(best->ptr);
    if ((int64_t)address < lo)
      snprintf(buf, sizeof buf, "%lld bytes before a %zu-byte device allocation", (long long)(lo - (int64_t)address),
               best->bytes);
    else
      snprintf(buf, sizeof buf, "%lld bytes past the end of a %zu-byte device allocation",
               (long long)((int64_t)address - lo - (int64_t)best->bytes), best->bytes);
    return buf;
  }
  return "not device memory (a host pointer, a freed allocation or a wild address)";
}

std::string check_canaries() {
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& kv : allocations) {
    const Allocation& al = kv.second;
    if (al.space != Space::Device || al.freedAsync) continue;
    const char* at = nullptr;
    if (first_dirty(al.slackLo, al.ptr, &at) || first_dirty(al.ptr + al.bytes, al.slackHi, &at)) {
      char buf[200];
      const int64_t off = at - al.ptr;
      snprintf(buf, sizeof buf, "a kernel wrote %lld bytes %s a %zu-byte device allocation",
               (long long)(off < 0 ? -off : off - (int64_t)al.bytes), off < 0 ? "before" : "past the end of", al.bytes);
      // Repaint, so that one overrun is reported once.
      memset(al.slackLo, kPoison, al.ptr - al.slackLo);
      memset(al.ptr + al.bytes, kPoison, al.slackHi - (al.ptr + al.bytes));
      return buf;
    }
  }
  return "";
}

int64_t live_device_bytes(int device) {
  std::lock_guard<std::mutex> lock(mu);
  if (device >= 0) return deviceBytes[device & 15];
  int64_t s = 0;
  for (int64_t b : deviceBytes) s += b;
  return s;
}

int64_t live_pinned_bytes() {
  std::lock_guard<std::mutex> lock(mu);
  return pinnedBytes;
}

}  // namespace papo_emu
