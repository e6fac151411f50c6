// A native backend against the float64 reference: every term, option, preset, aggregation mode, dtype and
// layout, plus -inf logits, an all-zero mask, in-place gradients, and async/sync agreement. test/cpu.test.ts runs
// it on the CPU backend, test/cuda-reference.test.ts on the CUDA backend (a GPU, or the emulated device).
import { describe, expect, it } from 'vitest';
import { papoLoss, papoLossSync } from '../lib';
import type { DType, PapoInputs, PapoOptions, PapoResult } from '../lib/types';
import {
  expectClose, expectNumberClose, makeInputs, makeVariantInputs, maxAbs, type MakeOptions, values, type VariantInputs,
} from './helpers';

/** Registers the suite for `backend`. */
export function backendSuite(backend: 'cpu' | 'cuda'): void {
  // fp32 inputs: the CPU computes statistics in fp32 with double row sums; 16-bit gradients are rounded once.
  const tol: Record<DType, { rtol: number; grad: number }> = {
    float32: { rtol: 1e-5, grad: 1e-5 },
    float16: { rtol: 1e-5, grad: 2e-3 },
    bfloat16: { rtol: 1e-5, grad: 1e-2 },
  };

  function compare(inputs: PapoInputs, options: PapoOptions, type: DType = 'float32') {
    const cpu = papoLossSync(inputs, { ...options, backend });
    const ref = papoLossSync(inputs, { ...options, backend: 'reference', gradType: 'float32', inPlace: false });
    const t = tol[type];
    expect(cpu.backend).toBe(backend);
    expectNumberClose(cpu.loss, ref.loss, 1e-5, 1e-7, 'loss');
    for (const k of Object.keys(ref.metrics) as (keyof typeof ref.metrics)[])
      expectNumberClose(cpu.metrics[k]!, ref.metrics[k]!, 1e-5, 1e-7, `metrics.${k}`);
    expect(Object.keys(cpu.metrics).sort()).toEqual(Object.keys(ref.metrics).sort());
    expectClose(cpu.logProbs, ref.logProbs, t.rtol, 1e-6, 'logProbs');
    expectClose(cpu.entropy, ref.entropy, t.rtol, 1e-6, 'entropy');
    if (ref.maskedLogProbs) {
      expectClose(cpu.maskedLogProbs!, ref.maskedLogProbs, t.rtol, 1e-6, 'maskedLogProbs');
      expectClose(cpu.maskedEntropy!, ref.maskedEntropy!, t.rtol, 1e-6, 'maskedEntropy');
    } else {
      expect(cpu.maskedLogProbs).toBeUndefined();
    }
    for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
      if (!ref[g]) {
        expect(cpu[g], g).toBeUndefined();
        continue;
      }
      const want = values(ref[g]);
      const scale = maxAbs(want);
      // relative to each element, plus a floor relative to the largest gradient (rounding of tiny p's) and, for
      // fp16 output, one subnormal step (2^-24): values below 6e-5 keep only absolute precision there.
      const subnormal = cpu[g]!.type === 'float16' ? 2 ** -24 : 0;
      expectClose(values(cpu[g]), want, t.grad, 1e-6 * scale + 1e-12 + subnormal, g);
    }
    return { cpu, ref };
  }

  describe(`${backend} backend matches the reference`, () => {
    const optionCases: [string, PapoOptions, MakeOptions?][] = [
      ['default (papo-g)', {}],
      ['preset papo-g-7b', { preset: 'papo-g-7b' }],
      ['preset papo-d', { preset: 'papo-d' }],
      ['preset grpo without masked logits', { preset: 'grpo' }, { masked: false }],
      ['preset grpo with masked logits (zero masked gradient)', { preset: 'grpo' }],
      ['preset dapo', { preset: 'dapo' }, { masked: false }],
      ['klEstimator k1', { klEstimator: 'k1' }],
      ['klEstimator k2', { klEstimator: 'k2' }],
      ['klEstimator abs', { klEstimator: 'abs' }],
      ['perceptionEstimator k1', { perceptionEstimator: 'k1' }],
      ['perceptionEstimator k2', { perceptionEstimator: 'k2' }],
      ['perceptionEstimator abs', { perceptionEstimator: 'abs' }],
      ['perceptionClip [0, 0.2]', { perceptionClip: [0, 0.2], perceptionCoef: 0.3 }],
      ['entropyMode full', { preset: 'papo-g-7b', entropyMode: 'full' }],
      ['detachMasked', { preset: 'papo-g-7b', detachMasked: true }],
      ['clip bounds', { clipLow: 0.1, clipHigh: 0.15, clipDual: 1.5 }],
      ['temperature 0.6', { temperature: 0.6, preset: 'papo-g-7b' }],
      ['temperature 1.7', { temperature: 1.7 }],
      ['large coefficients', { perceptionCoef: 0.7, klCoef: 0.4, entropyCoef: 0.3, maskedEntropyCoef: 0.2 }],
      ['computeGrad false', { computeGrad: false }],
      ['response mask', { preset: 'papo-g-7b' }, { mask: true }],
      ['-inf logits (excluded tokens)', { preset: 'papo-g-7b', entropyMode: 'full' }, { negInf: 0.4 }],
      ['large logits (±1e4)', { preset: 'papo-g-7b' }, { scale: 1e4 }],
      ['V not a multiple of 16', {}, { V: 37 }],
      ['V larger than a block', { preset: 'papo-g-7b' }, { N: 3, V: 5000 }],
      ['V = 1', {}, { V: 1 }],
    ];
    for (const [name, options, make] of optionCases) it(name, () => void compare(makeInputs(make), options));

    it('logits masked with the most negative finite fp32 value (finfo.min), temperature 2', () => {
      const inputs = makeInputs({ N: 4, V: 3000, seed: 33 });
      for (const t of [inputs.logits, inputs.maskedLogits] as { data: Float32Array }[])
        for (let row = 0; row < 4; row++)
          for (let j = 0; j < 2500; j++) if (j !== (inputs.tokens as Int32Array)[row]) t.data[row * 3000 + j] = -3.4028234663852886e38;
      compare(inputs, { temperature: 2 });
    });

    it('on-policy (no oldLogProbs): ratio 1, gradient through lp', () => {
      const inputs = makeInputs();
      delete inputs.oldLogProbs;
      const { cpu } = compare(inputs, {});
      expect(cpu.metrics.clipFrac).toBe(0);
      expect(cpu.metrics.approxKl).toBe(0);
    });

    it('maskedLogProbs instead of maskedLogits (detached)', () => {
      const inputs = makeInputs();
      const withLogits = papoLossSync(inputs, { backend, detachMasked: true });
      const pre = { ...inputs, maskedLogits: undefined, maskedLogProbs: withLogits.maskedLogProbs };
      const { cpu } = compare(pre, {});
      expectNumberClose(cpu.loss, withLogits.loss, 1e-6, 1e-9, 'loss with precomputed masked log-probs');
      expect(cpu.gradMaskedLogits).toBeUndefined();
      expect(cpu.metrics.meanMaskedEntropy).toBeUndefined();
    });

    it('per-sequence advantages are broadcast', () => {
      const inputs = { ...makeInputs({ N: 9 }), seqLengths: Int32Array.of(2, 3, 4), advantages: Float32Array.of(0.5, -1, 0.25) };
      const { cpu } = compare(inputs, { lossAgg: 'seq-mean-token-mean' });
      const perToken = { ...inputs, advantages: Float32Array.of(0.5, 0.5, -1, -1, -1, 0.25, 0.25, 0.25, 0.25) };
      expect(papoLossSync(perToken, { lossAgg: 'seq-mean-token-mean', backend }).loss).toBe(cpu.loss);
    });
  });

  describe('policy-loss variants and PAPO\'s per-sequence options match the reference', () => {
    const seqs = { seqLengths: [3, 5, 0, 4] };  // an empty sequence among them
    const packed: MakeOptions = { N: 12, V: 61, seed: 21, mask: true };
    const cases: [string, PapoOptions, VariantInputs, MakeOptions?][] = [
      ['gspo', { lossType: 'gspo' }, seqs],
      ['gspo, recommended clips, no perception terms', { lossType: 'gspo', clipLow: 3e-4, clipHigh: 4e-4, preset: 'grpo' }, seqs],
      ['gspo-token', { lossType: 'gspo-token' }, seqs],
      ['gspo on-policy', { lossType: 'gspo', preset: 'papo-d' }, seqs, { N: 12, V: 61, seed: 22, onPolicy: true }],
      ['cispo, no lower bound', { lossType: 'cispo', clipLow: 1, clipHigh: 4 }, seqs],
      ['cispo, both bounds', { lossType: 'cispo', clipLow: 0.2, clipHigh: 0.28, preset: 'papo-d' }, seqs],
      ['sapo', { lossType: 'sapo', preset: 'papo-g-7b' }, seqs],
      ['sapo, other temperatures', { lossType: 'sapo', sapoTauPositive: 2, sapoTauNegative: 0.5 }, seqs],
      ['rollout correction truncate (TIS)', { rolloutCorrection: { mode: 'truncate' } }, { ...seqs, rollout: true }],
      ['rollout correction mask (IcePop)', { rolloutCorrection: { mode: 'mask', upper: 1.5 } }, { ...seqs, rollout: true }],
      ['perceptionWeights', { perceptionCoef: 0.3 }, { ...seqs, perceptionWeights: true }],
      ['perceptionTopP 0.5', { perceptionTopP: 0.5, perceptionCoef: 0.3 }, seqs],
      ['perceptionTopP with weights and clip', { perceptionTopP: 0.3, perceptionClip: [0, 0.2], perceptionCoef: 0.3 },
        { ...seqs, perceptionWeights: true }],
      ['perceptionTopP, detached masked path', { perceptionTopP: 0.6, detachMasked: true, preset: 'papo-g-7b' }, seqs],
      ['sft on correct rollouts', { sftCoef: 0.1 }, { ...seqs, sftMask: true }],
      ['everything at once, gspo', { lossType: 'gspo', perceptionTopP: 0.5, sftCoef: 0.2, rolloutCorrection: { mode: 'mask' },
        preset: 'papo-g-7b' }, { ...seqs, rollout: true, perceptionWeights: true, sftMask: true }],
      ['everything at once, sapo, full entropy', { lossType: 'sapo', perceptionTopP: 0.7, sftCoef: 0.2, entropyMode: 'full',
        rolloutCorrection: { mode: 'truncate', upper: 1.2 }, preset: 'papo-g-7b' },
        { ...seqs, rollout: true, perceptionWeights: true, sftMask: true }],
    ];
    for (const [name, options, v, make] of cases)
      it(name, () => void compare(makeVariantInputs(make ?? packed, v), options));

    const modes = ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const;
    const all: VariantInputs = { rollout: true, perceptionWeights: true, sftMask: true };
    for (const lossAgg of modes) {
      for (const lossType of ['gspo', 'cispo'] as const) {
        const options: PapoOptions = { lossAgg, lossType, perceptionTopP: 0.4, sftCoef: 0.1, rolloutCorrection: { mode: 'truncate' } };
        it(`${lossType} + top-p + sft + rollout, ${lossAgg}, packed`, () => void compare(makeVariantInputs(packed, { ...seqs, ...all }), options));
        it(`${lossType} + top-p + sft + rollout, ${lossAgg}, [B, T, V]`,
          () => void compare(makeVariantInputs({ dims: [3, 4, 50], mask: true, seed: 23 }, all), options));
      }
    }
    it('bfloat16: gspo with top-p, sft and IcePop', () => {
      const options: PapoOptions = { lossType: 'gspo', perceptionTopP: 0.5, sftCoef: 0.1, rolloutCorrection: { mode: 'mask' } };
      compare(makeVariantInputs({ N: 12, V: 133, type: 'bfloat16', seed: 24, mask: true }, { ...seqs, ...all }), options, 'bfloat16');
    });
    it('in place: gspo with top-p writes the same gradient as out of place', () => {
      const inputs = makeVariantInputs({ ...packed, seed: 25 }, seqs);
      const options: PapoOptions = { lossType: 'gspo', perceptionTopP: 0.5, backend };
      const out = papoLossSync(inputs, options);
      const copy = (t: unknown) => ({ ...(t as { data: Float32Array }), data: Float32Array.from((t as { data: Float32Array }).data) });
      const mine = { ...inputs, logits: copy(inputs.logits), maskedLogits: copy(inputs.maskedLogits) };
      const inPlace = papoLossSync(mine, { ...options, inPlace: true });
      expect(inPlace.loss).toBe(out.loss);
      expect(values(inPlace.gradLogits)).toEqual(values(out.gradLogits));
      expect(values(inPlace.gradMaskedLogits)).toEqual(values(out.gradMaskedLogits));
    });
    it('metrics: top-p keeps about p of the tokens; GSPO counts clipped sequences', () => {
      const inputs = { ...makeVariantInputs({ N: 40, V: 31, seed: 26 }, { seqLengths: [10, 10, 10, 10] }),
        advantages: Float32Array.of(1, -1, 0.5, -0.5) };
      const r = papoLossSync(inputs, { backend, perceptionTopP: 0.25, lossType: 'gspo', clipLow: 3e-4, clipHigh: 4e-4 });
      // per sequence of 10 distinct values: the 0.75 quantile lies between the 7th and 8th, so 3 of 10 are kept
      expect(r.metrics.perceptionKeptFrac).toBeCloseTo(0.3, 12);
      // one advantage and one ratio per sequence: each sequence is clipped whole, or not at all
      expect(r.metrics.clipFrac * 4).toBeCloseTo(Math.round(r.metrics.clipFrac * 4), 12);
      expect(r.metrics.clipFrac).toBeGreaterThan(0);
    });
  });

  describe('aggregation modes and layouts', () => {
    const modes = ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const;
    for (const lossAgg of modes) {
      it(`${lossAgg}, packed with seqLengths and a mask`, () => {
        const inputs = { ...makeInputs({ N: 10, mask: true, seed: 4 }), seqLengths: Int32Array.of(3, 0, 5, 2) };
        compare(inputs, { lossAgg, preset: 'papo-g-7b' });
      });
      it(`${lossAgg}, [B, T, V]`, () => compare(makeInputs({ dims: [3, 4, 50], mask: true, seed: 5 }), { lossAgg }));
      it(`${lossAgg}, lossScale`, () => compare(makeInputs({ N: 6, seed: 6 }), { lossAgg, lossScale: 17 }));
    }
    it('seq-mean-token-mean: an empty sequence contributes 0 but counts', () => {
      const inputs = { ...makeInputs({ N: 4, masked: false }), seqLengths: Int32Array.of(4, 0) };
      const two = papoLossSync(inputs, { preset: 'dapo', lossAgg: 'seq-mean-token-mean', backend });
      const one = papoLossSync({ ...inputs, seqLengths: Int32Array.of(4) }, { preset: 'dapo', lossAgg: 'seq-mean-token-mean', backend });
      expectNumberClose(two.loss, one.loss / 2, 1e-12, 0, 'loss');
    });
    it('[B, T, V] equals packed input with seqLengths T', () => {
      const batched = makeInputs({ dims: [2, 3, 40], seed: 8 });
      const l = batched.logits as { data: Float32Array; dims: number[]; type: 'float32' };
      const m = batched.maskedLogits as typeof l;
      const packed = { ...batched, logits: { ...l, dims: [6, 40] }, maskedLogits: { ...m, dims: [6, 40] }, seqLengths: [3, 3] };
      for (const lossAgg of modes) {
        const a = papoLossSync(batched, { lossAgg, backend });
        const b = papoLossSync(packed, { lossAgg, backend });
        expect(b.loss).toBe(a.loss);
        expect(b.gradLogits!.dims).toEqual([6, 40]);
        expect(a.gradLogits!.dims).toEqual([2, 3, 40]);
      }
    });
  });

  describe('dtypes', () => {
    for (const type of ['float16', 'bfloat16'] as const) {
      it(`${type} inputs, ${type} gradients`, () => {
        const { cpu } = compare(makeInputs({ type, N: 6, V: 133 }), { preset: 'papo-g-7b' }, type);
        expect(cpu.gradLogits!.type).toBe(type);
        expect(cpu.gradLogits!.data).toBeInstanceOf(Uint16Array);
      });
      it(`${type} inputs, float32 gradients`, () => {
        const { cpu } = compare(makeInputs({ type, N: 6, V: 133, seed: 2 }), { preset: 'papo-d', gradType: 'float32' }, 'float32');
        expect(cpu.gradLogits!.type).toBe('float32');
      });
      it(`${type} with -inf logits`, () => compare(makeInputs({ type, negInf: 0.3, seed: 9 }), { entropyMode: 'full', preset: 'papo-g-7b' }, type));
    }
  });

  describe('edge cases', () => {
    it('an all-zero mask gives loss 0 and zero gradients, never NaN', () => {
      const inputs = { ...makeInputs(), responseMask: new Uint8Array(8) };
      for (const lossAgg of ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const) {
        const r = papoLossSync(inputs, { lossAgg, backend, preset: 'papo-g-7b' });
        expect(r.loss).toBe(0);
        expect(maxAbs(values(r.gradLogits))).toBe(0);
        expect(maxAbs(values(r.gradMaskedLogits))).toBe(0);
        for (const v of Object.values(r.metrics)) expect(Number.isFinite(v)).toBe(true);
        expect(r.logProbs.every(Number.isFinite)).toBe(true);
      }
    });
    it('an excluded (-inf) logit gets exactly zero gradient', () => {
      const inputs = makeInputs({ negInf: 0.5, seed: 12 });
      const r = papoLossSync(inputs, { backend, preset: 'papo-g-7b', entropyMode: 'full' });
      const z = (inputs.logits as { data: Float32Array }).data;
      const g = values(r.gradLogits);
      let excluded = 0;
      for (let i = 0; i < z.length; i++) if (z[i] === -Infinity) { excluded++; expect(g[i]).toBe(0); }
      expect(excluded).toBeGreaterThan(100);
    });
    it('NaN logits are rejected with the row named', () => {
      const inputs = makeInputs();
      (inputs.maskedLogits as { data: Float32Array }).data[3 * 300 + 5] = NaN;
      expect(() => papoLossSync(inputs, { backend })).toThrow(/maskedLogits contains NaN in row 3/);
      expect(() => papoLossSync(inputs, { backend: 'reference' })).toThrow(/maskedLogits: contains NaN in row 3/);
    });
    it('NaN is found wherever it sits in a long row, and outranks +Infinity', () => {
      const V = 5000;  // several of the CPU's 2048-element blocks
      const cases: [string, (z: Float32Array) => void, RegExp][] = [
        ['the last element', (z) => { z[2 * V + V - 1] = NaN; }, /logits contains NaN in row 2/],
        ['lane 0 of a block', (z) => { z[2 * V + 2048] = NaN; }, /logits contains NaN in row 2/],
        ['a block of excluded tokens', (z) => { z.fill(-Infinity, 2 * V + 2048, 2 * V + 4096); z[2 * V + 3000] = NaN; }, /logits contains NaN in row 2/],
        ['after +Infinity in an earlier block', (z) => { z[2 * V + 10] = Infinity; z[2 * V + 4500] = NaN; }, /logits contains NaN in row 2/],
        ['before +Infinity in a later block', (z) => { z[2 * V + 10] = NaN; z[2 * V + 4500] = Infinity; }, /logits contains NaN in row 2/],
        ['+Infinity alone', (z) => { z[2 * V + 4500] = Infinity; }, /logits contains \+Infinity in row 2/],
      ];
      for (const [where, spoil, message] of cases) {
        const inputs = makeInputs({ N: 4, V, masked: false, seed: 12 });
        inputs.tokens = Int32Array.of(1, 1, 1, 1);
        spoil((inputs.logits as { data: Float32Array }).data);
        expect(() => papoLossSync(inputs, { backend, perceptionCoef: 0, maskedEntropyCoef: 0 }), where).toThrow(message);
      }
    });
    it('a response token with logit -inf is rejected; as padding it is allowed', () => {
      const inputs = makeInputs({ mask: true });
      const tok = (inputs.tokens as Int32Array)[3];
      (inputs.logits as { data: Float32Array }).data[3 * 300 + tok] = -Infinity;  // row 3 is masked out
      const r = papoLossSync(inputs, { backend });
      expect(r.logProbs[3]).toBe(-Infinity);
      expect(Number.isFinite(r.loss)).toBe(true);
      (inputs.responseMask as Uint8Array)[3] = 1;
      expect(() => papoLossSync(inputs, { backend })).toThrow(/tokens\[3\].*-Infinity/);
    });
  });

  describe('in-place gradients', () => {
    for (const type of ['float32', 'bfloat16'] as const) {
      it(`${type}: written into the logits buffers, same values as out of place`, () => {
        const inputs = makeInputs({ type, seed: 21 });
        const expected = papoLossSync(inputs, { backend, preset: 'papo-g-7b' });
        const r = papoLossSync(inputs, { backend, preset: 'papo-g-7b', inPlace: true });
        expect(r.gradLogits!.data).toBe((inputs.logits as { data: unknown }).data);
        expect(r.gradMaskedLogits!.data).toBe((inputs.maskedLogits as { data: unknown }).data);
        expect(Array.from(r.gradLogits!.data)).toEqual(Array.from(expected.gradLogits!.data));
        expect(Array.from(r.gradMaskedLogits!.data)).toEqual(Array.from(expected.gradMaskedLogits!.data));
        expect(r.loss).toBe(expected.loss);
      });
    }
    it('a rejected in-place call leaves the logits intact', () => {
      const inputs = makeInputs({ seed: 22 });
      const z = (inputs.logits as { data: Float32Array }).data;
      z[7 * 300 + 1] = NaN;  // the last row is bad; every earlier row would already be overwritten by a fused pass
      const before = Float32Array.from(z);
      expect(() => papoLossSync(inputs, { backend, inPlace: true })).toThrow(/NaN in row 7/);
      expect(Object.is(z[7 * 300 + 1], NaN) || Number.isNaN(z[7 * 300 + 1])).toBe(true);
      z[7 * 300 + 1] = 0;
      before[7 * 300 + 1] = 0;
      expect(z).toEqual(before);
    });
    it('refuses two paths that share one buffer', () => {
      const inputs = makeInputs();
      const l = inputs.logits as { data: Float32Array; dims: number[]; type: 'float32' };
      const shared = { ...inputs, maskedLogits: { data: l.data, dims: l.dims, type: l.type } };
      expect(() => papoLossSync(shared, { backend, inPlace: true })).toThrow(/share memory/);
      expect(() => papoLossSync(shared, { backend })).not.toThrow();
    });
  });

  describe('async', () => {
    it('papoLoss and papoLossSync give the same bits', async () => {
      const inputs = makeInputs({ N: 16, V: 2000, type: 'bfloat16', seed: 30 });
      const a = await papoLoss(inputs, { preset: 'papo-g-7b', backend });
      const s = papoLossSync(inputs, { preset: 'papo-g-7b', backend });
      expect(a.loss).toBe(s.loss);
      expect(a.metrics).toEqual(s.metrics);
      expect(Buffer.from(a.gradLogits!.data.buffer).equals(Buffer.from(s.gradLogits!.data.buffer))).toBe(true);
      expect(Buffer.from(a.gradMaskedLogits!.data.buffer).equals(Buffer.from(s.gradMaskedLogits!.data.buffer))).toBe(true);
      expect(a.logProbs).toEqual(s.logProbs);
    });
    it('the event loop keeps turning during a large call', async () => {
      const inputs = makeInputs({ N: 48, V: 151936, seed: 31, scale: 2 });
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const started = performance.now();
      const r: PapoResult = await papoLoss(inputs, { backend });
      const elapsed = performance.now() - started;
      clearInterval(timer);
      expect(Number.isFinite(r.loss)).toBe(true);
      expect(elapsed).toBeGreaterThan(10);  // long enough for the timer to fire several times
      expect(ticks).toBeGreaterThanOrEqual(3);
    });
    it('validation errors reject the promise', async () => {
      await expect(papoLoss(makeInputs(), { temperature: 0, backend })).rejects.toThrow(RangeError);
    });
  });
}
