// What the CUDA kernels of one call share: the per-token inputs (uploaded once, O(N)), the per-row results
// (RowOut, O(N)), and one chunk of rows of logits and gradients (device pointers, chunk-local rows).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/row_status.h"
#include "core/token_math.h"

namespace papo {
namespace cuda {

// Indexed by the global row. Null pointers: absent input (mask: every token counts; old: on-policy).
struct TokenInputs : TokenArrays {
  const int32_t* tokens = nullptr;
  const float* maskedLogProbs = nullptr;
};

// Everything one row produces; the host reads these back (O(N)) for the per-token outputs and the metrics.
struct RowOut {
  RowStats s, ms;   // original and masked path (ms unused without masked logits)
  double lp, a;     // sampled-token log-probs of both paths (a: the given maskedLogProbs when no masked logits)
  TokenTerms t;     // zero for masked-out tokens
  int32_t status;   // ROW_OK, a RowStatus or kTargetExcluded
  int32_t onMasked; // the bad value is in the masked path
};

enum Phase : int32_t {
  PHASE_FORWARD = 1,   // statistics and token terms into RowOut
  PHASE_BACKWARD = 2,  // gradients from the RowOut of an earlier forward phase
  PHASE_BOTH = 3,
};

enum Terms : int32_t {
  TERMS_NONE = 0,     // logProbs(): statistics only
  TERMS_PER_ROW = 1,  // each row's token terms right after its statistics (one pass)
  TERMS_HOST = 2,     // a sequence phase (core/sequence_phase.h): the forward checks rows, the host writes RowOut::t
};

struct DeviceCall {
  int64_t N = 0, V = 0;
  float invTau = 1.f;
  int32_t dtype = DT_F32, gradType = DT_F32;  // both paths share them (lib/validate.ts requires it)
  bool hasMaskedLogits = false;
  Terms terms = TERMS_PER_ROW;
  LossParams params;
  TokenInputs tok;
  RowOut* out = nullptr;
  int32_t kernel = 2;  // CudaKernel (papo_cuda.h)
  int blocks = 0;      // grid size for the row kernels (rows are looped over it)
};

// One chunk of rows [rowBegin, rowBegin + rows): chunk-local device pointers (row r of the chunk at r * V).
struct Chunk {
  int64_t rowBegin = 0, rows = 0;
  const void* logits = nullptr;
  const void* maskedLogits = nullptr;
  void* grad = nullptr;  // null: no gradient for that path (or this phase writes none)
  void* maskedGrad = nullptr;
};

// Each kernel family runs `phase` of `call` on one chunk, on `stream` (kernels/k1_k2_rows.cu, kernels/k0_naive.cu,
// kernels/k4_split.cu).
void run_rows_k1_k2(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void run_rows_k0(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
// k3 (kernels/k3_cluster.cu): false when it does not apply here (phase, architecture, V), and nothing was launched.
bool run_rows_k3(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
// k4 (kernels/k4_split.cu) for forward + backward; other phases run k2's kernel.
void run_rows_k4(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
// Grid size for the fused row kernels on the current device (the L2-aware choice lives with the kernels), and k4's.
int k2_blocks(const DeviceCall& call);
int k4_blocks(const DeviceCall& call);

}  // namespace cuda
}  // namespace papo
