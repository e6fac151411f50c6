// Hostile inputs: every malformed argument is rejected with a TypeError or RangeError that names it, carries
// code PAPO_INVALID_ARGUMENT, and never reaches native code unchecked; native code, called directly with the same
// kind of garbage, checks again.
import { describe, expect, it } from 'vitest';
import { cuda, logProbsSync, papoLoss, papoLossSync } from '../lib';
import { native } from '../lib/native';
import type { PapoInputs, PapoOptions, Tensor } from '../lib/types';
import { makeInputs } from './helpers';

const N = 4, V = 50;
const base = () => makeInputs({ N, V, mask: true });
const logitsOf = (i: PapoInputs) => i.logits as Tensor;
const with_ = (patch: Partial<Record<keyof PapoInputs | string, unknown>>) => ({ ...base(), ...patch }) as PapoInputs;
const bf16Logits = (data: Uint16Array, dims = [N, V]) => ({ data, dims, type: 'bfloat16' as const });
const detached = () => {
  const data = new Float32Array(N * V);
  structuredClone(data.buffer, { transfer: [data.buffer] });
  return data;
};
const nanAt = (k: number) => { const i = base(); (i.logits as Tensor).data[k] = NaN; return i; };

type Case = [string, () => unknown, typeof TypeError | typeof RangeError, RegExp];
const T = TypeError, R = RangeError;
const cases: Case[] = [
  // tensors
  ['inputs not an object', () => papoLossSync(null as unknown as PapoInputs), T, /^inputs: expected an object/],
  ['logits missing', () => papoLossSync(with_({ logits: undefined })), T, /^logits: expected a tensor/],
  // an array of logits is a list of vocabulary shards: the first one is named
  ['logits a plain array', () => papoLossSync(with_({ logits: [1, 2, 3] })), T, /^logits\[0\]: expected a tensor/],
  ['logits.data wrong typed array', () => papoLossSync(with_({ logits: { data: new Float64Array(N * V), dims: [N, V], type: 'float32' } })), T, /^logits\.data: expected a Float32Array/],
  ['bf16 data in a Float32Array', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [N, V], type: 'bfloat16' } })), T, /^logits\.data: expected a Uint16Array/],
  ['unsupported dtype', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [N, V], type: 'float64' } })), R, /^logits\.type: expected 'float32', 'float16' or 'bfloat16'/],
  ['dims not matching the data', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [N, V + 1], type: 'float32' } })), R, /^logits\.data: dims \[4, 51\] need 204 elements/],
  ['negative dims', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [-N, -V], type: 'float32' } })), R, /^logits\.dims: expected positive integers/],
  ['fractional dims', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [N / 3, V * 3], type: 'float32' } })), R, /^logits\.dims: expected positive integers/],
  ['1-D dims', () => papoLossSync(with_({ logits: { data: new Float32Array(N * V), dims: [N * V], type: 'float32' } })), T, /^logits\.dims: expected \[N, V\] or \[B, T, V\]/],
  ['tfjs-style non-float32', () => papoLossSync(with_({ logits: { shape: [N, V], dtype: 'int32', dataSync: () => new Int32Array(N * V) } })), R, /^logits\.dtype: a tfjs-style tensor must be float32/],
  ['maskedLogits dims mismatch', () => papoLossSync(with_({ maskedLogits: { data: new Float32Array(N * (V - 1)), dims: [N, V - 1], type: 'float32' } })), R, /^maskedLogits\.dims: expected \[4, 50\]/],
  ['maskedLogits dtype mismatch', () => papoLossSync(with_({ maskedLogits: bf16Logits(new Uint16Array(N * V)) })), R, /^maskedLogits\.type: expected 'float32' like logits/],
  ['detached logits buffer', () => papoLossSync(with_({ logits: { data: detached(), dims: [N, V], type: 'float32' } })), R, /^logits\.data: its ArrayBuffer is detached/],
  ['NaN logits', () => papoLossSync(nanAt(V + 3)), R, /^logits contains NaN in row 1/],
  ['+Infinity logits', () => { const i = base(); logitsOf(i).data[2 * V] = Infinity; return papoLossSync(i); }, R, /^logits contains \+Infinity in row 2/],
  ['a row of -Infinity', () => { const i = base(); logitsOf(i).data.fill(-Infinity, V, 2 * V); return papoLossSync(i); }, R, /(logits row 1 has no finite entry|has logit -Infinity in logits)/],
  // per-token arrays
  ['tokens missing', () => papoLossSync(with_({ tokens: undefined })), T, /^tokens: expected an Int32Array/],
  ['tokens wrong length', () => papoLossSync(with_({ tokens: new Int32Array(N + 1) })), R, /^tokens: expected 4 values/],
  ['tokens out of range', () => papoLossSync(with_({ tokens: Int32Array.of(0, 1, V, 2) })), R, /^tokens: element 2 is 50, outside \[0, 50\)/],
  ['tokens negative', () => papoLossSync(with_({ tokens: Int32Array.of(0, -1, 2, 3) })), R, /^tokens: element 1 is -1/],
  ['tokens int64 beyond int32', () => papoLossSync(with_({ tokens: BigInt64Array.of(0n, 1n, 2n ** 32n + 1n, 2n) })), R, /^tokens: element 2 is 4294967297, outside the int32 range/],
  ['tokens of another integer type', () => papoLossSync(with_({ tokens: Uint8Array.of(0, 1, 2, 3) as unknown as Int32Array })), T, /^tokens: expected an Int32Array, a BigInt64Array or an array of integers/],
  ['tokens fractional', () => papoLossSync(with_({ tokens: [0, 1.5, 2, 3] })), T, /^tokens: expected an Int32Array/],
  ['advantages wrong type', () => papoLossSync(with_({ advantages: 'high' })), T, /^advantages: expected a Float32Array/],
  ['advantages wrong length', () => papoLossSync(with_({ advantages: new Float32Array(N + 2) })), R, /^advantages: expected 4 values \(per token\) or 1/],
  ['per-sequence advantages on packed input without seqLengths', () => papoLossSync(with_({ advantages: [1, -1] })), R, /^advantages: expected 4 values \(per token\) or 1 \(per sequence\), got 2; 2 values look like one per sequence: pass seqLengths/],
  ['refLogProbs above 0 on a response token', () => papoLossSync(with_({ refLogProbs: Float32Array.of(-1, -1, 0.5, -1) })), R, /^refLogProbs: element 2 is 0\.5, but a log-prob is at most 0/],
  ['oldLogProbs above 0 on a response token', () => papoLossSync(with_({ oldLogProbs: [-1, 2.25, -1, -1] })), R, /^oldLogProbs: element 1 is 2\.25, but a log-prob is at most 0/],
  ['rolloutLogProbs above 0 on a response token', () => papoLossSync(with_({ rolloutLogProbs: Float32Array.of(0, 0, 0.25, 0) }), { rolloutCorrection: { mode: 'truncate' } }), R, /^rolloutLogProbs: element 2 is 0\.25, but a log-prob is at most 0/],
  ['maskedLogProbs above 0 on a response token', () => papoLossSync(with_({ maskedLogits: undefined, maskedLogProbs: Float32Array.of(-1, 3, -1, -1) })), R, /^maskedLogProbs: element 1 is 3, but a log-prob is at most 0/],
  ['advantages NaN', () => papoLossSync(with_({ advantages: Float32Array.of(0, NaN, 0, 0) })), R, /^advantages: element 1 is NaN/],
  ['advantages Infinity', () => papoLossSync(with_({ advantages: Float32Array.of(0, 0, Infinity, 0) })), R, /^advantages: element 2 is Infinity/],
  ['oldLogProbs wrong length', () => papoLossSync(with_({ oldLogProbs: new Float32Array(N - 1) })), R, /^oldLogProbs: expected 4 values/],
  ['oldLogProbs NaN on a response token', () => papoLossSync(with_({ oldLogProbs: Float32Array.of(-1, NaN, -1, -1) })), R, /^oldLogProbs: element 1 is NaN/],
  ['refLogProbs -Infinity', () => papoLossSync(with_({ refLogProbs: Float32Array.of(-1, -1, -Infinity, -1) }), { klCoef: 0.01 }), R, /^refLogProbs: element 2 is -Infinity/],
  ['refLogProbs missing with klCoef', () => papoLossSync(with_({ refLogProbs: undefined }), { klCoef: 0.01 }), R, /^refLogProbs: required when klCoef > 0/],
  ['maskedLogProbs NaN', () => papoLossSync(with_({ maskedLogits: undefined, maskedLogProbs: Float32Array.of(-1, NaN, -1, -1) })), R, /^maskedLogProbs: element 1 is NaN/],
  ['maskedLogits and maskedLogProbs both', () => papoLossSync(with_({ maskedLogProbs: new Float32Array(N) })), R, /^maskedLogProbs: give maskedLogits or maskedLogProbs, not both/],
  ['responseMask negative', () => papoLossSync(with_({ responseMask: Float32Array.of(1, -1, 1, 1) })), R, /^responseMask: element 1 is -1/],
  ['responseMask wrong length', () => papoLossSync(with_({ responseMask: new Uint8Array(N + 1) })), R, /^responseMask: expected 4 values/],
  ['seqLengths not adding up', () => papoLossSync(with_({ seqLengths: Int32Array.of(2, 1) })), R, /^seqLengths: they add up to 3, but logits have N = 4 rows/],
  ['seqLengths negative', () => papoLossSync(with_({ seqLengths: Int32Array.of(5, -1) })), R, /^seqLengths: element 1 is -1/],
  ['seqLengths with [B, T, V]', () => papoLossSync({ ...makeInputs({ dims: [2, 2, V] }), seqLengths: [2, 2] }), R, /^seqLengths: only for packed/],
  ['misspelt input name', () => papoLossSync(with_({ maskedLogit: base().maskedLogits })), R, /^inputs: unknown input 'maskedLogit' \(did you mean 'maskedLogits'\?\)/],
  // options
  ['options not an object', () => papoLossSync(base(), 3 as unknown as PapoOptions), T, /^options: expected an object/],
  ['temperature 0', () => papoLossSync(base(), { temperature: 0 }), R, /^options\.temperature/],
  ['temperature negative', () => papoLossSync(base(), { temperature: -1 }), R, /^options\.temperature/],
  ['temperature NaN', () => papoLossSync(base(), { temperature: NaN }), R, /^options\.temperature/],
  ['clipLow 1', () => papoLossSync(base(), { clipLow: 1 }), R, /^options\.clipLow/],
  ['clipLow negative', () => papoLossSync(base(), { clipLow: -0.1 }), R, /^options\.clipLow/],
  ['clipHigh negative', () => papoLossSync(base(), { clipHigh: -0.2 }), R, /^options\.clipHigh/],
  ['clipDual 1', () => papoLossSync(base(), { clipDual: 1 }), R, /^options\.clipDual/],
  ['perceptionClip lo > hi', () => papoLossSync(base(), { perceptionClip: [0.5, 0.1] }), R, /^options\.perceptionClip/],
  ['perceptionClip not a pair', () => papoLossSync(base(), { perceptionClip: [0.1] as unknown as [number, number] }), T, /^options\.perceptionClip/],
  ['unknown preset', () => papoLossSync(base(), { preset: 'papo-x' as 'grpo' }), R, /^options\.preset/],
  ['unknown estimator', () => papoLossSync(base(), { perceptionEstimator: 'k4' as 'k3' }), R, /^options\.perceptionEstimator/],
  ['unknown aggregation', () => papoLossSync(base(), { lossAgg: 'token-sum' as 'token-mean' }), R, /^options\.lossAgg/],
  ['unknown entropy mode', () => papoLossSync(base(), { entropyMode: 'both' as 'full' }), R, /^options\.entropyMode/],
  ['backend gpu, suggesting cuda (not cpu, one letter away)', () => papoLossSync(base(), { backend: 'gpu' as 'cuda' }), R, /^options\.backend: expected one of .*, got "gpu" \(did you mean 'cuda'\?\)/],
  ['unknown backend', () => papoLossSync(base(), { backend: 'tpu' as 'cuda' }), R, /^options\.backend: expected one of 'auto', 'cpu', 'cuda', 'cuda-naive', 'reference', got "tpu"/],
  ['misspelt option', () => papoLossSync(base(), { perceptionCoeff: 0.1 } as PapoOptions), R, /^options: unknown option 'perceptionCoeff' \(did you mean 'perceptionCoef'\?\)/],
  ['negative coefficient', () => papoLossSync(base(), { perceptionCoef: -0.1 }), R, /^options\.perceptionCoef/],
  ['lossScale 0', () => papoLossSync(base(), { lossScale: 0 }), R, /^options\.lossScale/],
  ['in place with float32 gradients of bf16', () => papoLossSync({ ...base(), logits: bf16Logits(new Uint16Array(N * V)), maskedLogits: bf16Logits(new Uint16Array(N * V)) }, { inPlace: true, gradType: 'float32' }), R, /^options\.gradType/],
  ['in place with two paths sharing memory', () => { const i = base(); return papoLossSync({ ...i, maskedLogits: i.logits }, { inPlace: true }); }, R, /^options\.inPlace: logits and maskedLogits share memory/],
  // policy-loss variants and PAPO's per-sequence options (base() is one sequence of 4 tokens)
  ['unknown lossType, with a suggestion', () => papoLossSync(base(), { lossType: 'gspo_token' as 'gspo' }), R, /^options\.lossType: expected one of .* \(did you mean 'gspo-token'\?\)/],
  ['unknown lossType', () => papoLossSync(base(), { lossType: 'dpo' as 'ppo' }), R, /^options\.lossType: expected one of 'ppo', 'gspo', 'gspo-token', 'cispo', 'sapo'/],
  ['lossType grpo points to ppo, not gspo', () => papoLossSync(base(), { lossType: 'grpo' as 'ppo' }), R, /^options\.lossType: 'grpo' is the PPO clipped surrogate here: use lossType 'ppo'/],
  ['gspo on packed input without seqLengths', () => papoLossSync(base(), { lossType: 'gspo' }), R, /^seqLengths: required with lossType 'gspo', which works per sequence: .*seqLengths: \[4\] for one sequence/],
  ['perceptionTopP on packed input without seqLengths', () => papoLossSync(base(), { perceptionTopP: 0.5 }), R, /^seqLengths: required with options\.perceptionTopP/],
  ['clipDual with cispo', () => papoLossSync(base(), { lossType: 'cispo', clipDual: 2 }), R, /^options\.clipDual: only used with lossTypes 'ppo', 'gspo' and 'gspo-token'/],
  ['clipHigh with sapo', () => papoLossSync(base(), { lossType: 'sapo', clipHigh: 0.3 }), R, /^options\.clipHigh: only used with clipped lossTypes/],
  ['clipHigh beyond 1e6', () => papoLossSync(base(), { lossType: 'cispo', clipHigh: 1e308 }), R, /^options\.clipHigh: expected a number in \[0, 1e6\]/],
  ['sapo temperature subnormal', () => papoLossSync(base(), { lossType: 'sapo', sapoTauPositive: 1e-310 }), R, /^options\.sapoTauPositive: expected a number in \[1e-6, 1e6\]/],
  ['rolloutCorrection truncate with a lower bound', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'truncate', lower: 0.9 } }), R, /^options\.rolloutCorrection\.lower: only used with mode 'mask'/],
  ['rolloutCorrection mask with upper < 1 and the default lower', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'mask', upper: 0.8 } }), R, /^options\.rolloutCorrection: expected lower <= upper, got lower 1\.25 \(the default 1 \/ upper\) and upper 0\.8/],
  ['rolloutLogProbs beyond float32 range', () => papoLossSync(with_({ rolloutLogProbs: Float64Array.of(-1e39, 0, 0, 0) }), { rolloutCorrection: { mode: 'truncate' } }), R, /^rolloutLogProbs: element 0 is -1e\+39, expected a finite number within float32 range/],
  ['clipLow above 1 for cispo', () => papoLossSync(base(), { lossType: 'cispo', clipLow: 1.5 }), R, /^options\.clipLow: expected a number in \[0, 1\]/],
  ['sapo temperature 0', () => papoLossSync(base(), { lossType: 'sapo', sapoTauNegative: 0 }), R, /^options\.sapoTauNegative/],
  ['sapo temperature without sapo', () => papoLossSync(base(), { sapoTauPositive: 2 }), R, /^options\.sapoTauPositive: only used with lossType 'sapo'/],
  ['perceptionTopP 0', () => papoLossSync(base(), { perceptionTopP: 0 }), R, /^options\.perceptionTopP: expected a number in \(0, 1\)/],
  ['perceptionTopP 1', () => papoLossSync(base(), { perceptionTopP: 1 }), R, /^options\.perceptionTopP: expected a number in \(0, 1\)/],
  ['perceptionTopP not a number', () => papoLossSync(base(), { perceptionTopP: '0.5' as unknown as number }), T, /^options\.perceptionTopP/],
  ['perceptionTopP without a masked path', () => papoLossSync({ ...base(), maskedLogits: undefined, seqLengths: [N] }, { preset: 'dapo', perceptionTopP: 0.5 }), R, /^maskedLogits: required with options\.perceptionTopP/],
  ['rolloutCorrection lower > upper', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'mask', upper: 2, lower: 3 } }), R, /^options\.rolloutCorrection: expected lower <= upper, got lower 3 and upper 2/],
  ['rolloutCorrection unknown mode', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'truncated' as 'mask' } }), R, /^options\.rolloutCorrection\.mode: .*did you mean 'truncate'/],
  ['rolloutCorrection unknown field', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'mask', max: 2 } as never }), R, /^options\.rolloutCorrection: unknown field 'max'/],
  ['rolloutCorrection upper 0', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) }), { rolloutCorrection: { mode: 'truncate', upper: 0 } }), R, /^options\.rolloutCorrection\.upper/],
  ['rolloutLogProbs of the wrong length', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N - 1) }), { rolloutCorrection: { mode: 'truncate' } }), R, /^rolloutLogProbs: expected 4 values/],
  ['rolloutLogProbs NaN on a response token', () => papoLossSync(with_({ rolloutLogProbs: Float32Array.of(0, NaN, 0, 0) }), { rolloutCorrection: { mode: 'truncate' } }), R, /^rolloutLogProbs: element 1 is NaN/],
  ['rolloutLogProbs without rolloutCorrection', () => papoLossSync(with_({ rolloutLogProbs: new Float32Array(N) })), R, /^rolloutLogProbs: needs options\.rolloutCorrection/],
  ['rolloutCorrection without rolloutLogProbs', () => papoLossSync(base(), { rolloutCorrection: { mode: 'mask' } }), R, /^rolloutLogProbs: required with options\.rolloutCorrection/],
  ['perceptionWeights of the wrong length', () => papoLossSync(with_({ perceptionWeights: new Float32Array(2) })), R, /^perceptionWeights: expected 1 values/],
  ['perceptionWeights negative', () => papoLossSync(with_({ perceptionWeights: Float32Array.of(-1) })), R, /^perceptionWeights: element 0 is -1/],
  ['perceptionWeights not an array', () => papoLossSync(with_({ perceptionWeights: 0.5 })), T, /^perceptionWeights: expected a Float32Array \[1\]/],
  ['sftMask of the wrong length', () => papoLossSync(with_({ sftMask: new Uint8Array(3) }), { sftCoef: 0.1 }), R, /^sftMask: expected 1 values/],
  ['sftMask without sftCoef', () => papoLossSync(with_({ sftMask: Uint8Array.of(1) })), R, /^options\.sftCoef: required with sftMask/],
  ['sftCoef without sftMask', () => papoLossSync(base(), { sftCoef: 0.1 }), R, /^sftMask: required when options\.sftCoef > 0/],
  ['sftCoef negative', () => papoLossSync(with_({ sftMask: Uint8Array.of(1) }), { sftCoef: -1 }), R, /^options\.sftCoef/],
  ['logProbs with an unknown option', () => logProbsSync(base().logits, base().tokens, { temp: 1 } as object), R, /^options: unknown option 'temp'/],
  ['a disposed DeviceTensor', () => { const t = cuda.wrap(0x10000n, [N, V], 'float32'); t.dispose(); return papoLossSync(with_({ logits: t, maskedLogits: undefined }), { perceptionCoef: 0, maskedEntropyCoef: 0 }); }, R, /^logits: the DeviceTensor was disposed/],
];

describe(`${cases.length} malformed inputs are rejected, naming the argument`, () => {
  it('there are at least 40', () => expect(cases.length).toBeGreaterThanOrEqual(40));
  for (const [name, fn, ctor, message] of cases) {
    it(name, () => {
      let err: unknown = null;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err, 'no error thrown').toBeInstanceOf(ctor);
      expect((err as Error).message).toMatch(message);
      expect((err as { code: string }).code).toBe('PAPO_INVALID_ARGUMENT');
    });
  }
  it('log-probs above 0 by rounding only, or on a padding token, are accepted', () => {
    // base() masks token 3: a positive value there is padding, never read
    const r = papoLossSync(with_({ refLogProbs: Float32Array.of(-1, 1e-4, -1, 7), oldLogProbs: Float32Array.of(-1, -1, 5e-4, 9) }));
    expect(Number.isFinite(r.loss)).toBe(true);
  });
  it('the async entry point rejects the promise instead of throwing', async () => {
    await expect(papoLoss(with_({ tokens: new Int32Array(1) }))).rejects.toThrow(/^tokens: expected 4 values/);
  });
});

describe('native code keeps memory safe (descriptors that bypass the TypeScript checks)', () => {
  const good = () => {
    const i = base();
    return {
      backend: 0, onDevice: false, N, V, temperature: 1, logits: logitsOf(i).data, dtype: 0, tokens: i.tokens as Int32Array,
      advantages: i.advantages as Float32Array, seqLengths: Int32Array.of(N),
      params: { clipLow: 0.2, clipHigh: 0.3, clipDual: 3, klCoef: 0, klEstimator: 2, perceptionCoef: 0, perceptionEstimator: 2,
        entropyCoef: 0, maskedEntropyCoef: 0, entropyMode: 0, detachMasked: false, lossType: 0 },
      lossAgg: 0, lossScale: 0, normScale: N, outLogProbs: new Float32Array(N), outEntropy: new Float32Array(N),
    } as Record<string, unknown>;
  };
  const bad: [string, (d: Record<string, unknown>) => void, RegExp][] = [
    ['short logits', (d) => { d.logits = new Float32Array(N * V - 1); }, /logits: expected 200 elements/],
    ['logits of the wrong type', (d) => { d.logits = new Float64Array(N * V); }, /logits: wrong typed array type/],
    ['token out of range', (d) => { d.tokens = Int32Array.of(0, 1, 2, V); }, /tokens\[3\] = 50 is outside/],
    ['fractional N', (d) => { d.N = 2.5; }, /N: expected a positive integer/],
    ['seqLengths not adding up', (d) => { d.seqLengths = Int32Array.of(1); }, /seqLengths: they add up to 1/],
    ['gradient overlapping the logits', (d) => { d.gradLogits = (d.logits as Float32Array).subarray(1, 1 + N * V - 1); d.gradType = 0; }, /gradLogits: expected 200 elements/],
    ['gradient over the tokens', (d) => {
      const g = new Float32Array(N * V);
      d.tokens = new Int32Array(g.buffer, 16, N).fill(1);
      [d.gradLogits, d.gradType] = [g, 0];
    }, /gradLogits: overlaps tokens or seqLengths/],
    ['unknown backend code', (d) => { d.backend = 7; }, /backend: unknown value/],
    ['device memory on the cpu backend', (d) => { d.onDevice = true; }, /onDevice: device memory needs a CUDA backend/],
    ['unknown lossType code', (d) => { (d.params as Record<string, number>).lossType = 9; }, /lossType: unknown value/],
    ['perceptionTopP 1', (d) => { (d.params as Record<string, number>).perceptionTopP = 1; }, /perceptionTopP: expected a number in \(0, 1\)/],
    ['rollout correction without log-probs', (d) => { Object.assign(d.params as object, { rolloutCorrection: 1, rolloutUpper: 2, rolloutLower: 0.5 }); }, /rolloutLogProbs: required with rolloutCorrection/],
    ['sftMask of the wrong length', (d) => { d.sftMask = new Float32Array(2); }, /sftMask: expected 1 elements/],
    ['sftCoef without sftMask', (d) => { (d.params as Record<string, number>).sftCoef = 0.5; }, /sftMask: required when sftCoef is non-zero/],
    ['a vocabulary shard beyond the vocabulary', (d) => { Object.assign(d, { vocabStats: new Float64Array(4 * N), vocabStart: 1, vocabTotal: V }); },
      /vocabStart: the shard's columns must lie inside/],
    ['vocabulary statistics too short', (d) => { Object.assign(d, { vocabStats: new Float64Array(4 * N - 1), vocabStart: 0, vocabTotal: V }); },
      /vocabStats: expected 16 elements/],
    ['a shard token beyond the vocabulary', (d) => { Object.assign(d, { vocabStats: new Float64Array(4 * N), vocabStart: 0, vocabTotal: V, tokens: Int32Array.of(0, 1, 2, V) }); },
      /tokens\[3\] = 50 is outside \[0, 50\)/],
  ];
  for (const [name, mutate, message] of bad) {
    it(name, () => {
      const d = good();
      mutate(d);
      let err: unknown = null;
      try {
        native().papoLoss(d as never, false);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RangeError);
      expect((err as Error).message).toMatch(message);
      expect((err as { code: string }).code).toBe('PAPO_INVALID_ARGUMENT');
    });
  }
  it('the good descriptor runs', () => expect(native().papoLoss(good() as never, false).tokens).toBe(N));
  it('one call over host shards: shards that do not tile the vocabulary, foreign statistics, statistics over the tokens and a CUDA backend are refused', () => {
    // Two shards of V/2 columns, each descriptor good() with its own half of the logits.
    const stats = new Float64Array(4 * N);
    const shard = (k: number) => {
      const d = good();
      const rows = logitsOf(base()).data;
      const half = new Float32Array(N * V / 2);
      for (let i = 0; i < N; i++) half.set(rows.subarray(i * V + k * V / 2, i * V + (k + 1) * V / 2), i * V / 2);
      return Object.assign(d, { V: V / 2, logits: half, vocabStart: k * V / 2, vocabTotal: V, vocabStats: stats });
    };
    const call = (patch: (s: Record<string, unknown>[], d: Record<string, unknown>) => void) => {
      const shards = [shard(0), shard(1)];
      const d: Record<string, unknown> = { backend: 0, onDevice: false, shards, stats };
      patch(shards, d);
      return () => native().papoLossShards(d as never, false);
    };
    expect(call((s) => { s[1].vocabStart = 24; })).toThrow(/shards\[1\]: vocabStart must follow the shard before/);
    expect(call((s) => { s[1].vocabTotal = V + 1; s[0].vocabTotal = V + 1; })).toThrow(/shards: their widths must add up to vocabTotal/);
    expect(call((s) => { s[1].vocabStats = new Float64Array(4 * N); })).toThrow(/shards\[1\]: vocabStats must be the call's stats/);
    expect(call((s, d) => { d.stats = new Float64Array(4 * N - 1); })).toThrow(/stats: expected 16 elements/);
    expect(call((s, d) => {
      const over = new Float64Array(4 * N);
      s[0].tokens = new Int32Array(over.buffer, 0, N);
      for (const x of s) x.vocabStats = over;
      d.stats = over;
    })).toThrow(/stats: overlaps tokens/);
    expect(call((s, d) => { d.backend = 1; })).toThrow(/shards: one call over vocabulary shards runs on the cpu backend only/);
    expect(call((s) => { s[1].onDevice = true; })).toThrow(/shards\[1\]: host data only/);
    expect(call((s) => { s[0].stream = 0n; })).toThrow(/shards\[0\]: host data only/);
    expect(call((s, d) => { d.shards = []; })).toThrow(/shards: expected a non-empty array/);
    expect(native().papoLossShards({ backend: 0, onDevice: false, shards: [shard(0), shard(1)], stats } as never, false).tokens).toBe(N);
    expect(stats.every(Number.isFinite)).toBe(true);
  });
  it('vocabulary shard statistics: a short output, a bad vocabStart and device memory on the cpu are refused', () => {
    const i = base();
    const d = { backend: 0, onDevice: false, N, V, temperature: 1, logits: logitsOf(i).data, dtype: 0, tokens: i.tokens as Int32Array,
      vocabStart: 0, out: new Float64Array(4 * N), name: 'shard' };
    expect(() => native().vocabShardStats({ ...d, out: new Float64Array(4 * N - 1) } as never, false)).toThrow(/out: expected 16 elements/);
    expect(() => native().vocabShardStats({ ...d, vocabStart: -1 } as never, false)).toThrow(/vocabStart: expected an integer >= 0/);
    expect(() => native().vocabShardStats({ ...d, onDevice: true } as never, false)).toThrow(/onDevice: device memory needs a CUDA backend/);
    native().vocabShardStats(d as never, false);
    expect(d.out.every(Number.isFinite)).toBe(true);
  });
});
