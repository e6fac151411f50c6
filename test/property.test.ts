// Property-based: random shapes, options, dtypes and values (including ±1e4 logits, -inf entries, flat rows and
// V = 1) through the cpu backend against the float64 reference; every output finite where the reference's is.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';
import { fromFloat64 } from '../lib/dtype';
import type { DType, PapoInputs, PapoOptions } from '../lib/types';
import { expectClose, maxAbs, values } from './helpers';

const RUNS = Number(process.env.PAPO_PROPERTY_RUNS ?? 150);

const caseArb = fc.record({
  N: fc.integer({ min: 1, max: 6 }),
  V: fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 70 }), fc.integer({ min: 1000, max: 2100 })),
  type: fc.constantFrom<DType>('float32', 'float16', 'bfloat16'),
  scale: fc.constantFrom(0, 1, 5, 30, 1e4),  // 0: flat rows
  negInf: fc.constantFrom(0, 0.1, 0.6),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  estimator: fc.constantFrom('k1', 'k2', 'k3', 'abs' as const),
  entropyMode: fc.constantFrom('sampled', 'full' as const),
  lossAgg: fc.constantFrom('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm' as const),
  temperature: fc.constantFrom(0.5, 1, 1.7),
  perceptionClip: fc.boolean(),
  masked: fc.boolean(),
});

function build(c: fc.RecordValue<typeof caseArb extends fc.Arbitrary<infer T> ? T : never>) {
  let s = c.seed >>> 0;
  const r = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  const n = c.N * c.V;
  const z = new Float64Array(n), zm = new Float64Array(n);
  const tokens = new Int32Array(c.N);
  for (let i = 0; i < c.N; i++) {
    tokens[i] = Math.floor(r() * c.V);
    for (let j = 0; j < c.V; j++) {
      const k = i * c.V + j;
      z[k] = (r() - 0.5) * 2 * c.scale;
      zm[k] = (r() - 0.5) * 2 * c.scale;
      if (j !== tokens[i] && r() < c.negInf) z[k] = zm[k] = -Infinity;
    }
  }
  const t = (v: Float64Array) => ({ data: fromFloat64(v, c.type), dims: [c.N, c.V], type: c.type });
  const inputs: PapoInputs = {
    logits: t(z), tokens, advantages: Float32Array.from({ length: c.N }, () => (r() - 0.5) * 4),
    oldLogProbs: Float32Array.from({ length: c.N }, () => -r() * 5), refLogProbs: Float32Array.from({ length: c.N }, () => -r() * 5),
    responseMask: Uint8Array.from({ length: c.N }, (_, i) => (i === 0 || r() < 0.8 ? 1 : 0)),
  };
  if (c.masked) inputs.maskedLogits = t(zm);
  const options: PapoOptions = {
    perceptionEstimator: c.estimator, klEstimator: c.estimator, klCoef: 0.01, entropyMode: c.entropyMode, lossAgg: c.lossAgg,
    temperature: c.temperature, perceptionClip: c.perceptionClip ? [-0.5, 0.5] : null,
    ...(c.masked ? {} : { perceptionCoef: 0, maskedEntropyCoef: 0 }),
  };
  return { inputs, options };
}

describe('properties', () => {
  it(`cpu equals the float64 reference on random inputs (${RUNS} cases)`, () => {
    fc.assert(fc.property(caseArb, (c) => {
      const { inputs, options } = build(c);
      const cpu = papoLossSync(inputs, { ...options, backend: 'cpu' });
      const ref = papoLossSync(inputs, { ...options, backend: 'reference', gradType: 'float32' });
      const rtol = c.type === 'float32' ? 1e-5 : 1e-5;
      // fp32 statistics: relative 1e-5, plus an absolute floor that grows with the logits' magnitude / tau
      const atol = 1e-6 * Math.max(1, c.scale / c.temperature);
      expect(Number.isFinite(cpu.loss)).toBe(Number.isFinite(ref.loss));
      expect(Math.abs(cpu.loss - ref.loss)).toBeLessThanOrEqual(atol * 10 + 1e-4 * Math.abs(ref.loss));
      expectClose(cpu.logProbs, ref.logProbs, rtol, atol, 'logProbs');
      expectClose(cpu.entropy, ref.entropy, rtol, atol, 'entropy');
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
        if (!ref[g]) continue;
        const want = values(ref[g]), got = values(cpu[g]);
        for (const v of got) expect(Number.isFinite(v)).toBe(true);
        // fp32 holds x = z / tau to |x| 2^-24, so p carries that relative error: at |z| = 1e4 this dominates, and
        // the absolute floor scales with it (a V = 1 row's exact 0 comes out as ~|x| 1e-8 times the coefficient).
        const xScale = c.scale / c.temperature;
        const tol = (c.type === 'float32' ? 1e-5 : c.type === 'float16' ? 2e-3 : 1e-2) + 2e-7 * xScale;
        expectClose(got, want, tol, (1e-5 + 2e-7 * xScale) * maxAbs(want) + 1e-7 * (1 + xScale) + (c.type === 'float16' ? 2 ** -24 : 0), g);
      }
    }), { numRuns: RUNS, seed: 20261121 });
  });
});
