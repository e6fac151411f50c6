// The native CPU backend: one task per row computes both paths' statistics, the per-token terms and both
// gradient rows while the row is still in cache; rows run on the shared thread pool.
#pragma once

#include "core/call.h"

namespace papo {

PapoMetrics papo_loss_cpu(const PapoCall& call);
// Every host shard of a vocabulary split at once: the bits of each shard's own call given the merged statistics.
PapoMetrics papo_loss_cpu_sharded(const ShardedPapoCall& call);
void log_probs_cpu(const LogProbsCall& call);
// One vocabulary shard's per-token statistics (core/vocab_stats.h); NaN and +Infinity are errors, a row of the
// shard with no finite entry is not (the merge decides).
void vocab_shard_stats_cpu(const VocabStatsCall& call);

// The instruction set the row kernels use on this CPU ("avx512", "avx2" or "baseline").
const char* cpu_isa();

// Exponentials per second of the selected kernels on every thread of the pool at once: the floor that
// fwd+bwd (two per element: statistics, then gradient) and logProbs (one) are measured against.
double cpu_exp_floor();

// Seconds to copy `bytes` between two resident buffers with streaming stores, split over every thread of the pool:
// the floor of a call that reads its logits once and writes its gradients once.
double cpu_copy_floor(int64_t bytes);

}  // namespace papo
