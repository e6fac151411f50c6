#include "reduce.h"

namespace papo {

PapoMetrics reduce_terms(const PapoCall& call, const TokenWeights& w, const TokenTerms* terms, const double* H,
                         const double* Hm) {
  PapoMetrics r;
  const bool gspo = call.params.lossType == LOSS_GSPO || call.params.lossType == LOSS_GSPO_TOKEN;
  double clipped = 0, dual = 0, approxKl = 0, ent = 0, ment = 0, corr = 0, bound = 0, kept = 0;
  // GSPO clips whole sequences: its clip fractions count sequences (each the mask-weighted share of its tokens).
  std::vector<double> seqClipped(gspo ? call.numSeqs : 0, 0.0), seqDual(gspo ? call.numSeqs : 0, 0.0);
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
    if (!w.sft.empty()) r.sftLoss += w.sft[i] * t.sft;
    if (gspo) {
      const int64_t s = w.seqOf[i];
      seqClipped[s] += m * t.clipped / w.seqMaskSum[s];
      seqDual[s] += m * t.dualClipped / w.seqMaskSum[s];
    }
    clipped += m * t.clipped;
    dual += m * t.dualClipped;
    approxKl += m * t.approxKl;
    corr += m * t.rolloutCorr;
    bound += m * t.rolloutBound;
    kept += m * t.kpKept;
    ent += m * H[i];
    if (Hm) ment += m * Hm[i];
  }
  if (!call.params.hasMasked) r.maskedEntropyLoss = 0;
  r.tokens = w.maskSum;
  r.rolloutCorrection = call.params.rolloutCorrection;
  r.hasTopP = call.params.perceptionTopP > 0;
  r.hasSft = call.sftMask != nullptr;
  if (gspo) {
    double seqs = 0;
    clipped = dual = 0;
    for (int64_t s = 0; s < call.numSeqs; ++s) {
      if (w.seqMaskSum[s] == 0.0) continue;
      seqs += 1;
      clipped += seqClipped[s];
      dual += seqDual[s];
    }
    r.clipFrac = seqs > 0 ? clipped / seqs : 0.0;
    r.dualClipFrac = seqs > 0 ? dual / seqs : 0.0;
  }
  if (w.maskSum > 0) {
    if (!gspo) {
      r.clipFrac = clipped / w.maskSum;
      r.dualClipFrac = dual / w.maskSum;
    }
    r.approxKl = approxKl / w.maskSum;
    r.meanEntropy = ent / w.maskSum;
    r.meanMaskedEntropy = ment / w.maskSum;
    r.rolloutCorrectionMean = corr / w.maskSum;
    r.rolloutCorrectionBoundFrac = bound / w.maskSum;
    r.perceptionKeptFrac = kept / w.maskSum;
  }
  return r;
}

}  // namespace papo
