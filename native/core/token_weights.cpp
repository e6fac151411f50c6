#include "token_weights.h"

#include <algorithm>

namespace papo {

namespace {

// Every row's sequence, each sequence's mask sum and their total, each sum in row order (a mask may hold fractional
// weights: the order is part of the bits); returns the rows the sequences cover.
int64_t mask_sums(const PapoCall& call, TokenWeights& w) {
  const int64_t N = call.N;
  const float* mask = call.mask;
  int64_t* seqOf = w.seqOf.data();
  int64_t row = 0;
  double total = 0;
  for (int64_t s = 0; s < call.numSeqs; ++s) {
    const int64_t end = std::min<int64_t>(N, row + (call.seqLengths ? call.seqLengths[s] : N));
    double seqSum = 0;
    for (int64_t i = row; i < end; ++i) {
      const double m = mask ? mask[i] : 1.0;
      seqOf[i] = s;
      seqSum += m;
      total += m;
    }
    w.seqMaskSum[s] = seqSum;
    row = std::max(row, end);
  }
  w.maskSum = total;
  return row;
}

}  // namespace

TokenWeights token_weights(const PapoCall& call) {
  const int64_t N = call.N;
  TokenWeights w;
  // Every allocation first: the sums below then stay in registers (a value live across a call goes to memory).
  w.agg.resize(N);
  w.entropy.resize(N);
  w.seqOf.resize(N);
  w.seqMaskSum.assign(call.numSeqs, 0.0);
  if (mask_sums(call, w) != N)
    throw Error(ErrorCode::InvalidArgument, "seqLengths must add up to the number of tokens");
  const double denom = call.lossScale > 0 ? call.lossScale : w.maskSum;
  for (int64_t i = 0; i < N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    w.entropy[i] = agg_weight(AGG_TOKEN_MEAN, m, 0.0, 1.0, denom, 0.0);
  }
  // Under token-mean the two weights are the same quotient: computed once.
  w.entropyIsAgg = call.lossAgg == AGG_TOKEN_MEAN;
  for (int64_t i = 0; i < N; ++i) {
    const double m = call.mask ? call.mask[i] : 1.0;
    const double seqSum = w.seqMaskSum[w.seqOf[i]], seqs = (double)call.numSeqs;
    w.agg[i] = w.entropyIsAgg ? w.entropy[i] : agg_weight(call.lossAgg, m, seqSum, seqs, denom, call.normScale);
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
