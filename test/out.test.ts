// options.out: the caller's gradient buffers give exactly what a call that allocates them gives, on every backend,
// host and device data, every dtype, both layouts and the sequence phase; reused over calls; every misuse is an
// error naming the buffer, and a rejected call leaves it untouched.
import './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, papoLoss, papoLossSync } from '../lib';
import type { DType, PapoInputs, PapoOptions, PapoResult, Tensor } from '../lib/types';
import { codeOf, makeInputs } from './helpers';

type Host = Tensor;
const SENTINEL = 0x7e57;  // a NaN pattern in fp16 and bf16, 1.36e-40 in fp32's low half: never a gradient

const filled = new WeakSet<object>();  // the buffers that hold SENTINEL until a call writes them

function hostOut(like: Tensor, type: DType): Host {
  const n = like.data.length;
  const data = type === 'float32' ? new Float32Array(n) : new Uint16Array(n);
  new Uint16Array(data.buffer).fill(SENTINEL);
  filled.add(data);
  return { data, dims: [...like.dims], type };
}

function bits(t: { data: Float32Array | Uint16Array }): Uint16Array {
  return new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 2);
}

function untouched(t: Host) {
  expect(bits(t).every((b) => b === SENTINEL), 'out written by a rejected call').toBe(true);
}

function expectSameResult(got: PapoResult, want: PapoResult) {
  expect(got.loss).toBe(want.loss);
  expect(got.metrics).toEqual(want.metrics);
  expect(got.logProbs).toEqual(want.logProbs);
  expect(got.entropy).toEqual(want.entropy);
  for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
    expect(!!got[g], g).toBe(!!want[g]);
    if (!want[g]) continue;
    const [a, b] = [got[g]!, want[g]!].map((t) => (t instanceof DeviceTensor ? t.download() : t as Tensor));
    expect(a.type, g).toBe(b.type);
    expect(a.dims, g).toEqual(b.dims);
    expect(Buffer.from(bits(a)).equals(Buffer.from(bits(b))), `${g}: bit-identical`).toBe(true);
  }
}

const backends = ['cpu', 'reference', 'cuda'] as const;
const dtypes: DType[] = ['float32', 'float16', 'bfloat16'];

interface Case { name: string; make: (seed: number, type: DType) => PapoInputs; options: PapoOptions }
const cases: Case[] = [
  { name: 'packed [N, V]', make: (seed, type) => makeInputs({ N: 6, V: 97, type, seed }), options: {} },
  { name: '[B, T, V]', make: (seed, type) => makeInputs({ dims: [2, 3, 97], type, seed }), options: {} },
  {
    name: 'GSPO with perception top-p (the sequence phase)',
    make: (seed, type) => ({ ...makeInputs({ N: 6, V: 97, type, seed }), seqLengths: [2, 4] }),
    options: { lossType: 'gspo', perceptionTopP: 0.5 },
  },
];

describe('options.out', () => {
  for (const backend of backends)
    for (const type of dtypes)
      for (const gradType of ['input', 'float32'] as const)
        it(`${backend}, ${type}, gradType '${gradType}': the same result as a call that allocates, reused over three calls`, async () => {
          for (const c of cases) {
            const first = c.make(1, type);
            const out = {
              gradLogits: hostOut(first.logits as Tensor, gradType === 'float32' ? 'float32' : type),
              gradMaskedLogits: hostOut(first.logits as Tensor, gradType === 'float32' ? 'float32' : type),
            };
            for (const seed of [1, 2, 3]) {
              const inputs = c.make(seed, type);
              const options: PapoOptions = { ...c.options, backend, gradType };
              const want = papoLossSync(inputs, options);
              const got = seed === 2 ? await papoLoss(inputs, { ...options, out }) : papoLossSync(inputs, { ...options, out });
              expect(got.gradLogits!.data, `${c.name}: the caller's buffer`).toBe(out.gradLogits.data);
              expect(got.gradMaskedLogits!.data).toBe(out.gradMaskedLogits.data);
              expectSameResult(got, want);
            }
          }
        });

  it('one buffer given, the other allocated; a detached masked path needs none', () => {
    const inputs = makeInputs({ N: 4, V: 50, seed: 5 });
    const gradLogits = hostOut(inputs.logits as Tensor, 'float32');
    const r = papoLossSync(inputs, { backend: 'cpu', out: { gradLogits } });
    expect(r.gradLogits!.data).toBe(gradLogits.data);
    expect(r.gradMaskedLogits!.data).not.toBe(gradLogits.data);
    expectSameResult(r, papoLossSync(inputs, { backend: 'cpu' }));
    const d = papoLossSync(inputs, { backend: 'cpu', detachMasked: true, out: { gradLogits } });
    expect(d.gradMaskedLogits).toBeUndefined();
  });

  for (const type of dtypes)
    it(`cuda with DeviceTensor data (${type}): written into the caller's DeviceTensors, as the allocating call`, () => {
      for (const c of cases) {
        const first = c.make(1, type);
        const dims = (first.logits as Tensor).dims;
        const out = { gradLogits: cuda.upload(hostOut(first.logits as Tensor, type)), gradMaskedLogits: cuda.upload(hostOut(first.logits as Tensor, type)) };
        for (const seed of [1, 2, 3]) {
          const h = c.make(seed, type);
          const inputs = { ...h, logits: cuda.upload(h.logits as Tensor), maskedLogits: cuda.upload(h.maskedLogits as Tensor) };
          const want = papoLossSync(inputs, { ...c.options, backend: 'cuda' });
          const got = papoLossSync(inputs, { ...c.options, backend: 'cuda', out });
          expect(got.gradLogits).toBe(out.gradLogits);
          expect(got.gradMaskedLogits).toBe(out.gradMaskedLogits);
          expect(out.gradLogits.dims).toEqual(dims);
          expectSameResult(got, want);
          want.gradLogits!.dispose();
          want.gradMaskedLogits!.dispose();
          inputs.logits.dispose();
          inputs.maskedLogits.dispose();
        }
        expect(out.gradLogits.disposed).toBe(false);
        out.gradLogits.dispose();
        out.gradMaskedLogits.dispose();
      }
    });

  describe('misuse is an error naming the buffer, and writes nothing', () => {
    const inputs = makeInputs({ N: 4, V: 50, seed: 7 });
    const logits = inputs.logits as Tensor;
    const fresh = () => hostOut(logits, 'float32');
    const rejected = (options: PapoOptions, name: RegExp, onInputs: PapoInputs = inputs) => {
      for (const backend of ['cpu', 'reference'] as const) {
        const e = codeOf(() => papoLossSync(onInputs, { backend, ...options }));
        expect(e.code, e.message).toBe('PAPO_INVALID_ARGUMENT');
        expect(e.message).toMatch(name);
      }
      for (const t of Object.values(options.out ?? {})) if (t && 'data' in t && filled.has(t.data as object)) untouched(t as Host);
    };

    it('wrong dims, dtype, placement', () => {
      rejected({ out: { gradLogits: { ...fresh(), dims: [2, 2, 50] } } }, /^out\.gradLogits\.dims: expected \[4, 50\]/);
      rejected({ out: { gradLogits: hostOut({ data: new Float32Array(5 * 50), dims: [5, 50], type: 'float32' }, 'float32') } },
        /^out\.gradLogits\.dims/);
      rejected({ out: { gradMaskedLogits: hostOut(logits, 'bfloat16') } }, /^out\.gradMaskedLogits\.type: expected 'float32'/);
      const half = makeInputs({ N: 4, V: 50, seed: 7, type: 'float16' });
      rejected({ gradType: 'float32', out: { gradLogits: hostOut(logits, 'float16') } }, /^out\.gradLogits\.type: expected 'float32'/, half);
      rejected({ out: { gradLogits: hostOut(logits, 'float32') } }, /^out\.gradLogits\.type: expected 'float16'/, half);
      rejected({ out: { gradLogits: { data: new Float32Array(200), shape: [4, 50], dtype: 'float32', dataSync: () => new Float32Array(200) } as never } },
        /^out\.gradLogits: expected a tensor whose memory the call writes/);
      const dev = cuda.upload(fresh());
      rejected({ out: { gradLogits: dev } }, /^out\.gradLogits: expected host data like the logits, got a DeviceTensor/);
      const onDevice = { ...inputs, logits: cuda.upload(logits), maskedLogits: cuda.upload(inputs.maskedLogits as Tensor) };
      const host = fresh();
      const e = codeOf(() => papoLossSync(onDevice, { backend: 'cuda', out: { gradMaskedLogits: host } }));
      expect(e.message).toMatch(/^out\.gradMaskedLogits: expected a DeviceTensor on device 0 like the logits, got host data/);
      untouched(host);
      dev.dispose();
      const e2 = codeOf(() => papoLossSync(onDevice, { backend: 'cuda', out: { gradLogits: dev } }));
      expect(e2.message).toMatch(/^out\.gradLogits: the DeviceTensor was disposed/);
      const small = cuda.upload({ data: new Float32Array(100), dims: [2, 50], type: 'float32' });
      expect(codeOf(() => papoLossSync(onDevice, { backend: 'cuda', out: { gradLogits: small } })).message).toMatch(/^out\.gradLogits\.dims/);
      small.dispose();
      onDevice.logits.dispose();
      onDevice.maskedLogits.dispose();
    });

    it('a buffer that overlaps an input or the other buffer', () => {
      const z = logits.data as Float32Array;
      rejected({ out: { gradLogits: logits } }, /^out\.gradLogits: shares memory with input logits \(use inPlace/);
      rejected({ out: { gradLogits: inputs.maskedLogits as Tensor } }, /^out\.gradLogits: shares memory with input maskedLogits/);
      rejected({ detachMasked: true, out: { gradLogits: inputs.maskedLogits as Tensor } }, /^out\.gradLogits: shares memory with input maskedLogits/);
      // inside a larger buffer that holds the logits too
      const big = new Float32Array(z.length * 3);
      big.set(z, 100);
      const around = { ...inputs, logits: { ...logits, data: big.subarray(100, 100 + z.length) } };
      rejected({ out: { gradLogits: { data: big.subarray(0, z.length), dims: logits.dims, type: 'float32' } } },
        /^out\.gradLogits: shares memory with input logits/, around);
      // the tokens inside the gradient's buffer
      const g = fresh();
      const withTokens = { ...inputs, tokens: new Int32Array(g.data.buffer, 40, 4) };
      withTokens.tokens.set(inputs.tokens as Int32Array);
      const e = codeOf(() => papoLossSync(withTokens, { backend: 'cpu', out: { gradLogits: g } }));
      expect(e.message).toMatch(/^out\.gradLogits: shares memory with input tokens/);
      const one = fresh();
      rejected({ out: { gradLogits: one, gradMaskedLogits: one } }, /^out\.gradMaskedLogits: shares memory with out\.gradLogits/);
    });

    it('with inPlace, with computeGrad: false, and a masked gradient there is none of', () => {
      rejected({ inPlace: true, out: { gradLogits: fresh() } }, /^out\.gradLogits: cannot be given with inPlace/);
      rejected({ computeGrad: false, out: { gradMaskedLogits: fresh() } }, /^out\.gradMaskedLogits: given with computeGrad: false/);
      rejected({ detachMasked: true, out: { gradMaskedLogits: fresh() } }, /^out\.gradMaskedLogits: the masked path is detached/);
      const { maskedLogits: _m, ...single } = inputs;
      rejected({ perceptionCoef: 0, maskedEntropyCoef: 0, out: { gradMaskedLogits: fresh() } },
        /^out\.gradMaskedLogits: there are no maskedLogits/, single);
      rejected({ out: { gradLogits: fresh(), grad: fresh() } as never }, /^options\.out: unknown field 'grad'/);
      rejected({ out: [] as never }, /^options\.out: expected \{ gradLogits\?, gradMaskedLogits\? \}/);
    });

    it('papoLoss rejects its promise the same way', async () => {
      const g = fresh();
      await expect(papoLoss(inputs, { backend: 'cpu', inPlace: true, out: { gradLogits: g } })).rejects.toThrow(/^out\.gradLogits/);
      untouched(g);
    });
  });
});
