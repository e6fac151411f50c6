// The sequence phase of the calls that need one (needs_sequence_phase(), core/token_math.h): GSPO's sequence log-ratio
// s_i and the perception top-p threshold theta_i depend on every token of a sequence, so both backends first read
// every row for its statistics, then call this (O(N) on the host), then write the gradients in a second read of
// the logits. Calls without a sequence-level term never come here and keep one pass per row.
#pragma once

#include "token_weights.h"

namespace papo {

// A row's sampled-token log-probs and full entropies on both paths (a: the given maskedLogProbs when there are
// no masked logits).
struct RowValues {
  double lp = 0, a = 0, H = 0, Hm = 0;
};

// theta_i: the (1 - p) quantile of the sequence's values with linear interpolation (numpy's default), sorting
// `values` in place; -inf for an empty sequence (nothing to select).
double upper_quantile_threshold(double* values, int64_t n, double p);

// Every response token's terms (masked-out rows get zero terms). For 'gspo', dL/ds_i reaches each token u of
// the sequence through ds_i/dlp_u = m_u / n_i; for 'gspo-token' the derivative stays on the token.
void sequence_terms(const PapoCall& call, const TokenWeights& w, const RowValues* rows, TokenTerms* terms);

}  // namespace papo
