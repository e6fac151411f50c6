// Per-token aggregation weights (docs/objective.md, "Aggregation and total"): they depend only on the mask and the sequence layout, so
// every backend computes them once on the host, O(N), before touching the logits.
#pragma once

#include <vector>

#include "papo_call.h"

namespace papo {

struct TokenWeights {
  std::vector<double> agg;      // weight of pg, kref, kp under lossAgg
  std::vector<double> entropy;  // token-mean weight of the two entropy terms
  double maskSum = 0;           // response tokens (the metrics' denominator)
};

TokenWeights token_weights(const PapoCall& call);

// The totals and metrics from per-token terms, summed in row order so that the result has the same bits
// whatever ran the rows. Rows with zero weight are skipped (their values may be non-finite padding).
PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm);

}  // namespace papo
