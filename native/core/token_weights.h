// Per-token weights (docs/objective.md, "Aggregation" and "Policy-loss variants"): they depend only on the mask,
// the sequence layout and the per-sequence inputs, so every backend computes them once on the host, O(N), before
// touching the logits.
#pragma once

#include <vector>

#include "call.h"

namespace papo {

struct TokenWeights {
  std::vector<double> agg;      // weight of pg, kref, kp under lossAgg
  std::vector<double> entropy;  // token-mean weight of the two entropy terms
  std::vector<double> kp;       // perceptionWeights of the token's sequence (empty: all 1)
  std::vector<double> sft;      // sftMask_i m_t / sum sftMask m (empty: no SFT term)
  std::vector<int64_t> seqOf;   // the token's sequence
  std::vector<double> seqMaskSum;
  double maskSum = 0;           // response tokens (the metrics' denominator)
  bool entropyIsAgg = false;    // agg and entropy hold the same values (token-mean)
};

TokenWeights token_weights(const PapoCall& call);

// The call's per-token arrays with these weights, as token_input() reads them (host pointers).
TokenArrays token_arrays(const PapoCall& call, const TokenWeights& w);

}  // namespace papo
