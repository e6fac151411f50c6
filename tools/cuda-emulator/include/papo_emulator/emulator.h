// The emulated device's own interface: kernel launches (native/cuda/launch.cuh calls launch()), and the hooks
// that tests use to inject faults and read counters. See tools/cuda-emulator/README.md for what it checks.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace papo_emu {

// Checks the configuration (a bad one is the thread's last error, as for <<<...>>>), then enqueues the grid on
// `stream`: body() runs once per CUDA thread of every block.
// With `cluster` (x only), the blocks of each cluster run together and share distributed shared memory.
void launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            std::function<void()> body, dim3 cluster = dim3(1, 1, 1));

// Clusters of `cluster` blocks that fit at once: 1 block of this size per SM at most as the occupancy model
// allows, in GPCs of an H100's sizes (a cluster stays within one GPC).
int max_active_clusters(dim3 block, size_t smem, unsigned cluster);

enum class FaultKind { Malloc, HostAlloc, Launch, Memcpy, Count };
// Makes the nth next call of that kind fail (1 = the next one), and the times - 1 calls after it: cudaMalloc (and
// the stream-ordered allocations) and cudaHostAlloc with
// cudaErrorMemoryAllocation, a launch with cudaErrorLaunchOutOfResources (at once), a copy with
// cudaErrorLaunchFailure when its stream runs it. Kinds: "cudaMalloc", "cudaHostAlloc", "launch", "memcpy".
bool inject_fault(const std::string& kind, int nth, int times = 1);

struct Stats {
  int64_t deviceSyncs = 0;    // cudaDeviceSynchronize calls
  int64_t hostAllocs = 0;     // cudaHostAlloc / cudaMallocHost calls
  int64_t launches = 0;       // kernels run
  int64_t deviceQueries = 0;  // cudaDeviceGetAttribute and occupancy queries (blocks per SM, clusters)
  int64_t liveHostBytes = 0;  // pinned bytes not freed
  int64_t liveDeviceBytes = 0;
  int64_t mallocs = 0;        // cudaMalloc calls
  int64_t frees = 0;          // cudaFree calls (each waits for the whole device)
  int64_t deviceDrains = 0;   // implicit device-wide waits: cudaFree, cudaFreeHost
  int64_t poolAllocs = 0;     // cudaMallocAsync / cudaMallocFromPoolAsync calls
  int64_t poolFrees = 0;      // cudaFreeAsync calls
  int64_t poolGrowths = 0;    // pool allocations that needed new memory (none idle of that size was reusable)
  int64_t poolReleases = 0;   // idle pool blocks given back (beyond a pool's release threshold, or trimmed)
  int64_t apiCalls = 0;       // runtime and driver API calls (a kernel launch is one), on any host thread
  std::vector<std::pair<std::string, int64_t>> apiCallsByName;  // the same per entry point, by name
  int64_t copiesToHost = 0, bytesToHost = 0;      // device-to-host copies (cudaMemcpy*) and their bytes
  int64_t copiesToDevice = 0, bytesToDevice = 0;  // host-to-device
  int64_t pageableCopies = 0;  // of those, with pageable host memory (the driver stages them through its own)
  std::vector<int> contexts;  // devices whose context some thread created
  std::map<std::string, int64_t> kernels;  // launches run, by kernel name (which kernel a plan chose)
};
Stats stats();
// Zeroes the counters, forgets which contexts exist and the kernels run, and ends every kernel delay (allocations
// stay).
void reset_stats();

// A kernel as its stream ran it: when it started and ended (steady-clock milliseconds) and on which device.
struct KernelRun {
  std::string name;
  int device = 0;
  double startMs = 0, endMs = 0;
};
// The kernels run since the last reset_stats, in the order they ended (the latest 4096).
std::vector<KernelRun> kernel_runs();
// Every kernel of this launch name (launch_kernel's) that runs from now on first sleeps `ms` on its stream: what
// makes the overlap of two streams' kernels (or its absence) visible in kernel_runs(). ms <= 0 ends it.
void set_kernel_delay(const std::string& name, int ms);

}  // namespace papo_emu
