// CPU-only builds (PAPO_CPU_ONLY=1, no nvcc, or the node-gyp fallback): CUDA is reported as not built, and
// every CUDA entry point fails with Unsupported naming why.
#include <string>

#include "device_probe.h"
#include "papo_cuda.h"

#ifndef PAPO_CUDA_SKIP_REASON
#define PAPO_CUDA_SKIP_REASON "built without CUDA"
#endif

namespace papo {

CudaProbe probe_cuda() {
  CudaProbe p;
  p.status = PAPO_CUDA_SKIP_REASON;
  return p;
}

namespace {
[[noreturn]] void not_built() {
  throw Error(ErrorCode::Unsupported, std::string("CUDA is not part of this build (") + PAPO_CUDA_SKIP_REASON + ")");
}
}  // namespace

PapoMetrics papo_loss_cuda(const PapoCall&, const CudaExec&) { not_built(); }
void log_probs_cuda(const LogProbsCall&, const CudaExec&) { not_built(); }
void vocab_shard_stats_cuda(const VocabStatsCall&, const CudaExec&) { not_built(); }
void* cuda_alloc(size_t, int, uint64_t) { not_built(); }
void cuda_free(void*, int, uint64_t) noexcept {}
void cuda_copy(void*, const void*, size_t, bool, int, uint64_t) { not_built(); }
void cuda_memset_zero(void*, size_t, int, uint64_t) { not_built(); }
void cuda_copy_d2d(void*, const void*, size_t, int) { not_built(); }
void cuda_check_pointer(const void*, size_t, int, const char*) { not_built(); }
CudaMemInfo cuda_mem_info(int) { not_built(); }
uint64_t cuda_stream_create(int) { not_built(); }
void cuda_stream_destroy(uint64_t, int) { not_built(); }

}  // namespace papo
