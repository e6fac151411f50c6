#include "reduce.h"

namespace papo {

PapoMetrics metrics_of(const PapoCall& call, const TokenWeights& w, const TermSums& s,
                       const std::vector<double>& seqClipped, const std::vector<double>& seqDual) {
  PapoMetrics r;
  const bool gspo = call.params.lossType == LOSS_GSPO || call.params.lossType == LOSS_GSPO_TOKEN;
  r.loss = s.loss;
  r.pgLoss = s.pgLoss;
  r.klLoss = s.klLoss;
  r.perceptionKl = s.perceptionKl;
  r.entropyLoss = s.entropyLoss;
  r.maskedEntropyLoss = call.params.hasMasked ? s.maskedEntropyLoss : 0;
  r.sftLoss = s.sftLoss;
  r.tokens = w.maskSum;
  r.rolloutCorrection = call.params.rolloutCorrection;
  r.hasTopP = call.params.perceptionTopP > 0;
  r.hasSft = call.sftMask != nullptr;
  if (gspo) {
    double seqs = 0, clipped = 0, dual = 0;
    for (int64_t q = 0; q < call.numSeqs; ++q) {
      if (w.seqMaskSum[q] == 0.0) continue;
      seqs += 1;
      clipped += seqClipped[q];
      dual += seqDual[q];
    }
    r.clipFrac = seqs > 0 ? clipped / seqs : 0.0;
    r.dualClipFrac = seqs > 0 ? dual / seqs : 0.0;
  }
  if (w.maskSum > 0) {
    if (!gspo) {
      r.clipFrac = s.clipped / w.maskSum;
      r.dualClipFrac = s.dual / w.maskSum;
    }
    r.approxKl = s.approxKl / w.maskSum;
    r.meanEntropy = s.ent / w.maskSum;
    r.meanMaskedEntropy = s.ment / w.maskSum;
    r.rolloutCorrectionMean = s.corr / w.maskSum;
    r.rolloutCorrectionBoundFrac = s.bound / w.maskSum;
    r.perceptionKeptFrac = s.kept / w.maskSum;
  }
  return r;
}

PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm) {
  const bool gspo = call.params.lossType == LOSS_GSPO || call.params.lossType == LOSS_GSPO_TOKEN;
  TermSums s{};
  std::vector<double> seqClipped(gspo ? call.numSeqs : 0, 0.0), seqDual(gspo ? call.numSeqs : 0, 0.0);
  for (int64_t i = 0; i < call.N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    if (m == 0.0) continue;
    const TokenTerms& t = terms[i];
    add_token(s, t, m, w.agg[i], w.entropy[i], w.sft.empty() ? 0.0 : w.sft[i], H[i], Hm ? Hm[i] : 0.0);
    if (gspo) {
      const int64_t q = w.seqOf[i];
      seqClipped[q] += m * t.clipped / w.seqMaskSum[q];
      seqDual[q] += m * t.dualClipped / w.seqMaskSum[q];
    }
  }
  return metrics_of(call, w, s, seqClipped, seqDual);
}

}  // namespace papo
