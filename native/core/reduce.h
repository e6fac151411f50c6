// The last step of every backend: the loss, its terms and the metrics, from the per-token terms the kernels
// computed (O(N)). The per-token sums are written once for the host and the CUDA backend's device reduction
// (cuda/call_results.cu), which adds the same terms in another fixed order.
#pragma once

#include <vector>

#include "call.h"
#include "token_math.h"
#include "token_weights.h"

namespace papo {

// What the metrics are made of: each response token's terms, summed over the tokens. Trivial, so that the device
// can hold an array of them in shared memory: TermSums{} is all zeros.
struct TermSums {
  double loss, pgLoss, klLoss, perceptionKl, entropyLoss, maskedEntropyLoss, sftLoss;
  double clipped, dual, approxKl, ent, ment, corr, bound, kept;
};

// One token with mask weight m > 0: its terms t, its weights (wSft 0 without an SFT term) and both paths'
// entropies (Hm 0 without masked logits).
PAPO_HD void add_token(TermSums& s, const TokenTerms& t, double m, double wAgg, double wEnt, double wSft, double H,
                       double Hm) {
  s.loss += t.loss;
  s.pgLoss += wAgg * t.pg;
  s.klLoss += wAgg * t.kref;
  s.perceptionKl += wAgg * t.kp;
  s.entropyLoss += wEnt * t.ent;
  s.maskedEntropyLoss += wEnt * t.maskedEnt;
  s.sftLoss += wSft * t.sft;
  s.clipped += m * t.clipped;
  s.dual += m * t.dualClipped;
  s.approxKl += m * t.approxKl;
  s.corr += m * t.rolloutCorr;
  s.bound += m * t.rolloutBound;
  s.kept += m * t.kpKept;
  s.ent += m * H;
  s.ment += m * Hm;
}

PAPO_HD void add_sums(TermSums& a, const TermSums& b) {
  a.loss += b.loss;
  a.pgLoss += b.pgLoss;
  a.klLoss += b.klLoss;
  a.perceptionKl += b.perceptionKl;
  a.entropyLoss += b.entropyLoss;
  a.maskedEntropyLoss += b.maskedEntropyLoss;
  a.sftLoss += b.sftLoss;
  a.clipped += b.clipped;
  a.dual += b.dual;
  a.approxKl += b.approxKl;
  a.corr += b.corr;
  a.bound += b.bound;
  a.kept += b.kept;
  a.ent += b.ent;
  a.ment += b.ment;
}

// The metrics from the sums over every response token. GSPO clips whole sequences: its clip fractions come from
// the per-sequence shares in seqClipped / seqDual (numSeqs each; empty for the other loss types).
PapoMetrics metrics_of(const PapoCall& call, const TokenWeights& w, const TermSums& s,
                       const std::vector<double>& seqClipped, const std::vector<double>& seqDual);

// The totals and metrics from per-token terms, summed in row order so that the result has the same bits
// whatever ran the rows. Rows with zero weight are skipped (their values may be non-finite padding).
PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm);

}  // namespace papo
