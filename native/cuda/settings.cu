#include "cuda/settings.h"

#include <stdlib.h>

#include <string>

#include "core/error.h"

namespace papo {
namespace cuda {

namespace {

// An integer in [lo, hi], or `fallback` when unset or empty.
int64_t env_integer(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* v = getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = strtoll(v, &end, 10);
  if (*end || x < lo || x > hi)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": expected an integer from " + std::to_string(lo) +
                                                " to " + std::to_string(hi) + ", got '" + v + "'");
  return x;
}

CudaSettings from_environment() {
  CudaSettings s;
  CudaTuning& t = s.tuning;
  // Which versions exist is the plan's to say (plan.cu checks the number when it plans a call).
  t.kernel = (int32_t)env_integer("PAPO_CUDA_KERNEL", 0, 0, 99);
  t.blocks = (int)env_integer("PAPO_CUDA_BLOCKS", 0, 1, 1 << 30);
  t.cluster = (int)env_integer("PAPO_CUDA_CLUSTER", 0, 1, 8);
  if (t.cluster & (t.cluster - 1))
    throw Error(ErrorCode::InvalidArgument,
                "PAPO_CUDA_CLUSTER: expected 1, 2, 4 or 8, got " + std::to_string(t.cluster));
  t.k3Buffers = (int)env_integer("PAPO_CUDA_K3_BUFFERS", 0, 1, 2);
  t.k3CoResident = (int)env_integer("PAPO_CUDA_K3_CO_RESIDENT", 1, 1, 2);
  t.k4Slice = env_integer("PAPO_CUDA_K4_SLICE", 0, 1, 1 << 24);
  t.stagingBytes = env_integer("PAPO_CUDA_STAGING_MB", 256, 1, 1 << 20) << 20;
  const int64_t keepMb = env_integer("PAPO_CUDA_POOL_KEEP_MB", -1, 0, (int64_t)1 << 40);
  s.poolKeepBytes = keepMb < 0 ? -1 : keepMb << 20;
  s.pinnedIdleMs = env_integer("PAPO_CUDA_PINNED_IDLE_MS", 2000, 0, (int64_t)1 << 40);
  return s;
}

}  // namespace

const CudaSettings& settings() {
  static const CudaSettings s = from_environment();  // a throw leaves it unset: the next call reads again
  return s;
}

}  // namespace cuda
}  // namespace papo
