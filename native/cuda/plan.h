// What a CUDA call runs, decided in one place: the kernel version and its launch shape, the phases in which the
// call reads the logits, and where the token terms come from. One plan per device, requested version, tuning,
// dtypes, V, paths and flow, made by the first call of that shape and kept for the process: later calls look it
// up and ask the device nothing.
//
// The versions are a table (plan.cu): each names its launch, its shape function (kernels/*.cu), the version
// that runs where it cannot (for example k3 before sm_90), and the one that runs calls whose phases are apart.
#pragma once

#include <stdint.h>

#include "cuda/device_call.h"
#include "cuda/papo_cuda.h"

namespace papo {
namespace cuda {

// The order in which a call reads its logits.
enum Flow : int32_t {
  FLOW_FUSED = 0,     // forward and backward in one phase (PHASE_BOTH), token terms per row
  FLOW_FORWARD = 1,   // the forward phase alone: papoLoss without gradients
  FLOW_CHECKED = 2,   // in place: a forward phase, every row checked on the host, then the backward phase
  FLOW_SEQUENCE = 3,  // GSPO, perception top-p: a forward phase, the host's sequence phase, then the backward
  FLOW_LOG_PROBS = 4, // logProbs(): the forward phase, statistics only
};

struct Plan {
  RunRows run = nullptr;  // the version's launch of one phase on one chunk
  int32_t kernel = KERNEL_K2_FUSED;
  const char* name = "";
  Terms terms = TERMS_PER_ROW;
  LaunchShape launch;
};

// The plan for a call of this shape on key.device (which must be current). Throws InvalidArgument when the
// tuning asks for a version that does not exist.
const Plan& plan(const ShapeKey& key, int32_t requested, Flow flow, const CudaTuning& tuning);

// The tuning a call runs with: its own (CudaExec::tuning), else the process's (PAPO_CUDA_*).
const CudaTuning& tuning_of(const CudaExec& exec);

}  // namespace cuda
}  // namespace papo
