// Logits split along the vocabulary: the one-call form and the per-process form against the unsplit call, and
// the float64 reference's split against its unsplit self and finite differences.
import { describe, expect, it } from 'vitest';
import { mergeVocabShardStats, papoLoss, papoLossSync, vocabShardStats } from '../lib/index';
import { mergeExp } from '../lib/vocab-stats';
import { native } from '../lib/native';
import { fromFloat64, toFloat64 } from '../lib/dtype';
import type { DType, PapoInputs, PapoOptions, SplitPapoInputs, Tensor } from '../lib/types';
import { expectClose, expectNumberClose, makeInputs, maxAbs } from './helpers';
import { base, columns, concat, expectSplitEqual, inputsFor, split, startsOf, V, widthsOf, withInfShard } from './vocab-split-helpers';

/** The per-process form, as ranks would run it: each shard's statistics, merged by hand in shard order, then each
 * shard's own call with vocabShard; one result per shard. */
function perProcess(inputs: PapoInputs, widths: number[], options: PapoOptions) {
  const s = split(inputs, widths);
  const starts = startsOf(widths);
  const merged = (list: Tensor[]) => mergeVocabShardStats(list.map((t, k) => vocabShardStats(t, inputs.tokens, { vocabStart: starts[k] })));
  const [stats, maskedStats] = [merged(s.logits as Tensor[]), merged(s.maskedLogits as Tensor[])];
  return s.logits.map((shard, k) => papoLossSync({ ...inputs, logits: shard, maskedLogits: s.maskedLogits![k] },
    { ...options, vocabShard: { start: starts[k], stats, maskedStats } }));
}

/** The split call against the unsplit one on the same backend (expectSplitEqual). */
function checkSplit(inputs: PapoInputs, widths: number[], options: PapoOptions, tol = 2e-6) {
  const whole = papoLossSync(inputs, options);
  const parts = papoLossSync(split(inputs, widths), options);
  expectSplitEqual(parts, whole, widths, tol);
  return { whole, parts };
}

describe('logits split over the vocabulary', () => {
  for (const K of [1, 2, 3, 7]) {
    const widths = widthsOf(V, K);
    it(`cpu: V = ${V} in ${K} shards [${widths.join(', ')}], targets in the first, middle and last shard`, () => {
      checkSplit(inputsFor({}, widths), widths, { ...base, backend: 'cpu' });
    });
    it(`reference: the same split equals the unsplit reference (K = ${K})`, () => {
      checkSplit(inputsFor({ N: 4 }, widths), widths, { ...base, backend: 'reference' }, 1e-12);
    });
  }

  it('cpu: -Infinity columns, and a whole shard of -Infinity', () => {
    const widths = [1000, 99, 3000];
    const inputs = withInfShard(inputsFor({ negInf: 0.2 }, widths));
    const { parts } = checkSplit(inputs, widths, { ...base, backend: 'cpu' });
    expect(Array.from((parts.gradLogits[1].data as Float32Array)).every((g) => Object.is(g, 0))).toBe(true);
  });

  for (const type of ['bfloat16', 'float16'] as DType[])
    it(`cpu: ${type} shards and gradients`, () => {
      const widths = widthsOf(V, 3);
      checkSplit(inputsFor({ type }, widths), widths, { ...base, backend: 'cpu' }, 1e-5);
    });

  it("cpu: GSPO, perception top-p, entropyMode 'full' and a temperature", () => {
    const widths = widthsOf(V, 3);
    const inputs = inputsFor({}, widths, { seqLengths: [3, 5] });
    checkSplit(inputs, widths, { ...base, backend: 'cpu', lossType: 'gspo', clipLow: 3e-4, clipHigh: 4e-4 });
    checkSplit(inputs, widths, { ...base, backend: 'cpu', perceptionTopP: 0.5, entropyMode: 'full', temperature: 0.7 });
  });

  it('cpu: the other variants, aggregations, detachMasked and precomputed maskedLogProbs', () => {
    const widths = widthsOf(V, 3);
    const inputs = inputsFor({}, widths, { seqLengths: [3, 5], rollout: true, perceptionWeights: true, sftMask: true });
    const cpu = { ...base, backend: 'cpu' as const, sftCoef: 0.1, rolloutCorrection: { mode: 'mask' as const } };
    checkSplit(inputs, widths, { ...cpu, lossType: 'cispo' });
    checkSplit(inputs, widths, { ...cpu, lossType: 'sapo', lossAgg: 'seq-mean-token-mean', rolloutCorrection: { mode: 'truncate' } });
    checkSplit(inputs, widths, { ...cpu, lossType: 'gspo-token', lossAgg: 'seq-mean-token-sum-norm', detachMasked: true, perceptionClip: [0, 0.2] });
    const { maskedLogits: _m, ...noMasked } = inputs;
    const a = papoLossSync(inputs, cpu).maskedLogProbs!;
    const whole = papoLossSync({ ...noMasked, maskedLogProbs: a }, { ...cpu, maskedEntropyCoef: 0 });
    const parts = papoLossSync({ ...split(noMasked as PapoInputs, widths), maskedLogProbs: a }, { ...cpu, maskedEntropyCoef: 0 });
    expectNumberClose(parts.loss, whole.loss, 2e-6, 1e-7, 'loss with maskedLogProbs');
    expect(parts.gradMaskedLogits).toBeUndefined();
  });

  it('cpu: [B, T, V_k] shards, inPlace and out', () => {
    const widths = widthsOf(V, 2);
    const inputs = inputsFor({ dims: [2, 4, V] }, widths);
    checkSplit(inputs, widths, { ...base, backend: 'cpu' });
    const whole = papoLossSync(inputs, { ...base, backend: 'cpu' });
    const s = split(inputs, widths);
    const out = { gradLogits: widths.map((w) => ({ data: new Float32Array(8 * w), dims: [2, 4, w], type: 'float32' as const })) };
    const r = papoLossSync(s, { ...base, backend: 'cpu', out });
    expect(r.gradLogits[1].data).toBe(out.gradLogits[1].data);
    const inPlace = papoLossSync(s, { ...base, backend: 'cpu', inPlace: true });
    expect(inPlace.gradLogits[0].data).toBe(s.logits[0].data);
    expectClose(concat(inPlace.gradLogits, 8), toFloat64(whole.gradLogits.data, 'float32'), 0, maxAbs(toFloat64(whole.gradLogits.data, 'float32')) * 1e-5);
  });

  it('the per-process form, merged by hand, equals the one-call form bit for bit', () => {
    const widths = widthsOf(V, 3);
    const inputs = inputsFor({}, widths);
    const s = split(inputs, widths);
    const opts = { ...base, backend: 'cpu' as const };
    const one = papoLossSync(s, opts);
    perProcess(inputs, widths, opts).forEach((r, k) => {
      expect(r.loss).toBe(one.loss);
      expect(r.metrics).toEqual(one.metrics);
      expect(r.logProbs).toEqual(one.logProbs);
      expect(r.gradLogits.data).toEqual(one.gradLogits[k].data);
      expect(r.gradMaskedLogits!.data).toEqual(one.gradMaskedLogits![k].data);
    });
  });

  it('over many rows and shards, the cpu one-call merge and mergeVocabShardStats agree to the bit', () => {
    // 4096 rows of 7 shards: merges enough factors e^(m_k - m) that a merge with Math.exp on one side and the C
    // library's exp on the other would differ somewhere.
    const widths = [3, 9, 1, 14, 6, 11, 6];
    const inputs = makeInputs({ N: 4096, V: 50, seed: 11 });
    const s = split(inputs, widths);
    const opts = { ...base, backend: 'cpu' as const };
    const one = papoLossSync(s, opts);
    perProcess(inputs, widths, opts).forEach((r, k) => {
      expect(r.loss).toBe(one.loss);
      expect(r.entropy).toEqual(one.entropy);
      expect(r.maskedEntropy).toEqual(one.maskedEntropy);
      expect(r.gradLogits.data).toEqual(one.gradLogits[k].data);
      expect(r.gradMaskedLogits!.data).toEqual(one.gradMaskedLogits![k].data);
    });
  });

  it('mergeExp: within one unit in the last place of e^x on [-708, 0], 0 below', () => {
    let worst = 0;
    for (let i = 0; i <= 20000; i++) {
      const x = -708 * (i / 20000) ** 3;
      const want = Math.exp(x);
      const ulp = 2 ** (Math.floor(Math.log2(want)) - 52);
      worst = Math.max(worst, Math.abs(mergeExp(x) - want) / ulp);
    }
    expect(worst).toBeLessThanOrEqual(1);
    expect([mergeExp(0), mergeExp(-709), mergeExp(-Infinity)]).toEqual([1, 0, 0]);
  });

  it("mergeExp: the native merge's factor has the same bits (where Math.exp and the C library's exp differ)", () => {
    const x = Float64Array.from({ length: 100000 }, (_, i) => -((i * 0.6180339887498949) % 1) * (i % 2 ? 40 : 708));
    const js = x.map(mergeExp);
    native().mergeExp(x);
    expect(Array.from(x)).toEqual(Array.from(js));
  });

  it("cpu: fresh gradients of every shard are views of one buffer per path; options.out's stay the caller's", () => {
    const widths = widthsOf(V, 3);
    const s = split(inputsFor({}, widths), widths);
    const opts = { ...base, backend: 'cpu' as const };
    const r = papoLossSync(s, opts);
    const buffers = (list: Tensor[]) => new Set(list.map((g) => g.data.buffer));
    expect(buffers(r.gradLogits).size).toBe(1);
    expect(buffers(r.gradMaskedLogits!).size).toBe(1);
    expect(r.gradLogits[0].data.buffer).not.toBe(r.gradMaskedLogits![0].data.buffer);
    r.gradLogits.forEach((g, k) => expect(g.data.length).toBe(8 * widths[k]));
    const gradLogits = widths.map((w) => ({ data: new Float32Array(8 * w), dims: [8, w], type: 'float32' as const }));
    const withOut = papoLossSync(s, { ...opts, out: { gradLogits } });
    withOut.gradLogits.forEach((g, k) => expect(g.data).toBe(gradLogits[k].data));
    withOut.gradMaskedLogits!.forEach((g, k) => expect(g.data).toEqual(r.gradMaskedLogits![k].data));
    expect(buffers(papoLossSync(s, { ...opts, out: null as never }).gradLogits).size).toBe(1);
    const f32 = papoLossSync(s, { ...opts, gradType: 'float32', detachMasked: true });
    expect(f32.gradMaskedLogits).toBeUndefined();
    expect(buffers(f32.gradLogits).size).toBe(1);
  });

  it('papoLoss (worker threads) gives the bits of papoLossSync', async () => {
    const widths = widthsOf(V, 3);
    const s = split(inputsFor({}, widths), widths);
    const opts = { ...base, backend: 'cpu' as const };
    const [a, b] = [await papoLoss(s, opts), papoLossSync(s, opts)];
    expect(a.loss).toBe(b.loss);
    a.gradMaskedLogits!.forEach((g, k) => expect(g.data).toEqual(b.gradMaskedLogits![k].data));
  });

  it("vocabShardStats: the documented layout, the cpu's against the float64 reference's", () => {
    const widths = [1000, 3099];
    const inputs = inputsFor({ negInf: 0.1 }, widths);
    const shard = split(inputs, widths).logits[1];
    const cpu = vocabShardStats(shard, inputs.tokens, { vocabStart: 1000, temperature: 0.8 });
    const ref = vocabShardStats(shard, inputs.tokens, { vocabStart: 1000, temperature: 0.8, backend: 'reference' });
    expect([cpu.N, cpu.vocabStart, cpu.vocabSize, cpu.data.length]).toEqual([8, 1000, 3099, 32]);
    expectClose(cpu.data, ref.data, 1e-6, 1e-9, 'max | sumExp | sumExpX | target');
    // by hand, rows 0 (its token in the other shard) and 1 (in this one): max, sum of e^(x - max), sum of
    // e^(x - max) x, and x_o only where this shard holds o
    for (const i of [0, 1]) {
      const x = Array.from((shard.data as Float32Array).subarray(i * 3099, (i + 1) * 3099), (z) => z / 0.8);
      const m = Math.max(...x);
      const fin = x.filter((v) => v > -Infinity);
      const o = (inputs.tokens as Int32Array)[i] - 1000;
      expect(o >= 0).toBe(i === 1);
      expectClose([cpu.data[i], cpu.data[8 + i], cpu.data[16 + i], cpu.data[24 + i]],
        [m, fin.reduce((a, v) => a + Math.exp(v - m), 0), fin.reduce((a, v) => a + Math.exp(v - m) * v, 0), o >= 0 ? x[o] : 0], 1e-6, 1e-9);
    }
  });

  it('the reference split agrees with finite differences of itself', () => {
    const widths = [5, 11, 7];
    const inputs = makeInputs({ N: 3, V: 23, seed: 5 });
    const opts: PapoOptions = { ...base, backend: 'reference', entropyMode: 'full' };
    const s = split(inputs, widths);
    const g = papoLossSync(s, opts);
    const lossWith = (k: number, idx: number, h: number) => {
      const shards = s.logits.map((t) => ({ ...t, data: Float32Array.from(t.data as Float32Array) }));
      (shards[k].data as Float32Array)[idx] += h;
      return papoLossSync({ ...s, logits: shards }, { ...opts, computeGrad: false }).loss;
    };
    for (const [k, idx] of [[0, 2], [1, 14], [2, 20], [1, 0]] as const) {
      const h = 1e-2;  // float32 logits: a step float32 resolves
      const fd = (lossWith(k, idx, h) - lossWith(k, idx, -h)) / (2 * h);
      expectNumberClose((g.gradLogits[k].data as Float32Array)[idx], fd, 2e-3, 2e-6, `shard ${k} element ${idx}`);
    }
  });

  it('errors name the argument', () => {
    const widths = [2000, 2099];
    const inputs = inputsFor({}, widths);
    const s = split(inputs, widths);
    const opts = { ...base, backend: 'cpu' as const };
    const bad = (patch: Partial<SplitPapoInputs>, msg: RegExp, o: PapoOptions = opts) =>
      expect(() => papoLossSync({ ...s, ...patch } as SplitPapoInputs, o)).toThrow(msg);
    bad({ logits: [s.logits[0], columns(makeInputs({ N: 7, V: 2099 }).logits as Tensor, 0, 2099)] }, /^logits\[1\]\.dims: expected \[8, V_1\]/);
    bad({ logits: [s.logits[0], { ...s.logits[1], data: fromFloat64(toFloat64(s.logits[1].data, 'float32'), 'bfloat16'), type: 'bfloat16' }] },
      /^logits\[1\]\.type: expected 'float32'/);
    bad({ logits: [] }, /^logits: expected at least one vocabulary shard/);
    bad({ logits: [s.logits[0], { data: new Float32Array(0), dims: [8, 0], type: 'float32' }] }, /^logits\[1\]\.dims/);
    bad({ maskedLogits: [s.maskedLogits![0]] }, /^maskedLogits: expected 2 shards/);
    bad({ maskedLogits: [s.maskedLogits![0], columns(s.maskedLogits![1] as Tensor, 0, 2000)] }, /^maskedLogits\[1\]\.dims: expected \[8, 2099\]/);
    bad({ tokens: Int32Array.from(inputs.tokens as Int32Array, (t, i) => (i === 3 ? V : t)) }, /^tokens: element 3 is 4099, outside every shard/);
    bad({}, /^options\.backend: 'cuda-naive' does not take vocabulary shards/, { ...opts, backend: 'cuda-naive' });
    const nan = { ...s.logits[1], data: Float32Array.from(s.logits[1].data as Float32Array) };
    (nan.data as Float32Array)[2099 * 2 + 5] = NaN;
    bad({ logits: [s.logits[0], nan] }, /^logits\[1\] contains NaN in row 2/);
    const none = s.logits.map((t) => ({ ...t, data: Float32Array.from(t.data as Float32Array) }));
    for (const t of none) (t.data as Float32Array).fill(-Infinity, 0, t.dims[1]);
    bad({ logits: none }, /^logits: row 0 has no finite logit in any shard/);
    // options.out over another shard's logits, or over another shard's gradient: refused before anything runs
    const over = { data: (s.logits[1].data as Float32Array).subarray(0, 8 * 2000), dims: [8, 2000], type: 'float32' as const };
    bad({}, /^out\.gradLogits\[0\]: shares memory with logits\[1\]/, { ...opts, out: { gradLogits: [over, undefined as never] } });
    const g = new Float32Array(8 * 2099);
    const twice = { data: g, dims: [8, 2099], type: 'float32' as const };
    bad({}, /^out\.gradLogits\[1\]: shares memory with out\.gradMaskedLogits\[1\]/, { ...opts, out: { gradLogits: [undefined as never, twice], gradMaskedLogits: [undefined as never, twice] } });

    const st = vocabShardStats(s.logits[0], inputs.tokens, { vocabStart: 0 });
    const merged = mergeVocabShardStats([st, vocabShardStats(s.logits[1], inputs.tokens, { vocabStart: 2000 })]);
    expect(() => mergeVocabShardStats([st, vocabShardStats(s.logits[1], inputs.tokens, { vocabStart: 2001 })])).toThrow(/^list\[1\]\.vocabStart: expected 2000/);
    const other = vocabShardStats(columns(makeInputs({ N: 5, V: 30 }).logits as Tensor, 0, 30), new Int32Array(5), { vocabStart: 0 });
    expect(() => mergeVocabShardStats([st, other])).toThrow(/^list\[1\]\.N: the statistics are of 5 tokens, this call has N = 8/);
    const one = (o: object) => papoLossSync({ ...inputs, logits: s.logits[1], maskedLogits: s.maskedLogits![1] }, { ...opts, ...o });
    expect(() => one({ vocabShard: { start: 2000, stats: { ...merged, N: 5 }, maskedStats: merged } })).toThrow(/^options\.vocabShard\.stats\.N: the statistics are of 5 tokens/);
    expect(() => one({ vocabShard: { start: 2001, stats: merged, maskedStats: merged } })).toThrow(/^options\.vocabShard\.start: the shard's columns \[2001, 4100\)/);
    const second = vocabShardStats(s.logits[1], inputs.tokens, { vocabStart: 2000 });
    expect(() => one({ vocabShard: { start: 2000, stats: second, maskedStats: merged } })).toThrow(/^options\.vocabShard\.stats\.vocabStart: is 2000/);
    expect(() => one({ vocabShard: { start: 2000, stats: merged } })).toThrow(/^options\.vocabShard\.maskedStats: required/);
  });
});
