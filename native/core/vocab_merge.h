// The merge of vocabulary shards' per-token statistics (core/vocab_stats.h), in shard order, with the same bits
// as lib/vocab-stats.ts's mergeVocabShardStats: a rank that merges by hand and a one-call split must agree to
// the bit, so the rescaling factor e^(m_k - m) comes from merge_exp, the same arithmetic in both languages, and
// not from either language's own exp (V8's and the C library's differ in the last bit).
#pragma once

#include <stdint.h>

namespace papo {

// e^x for x <= 0 (0 below -708, where it no longer matters next to the shard that holds the max), within one
// unit in the last place. Written out in lib/vocab-stats.ts too: change both or neither.
double merge_exp(double x);

// One token's merged fields from K shards' (max, sumExp, sumExpX, target), each field K values apart by
// `stride` from its first: out = { max, sumExp, sumExpX, target }. max is -Infinity when no shard has a finite
// logit.
void merge_shard_fields(const double* max, const double* sumExp, const double* sumExpX, const double* target,
                        int64_t K, int64_t stride, double out[4]);

}  // namespace papo
