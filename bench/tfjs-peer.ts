// The PAPO objective of docs/objective.md written in plain tfjs ops and differentiated by tfjs autodiff: what a Node
// user without papo-kernels would write. It is the benchmarks' tfjs peer and the tests' independent oracle for
// papo-kernels/tfjs, so it shares nothing with the package but the preset table. It covers the defaults (k3
// estimators, sampled-token entropies, token-mean aggregation) and refuses the options it does not write out.
import type * as TF from '@tensorflow/tfjs-core';
import { presets } from '../lib/presets';
import type { PapoOptions } from '../lib/types';

export type Tfjs = typeof TF;

/** The per-token inputs, as papoLoss takes them (advantages per token). */
export interface PeerBatch {
  tokens: Int32Array;
  advantages: Float32Array;
  oldLogProbs?: Float32Array;
  refLogProbs?: Float32Array;
  responseMask?: Float32Array;
}

export interface PeerTerms {
  loss: TF.Scalar;
  pgLoss: TF.Scalar;
  klLoss: TF.Scalar;
  perceptionKl: TF.Scalar;
}

const WRITTEN_OUT = ['preset', 'clipLow', 'clipHigh', 'clipDual', 'klCoef', 'perceptionCoef', 'entropyCoef', 'maskedEntropyCoef',
  'detachMasked', 'temperature'];

/** A constant with the values of t: tfjs has no stop-gradient op, so the detached quantities are copied out. */
function detached(tf: Tfjs, t: TF.Tensor): TF.Tensor {
  return tf.tensor(t.dataSync(), t.shape, 'float32');
}

/** Row-wise log-softmax of logits / τ and the sampled token's log-prob (a one-hot product: tfjs's gather has no
 * gradient on every backend). */
export function tokenLogProbs(tf: Tfjs, logits: TF.Tensor, tokens: TF.Tensor, temperature = 1) {
  const V = logits.shape[logits.shape.length - 1];
  const logp = tf.logSoftmax(temperature === 1 ? logits : tf.div(logits, temperature));
  return { logp, lp: tf.sum(tf.mul(logp, tf.oneHot(tokens, V)), -1) };
}

/** Sampled-token log-probs and full entropies, the forward-only peer of logProbs. */
export function peerLogProbs(tf: Tfjs, logits: TF.Tensor, tokens: TF.Tensor) {
  const { logp, lp } = tokenLogProbs(tf, logits, tokens);
  return { logProbs: lp, entropy: tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), -1)) };
}

/**
 * The objective's terms for [N, V] logits of both paths. Build once per batch, call inside tf.grads /
 * tf.variableGrads (the loss is differentiable in both logits unless detachMasked).
 */
export function peerObjective(tf: Tfjs, batch: PeerBatch, options: PapoOptions = {}) {
  for (const k of Object.keys(options)) if (!WRITTEN_OUT.includes(k)) throw new Error(`tfjs peer: option '${k}' is not written out here`);
  const p = presets[options.preset ?? 'papo-g'];
  const clipLow = options.clipLow ?? p.clipLow, clipHigh = options.clipHigh ?? p.clipHigh, clipDual = options.clipDual ?? 3;
  const klCoef = options.klCoef ?? p.klCoef, perceptionCoef = options.perceptionCoef ?? p.perceptionCoef;
  const entropyCoef = options.entropyCoef ?? p.entropyCoef, maskedEntropyCoef = options.maskedEntropyCoef ?? p.maskedEntropyCoef;
  const temperature = options.temperature ?? 1;
  if (klCoef > 0 && !batch.refLogProbs) throw new Error('tfjs peer: refLogProbs needed when klCoef > 0');
  const N = batch.tokens.length;
  const maskValues = batch.responseMask ?? new Float32Array(N).fill(1);
  const maskSum = maskValues.reduce((s, v) => s + v, 0);

  return (logits: TF.Tensor, maskedLogits: TF.Tensor): PeerTerms => {
    const tokens = tf.tensor1d(batch.tokens, 'int32');
    const mask = tf.tensor1d(maskValues);
    // an all-zero mask gives 0, as the package does
    const tokenMean = (x: TF.Tensor) => tf.div(tf.sum(tf.mul(x, mask)), maskSum > 0 ? maskSum : 1) as TF.Scalar;
    const k3 = (d: TF.Tensor) => {
      const delta = tf.clipByValue(d, -20, 20);
      return tf.clipByValue(tf.sub(tf.expm1(delta), delta), -10, 10);
    };
    const lp = tokenLogProbs(tf, logits, tokens, temperature).lp;
    const maskedLp = tokenLogProbs(tf, maskedLogits, tokens, temperature).lp;
    const a = options.detachMasked ? detached(tf, maskedLp) : maskedLp;

    // PPO clip with dual clip; on-policy (no oldLogProbs) the ratio is 1 with lp's gradient
    const adv = tf.tensor1d(batch.advantages);
    const old = batch.oldLogProbs ? tf.tensor1d(batch.oldLogProbs) : detached(tf, lp);
    const ratio = tf.exp(tf.clipByValue(tf.sub(lp, old), -20, 20));
    const negAdv = tf.neg(adv);
    const pg1 = tf.mul(negAdv, ratio);
    const pg2 = tf.mul(negAdv, tf.clipByValue(ratio, 1 - clipLow, 1 + clipHigh));
    const pgMax = tf.maximum(pg1, pg2);
    const pg = tf.where(tf.less(adv, 0), tf.minimum(pgMax, tf.mul(negAdv, clipDual)), pgMax);

    const pgLoss = tokenMean(pg);
    // the package reports klLoss 0 when klCoef is 0 (refLogProbs may then be absent)
    const klLoss = klCoef > 0 ? tokenMean(k3(tf.sub(tf.tensor1d(batch.refLogProbs!), lp))) : tf.scalar(0);
    const perceptionKl = tokenMean(k3(tf.sub(a, lp)));
    let loss: TF.Scalar = pgLoss;
    if (klCoef !== 0) loss = tf.add(loss, tf.mul(klCoef, klLoss));
    if (perceptionCoef !== 0) loss = tf.sub(loss, tf.mul(perceptionCoef, perceptionKl));
    if (entropyCoef !== 0) loss = tf.add(loss, tf.mul(entropyCoef, tokenMean(tf.neg(lp))));
    if (maskedEntropyCoef !== 0) loss = tf.add(loss, tf.mul(maskedEntropyCoef, tokenMean(tf.neg(a))));
    return { loss, pgLoss, klLoss, perceptionKl };
  };
}
