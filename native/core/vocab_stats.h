// Per-token softmax statistics of a vocabulary shard, the layout lib/vocab-stats.ts and docs/objective.md
// describe: four float64 fields, field-major, N values each. With x_j = z_j / tau over the shard's columns:
//   [0, N)   max      m = max_j x_j (-Infinity for a shard of -Infinity only)
//   [N, 2N)  sumExp   s = sum_j e^(x_j - m)
//   [2N, 3N) sumExpX  u = sum_j e^(x_j - m) x_j (finite x_j only)
//   [3N, 4N) target   x_o where the shard holds the sampled token, else 0
// Merged statistics (mergeVocabShardStats) have the same layout and cover the whole vocabulary.
#pragma once

#include <math.h>
#include <stdint.h>

#include "row_status.h"
#include "token_math.h"

namespace papo {

enum VocabStatsField : int64_t { VS_MAX = 0, VS_SUM_EXP = 1, VS_SUM_EXP_X = 2, VS_TARGET = 3, VS_FIELDS = 4 };

// The whole row's statistics from merged ones: what the gradient and the per-token terms read, the same as
// one pass over the unsplit row would give up to rounding. The CPU and the CUDA kernels share it.
PAPO_HD RowStats merged_row_stats(const double* stats, int64_t N, int64_t i) {
  RowStats st{};
  const double m = stats[VS_MAX * N + i], S = stats[VS_SUM_EXP * N + i], U = stats[VS_SUM_EXP_X * N + i];
  if (!(m > -INFINITY) || !(S > 0.0)) {
    st.status = ROW_NO_FINITE;
    return st;
  }
  const double logSum = log(S);
  st.maxScaled = (float)m;
  st.logSum = (float)logSum;
  st.lse = m + logSum;
  st.entropy = st.lse - U / S;
  if (st.entropy < 0.0) st.entropy = 0.0;  // rounding on a one-hot row, as in the unsplit statistics
  st.targetScaled = (float)stats[VS_TARGET * N + i];
  st.status = ROW_OK;
  return st;
}

}  // namespace papo
