// The CUDA suite of one kernel family, against the CPU backend (itself checked against the float64 reference):
// every dtype, layout and option, host-staged and device-resident, in place and not. On a machine without a GPU
// this runs on the emulated device (tools/cuda-emulator), which executes the same CUDA sources and fails where a
// GPU would; on a GPU machine it runs on the GPU. Same assertions either way. Tolerances: fp32 within 1e-5
// relative, fp16/bf16 within 1e-2.
//
// The backend reads its PAPO_CUDA_* settings once per process, so each family runs in a test file of its own
// (vitest gives each file a process): test/cuda.test.ts with the shipped settings, test/cuda-kernels/*.test.ts
// with a forced version, cluster shape or staging chunk. useFamily() sets the family's variables before the file's
// first call.
import { cudaTarget, emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, logProbs, logProbsSync, papoLossSync, presets } from '../lib';
import { native } from '../lib/native';
import type { DType, PapoInputs, PapoOptions, PapoResult, Tensor } from '../lib/types';
import { codeOf, expectClose, expectNumberClose, makeInputs, makeVariantInputs, maxAbs, values } from './helpers';

export interface Family {
  name: string;
  /** The version its fused calls run (the plan's choice, which the emulated device's launches show). */
  version: 'k0' | 'k1' | 'k2' | 'k3' | 'k4';
  backend: 'cuda' | 'cuda-naive';
  /** PAPO_CUDA_* for the whole process; PAPO_CUDA_STAGING_MB=1 makes host data of a few rows take several chunks. */
  env: Record<string, string>;
}

/** Sets the family's settings as this process's only PAPO_CUDA_* tuning (before its first CUDA call, which reads
 * them) and returns it. */
export function useFamily(f: Family): Family {
  for (const k of Object.keys(process.env))
    if (k.startsWith('PAPO_CUDA_') && k !== 'PAPO_CUDA_EMULATE' && k !== 'PAPO_CUDA_TARGET') delete process.env[k];
  Object.assign(process.env, f.env);
  return f;
}

/** How the family stages host data, for test names. */
export function staging(f: Family): string {
  return f.env.PAPO_CUDA_STAGING_MB ? `in chunks of ${f.env.PAPO_CUDA_STAGING_MB} MiB` : 'in one chunk (the default staging)';
}

export const tol: Record<DType, { rtol: number; grad: number }> = {
  float32: { rtol: 1e-5, grad: 1e-5 },
  float16: { rtol: 1e-2, grad: 1e-2 },
  bfloat16: { rtol: 1e-2, grad: 1e-2 },
};

export function hostGrad(g: Tensor | DeviceTensor | undefined): Float64Array {
  if (g instanceof DeviceTensor) {
    const t = g.download();
    g.dispose();
    return values(t);
  }
  return values(g);
}

export function expectParity(got: PapoResult, want: PapoResult, type: DType) {
  const t = tol[type];
  expectNumberClose(got.loss, want.loss, t.rtol, 1e-7, 'loss');
  for (const k of Object.keys(want.metrics) as (keyof typeof want.metrics)[])
    expectNumberClose(got.metrics[k]!, want.metrics[k]!, t.rtol, 1e-7, `metrics.${k}`);
  expectClose(got.logProbs, want.logProbs, t.rtol, 1e-6, 'logProbs');
  expectClose(got.entropy, want.entropy, t.rtol, 1e-6, 'entropy');
  if (want.maskedLogProbs) expectClose(got.maskedLogProbs!, want.maskedLogProbs, t.rtol, 1e-6, 'maskedLogProbs');
  for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
    if (!want[g]) {
      expect(got[g], g).toBeUndefined();
      continue;
    }
    const w = hostGrad(want[g]);
    expectClose(hostGrad(got[g]), w, t.grad, 1e-6 * maxAbs(w) + 1e-12, g);
  }
}

export function vsCpu(inputs: PapoInputs, options: PapoOptions, f: Family, type: DType) {
  const want = papoLossSync(inputs, { ...options, backend: 'cpu', inPlace: false });
  const got = papoLossSync(inputs, { ...options, backend: f.backend, inPlace: false });
  expect(got.backend).toBe(f.backend);
  expectParity(got, want, type);
  return got;
}

/** Every position where logits holds -Infinity has a gradient of exactly +0. */
function expectExactZeroAtNegInf(logits: Tensor, grad: Tensor | DeviceTensor | undefined, what: string) {
  const z = values(logits), g = hostGrad(grad);
  let n = 0;
  for (let i = 0; i < z.length; i++)
    if (z[i] === -Infinity) {
      n++;
      if (!Object.is(g[i], 0)) expect.fail(`${what}[${i}] = ${g[i]} at a -Infinity logit, expected exactly +0`);
    }
  expect(n, 'cases with -Infinity logits').toBeGreaterThan(0);
}

/** Inputs whose sampled tokens alternate between the first and the last column. */
function edgeTargets(inputs: PapoInputs, V: number): PapoInputs {
  const tokens = Int32Array.from(inputs.tokens as Int32Array, (_, i) => (i % 2 ? V - 1 : 0));
  return { ...inputs, tokens };
}

const optionSets: [string, PapoOptions][] = [
  ...(Object.keys(presets) as (keyof typeof presets)[]).map((p) => [`preset ${p}`, { preset: p }] as [string, PapoOptions]),
  ...(['k1', 'k2', 'k3', 'abs'] as const).map((e) => [`perception ${e}`, { perceptionEstimator: e, klEstimator: e }] as [string, PapoOptions]),
  ['perceptionClip', { perceptionClip: [0, 0.05] }],
  ['full entropy', { entropyMode: 'full', entropyCoef: 0.01, maskedEntropyCoef: 0.02 }],
  ['detachMasked', { detachMasked: true }],
  ['seq-mean-token-sum-norm, temperature 0.7', { lossAgg: 'seq-mean-token-sum-norm', temperature: 0.7 }],
  ['seq-mean-token-mean, temperature 1.3', { lossAgg: 'seq-mean-token-mean', temperature: 1.3 }],
];

export function paritySuite(f: Family) {
  describe(`${f.name} on the ${cudaTarget} device`, () => {
    for (const [name, options] of optionSets)
      it(name, () => vsCpu(makeInputs({ N: 12, V: 1003, mask: true }), options, f, 'float32'));

    for (const type of ['float32', 'float16', 'bfloat16'] as const) {
      it(`${type}, [B, T, V], -Infinity logits and masked-out tokens with gradient exactly +0`, async () => {
        const inputs = makeInputs({ dims: [3, 4, 4099], type, negInf: 0.05, mask: true });
        const got = await vsCpu(inputs, {}, f, type);
        expectExactZeroAtNegInf(inputs.logits as Tensor, got.gradLogits, 'gradLogits');
        const g = hostGrad(got.gradMaskedLogits), V = 4099;
        for (let row = 3; row < 12; row += 4)  // makeInputs masks every fourth token
          for (let j = 0; j < V; j++)
            if (!Object.is(g[row * V + j], 0)) expect.fail(`gradMaskedLogits[${row}, ${j}] = ${g[row * V + j]} for a masked-out token`);
      });
      it(`${type} with float32 gradients`, () => vsCpu(makeInputs({ N: 7, V: 2049, type }), { gradType: 'float32' }, f, type));
    }

    it('V in {1, 7, 8, 9, 33, 1000, 4099}, bf16 rows off 16-byte boundaries, targets at the first and last column', async () => {
      for (const V of [1, 7, 8, 9, 33, 1000, 4099]) {
        const inputs = edgeTargets(makeInputs({ N: 6, V, type: 'bfloat16', seed: V }), V);
        await vsCpu(inputs, {}, f, 'bfloat16');
        const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
        const want = papoLossSync(inputs, { backend: 'cpu' });
        const got = papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { backend: f.backend });
        expectParity(got, want, 'bfloat16');
        z.dispose();
        zm.dispose();
      }
    });

    it('logits masked with the most negative finite fp32 value (finfo.min), temperature 1 and 2', async () => {
      for (const temperature of [1, 2]) {
        const inputs = makeInputs({ N: 6, V: 3000, seed: 31 });
        for (const t of [inputs.logits, inputs.maskedLogits] as Tensor[]) {
          const z = t.data as Float32Array;
          for (let row = 0; row < 6; row++)  // the head of each row, a whole block's worth or more, masked out
            for (let j = 0; j < 2500; j++) if (j !== (inputs.tokens as Int32Array)[row]) z[row * 3000 + j] = -3.4028234663852886e38;
        }
        await vsCpu(inputs, { temperature }, f, 'float32');
      }
    });

    it('maskedLogProbs (masked path precomputed)', () => {
      const inputs = makeInputs({ N: 9, V: 777, masked: false });
      inputs.maskedLogProbs = Float32Array.from({ length: 9 }, (_, i) => -1 - i / 10);
      return vsCpu(inputs, {}, f, 'float32');
    });

    it(`host data staged ${staging(f)}`, () => {
      for (const type of ['float32', 'bfloat16'] as const) vsCpu(makeInputs({ N: 64, V: 4099, type, mask: true }), {}, f, type);
    });

    it(`the sequence phase (gspo, perception top-p, sft, IcePop): host data ${staging(f)}, device-resident, in place`, () => {
      const options: PapoOptions = { lossType: 'gspo', perceptionTopP: 0.5, sftCoef: 0.1, rolloutCorrection: { mode: 'mask' } };
      const inputs = makeVariantInputs({ N: 64, V: 4099, type: 'bfloat16', mask: true, seed: 41 },
        { seqLengths: [20, 0, 30, 14], rollout: true, perceptionWeights: true, sftMask: true });
      vsCpu(inputs, options, f, 'bfloat16');
      const want = papoLossSync(inputs, { ...options, backend: 'cpu' });
      const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
      const dev = papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { ...options, backend: f.backend });
      expectParity(dev, want, 'bfloat16');
      z.dispose();
      zm.dispose();
      const mine = { ...inputs, logits: { ...(inputs.logits as Tensor), data: (inputs.logits as Tensor).data.slice() },
        maskedLogits: { ...(inputs.maskedLogits as Tensor), data: (inputs.maskedLogits as Tensor).data.slice() } };
      const inPlace = papoLossSync(mine, { ...options, backend: f.backend, inPlace: true });
      expect(inPlace.gradLogits!.data === mine.logits.data).toBe(true);
      expectParity(inPlace, want, 'bfloat16');
    });

    // In place, every row is checked before any is written, so the plan runs in-place calls in two phases (k1's
    // launches for the fast versions): k3's and k4's out-of-place passes agree with them within rounding, the
    // other families' bit for bit (k1 and k2 run the same row code).
    const k3 = f.version === 'k3' || f.version === 'k4';
    it(`in place into host logits equals out of place${k3 ? ' (k1 in place, within rounding)' : ', bit for bit'}`, () => {
      const a = makeInputs({ N: 6, V: 3001, type: 'bfloat16' }), b = makeInputs({ N: 6, V: 3001, type: 'bfloat16' });
      const out = papoLossSync(a, { backend: f.backend });
      const inp = papoLossSync(b, { backend: f.backend, inPlace: true });
      expect(inp.gradLogits!.data === (b.logits as Tensor).data).toBe(true);
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
        const x = (inp[g] as Tensor).data, y = (out[g] as Tensor).data;
        if (k3) expectClose(values(inp[g] as Tensor), values(out[g] as Tensor), tol.bfloat16.grad, 1e-6 * maxAbs(values(out[g] as Tensor)), g);
        else expect(Array.from(x), g).toEqual(Array.from(y));
      }
    });

    it('a row with NaN and +Infinity gives the CPU backend\'s error; a rejected in-place call leaves the logits intact', async () => {
      const inputs = makeInputs({ N: 5, V: 3000, type: 'float32' });
      const z = (inputs.maskedLogits as Tensor).data as Float32Array;
      z[3 * 3000 + 2500] = NaN;  // NaN after +Infinity in the same row: NaN wins on both backends
      z[3 * 3000 + 10] = Infinity;
      const cpu = codeOf(() => papoLossSync(inputs, { backend: 'cpu' }));
      expect(cpu.message).toMatch(/maskedLogits contains NaN in row 3/);
      const before = Float32Array.from((inputs.logits as Tensor).data as Float32Array);
      const beforeMasked = Float32Array.from(z);
      const got = codeOf(() => papoLossSync(inputs, { backend: f.backend, inPlace: true }));
      expect(got.message).toBe(cpu.message);
      expect(got.code).toBe('PAPO_INVALID_ARGUMENT');
      expect(Array.from((inputs.logits as Tensor).data)).toEqual(Array.from(before));
      expect(Array.from(z)).toEqual(Array.from(beforeMasked));
    });

    it('out of place too, NaN is found wherever it sits and outranks +Infinity', async () => {
      const V = 5000;
      const spoil: [string, (z: Float32Array) => void][] = [
        ['the last element', (z) => { z[2 * V + V - 1] = NaN; }],
        ['among excluded tokens', (z) => { z.fill(-Infinity, 2 * V + 100, 2 * V + 3000); z[2 * V + 2000] = NaN; }],
        ['after +Infinity', (z) => { z[2 * V + 10] = Infinity; z[2 * V + 4500] = NaN; }],
      ];
      for (const [where, f2] of spoil) {
        const inputs = makeInputs({ N: 4, V, seed: 21 });
        inputs.tokens = Int32Array.of(1, 1, 1, 1);
        f2((inputs.maskedLogits as Tensor).data as Float32Array);
        const cpu = codeOf(() => papoLossSync(inputs, { backend: 'cpu' }));
        const got = codeOf(() => papoLossSync(inputs, { backend: f.backend }));
        expect(cpu.message, where).toMatch(/maskedLogits contains NaN in row 2/);
        expect(got.message, where).toBe(cpu.message);
      }
    });

    it('logProbs (forward only) on host and device data, every dtype', async () => {
      for (const type of ['float32', 'float16', 'bfloat16'] as const)
        for (const V of [7, 4099]) {
          const inputs = edgeTargets(makeInputs({ N: 9, V, type, negInf: 0.02 }), V);
          const want = logProbsSync(inputs.logits, inputs.tokens, { backend: 'cpu', temperature: 0.8 });
          const host = logProbsSync(inputs.logits, inputs.tokens, { backend: f.backend, temperature: 0.8 });
          const z = cuda.upload(inputs.logits as Tensor);
          const dev = await logProbs(z, inputs.tokens, { backend: f.backend, temperature: 0.8 });
          z.dispose();
          for (const got of [host, dev]) {
            expectClose(got.logProbs, want.logProbs, tol[type].rtol, 1e-6, `logProbs ${type} V=${V}`);
            expectClose(got.entropy, want.entropy, tol[type].rtol, 1e-6, `entropy ${type} V=${V}`);
          }
        }
    });
  });
}


/** Emulated only: the version the family's fused calls run, by their launches, and what the second call of a
 * shape asks the device (nothing: the plan and the device facts are kept). */
export function planSuite(f: Family) {
  describe.runIf(emulated)(`${f.name}: the plan`, () => {
    // The emulator's counters before and after the second fused call of a small shape (the first plans it).
    const secondCall = () => {
      const emu = native();
      const inputs = makeInputs({ N: 6, V: 1000, type: 'bfloat16' });
      papoLossSync(inputs, { backend: f.backend });
      const before = emu.emuStats!();
      papoLossSync(inputs, { backend: f.backend });
      return { before, after: emu.emuStats!() };
    };

    it(`runs ${f.version} for a fused call`, () => {
      const { before, after } = secondCall();
      const launches = (name: string) => (after.apiCallsByName[name] ?? 0) - (before.apiCallsByName[name] ?? 0);
      // Per call beside its row kernels: the results kernel (call_results.cu). k1 launches the row kernel twice,
      // k2 once, k3 and k4 their own kernel (k3's cluster of one block launches as a plain kernel), k0 one kernel
      // per op of its chain.
      const all = launches('cudaLaunchKernelEx') + launches('cudaLaunchKernel');
      const own = (name: string) => (after.kernels[name] ?? 0) - (before.kernels[name] ?? 0);
      const k3 = own('papo_rows_k3'), k4 = own('papo_rows_k4');
      const ran = k3 + k4 > 1 ? '?' : k3 ? (all === 2 ? 'k3' : '?') : k4 ? (all === 2 ? 'k4' : '?')
        : all === 2 ? 'k2' : all === 3 ? 'k1' : all > 3 ? 'k0' : '?';
      expect(ran, `${k3} k3 and ${k4} k4 launches, ${all} in all`).toBe(f.version);
    });

    it('stages host data once: the per-token inputs and each path\'s one chunk, one copy each', () => {
      const { before, after } = secondCall();
      expect(after.copiesToDevice - before.copiesToDevice).toBe(3);
      // both paths' logits, then the per-token inputs (under 64 bytes a row)
      expect(after.bytesToDevice - before.bytesToDevice - 2 * 6 * 1000 * 2).toBeLessThan(6 * 64);
    });

    it('a call after the first of its shape asks the device nothing', () => {
      const emu = native();
      const inputs = makeInputs({ N: 6, V: 1000, type: 'bfloat16' });
      const calls: [string, () => unknown][] = [
        ['fused', () => papoLossSync(inputs, { backend: f.backend })],
        ['in place', () => papoLossSync(makeInputs({ N: 6, V: 1000, type: 'bfloat16' }), { backend: f.backend, inPlace: true })],
        ['gspo', () => papoLossSync({ ...inputs, seqLengths: Int32Array.of(2, 4) }, { backend: f.backend, lossType: 'gspo' })],
        ['logProbs', () => logProbsSync(inputs.logits, inputs.tokens, { backend: f.backend })],
      ];
      for (const [what, call] of calls) {
        call();
        const before = emu.emuStats!().deviceQueries;
        call();
        expect({ what, queries: emu.emuStats!().deviceQueries - before }).toEqual({ what, queries: 0 });
      }
    });
  });
}
