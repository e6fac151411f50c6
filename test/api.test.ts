// The public surface: tensor adapters, option handling and its errors, logProbs, info, presets.
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cuda, info, isDeviceTensor, logProbs, logProbsSync, papoLossSync, presets } from '../lib';
import { makeInputs } from './helpers';

describe('tensor adapters', () => {
  const inputs = makeInputs({ N: 4, V: 50, seed: 40 });
  const ort = inputs.logits as { data: Float32Array; dims: number[]; type: 'float32' };
  const mort = inputs.maskedLogits as typeof ort;
  const expected = papoLossSync(inputs, { backend: 'cpu' });

  it('{ data, shape, dtype }', () => {
    const r = papoLossSync({ ...inputs, logits: { data: ort.data, shape: ort.dims, dtype: 'float32' },
      maskedLogits: { data: mort.data, shape: mort.dims, dtype: 'float32' } }, { backend: 'cpu' });
    expect(r.loss).toBe(expected.loss);
  });
  it('tfjs-style tensors (shape, dtype, dataSync)', () => {
    const tf = (t: typeof ort) => ({ shape: t.dims, dtype: 'float32', dataSync: () => Float32Array.from(t.data) });
    const r = papoLossSync({ ...inputs, logits: tf(ort), maskedLogits: tf(mort) }, { backend: 'cpu' });
    expect(r.loss).toBe(expected.loss);
    expect(Array.from(r.gradLogits!.data)).toEqual(Array.from(expected.gradLogits!.data));
  });
  it('gradients come back as { data, dims, type } with the input dims', () => {
    expect(expected.gradLogits!.dims).toEqual([4, 50]);
    expect(expected.gradLogits!.type).toBe('float32');
    expect(expected.gradLogits!.data).toBeInstanceOf(Float32Array);
  });
  it('isDeviceTensor tells a host gradient from device memory', () => {
    expect(isDeviceTensor(expected.gradLogits)).toBe(false);
    expect(isDeviceTensor(ort)).toBe(false);
    expect(isDeviceTensor(undefined)).toBe(false);
    expect(isDeviceTensor(cuda.wrap(0x7f0000000000n, [4, 50], 'float32'))).toBe(true);
  });
  it('plain number arrays for the per-token inputs', () => {
    const r = papoLossSync({ ...inputs, tokens: Array.from(inputs.tokens), advantages: Array.from(inputs.advantages),
      oldLogProbs: Array.from(inputs.oldLogProbs!), refLogProbs: Array.from(inputs.refLogProbs!) }, { backend: 'cpu' });
    expect(r.loss).toBe(expected.loss);
  });
  it('int64 token ids (onnxruntime\'s BigInt64Array) give the same result as int32', () => {
    const inputs = makeInputs();
    const a = papoLossSync(inputs, { backend: 'cpu' });
    const b = papoLossSync({ ...inputs, tokens: BigInt64Array.from(inputs.tokens as Int32Array, (t) => BigInt(t)) }, { backend: 'cpu' });
    expect(b.loss).toBe(a.loss);
    expect(b.logProbs).toEqual(a.logProbs);
  });
  it('rejects a tensor whose data does not match its dims or type', () => {
    expect(() => papoLossSync({ ...inputs, logits: { ...ort, dims: [4, 49] } })).toThrow(/logits.data: dims \[4, 49\] need 196 elements, data has 200/);
    expect(() => papoLossSync({ ...inputs, logits: { ...ort, type: 'bfloat16' } })).toThrow(TypeError);
    expect(() => papoLossSync({ ...inputs, logits: { ...ort, type: 'float64' as 'float32' } })).toThrow(/logits.type/);
    expect(() => papoLossSync({ ...inputs, maskedLogits: { ...mort, dims: [2, 2, 50] } })).toThrow(/maskedLogits.dims/);
  });
});

describe('options', () => {
  const inputs = makeInputs({ N: 3, V: 20, seed: 41 });
  it('unknown option names suggest the right one', () => {
    expect(() => papoLossSync(inputs, { perceptionCoeff: 0.1 } as never)).toThrow(/unknown option 'perceptionCoeff' \(did you mean 'perceptionCoef'\?\)/);
    expect(() => papoLossSync(inputs, { lossagg: 'token-mean' } as never)).toThrow(/did you mean 'lossAgg'/);
  });
  it('unknown values suggest the right one', () => {
    expect(() => papoLossSync(inputs, { preset: 'papo_g' as never })).toThrow(/did you mean 'papo-g'/);
    expect(() => papoLossSync(inputs, { lossAgg: 'token_mean' as never })).toThrow(/did you mean 'token-mean'/);
  });
  it('errors are TypeError / RangeError with a stable code', () => {
    let err: unknown;
    try { papoLossSync(inputs, { temperature: -1 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(RangeError);
    expect((err as { code: string }).code).toBe('PAPO_INVALID_ARGUMENT');
    expect(() => papoLossSync(inputs, { temperature: '1' as never })).toThrow(TypeError);
  });
  it('explicit options override the preset', () => {
    const a = papoLossSync(inputs, { preset: 'papo-d', perceptionCoef: 0 });
    const b = papoLossSync(inputs, { preset: 'papo-d' });
    const c = papoLossSync(inputs, { preset: 'dapo', entropyCoef: 0.03, maskedEntropyCoef: 0.03 });
    expect(a.loss).not.toBe(b.loss);
    expect(a.loss).toBeCloseTo(c.loss, 12);
  });
  it('klCoef > 0 needs refLogProbs; perceptionCoef > 0 needs the masked path', () => {
    expect(() => papoLossSync({ ...inputs, refLogProbs: undefined }, { preset: 'papo-g' })).toThrow(/refLogProbs: required when klCoef > 0/);
    expect(() => papoLossSync({ ...inputs, maskedLogits: undefined }, { preset: 'papo-g' })).toThrow(/maskedLogits: required/);
    expect(papoLossSync({ ...inputs, refLogProbs: undefined, maskedLogits: undefined }, { preset: 'dapo' }).loss).toBeTypeOf('number');
  });
  it('presets are the table of docs/objective.md, read-only', () => {
    expect(presets['papo-g']).toEqual({ clipLow: 0.2, clipHigh: 0.3, klCoef: 0.01, perceptionCoef: 0.02, entropyCoef: 0, maskedEntropyCoef: 0 });
    expect(presets['papo-g-7b'].entropyCoef).toBe(0.05);
    expect(presets['papo-d']).toEqual({ clipLow: 0.2, clipHigh: 0.28, klCoef: 0, perceptionCoef: 0.01, entropyCoef: 0.03, maskedEntropyCoef: 0.03 });
    expect(presets.grpo.perceptionCoef).toBe(0);
    expect(presets.dapo.clipHigh).toBe(0.28);
    expect(Object.isFrozen(presets) && Object.isFrozen(presets.grpo)).toBe(true);
  });
});

describe('logProbs', () => {
  const inputs = makeInputs({ N: 5, V: 77, seed: 42, type: 'bfloat16' });
  it('matches the reference and papoLoss, sync and async', async () => {
    const ref = logProbsSync(inputs.logits, inputs.tokens, { backend: 'reference', temperature: 0.8 });
    const cpu = logProbsSync(inputs.logits, inputs.tokens, { temperature: 0.8 });
    const asy = await logProbs(inputs.logits, inputs.tokens, { temperature: 0.8 });
    for (let i = 0; i < 5; i++) {
      expect(cpu.logProbs[i]).toBeCloseTo(ref.logProbs[i], 5);
      expect(cpu.entropy[i]).toBeCloseTo(ref.entropy[i], 5);
    }
    expect(asy).toEqual(cpu);
    const full = papoLossSync(inputs, { temperature: 0.8 });
    expect(full.logProbs).toEqual(cpu.logProbs);
  });
  it('checks its arguments', () => {
    expect(() => logProbsSync(inputs.logits, new Int32Array(4))).toThrow(/tokens: expected 5 values/);
    expect(() => logProbsSync(inputs.logits, Int32Array.of(0, 1, 2, 3, 77))).toThrow(/tokens: element 4 is 77, outside \[0, 77\)/);
    expect(() => logProbsSync(inputs.logits, inputs.tokens, { temprature: 1 } as never)).toThrow(/unknown option/);
  });
});

describe('info and backends', () => {
  it('reports the build and the machine', () => {
    const i = info();
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(i.backends).toContain('cpu');
    expect(i.backends).toContain('reference');
    expect(i.threads).toBeGreaterThanOrEqual(1);
    expect(['avx512', 'avx2', 'baseline']).toContain(i.cpuIsa);
    expect(Array.isArray(i.cudaDevices)).toBe(true);
    // The release build's default list starts at sm_75; the emulated build (scripts/sanitize.sh loads it through
    // PAPO_ADDON_PATH) names itself.
    const emulated = (process.env.PAPO_ADDON_PATH ?? '').includes(`${path.sep}Emulated${path.sep}`);
    if (i.cudaBuilt) expect(i.cudaArchitectures).toMatch(emulated ? /^emulated sm_90$/ : /75/);
  });
});
