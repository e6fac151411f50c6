// What the emulator's parts share: per-host-thread state, the allocation table, streams and their operations,
// and the kernel launch record. Nothing outside src/ includes this.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <papo_emulator/emulator.h>

namespace papo_emu {

int64_t env_int(const char* name, int64_t fallback);

// ---- devices and host threads (runtime.cpp) ------------------------------------------------------------------
int device_count();
const cudaDeviceProp& device_prop(int device);

// CUDA's per-host-thread state: the current device, whether this thread made it current (its context exists),
// and the last error.
struct HostThread {
  int device = 0;
  bool hasContext = false;
  cudaError_t lastError = cudaSuccess;
};
HostThread& host_thread();
// Makes the context of the thread's current device (what the first real API call on a thread does).
void ensure_context();
// Records a failed call's error as the thread's last error; returns err.
cudaError_t fail(cudaError_t err, const std::string& detail = "");
bool should_fail(FaultKind kind);
void count_device_sync();
void count_host_alloc(int64_t bytes);
// A copy between host and device memory, for the counters (pageable: the host side is not pinned).
void count_copy(bool toHost, size_t bytes, bool pageable);

// One runtime or driver API call by the host, for the counters: declared first in every entry point. A call
// that another entry point makes (cudaMallocHost calling cudaHostAlloc) is part of the outer one.
class ApiCall {
 public:
  explicit ApiCall(const char* name);
  ~ApiCall();
  ApiCall(const ApiCall&) = delete;
  ApiCall& operator=(const ApiCall&) = delete;
};
#define EMU_API(name) const ::papo_emu::ApiCall emu_api_call_(name)

// ---- memory (memory.cpp) ---------------------------------------------------------------------------------------
enum class Space { Device, Pinned, Pageable };
struct Region {
  char* ptr = nullptr;
  size_t bytes = 0;
  int device = -1;
  Space space = Space::Pageable;
};
// The allocation that holds [p, p + bytes), else a Pageable region describing p (bytes == 0 means just p).
// Throws nothing; *error is set when p starts in an allocation but the range runs past its end.
Region find_region(const void* p, size_t bytes, std::string* error);
std::string describe_address(uintptr_t address);
// Bytes written outside allocations since the last check ("" when none): the poisoned slack around each
// device allocation is compared with its fill pattern.
std::string check_canaries();
cudaError_t device_alloc(void** out, size_t bytes, int device);
cudaError_t pinned_alloc(void** out, size_t bytes);
cudaError_t release(void* p, Space space);
int64_t live_device_bytes(int device);
int64_t live_pinned_bytes();
// A pool block between its cudaFreeAsync (once the stream ran it) and its next stream-ordered allocation: its
// pages are inaccessible, so a kernel that touches it faults; freed_async says so for copies (detail set).
void set_freed_async(void* ptr, bool freed);
bool freed_async(const void* p, std::string* detail);

// ---- stream-ordered pools (mempool.cpp) ------------------------------------------------------------------------
bool pool_owned(const void* ptr);
void pool_stats(Stats& s);
void reset_pool_stats();
void install_fault_handler();

// ---- streams (streams.cpp) -------------------------------------------------------------------------------------
// Streams are lazy: an operation runs only once something needs it (a host synchronisation, or another
// stream's operation that waits for it through an event or the legacy stream's rules), or after
// PAPO_EMU_LAZY_MS (default 200) when nothing does, as a GPU runs queued work eventually. So work that nothing
// orders after a producer runs before the producer, every time, instead of racing it.
struct Demand {
  std::mutex m;
  std::condition_variable cv;
  uint64_t upTo = 0;  // the stream's operations up to this sequence number are wanted now
  void want(uint64_t seq);
};

struct Completion {
  std::mutex m;
  std::condition_variable cv;
  std::shared_ptr<Demand> demand;  // of the stream this operation belongs to
  uint64_t seq = 0;                // in its stream
  uint64_t order = 0;              // among all operations: a device synchronisation runs the newest first
  bool done = false;
  cudaError_t err = cudaSuccess;
  std::string detail;
  double when = 0;  // steady-clock seconds at completion, for event timing
  void signal(cudaError_t e, const std::string& d);
  cudaError_t wait(std::string* d = nullptr);  // demands the operation first
  bool finished();                              // a poll: demands nothing
};
using CompletionPtr = std::shared_ptr<Completion>;

// An operation in a stream: runs after its dependencies (the stream's order, plus legacy-stream and event
// waits), returns cudaSuccess or an error with detail. After an error the stream is faulted: its later
// operations do not run and report the same error, as work after a fault does on a device.
using OpBody = std::function<cudaError_t(std::string& detail)>;
CompletionPtr enqueue(cudaStream_t stream, const char* what, OpBody body, std::vector<CompletionPtr> deps = {});
// The legacy default stream's semantics apply to stream 0 and cudaStreamLegacy.
bool is_legacy(cudaStream_t stream);
// The device a stream belongs to (the legacy and per-thread streams: the calling thread's current device).
int stream_device(cudaStream_t stream);
cudaError_t synchronize_stream(cudaStream_t stream);
cudaError_t synchronize_device(int device);
// Waits for one operation of `stream`; an error is reported (and the stream's fault cleared) like a sync.
cudaError_t wait_op(cudaStream_t stream, const CompletionPtr& op);
// Waits for all work on the device without reporting errors (what cudaFree does before it frees).
void drain_device(int device);

// ---- kernels (blocks.cpp) ---------------------------------------------------------------------------------------
struct Launch {
  std::string name;
  const void* kernel = nullptr;
  dim3 grid, block, cluster;
  size_t smem = 0;
  std::function<void()> body;
  uint64_t seed = 0;
};
// Runs every block of the launch on the calling thread and the helper pool; returns the first fault.
cudaError_t run_grid(const Launch& launch, std::string& detail);
int max_dynamic_smem(const void* kernel);

}  // namespace papo_emu
