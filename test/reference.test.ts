// The float64 reference against finite differences: the oracle is only as good as its own check.
import { describe, expect, it } from 'vitest';
import { resolveOptions } from '../lib/options';
import { klEstimator, referencePapo, rowLogSoftmax, upperQuantile } from '../lib/reference';
import type { PapoOptions } from '../lib/types';
import { prepareCall } from '../lib/validate';
import { makeInputs, makeVariantInputs, rng, type VariantInputs } from './helpers';

/** Central differences of the reference loss in float64 at a few elements of each path. */
function checkGradient(options: PapoOptions, make: Parameters<typeof makeInputs>[0] = {}, variant: VariantInputs = {}) {
  const inputs = makeVariantInputs({ N: 5, V: 23, seed: 7, ...make }, variant);
  const base = prepareCall(inputs, resolveOptions({ backend: 'reference', ...options }));
  const z = Float64Array.from(base.logits.data);
  const zm = base.maskedLogits ? Float64Array.from(base.maskedLogits.data) : null;
  const lossAt = (zz: Float64Array, zzm: Float64Array | null) =>
    referencePapo({
      ...base,
      logits: { ...base.logits, data: zz as unknown as Float32Array },
      maskedLogits: zzm && base.maskedLogits ? { ...base.maskedLogits, data: zzm as unknown as Float32Array } : null,
      opts: { ...base.opts, computeGrad: false },
    }).loss;
  const analytic = referencePapo({
    ...base,
    logits: { ...base.logits, data: z as unknown as Float32Array },
    maskedLogits: zm && base.maskedLogits ? { ...base.maskedLogits, data: zm as unknown as Float32Array } : null,
  });
  const r = rng(3);
  const h = 1e-6;
  let checked = 0;
  for (const [path, arr, grad] of [['logits', z, analytic.gradLogits], ['maskedLogits', zm, analytic.gradMaskedLogits]] as const) {
    if (!arr) continue;
    if (path === 'maskedLogits' && options.detachMasked) {
      expect(grad, 'a detached masked path has no gradient').toBeNull();
      continue;  // the loss depends on zm, but by definition no gradient flows there
    }
    for (let k = 0; k < 12; k++) {
      const row = k % 5;
      const j = k < 5 ? inputs.tokens instanceof Int32Array ? inputs.tokens[row] : 0 : Math.floor(r() * 23);
      const idx = row * 23 + j;
      const plus = Float64Array.from(arr), minus = Float64Array.from(arr);
      plus[idx] += h;
      minus[idx] -= h;
      const fd = path === 'logits' ? (lossAt(plus, zm) - lossAt(minus, zm)) / (2 * h) : (lossAt(z, plus) - lossAt(z, minus)) / (2 * h);
      const an = grad ? grad[idx] : 0;
      expect(Math.abs(fd - an), `${path}[${row}, ${j}]: fd ${fd} vs analytic ${an}`).toBeLessThan(2e-7 + 1e-5 * Math.abs(an));
      checked++;
    }
  }
  return checked;
}

describe('reference gradients match finite differences', () => {
  const cases: [string, PapoOptions, Parameters<typeof makeInputs>[0]?][] = [
    ['papo-g', { preset: 'papo-g' }],
    ['papo-g-7b (sampled entropy on both paths)', { preset: 'papo-g-7b' }],
    ['papo-d', { preset: 'papo-d' }],
    ['full entropy mode', { preset: 'papo-g-7b', entropyMode: 'full' }],
    ['k1 estimators', { klEstimator: 'k1', perceptionEstimator: 'k1' }],
    ['k2 estimators', { klEstimator: 'k2', perceptionEstimator: 'k2' }],
    ['abs estimators', { klEstimator: 'abs', perceptionEstimator: 'abs' }],
    ['perception clip', { perceptionClip: [0, 0.2], perceptionCoef: 0.5 }],
    ['temperature 0.7', { temperature: 0.7, preset: 'papo-g-7b' }],
    ['seq-mean-token-mean, masked', { lossAgg: 'seq-mean-token-mean' }, { mask: true, dims: [5, 1, 23] }],
    ['seq-mean-token-sum-norm', { lossAgg: 'seq-mean-token-sum-norm', preset: 'papo-d' }],
    ['detached masked path', { detachMasked: true, preset: 'papo-g-7b' }],
    ['-inf logits', { preset: 'papo-g-7b', entropyMode: 'full' }, { negInf: 0.3 }],
    ['large coefficients', { perceptionCoef: 0.7, klCoef: 0.4, entropyCoef: 0.3, maskedEntropyCoef: 0.2 }],
  ];
  for (const [name, options, make] of cases) {
    it(name, () => {
      expect(checkGradient(options, make)).toBeGreaterThan(0);
    });
  }
  it('on-policy: the gradient is -A (1[j=o] - p) per token, the ratio 1', () => {
    expect(checkGradient({ preset: 'dapo' }, { masked: false })).toBe(12);
  });
});

describe('reference gradients of the policy-loss variants and PAPO\'s options match finite differences', () => {
  // Wherever the objective has no stop-gradient. Two sequences (2 + 3 tokens) so that sequence terms mix rows.
  const seqs: VariantInputs = { seqLengths: [2, 3] };
  const cases: [string, PapoOptions, VariantInputs][] = [
    ['gspo (the gradient through the sequence mean)', { lossType: 'gspo', preset: 'papo-g-7b' }, seqs],
    ['gspo with wide clips', { lossType: 'gspo', clipLow: 0.9, clipHigh: 5 }, seqs],
    ['sapo', { lossType: 'sapo', preset: 'papo-g-7b' }, seqs],
    ['sapo, other temperatures', { lossType: 'sapo', sapoTauPositive: 3, sapoTauNegative: 0.4 }, seqs],
    ['rollout correction truncate', { rolloutCorrection: { mode: 'truncate', upper: 1.3 } }, { ...seqs, rollout: true }],
    ['rollout correction mask', { rolloutCorrection: { mode: 'mask', upper: 1.5 } }, { ...seqs, rollout: true }],
    ['perceptionWeights', { perceptionCoef: 0.5 }, { ...seqs, perceptionWeights: true }],
    ['perceptionTopP', { perceptionTopP: 0.5, perceptionCoef: 0.5 }, seqs],
    ['perceptionTopP with weights and clip', { perceptionTopP: 0.4, perceptionCoef: 0.5, perceptionClip: [0, 0.3] },
      { ...seqs, perceptionWeights: true }],
    ['sft', { sftCoef: 0.3 }, { ...seqs, sftMask: true }],
    ['all of them with gspo', { lossType: 'gspo', perceptionTopP: 0.5, sftCoef: 0.3, rolloutCorrection: { mode: 'truncate' },
      preset: 'papo-g-7b' }, { ...seqs, rollout: true, perceptionWeights: true, sftMask: true }],
  ];
  for (const [name, options, variant] of cases) it(name, () => expect(checkGradient(options, {}, variant)).toBeGreaterThan(0));

  // gspo-token and cispo stop gradients by definition: check them against the derivative of their surrogate with
  // the stopped quantities held at their values.
  const policyOnly: PapoOptions = { preset: 'dapo', perceptionCoef: 0, entropyCoef: 0, maskedEntropyCoef: 0 };
  it('gspo-token equals PPO with old := lp - s_i held fixed (value s_i, derivative 1 in its own lp)', () => {
    const inputs = makeVariantInputs({ N: 5, V: 23, seed: 7, masked: false }, seqs);
    const call = prepareCall(inputs, resolveOptions({ ...policyOnly, lossType: 'gspo-token', backend: 'reference' }));
    const r = referencePapo(call);
    const old = call.oldLogProbs!;
    const s = [0, 0];
    for (let i = 0; i < 5; i++) s[i < 2 ? 0 : 1] += (r.logProbs[i] - old[i]) / (i < 2 ? 2 : 3);
    const heldOld = Float64Array.from(r.logProbs, (lp, i) => lp - s[i < 2 ? 0 : 1]);
    const ppo = referencePapo({ ...call, opts: { ...call.opts, lossType: 'ppo' }, oldLogProbs: heldOld as unknown as Float32Array });
    expect(Math.abs(r.loss - ppo.loss)).toBeLessThan(1e-12);
    for (let k = 0; k < r.gradLogits!.length; k++) expect(Math.abs(r.gradLogits![k] - ppo.gradLogits![k])).toBeLessThan(1e-12);
    const tokenPpo = referencePapo({ ...call, opts: { ...call.opts, lossType: 'ppo' } });
    expect(Math.abs(tokenPpo.loss - r.loss), 'the sequence ratio differs from the token ratio').toBeGreaterThan(1e-4);
  });
  it('cispo: the gradient of -A lp w with the clipped ratio w held fixed, by finite differences', () => {
    for (const [clipLow, clipHigh] of [[1, 4], [0.2, 0.28]]) {
      const inputs = makeVariantInputs({ N: 5, V: 23, seed: 7, masked: false }, {});
      const call = prepareCall(inputs, resolveOptions({ ...policyOnly, lossType: 'cispo', clipLow, clipHigh, backend: 'reference' }));
      const r = referencePapo(call);
      const z = Float64Array.from(call.logits.data!);
      const old = call.oldLogProbs!, A = call.advantages, tok = call.tokens;
      const w = Array.from(r.logProbs, (lp, i) =>
        Math.exp(Math.min(Math.max(lp - old[i], clipLow === 1 ? -Infinity : Math.log(1 - clipLow)), Math.log(1 + clipHigh))));
      if (clipLow < 1) expect(w.some((x, i) => x !== Math.exp(r.logProbs[i] - old[i])), 'some ratio is clipped').toBe(true);
      const held = (zz: Float64Array) => {
        let L = 0;
        for (let i = 0; i < 5; i++) L += -A[i] * rowLogSoftmax(zz.subarray(i * 23, i * 23 + 23), 1).logp[tok[i]] * w[i] / 5;
        return L;
      };
      expect(Math.abs(held(z) - r.loss)).toBeLessThan(1e-12);
      for (const idx of [0, 7, 23 + tok[1], 50, 99, 4 * 23 + tok[4]]) {
        const [p, m] = [Float64Array.from(z), Float64Array.from(z)];
        p[idx] += 1e-6;
        m[idx] -= 1e-6;
        const fd = (held(p) - held(m)) / 2e-6;
        expect(Math.abs(fd - r.gradLogits![idx]), `element ${idx}`).toBeLessThan(2e-7 + 1e-5 * Math.abs(fd));
      }
    }
  });
  it('the top-p threshold is numpy\'s linear quantile', () => {
    // numpy.quantile([3, 1, 4, 1, 5], 0.3) = 1.4; q = 1 - p
    expect(upperQuantile([3, 1, 4, 1, 5], 0.7)).toBeCloseTo(1.4, 14);
    expect(upperQuantile([2, 9], 0.5)).toBe(5.5);
    expect(upperQuantile([7], 0.2)).toBe(7);
    expect(upperQuantile([], 0.2)).toBe(-Infinity);
  });
});

describe('reference estimators', () => {
  it('k3 is verl low_var_kl, clamped', () => {
    const d = 0.3;
    expect(klEstimator('k3', d).value).toBeCloseTo(Math.exp(d) - d - 1, 15);
    expect(klEstimator('k3', 25).value).toBe(10);  // clamp(e^20 - 21, -10, 10)
    expect(klEstimator('k3', 25).dd).toBe(0);
    const small = klEstimator('k3', 1e-5).value;  // keeps its digits for small d (expm1)
    expect(Math.abs(small - (1e-10 / 2 + 1e-15 / 6)) / small).toBeLessThan(1e-9);
  });
  it('k1, k2, abs', () => {
    expect(klEstimator('k1', 0.5)).toEqual({ value: -0.5, dd: -1 });
    expect(klEstimator('k2', -0.4)).toEqual({ value: 0.08000000000000002, dd: -0.4 });
    expect(klEstimator('abs', -0.4)).toEqual({ value: 0.4, dd: -1 });
  });
});
