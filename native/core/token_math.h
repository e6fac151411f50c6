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

enum LossType : int32_t { LOSS_PPO = 0, LOSS_GSPO = 1, LOSS_GSPO_TOKEN = 2, LOSS_CISPO = 3, LOSS_SAPO = 4 };
enum RolloutCorrection : int32_t { ROLLOUT_NONE = 0, ROLLOUT_TRUNCATE = 1, ROLLOUT_MASK = 2 };

// Options after preset resolution and validation (lib/options.ts is the one place that fills them).
struct LossParams {
  double clipLow = 0.2, clipHigh = 0.3, clipDual = 3.0;
  int32_t lossType = LOSS_PPO;
  double sapoTauPositive = 1.0, sapoTauNegative = 1.05;
  int32_t rolloutCorrection = ROLLOUT_NONE;  // needs rolloutLogProbs
  double rolloutUpper = 2.0, rolloutLower = 0.5;
  double klCoef = 0.0;
  int32_t klEstimator = KL_K3;
  double perceptionCoef = 0.0;
  int32_t perceptionEstimator = KL_K3;
  int32_t perceptionClip = 0;  // 1: clamp kp to [perceptionClipLo, perceptionClipHi]
  double perceptionClipLo = 0.0, perceptionClipHi = 0.0;
  double perceptionTopP = 0.0;  // in (0, 1): keep each sequence's top-p share of kp (core/sequence_phase.h); 0: off
  double entropyCoef = 0.0, maskedEntropyCoef = 0.0;
  int32_t entropyMode = ENTROPY_SAMPLED;
  double sftCoef = 0.0;  // with sftMask: the SFT term on the selected (correct) rollouts
  int32_t detachMasked = 0;
  int32_t onPolicy = 0;   // no oldLogProbs: old = lp as a constant (ratio 1, gradient -A)
  int32_t hasRef = 0;     // refLogProbs given (required when klCoef != 0)
  int32_t hasMasked = 0;  // a masked path exists (logits or precomputed log-probs)
};

// GSPO's log-ratio and the top-p threshold are per sequence: no token's terms exist before every row of its
// sequence has been read. Such calls run in phases (core/sequence_phase.h); all others keep one pass per row.
PAPO_HD bool needs_sequence_phase(const LossParams& p) {
  return p.lossType == LOSS_GSPO || p.lossType == LOSS_GSPO_TOKEN || p.perceptionTopP > 0.0;
}

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

// One response token's inputs: both paths' statistics, its per-token inputs and its weights.
struct TokenInput {
  double lp = 0, a = 0, H = 0, Hm = 0;
  double old = 0, ref = 0, adv = 0;
  double rollout = 0;         // the inference engine's log-prob (with a rollout correction)
  double w = 0, we = 0;       // aggregation weight of pg, kref, kp; token-mean weight of the entropy terms
  double kpWeight = 1.0;      // perceptionWeights of the token's sequence
  double sftWeight = 0.0;     // c_i m_t / sum c m: the token's share of the SFT term
  double mask = 1.0;          // m_t (GSPO's x_t = s_i m_t)
  double seqLogRatio = 0.0;   // GSPO: s_i of the token's sequence (sequence phase)
  double kpThreshold = -HUGE_VAL;  // perceptionTopP: theta_i of the sequence (sequence phase); -inf keeps all
};

// Everything one response token contributes: the loss terms (unweighted values, for the metrics) and the
// derivative of the total loss with respect to lp, a, H and Hm (weighted, ready for the gradient pass).
struct TokenTerms {
  double pg, kref, kp, ent, maskedEnt;  // per-token values before aggregation (pg after the rollout correction)
  double sft;                           // -lp, the SFT term's per-token value
  double approxKl;                      // old - lp after the ratio's log clamp (verl's ppo_kl)
  double rolloutCorr;                   // c_t (1 without a rollout correction)
  int32_t clipped, dualClipped;         // for clipFrac / dualClipFrac
  int32_t rolloutBound;                 // the correction truncated (truncate) or dropped (mask) this token
  int32_t kpKept;                       // kp survived perceptionTopP
  double loss;                          // this token's weighted share of the total loss
  double gLp, gA, gH, gHm;              // dL/dlp, dL/da, dL/dH, dL/dHm
  double gX;                            // GSPO: dL/dx_t, which sequence_terms() spreads over the sequence's tokens
};

// The PPO/GRPO surrogate with dual clip on a log-ratio x (PPO: lp - old; GSPO: the sequence's mean).
struct PolicyTerm {
  double pg, dpg;  // value and d pg / d x
  int32_t clipped, dualClipped;
};
PAPO_HD PolicyTerm clipped_surrogate(const LossParams& p, double x, double adv) {
  const Clamped logRatio = clamp_grad(x, -20.0, 20.0);
  const double ratio = exp(logRatio.v);
  const double l1 = -adv * ratio;
  const Clamped clippedRatio = clamp_grad(ratio, 1.0 - p.clipLow, 1.0 + p.clipHigh);
  const double l2 = -adv * clippedRatio.v;
  PolicyTerm r{};
  if (l1 >= l2) {
    r.pg = l1;
    r.dpg = -adv * ratio;
  } else {
    r.pg = l2;
    r.dpg = -adv * ratio * clippedRatio.dv;
  }
  r.clipped = l2 > l1;
  if (adv < 0.0) {
    const double l3 = -adv * p.clipDual;
    r.dualClipped = r.pg > l3;
    if (r.pg > l3) {
      r.pg = l3;
      r.dpg = 0.0;
    }
  }
  r.dpg *= logRatio.dv;
  return r;
}

// The policy term of each lossType (docs/objective.md, "Policy-loss variants"), its derivative in the log-ratio
// (or, for CISPO, in lp), and whether that derivative reaches lp directly (GSPO's goes through s_i instead).
PAPO_HD PolicyTerm policy_term(const LossParams& p, const TokenInput& in, double logRatio, bool* direct) {
  *direct = true;
  switch (p.lossType) {
    case LOSS_GSPO:
      *direct = false;
      return clipped_surrogate(p, in.seqLogRatio * in.mask, in.adv);
    case LOSS_GSPO_TOKEN:  // value s_i, derivative 1 in lp_t: sg(s_i) + lp_t - sg(lp_t)
      return clipped_surrogate(p, in.seqLogRatio, in.adv);
    case LOSS_CISPO: {  // -A lp sg(exp(clamp(l, lo, hi))): the clipped ratio is a weight, not a gate
      const double lo = p.clipLow >= 1.0 ? -HUGE_VAL : log1p(-p.clipLow), hi = log1p(p.clipHigh);
      const double weight = exp(logRatio < lo ? lo : (logRatio > hi ? hi : logRatio));
      PolicyTerm r{};
      r.pg = -in.adv * in.lp * weight;
      r.dpg = -in.adv * weight;
      r.clipped = logRatio < lo || logRatio > hi;
      return r;
    }
    case LOSS_SAPO: {  // a soft gate instead of a clip: -A (4/tau) sigmoid(tau (r - 1))
      const Clamped l = clamp_grad(logRatio, -20.0, 20.0);
      const double r = exp(l.v);
      const double tau = in.adv >= 0.0 ? p.sapoTauPositive : p.sapoTauNegative;
      const double s = 1.0 / (1.0 + exp(-tau * (r - 1.0)));
      PolicyTerm t{};
      t.pg = -in.adv * (4.0 / tau) * s;
      t.dpg = -in.adv * 4.0 * s * (1.0 - s) * r * l.dv;
      return t;
    }
    default:
      return clipped_surrogate(p, logRatio, in.adv);
  }
}

// Rows with both weights 0 (masked out) must not be passed here with non-finite inputs: the caller skips them.
PAPO_HD TokenTerms token_terms(const LossParams& p, const TokenInput& in) {
  TokenTerms t{};
  const double w = in.w, we = in.we, lp = in.lp, a = in.a;

  // Policy term, times the rollout correction c_t = f(exp(old - rollout)), a constant.
  const double oldv = p.onPolicy ? lp : in.old;
  const double logRatio = lp - oldv;
  t.approxKl = -clamp_grad(logRatio, -20.0, 20.0).v;
  double c = 1.0;
  if (p.rolloutCorrection != ROLLOUT_NONE) {
    const double ratio = exp(oldv - in.rollout);  // +inf for a huge gap: truncated to upper, or masked
    if (p.rolloutCorrection == ROLLOUT_TRUNCATE) {
      t.rolloutBound = ratio > p.rolloutUpper;
      c = t.rolloutBound ? p.rolloutUpper : ratio;
    } else {
      t.rolloutBound = !(ratio >= p.rolloutLower && ratio <= p.rolloutUpper);
      c = t.rolloutBound ? 0.0 : ratio;
    }
  }
  t.rolloutCorr = c;
  bool direct = true;
  const PolicyTerm pt = policy_term(p, in, logRatio, &direct);
  t.pg = c * pt.pg;
  t.clipped = pt.clipped;
  t.dualClipped = pt.dualClipped;
  t.gX = direct ? 0.0 : w * c * pt.dpg;
  double gLp = direct ? w * c * pt.dpg : 0.0;

  // Reference KL, estimator on (lp, ref): d = ref - lp, so dd/dlp = -1.
  if (p.klCoef != 0.0 && p.hasRef) {
    const Clamped k = kl_estimate(p.klEstimator, in.ref - lp);
    t.kref = k.v;
    gLp -= p.klCoef * w * k.dv;
  }

  // Implicit perception loss, estimator on (lp, a): d = a - lp, then (PAPO's order) the sequence's weight, the
  // top-p selection (no gradient below the threshold) and the clip. Maximised, hence the minus sign.
  double gA = 0.0;
  if (p.hasMasked) {
    const Clamped k = kl_estimate(p.perceptionEstimator, a - lp);
    double kv = in.kpWeight * k.v, kd = in.kpWeight * k.dv;
    t.kpKept = !(kv < in.kpThreshold);
    if (!t.kpKept) kv = kd = 0.0;
    Clamped kp = {kv, 1.0};
    if (p.perceptionClip) kp = clamp_grad(kv, p.perceptionClipLo, p.perceptionClipHi);
    t.kp = kp.v;
    const double dkp = kp.dv * kd;  // d kp / d d
    gLp += p.perceptionCoef * w * dkp;
    gA -= p.perceptionCoef * w * dkp;
  }

  // Double entropy loss: the released code's sampled-token surprisal, or the full entropies.
  double gH = 0.0, gHm = 0.0;
  if (p.entropyMode == ENTROPY_FULL) {
    t.ent = in.H;
    t.maskedEnt = in.Hm;
    gH = p.entropyCoef * we;
    gHm = p.maskedEntropyCoef * we;
  } else {
    t.ent = -lp;
    t.maskedEnt = -a;
    gLp -= p.entropyCoef * we;
    gA -= p.maskedEntropyCoef * we;
  }

  // SFT on the selected rollouts: sftCoef * sum c_i m_t (-lp_t) / sum c_i m_t.
  t.sft = -lp;
  gLp -= p.sftCoef * in.sftWeight;

  t.loss = w * (t.pg + p.klCoef * t.kref - p.perceptionCoef * t.kp) +
           we * (p.entropyCoef * t.ent + (p.hasMasked ? p.maskedEntropyCoef * t.maskedEnt : 0.0)) +
           p.sftCoef * in.sftWeight * t.sft;
  t.gLp = gLp;
  t.gH = gH;
  t.gA = (p.hasMasked && !p.detachMasked) ? gA : 0.0;
  t.gHm = (p.hasMasked && !p.detachMasked) ? gHm : 0.0;
  return t;
}

// The per-token arrays of a call (host or device pointers; null: absent) and the weights token_weights()
// derives from them on the host, O(N), before any logits are read.
struct TokenArrays {
  const float* advantages = nullptr;
  const float* mask = nullptr;             // null: every token counts
  const float* oldLogProbs = nullptr;      // null: on-policy
  const float* refLogProbs = nullptr;
  const float* rolloutLogProbs = nullptr;  // with a rollout correction
  const double* wAgg = nullptr;
  const double* wEnt = nullptr;
  const double* wKp = nullptr;   // null: perception weight 1
  const double* wSft = nullptr;  // null: no SFT term
};

PAPO_HD TokenInput token_input(const TokenArrays& x, int64_t i, double lp, double a, double H, double Hm) {
  TokenInput in;
  in.lp = lp;
  in.a = a;
  in.H = H;
  in.Hm = Hm;
  in.old = x.oldLogProbs ? x.oldLogProbs[i] : 0.0;
  in.ref = x.refLogProbs ? x.refLogProbs[i] : 0.0;
  in.adv = x.advantages[i];
  in.rollout = x.rolloutLogProbs ? x.rolloutLogProbs[i] : 0.0;
  in.w = x.wAgg[i];
  in.we = x.wEnt[i];
  in.kpWeight = x.wKp ? x.wKp[i] : 1.0;
  in.sftWeight = x.wSft ? x.wSft[i] : 0.0;
  in.mask = x.mask ? x.mask[i] : 1.0;
  return in;
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
