// The last step of every backend: the loss, its terms and the metrics, from the per-token terms the kernels
// computed (O(N), on the host).
#pragma once

#include "call.h"
#include "token_weights.h"

namespace papo {

// The totals and metrics from per-token terms, summed in row order so that the result has the same bits
// whatever ran the rows. Rows with zero weight are skipped (their values may be non-finite padding).
PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm);

}  // namespace papo
