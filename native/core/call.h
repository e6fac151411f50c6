// What one papoLoss / logProbs call hands a backend: raw pointers into the caller's buffers (every rule checked
// by lib/validate.ts; napi/args.cpp checks again only what protects memory), the resolved options, and where the
// outputs go.
#pragma once

#include <stdint.h>

#include <string>
#include <vector>

#include "dtype.h"
#include "error.h"
#include "token_math.h"

namespace papo {

struct PapoCall {
  int64_t N = 0, V = 0;
  double temperature = 1.0;

  const void* logits = nullptr;
  int32_t dtype = DT_F32;
  const void* maskedLogits = nullptr;  // the masked-image path, or
  int32_t maskedDtype = DT_F32;
  const float* maskedLogProbs = nullptr;  // its precomputed sampled-token log-probs (implies detachMasked)

  const int32_t* tokens = nullptr;
  const float* advantages = nullptr;  // per token
  const float* mask = nullptr;        // null: every token counts
  const float* oldLogProbs = nullptr;  // null: on-policy
  const float* refLogProbs = nullptr;
  const float* rolloutLogProbs = nullptr;  // with params.rolloutCorrection
  const int32_t* seqLengths = nullptr;  // null: one sequence of N tokens
  int64_t numSeqs = 1;
  const float* perceptionWeights = nullptr;  // [numSeqs]; null: 1
  const float* sftMask = nullptr;            // [numSeqs]; null: no SFT term

  LossParams params;
  int32_t lossAgg = AGG_TOKEN_MEAN;
  double lossScale = 0.0;  // > 0 when given
  double normScale = 0.0;  // seq-mean-token-sum-norm denominator (lossScale, or the padded length)

  void* gradLogits = nullptr;  // null: no gradient for that path; may equal logits (in place)
  int32_t gradType = DT_F32;
  void* gradMaskedLogits = nullptr;
  int32_t gradMaskedType = DT_F32;

  float* outLogProbs = nullptr;  // [N] each; the masked ones only when maskedLogits is given
  float* outEntropy = nullptr;
  float* outMaskedLogProbs = nullptr;
  float* outMaskedEntropy = nullptr;

  // One shard of a vocabulary split: the logits are columns [vocabStart, vocabStart + V) of vocabTotal, tokens
  // index the whole vocabulary, and each row's statistics are the merged ones of every shard
  // (core/vocab_stats.h), not this shard's alone. The CPU backend only.
  const double* vocabStats = nullptr;  // [4 N]
  const double* maskedVocabStats = nullptr;  // with maskedLogits
  int64_t vocabStart = 0, vocabTotal = 0;
};

// Logits split over the vocabulary, every shard on the host, in one call: shards[k] holds columns
// [vocabStart, vocabStart + V) of its paths and their gradients, the per-token inputs and outputs are shards[0]'s,
// and the call merges the shards' statistics row by row into stats (and maskedStats), which each shard's
// vocabStats points to. A row's shards are then in cache for their gradients, as an unsplit row is.
struct ShardedPapoCall {
  std::vector<PapoCall> shards;
  double* stats = nullptr;        // [4 N], written
  double* maskedStats = nullptr;  // [4 N] with maskedLogits, written
};

struct PapoMetrics {
  double loss = 0, pgLoss = 0, klLoss = 0, perceptionKl = 0, entropyLoss = 0, maskedEntropyLoss = 0;
  double clipFrac = 0, dualClipFrac = 0, approxKl = 0, meanEntropy = 0, meanMaskedEntropy = 0, tokens = 0;
  // Reported only when their option is on (the flags say which).
  double rolloutCorrectionMean = 0, rolloutCorrectionBoundFrac = 0, perceptionKeptFrac = 0, sftLoss = 0;
  int32_t rolloutCorrection = ROLLOUT_NONE;  // names the bound fraction: truncated or masked tokens
  bool hasTopP = false, hasSft = false;
};

// Forward only: per-row sampled-token log-probs and full entropies of one logits tensor.
struct LogProbsCall {
  int64_t N = 0, V = 0;
  double temperature = 1.0;
  const void* logits = nullptr;
  int32_t dtype = DT_F32;
  const int32_t* tokens = nullptr;
  float* outLogProbs = nullptr;
  float* outEntropy = nullptr;
};

// One vocabulary shard's per-token statistics (core/vocab_stats.h) for one path.
struct VocabStatsCall {
  int64_t N = 0, V = 0;
  double temperature = 1.0;
  const void* logits = nullptr;  // [N, V]: columns [vocabStart, vocabStart + V)
  int32_t dtype = DT_F32;
  const int32_t* tokens = nullptr;  // ids in the whole vocabulary
  int64_t vocabStart = 0;
  double* out = nullptr;  // [4 N]
  std::string tensorName = "shard";  // what an error about a bad row names
};

}  // namespace papo
