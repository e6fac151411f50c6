// The per-token PAPO math, written once for the CPU backend and the CUDA kernels.
//
// Everything here is O(1) per token: the policy surrogate, the Schulman KL estimators, the clamps, their
// derivatives with respect to the sampled-token log-probs (lp on the original path, a on the masked path) and the
// full entropies (H, Hm), and the aggregation weights. The O(V) work per row (log-sum-exp, entropy, gradient
// rows) lives in the backends, which call token_terms() once per row. See docs/objective.md for the formulas.
//
// Doubles throughout: this is O(N) work, and estimators such as k3 = e^d - d - 1 lose all their digits in fp32
// for small d (which is the common case: the two paths agree closely on most tokens).
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define PAPO_HD __host__ __device__ __forceinline__
#else
#define PAPO_HD inline
#endif

namespace papo {

enum KlEstimator : int32_t { KL_K1 = 0, KL_K2 = 1, KL_K3 = 2, KL_ABS = 3 };
enum EntropyMode : int32_t { ENTROPY_SAMPLED = 0, ENTROPY_FULL = 1 };
enum LossAgg : int32_t {
  AGG_TOKEN_MEAN = 0,
  AGG_SEQ_MEAN_TOKEN_MEAN = 1,
  AGG_SEQ_MEAN_TOKEN_SUM = 2,
  AGG_SEQ_MEAN_TOKEN_SUM_NORM = 3,
};

// Options after preset resolution and validation (lib/options.ts is the one place that fills them).
struct LossParams {
  double clipLow = 0.2, clipHigh = 0.3, clipDual = 3.0;
  double klCoef = 0.0;
  int32_t klEstimator = KL_K3;
  double perceptionCoef = 0.0;
  int32_t perceptionEstimator = KL_K3;
  int32_t perceptionClip = 0;  // 1: clamp kp to [perceptionClipLo, perceptionClipHi]
  double perceptionClipLo = 0.0, perceptionClipHi = 0.0;
  double entropyCoef = 0.0, maskedEntropyCoef = 0.0;
  int32_t entropyMode = ENTROPY_SAMPLED;
  int32_t detachMasked = 0;
  int32_t onPolicy = 0;   // no oldLogProbs: old = lp as a constant (ratio 1, gradient -A)
  int32_t hasRef = 0;     // refLogProbs given (required when klCoef != 0)
  int32_t hasMasked = 0;  // a masked path exists (logits or precomputed log-probs)
};

// torch.clamp semantics: the gradient passes where lo <= x <= hi (bounds included) and is 0 where the clamp binds.
struct Clamped {
  double v, dv;
};
PAPO_HD Clamped clamp_grad(double x, double lo, double hi) {
  if (x < lo) return {lo, 0.0};
  if (x > hi) return {hi, 0.0};
  return {x, 1.0};
}

// Schulman's estimators of KL(pi || q) from the sampled token, as functions of d = log q - log pi.
// Returns the value and its derivative with respect to d.
PAPO_HD Clamped kl_estimate(int32_t estimator, double d) {
  switch (estimator) {
    case KL_K1:
      return {-d, -1.0};
    case KL_K2:
      return {0.5 * d * d, d};
    case KL_ABS:
      return {fabs(d), d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : 0.0)};
    default: {  // KL_K3, verl's low_var_kl: clamp(e^delta - delta - 1, -10, 10), delta = clamp(d, -20, 20)
      const Clamped delta = clamp_grad(d, -20.0, 20.0);
      const double em1 = expm1(delta.v);  // expm1 keeps the digits of e^delta - 1 for small delta
      const Clamped k = clamp_grad(em1 - delta.v, -10.0, 10.0);
      return {k.v, k.dv * em1 * delta.dv};
    }
  }
}

// Everything one response token contributes: the loss terms (unweighted values, for the metrics) and the
// derivative of the total loss with respect to lp, a, H and Hm (weighted, ready for the gradient pass).
struct TokenTerms {
  double pg, kref, kp, ent, maskedEnt;  // per-token values before aggregation
  double approxKl;                      // old - lp after the ratio's log clamp (verl's ppo_kl)
  int32_t clipped, dualClipped;         // for clipFrac / dualClipFrac
  double loss;                          // this token's weighted share of the total loss
  double gLp, gA, gH, gHm;              // dL/dlp, dL/da, dL/dH, dL/dHm
};

// w: aggregation weight of this token for pg, kref and kp; we: its token-mean weight for the entropy terms.
// Rows with both weights 0 (masked out) must not be passed here with non-finite inputs: the caller skips them.
PAPO_HD TokenTerms token_terms(const LossParams& p, double lp, double a, double H, double Hm, double old,
                               double ref, double adv, double w, double we) {
  TokenTerms t{};

  // Policy surrogate, PPO clip with dual clip (verl's compute_policy_loss).
  const double oldv = p.onPolicy ? lp : old;
  const Clamped logRatio = clamp_grad(lp - oldv, -20.0, 20.0);
  const double ratio = exp(logRatio.v);
  const double l1 = -adv * ratio;
  const Clamped clippedRatio = clamp_grad(ratio, 1.0 - p.clipLow, 1.0 + p.clipHigh);
  const double l2 = -adv * clippedRatio.v;
  double pg, dpg;  // dpg: derivative of pg with respect to the log ratio
  if (l1 >= l2) {
    pg = l1;
    dpg = -adv * ratio;
  } else {
    pg = l2;
    dpg = -adv * ratio * clippedRatio.dv;
  }
  t.clipped = l2 > l1;
  if (adv < 0.0) {
    const double l3 = -adv * p.clipDual;
    t.dualClipped = pg > l3;
    if (pg > l3) {
      pg = l3;
      dpg = 0.0;
    }
  }
  t.pg = pg;
  t.approxKl = -logRatio.v;
  double gLp = w * dpg * logRatio.dv;

  // Reference KL, estimator on (lp, ref): d = ref - lp, so dd/dlp = -1.
  if (p.klCoef != 0.0 && p.hasRef) {
    const Clamped k = kl_estimate(p.klEstimator, ref - lp);
    t.kref = k.v;
    gLp -= p.klCoef * w * k.dv;
  }

  // Implicit perception loss, estimator on (lp, a): d = a - lp. Maximised, hence the minus sign.
  double gA = 0.0;
  if (p.hasMasked) {
    const Clamped k = kl_estimate(p.perceptionEstimator, a - lp);
    Clamped kp = {k.v, 1.0};
    if (p.perceptionClip) kp = clamp_grad(k.v, p.perceptionClipLo, p.perceptionClipHi);
    t.kp = kp.v;
    const double dkp = kp.dv * k.dv;  // d kp / d d
    gLp += p.perceptionCoef * w * dkp;
    gA -= p.perceptionCoef * w * dkp;
  }

  // Double entropy loss: the released code's sampled-token surprisal, or the full entropies.
  double gH = 0.0, gHm = 0.0;
  if (p.entropyMode == ENTROPY_FULL) {
    t.ent = H;
    t.maskedEnt = Hm;
    gH = p.entropyCoef * we;
    gHm = p.maskedEntropyCoef * we;
  } else {
    t.ent = -lp;
    t.maskedEnt = -a;
    gLp -= p.entropyCoef * we;
    gA -= p.maskedEntropyCoef * we;
  }

  t.loss = w * (t.pg + p.klCoef * t.kref - p.perceptionCoef * t.kp) +
           we * (p.entropyCoef * t.ent + (p.hasMasked ? p.maskedEntropyCoef * t.maskedEnt : 0.0));
  t.gLp = gLp;
  t.gH = gH;
  t.gA = (p.hasMasked && !p.detachMasked) ? gA : 0.0;
  t.gHm = (p.hasMasked && !p.detachMasked) ? gHm : 0.0;
  return t;
}

// Aggregation weights depend only on the mask and the sequence layout.
// seqMaskSum: sum of the mask over this token's sequence; numSeqs: sequences in the batch;
// denom: the token-mean denominator (lossScale when given, else the total mask sum);
// normScale: the seq-mean-token-sum-norm denominator (lossScale, default the padded sequence length).
PAPO_HD double agg_weight(int32_t mode, double mask, double seqMaskSum, double numSeqs, double denom,
                          double normScale) {
  if (mask == 0.0) return 0.0;
  switch (mode) {
    case AGG_SEQ_MEAN_TOKEN_MEAN:
      return mask / (seqMaskSum * numSeqs);  // seqMaskSum > 0 because mask > 0
    case AGG_SEQ_MEAN_TOKEN_SUM:
      return mask / numSeqs;
    case AGG_SEQ_MEAN_TOKEN_SUM_NORM:
      return mask / normScale;
    default:
      return mask / denom;
  }
}

}  // namespace papo
