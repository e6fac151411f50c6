#include "sequence_phase.h"

#include <math.h>

#include <algorithm>
#include <vector>

namespace papo {

double upper_quantile_threshold(double* values, int64_t n, double p) {
  if (n == 0) return -HUGE_VAL;
  std::sort(values, values + n);
  const double pos = (1.0 - p) * (double)(n - 1);
  const int64_t lo = (int64_t)floor(pos);
  const int64_t hi = lo + 1 < n ? lo + 1 : lo;
  const double t = pos - (double)lo;
  // numpy's _lerp: from the nearer end, so that t = 0 and t = 1 give the data values exactly.
  const double a = values[lo], b = values[hi];
  return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1.0 - t);
}

void sequence_terms(const PapoCall& call, const TokenWeights& w, const RowValues* rows, TokenTerms* terms) {
  const LossParams& p = call.params;
  const TokenArrays x = token_arrays(call, w);
  const int64_t N = call.N, B = call.numSeqs;
  auto mask = [&](int64_t i) { return call.mask ? (double)call.mask[i] : 1.0; };

  // s_i = sum_t m_t (lp_t - old_t) / n_i (old = lp, held constant, when absent: s_i = 0).
  std::vector<double> s(B, 0.0);
  if (p.lossType == LOSS_GSPO || p.lossType == LOSS_GSPO_TOKEN) {
    for (int64_t i = 0; i < N; ++i)
      if (mask(i) != 0.0) s[w.seqOf[i]] += mask(i) * (p.onPolicy ? 0.0 : rows[i].lp - (double)call.oldLogProbs[i]);
    for (int64_t b = 0; b < B; ++b) s[b] = w.seqMaskSum[b] > 0 ? s[b] / w.seqMaskSum[b] : 0.0;
  }

  // theta_i over the weighted estimator values of the sequence's response tokens (before the clip).
  std::vector<double> theta(B, -HUGE_VAL);
  if (p.perceptionTopP > 0.0 && p.hasMasked) {
    std::vector<double> values;
    for (int64_t i = 0; i < N;) {
      const int64_t b = w.seqOf[i];
      values.clear();
      for (; i < N && w.seqOf[i] == b; ++i)
        if (mask(i) != 0.0)
          values.push_back((x.wKp ? x.wKp[i] : 1.0) * kl_estimate(p.perceptionEstimator, rows[i].a - rows[i].lp).v);
      theta[b] = upper_quantile_threshold(values.data(), (int64_t)values.size(), p.perceptionTopP);
    }
  }

  std::vector<double> seqGrad(B, 0.0);  // sum_t m_t dL/dx_t per sequence ('gspo')
  for (int64_t i = 0; i < N; ++i) {
    terms[i] = TokenTerms{};
    if (mask(i) == 0.0) continue;
    const RowValues& r = rows[i];
    TokenInput in = token_input(x, i, r.lp, r.a, r.H, r.Hm);
    in.seqLogRatio = s[w.seqOf[i]];
    in.kpThreshold = theta[w.seqOf[i]];
    terms[i] = token_terms(p, in);
    seqGrad[w.seqOf[i]] += mask(i) * terms[i].gX;
  }
  if (p.lossType == LOSS_GSPO)
    for (int64_t i = 0; i < N; ++i)
      if (mask(i) != 0.0) terms[i].gLp += seqGrad[w.seqOf[i]] * mask(i) / w.seqMaskSum[w.seqOf[i]];
}

}  // namespace papo
