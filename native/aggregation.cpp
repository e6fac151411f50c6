#include "aggregation.h"

namespace papo {

TokenWeights token_weights(const PapoCall& call) {
  const int64_t N = call.N;
  TokenWeights w;
  w.agg.assign(N, 0.0);
  w.entropy.assign(N, 0.0);
  w.seqOf.assign(N, 0);
  w.seqMaskSum.assign(call.numSeqs, 0.0);
  int64_t row = 0;
  for (int64_t s = 0; s < call.numSeqs; ++s) {
    const int64_t len = call.seqLengths ? call.seqLengths[s] : N;
    for (int64_t k = 0; k < len && row < N; ++k, ++row) {
      w.seqOf[row] = s;
      const double m = call.mask ? call.mask[row] : 1.0;
      w.seqMaskSum[s] += m;
      w.maskSum += m;
    }
  }
  if (row != N) throw Error(ErrorCode::InvalidArgument, "seqLengths must add up to the number of tokens");
  const double denom = call.lossScale > 0 ? call.lossScale : w.maskSum;
  for (int64_t i = 0; i < N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    w.agg[i] = agg_weight(call.lossAgg, m, w.seqMaskSum[w.seqOf[i]], (double)call.numSeqs, denom, call.normScale);
    w.entropy[i] = agg_weight(AGG_TOKEN_MEAN, m, 0.0, 1.0, denom, 0.0);
  }
  if (call.perceptionWeights) {
    w.kp.resize(N);
    for (int64_t i = 0; i < N; ++i) w.kp[i] = call.perceptionWeights[w.seqOf[i]];
  }
  if (call.sftMask) {
    // sum_t c_i m_t over the batch; nothing selected gives an SFT term of 0, not 0/0.
    double denomSft = 0;
    for (int64_t i = 0; i < N; ++i) denomSft += call.sftMask[w.seqOf[i]] * (call.mask ? call.mask[i] : 1.0);
    w.sft.assign(N, 0.0);
    if (denomSft > 0)
      for (int64_t i = 0; i < N; ++i) w.sft[i] = call.sftMask[w.seqOf[i]] * (call.mask ? call.mask[i] : 1.0) / denomSft;
  }
  return w;
}

TokenArrays token_arrays(const PapoCall& call, const TokenWeights& w) {
  TokenArrays x;
  x.advantages = call.advantages;
  x.mask = call.mask;
  x.oldLogProbs = call.oldLogProbs;
  x.refLogProbs = call.refLogProbs;
  x.rolloutLogProbs = call.rolloutLogProbs;
  x.wAgg = w.agg.data();
  x.wEnt = w.entropy.data();
  x.wKp = w.kp.empty() ? nullptr : w.kp.data();
  x.wSft = w.sft.empty() ? nullptr : w.sft.data();
  return x;
}

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
