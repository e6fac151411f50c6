// What the CUDA kernels of one call share: the per-token inputs (uploaded once, O(N)), the per-row results
// (RowOut, O(N)), and one chunk of rows of logits and gradients (device pointers, chunk-local rows).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/row_status.h"
#include "core/token_math.h"
#include "cuda/papo_cuda.h"

namespace papo {
namespace cuda {

// Indexed by the global row. Null pointers: absent input (mask: every token counts; old: on-policy).
struct TokenInputs : TokenArrays {
  const int32_t* tokens = nullptr;
  const float* maskedLogProbs = nullptr;
  // A vocabulary shard (kernels/vocab_shard.cu): the logits are columns [vocabStart, vocabStart + V) of the
  // vocabulary the tokens index, and papoLoss reads each row's statistics from the merged ones of every shard
  // ([4 N] per path, core/vocab_stats.h) instead of from the row.
  int64_t vocabStart = 0;
  const double* vocabStats = nullptr;
  const double* maskedVocabStats = nullptr;
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

// One launch's shape as the plan decided it (plan.h): what the version's launch reads.
struct LaunchShape {
  int blocks = 0;      // the grid: rows (k3: clusters' blocks) looped over it
  int cluster = 0;     // k3: blocks per cluster
  int64_t per = 0;     // k3: 16-byte vectors per block and path; k4: 16-byte groups per slice
  int buffers = 1;     // k3: row pairs in flight per cluster
  size_t smem = 0;     // dynamic shared memory per block
  int threads = 0;     // k3: threads per block
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
  LaunchShape launch;
  // vocabShardStats: where a shard's statistics ([4 N], core/vocab_stats.h's layout) and each row's verdict go.
  double* shardStats = nullptr;
  int32_t* shardStatus = nullptr;
};

// One chunk of rows [rowBegin, rowBegin + rows): chunk-local device pointers (row r of the chunk at r * V).
struct Chunk {
  int64_t rowBegin = 0, rows = 0;
  const void* logits = nullptr;
  const void* maskedLogits = nullptr;
  void* grad = nullptr;  // null: no gradient for that path (or this phase writes none)
  void* maskedGrad = nullptr;
};

// What a version's launch shape depends on (plan.h keeps one plan per key).
struct ShapeKey {
  int device = 0;
  int32_t dtype = DT_F32, gradType = DT_F32;
  int64_t V = 0;
  bool masked = false;  // masked logits: two paths per row
};

// Each version runs one phase of `call` on one chunk, on `stream`, with call.launch as planned
// (kernels/k0_naive.cu, kernels/k1_k2_rows.cu, kernels/k3_cluster.cu, kernels/k4_split.cu).
using RunRows = void (*)(const DeviceCall&, const Chunk&, int32_t, cudaStream_t);
void run_rows_k0(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void run_rows_k1(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void run_rows_k2(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void run_rows_k3(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void run_rows_k4(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
// Each version's launch shape on key.device (current): false where the version cannot run this key (the plan
// then takes its fallback). Asked once per key and tuning: the device queries they make are not repeated.
bool shape_k0(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape);
bool shape_k1(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape);
bool shape_k2(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape);
bool shape_k3(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape);
bool shape_k4(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape);
// A vocabulary shard's papoLoss (kernels/vocab_shard.cu): PHASE_FORWARD from the merged statistics (no logit
// read: any chunk, logits unused), PHASE_BACKWARD the gradient of the shard's columns. vocab_shard_stats fills
// call.shardStats and call.shardStatus for the chunk's rows.
void run_rows_shard(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);
void vocab_shard_stats(const DeviceCall& call, const Chunk& chunk, int32_t phase, cudaStream_t stream);

}  // namespace cuda
}  // namespace papo
