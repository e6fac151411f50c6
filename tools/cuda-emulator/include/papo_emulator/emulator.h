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
  std::vector<int> contexts;  // devices whose context some thread created
  std::map<std::string, int64_t> kernels;  // launches run, by kernel name (which kernel a plan chose)
};
Stats stats();
// Zeroes the counters and forgets which contexts exist (allocations stay).
void reset_stats();

}  // namespace papo_emu
