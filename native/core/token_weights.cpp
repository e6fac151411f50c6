#include "token_weights.h"

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

}  // namespace papo
