#include "aggregation.h"

namespace papo {

TokenWeights token_weights(const PapoCall& call) {
  const int64_t N = call.N;
  TokenWeights w;
  w.agg.assign(N, 0.0);
  w.entropy.assign(N, 0.0);
  std::vector<double> seqSum(call.numSeqs, 0.0);
  std::vector<int64_t> seqOf(N, 0);
  int64_t row = 0;
  for (int64_t s = 0; s < call.numSeqs; ++s) {
    const int64_t len = call.seqLengths ? call.seqLengths[s] : N;
    for (int64_t k = 0; k < len && row < N; ++k, ++row) {
      seqOf[row] = s;
      const double m = call.mask ? call.mask[row] : 1.0;
      seqSum[s] += m;
      w.maskSum += m;
    }
  }
  if (row != N) throw Error(ErrorCode::InvalidArgument, "seqLengths must add up to the number of tokens");
  const double denom = call.lossScale > 0 ? call.lossScale : w.maskSum;
  for (int64_t i = 0; i < N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    w.agg[i] = agg_weight(call.lossAgg, m, seqSum[seqOf[i]], (double)call.numSeqs, denom, call.normScale);
    w.entropy[i] = agg_weight(AGG_TOKEN_MEAN, m, 0.0, 1.0, denom, 0.0);
  }
  return w;
}

PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm) {
  PapoMetrics r;
  double clipped = 0, dual = 0, approxKl = 0, ent = 0, ment = 0;
  for (int64_t i = 0; i < call.N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    if (m == 0.0) continue;
    const TokenTerms& t = terms[i];
    r.loss += t.loss;
    r.pgLoss += w.agg[i] * t.pg;
    r.klLoss += w.agg[i] * t.kref;
    r.perceptionKl += w.agg[i] * t.kp;
    r.entropyLoss += w.entropy[i] * t.ent;
    r.maskedEntropyLoss += w.entropy[i] * t.maskedEnt;
    clipped += m * t.clipped;
    dual += m * t.dualClipped;
    approxKl += m * t.approxKl;
    ent += m * H[i];
    if (Hm) ment += m * Hm[i];
  }
  if (!call.params.hasMasked) r.maskedEntropyLoss = 0;
  r.tokens = w.maskSum;
  if (w.maskSum > 0) {
    r.clipFrac = clipped / w.maskSum;
    r.dualClipFrac = dual / w.maskSum;
    r.approxKl = approxKl / w.maskSum;
    r.meanEntropy = ent / w.maskSum;
    r.meanMaskedEntropy = ment / w.maskSum;
  }
  return r;
}

}  // namespace papo
