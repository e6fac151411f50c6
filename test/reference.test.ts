// The float64 reference against finite differences: the oracle is only as good as its own check.
import { describe, expect, it } from 'vitest';
import { resolveOptions } from '../lib/options';
import { klEstimator, referencePapo } from '../lib/reference';
import type { PapoOptions } from '../lib/types';
import { prepareCall } from '../lib/validate';
import { makeInputs, rng } from './helpers';

/** Central differences of the reference loss in float64 at a few elements of each path. */
function checkGradient(options: PapoOptions, make: Parameters<typeof makeInputs>[0] = {}) {
  const inputs = makeInputs({ N: 5, V: 23, seed: 7, ...make });
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
