// What the row kernels' grids and plans read from a device, asked once and kept for the process: a device's
// attributes, a kernel's occupancy for one configuration and its binary version never change while the process
// lives, and asking again on every call cost about twenty runtime queries per papoLoss call.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <functional>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/cuda_resources.h"

namespace papo {
namespace cuda {

struct DeviceFacts {
  int sms = 1, l2 = 0, major = 0, optinSmem = 0, clusterLaunch = 0;
};

inline const DeviceFacts& device_facts(int dev) {
  static std::mutex mu;
  static std::map<int, DeviceFacts> cache;  // node-based: references stay valid as devices are added
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it != cache.end()) return it->second;
  DeviceFacts f;
  const char* what = "cudaDeviceGetAttribute";
  cuda_check(cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, dev), what);
  cuda_check(cudaDeviceGetAttribute(&f.l2, cudaDevAttrL2CacheSize, dev), what);
  cuda_check(cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, dev), what);
  cuda_check(cudaDeviceGetAttribute(&f.optinSmem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), what);
  cuda_check(cudaDeviceGetAttribute(&f.clusterLaunch, cudaDevAttrClusterLaunch, dev), what);
  return cache.emplace(dev, f).first->second;
}

enum KernelFact : int { FACT_BLOCKS_PER_SM, FACT_ACTIVE_CLUSTERS, FACT_BINARY_VERSION };

// One integer about a kernel on a device, for the configuration (a, b) it depends on; query() runs once per key
// (not at all again after it threw: nothing is kept then).
inline int kernel_fact(KernelFact fact, const void* kernel, int dev, int64_t a, int64_t b,
                       const std::function<int()>& query) {
  using Key = std::tuple<int, const void*, int, int64_t, int64_t>;
  static std::mutex mu;
  static std::map<Key, int> cache;
  const Key key{fact, kernel, dev, a, b};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const int v = query();
  cache.emplace(key, v);
  return v;
}

inline int current_device() {
  int dev = 0;
  cuda_check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

}  // namespace cuda
}  // namespace papo
