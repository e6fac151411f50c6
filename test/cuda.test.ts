// The CUDA backends against the CPU backend (itself checked against the float64 reference): every kernel family
// (k3 cluster, k4 split rows, k2 fused, k1 two-pass, forward only, cuda-naive), dtype, layout and option, host-staged and device-resident,
// in place and not. On a machine without a GPU this runs on the emulated device (tools/cuda-emulator), which
// executes the same CUDA sources and fails where a GPU would; on a GPU machine it runs on the GPU. Same
// assertions either way. Tolerances: fp32 within 1e-5 relative, fp16/bf16 within 1e-2.
import { cudaTarget, emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, info, logProbs, logProbsSync, papoLoss, papoLossSync, presets } from '../lib';
import type { DType, PapoInputs, PapoOptions, PapoResult, Tensor } from '../lib/types';
import { codeOf, expectClose, expectNumberClose, makeInputs, makeVariantInputs, maxAbs, values } from './helpers';

/** Runs fn with environment variables set (read by native code at each call), then restores them. */
async function withEnv<T>(env: Record<string, string | undefined>, fn: () => T | Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const k of Object.keys(env)) {
    saved[k] = process.env[k];
    if (env[k] === undefined) delete process.env[k];
    else process.env[k] = env[k];
  }
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(saved)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

interface Family {
  name: string;
  backend: 'cuda' | 'cuda-naive';
  env: Record<string, string | undefined>;
}
const families: Family[] = [
  // k3 holds a row pair in a thread-block cluster (sm_90+); clusters of 2 and 4 blocks make the slices meet, and
  // 8 blocks in all give each cluster several row pairs in turn (double buffering), or one buffer when forced.
  { name: 'k3 cluster of 2 blocks', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '2', PAPO_CUDA_BLOCKS: '8' } },
  { name: 'k3 cluster of 4 blocks', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '4', PAPO_CUDA_BLOCKS: '8' } },
  { name: 'k3 cluster, one buffer', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '2', PAPO_CUDA_BLOCKS: '4', PAPO_CUDA_K3_BUFFERS: '1' } },
  // k4 splits a row pair over blocks by column slices: the default slices (16 KB of each path, so the tests'
  // rows have one or two), and slices of 16 vectors on a grid of 5 blocks, so that every row has many slices
  // (47 to 64 at V = 3000-4099 in fp32: more than the 32 lanes of the row's merge), each block takes many items
  // in turn, holds gradients back while their rows complete, and waits.
  { name: 'k4 split rows', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '4', PAPO_CUDA_BLOCKS: undefined, PAPO_CUDA_K4_SLICE: undefined } },
  { name: 'k4 split rows, short slices, 5 blocks', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '4', PAPO_CUDA_BLOCKS: '5', PAPO_CUDA_K4_SLICE: '16' } },
  { name: 'k2 fused', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '2', PAPO_CUDA_BLOCKS: undefined } },
  { name: 'k1 two-pass', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '1', PAPO_CUDA_BLOCKS: undefined } },
  { name: 'cuda-naive', backend: 'cuda-naive', env: { PAPO_CUDA_KERNEL: undefined } },
];

const tol: Record<DType, { rtol: number; grad: number }> = {
  float32: { rtol: 1e-5, grad: 1e-5 },
  float16: { rtol: 1e-2, grad: 1e-2 },
  bfloat16: { rtol: 1e-2, grad: 1e-2 },
};

function hostGrad(g: Tensor | DeviceTensor | undefined): Float64Array {
  if (g instanceof DeviceTensor) {
    const t = g.download();
    g.dispose();
    return values(t);
  }
  return values(g);
}

function expectParity(got: PapoResult, want: PapoResult, type: DType) {
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

async function vsCpu(inputs: PapoInputs, options: PapoOptions, f: Family, type: DType) {
  const want = papoLossSync(inputs, { ...options, backend: 'cpu', inPlace: false });
  const got = await withEnv(f.env, () => papoLossSync(inputs, { ...options, backend: f.backend, inPlace: false }));
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

describe(`the CUDA device (${cudaTarget})`, () => {
  it('is listed by info(), and says when it is emulated', () => {
    const d = info().cudaDevices;
    expect(d.length).toBeGreaterThan(0);
    expect(info().backends).toContain('cuda');
    if (emulated) {
      expect(d).toHaveLength(1);
      expect(d[0].name).toMatch(/emulat/i);
      expect(d[0].multiprocessors).toBe(132);
      expect(d[0].computeCapability).toBe('9.0');
    }
  });
});

for (const f of families) {
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
        const got = await withEnv(f.env, () => papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { backend: f.backend }));
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

    it('host data staged in several chunks (PAPO_CUDA_STAGING_MB=1)', async () => {
      for (const type of ['float32', 'bfloat16'] as const)
        await withEnv({ PAPO_CUDA_STAGING_MB: '1' }, () => vsCpu(makeInputs({ N: 64, V: 4099, type, mask: true }), {}, f, type));
    });

    it('the sequence phase (gspo, perception top-p, sft, IcePop): host data in chunks, device-resident, in place', async () => {
      const options: PapoOptions = { lossType: 'gspo', perceptionTopP: 0.5, sftCoef: 0.1, rolloutCorrection: { mode: 'mask' } };
      const inputs = makeVariantInputs({ N: 64, V: 4099, type: 'bfloat16', mask: true, seed: 41 },
        { seqLengths: [20, 0, 30, 14], rollout: true, perceptionWeights: true, sftMask: true });
      await withEnv({ PAPO_CUDA_STAGING_MB: '1' }, () => vsCpu(inputs, options, f, 'bfloat16'));
      const want = papoLossSync(inputs, { ...options, backend: 'cpu' });
      const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
      const dev = await withEnv(f.env, () => papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { ...options, backend: f.backend }));
      expectParity(dev, want, 'bfloat16');
      z.dispose();
      zm.dispose();
      const mine = { ...inputs, logits: { ...(inputs.logits as Tensor), data: (inputs.logits as Tensor).data.slice() },
        maskedLogits: { ...(inputs.maskedLogits as Tensor), data: (inputs.maskedLogits as Tensor).data.slice() } };
      const inPlace = await withEnv(f.env, () => papoLossSync(mine, { ...options, backend: f.backend, inPlace: true }));
      expect(inPlace.gradLogits!.data === mine.logits.data).toBe(true);
      expectParity(inPlace, want, 'bfloat16');
    });

    // In place, every row is checked before any is written, so k3 and k4 (one pass per row pair) hand in-place
    // calls to k2's two phases: the same values within rounding there, the same bits for the other families.
    const k3 = f.env.PAPO_CUDA_KERNEL === '3' || f.env.PAPO_CUDA_KERNEL === '4';
    it(`in place into host logits equals out of place${k3 ? ' (k2 in place, within rounding)' : ', bit for bit'}`, async () => {
      const a = makeInputs({ N: 6, V: 3001, type: 'bfloat16' }), b = makeInputs({ N: 6, V: 3001, type: 'bfloat16' });
      const out = await withEnv(f.env, () => papoLossSync(a, { backend: f.backend }));
      const inp = await withEnv(f.env, () => papoLossSync(b, { backend: f.backend, inPlace: true }));
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
      const got = await withEnv(f.env, () => codeOf(() => papoLossSync(inputs, { backend: f.backend, inPlace: true })));
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
        const got = await withEnv(f.env, () => codeOf(() => papoLossSync(inputs, { backend: f.backend })));
        expect(cpu.message, where).toMatch(/maskedLogits contains NaN in row 2/);
        expect(got.message, where).toBe(cpu.message);
      }
    });

    it('logProbs (forward only) on host and device data, every dtype', async () => {
      for (const type of ['float32', 'float16', 'bfloat16'] as const)
        for (const V of [7, 4099]) {
          const inputs = edgeTargets(makeInputs({ N: 9, V, type, negInf: 0.02 }), V);
          const want = logProbsSync(inputs.logits, inputs.tokens, { backend: 'cpu', temperature: 0.8 });
          const host = await withEnv(f.env, () => logProbsSync(inputs.logits, inputs.tokens, { backend: f.backend, temperature: 0.8 }));
          const z = cuda.upload(inputs.logits as Tensor);
          const dev = await withEnv(f.env, () => logProbs(z, inputs.tokens, { backend: f.backend, temperature: 0.8 }));
          z.dispose();
          for (const got of [host, dev]) {
            expectClose(got.logProbs, want.logProbs, tol[type].rtol, 1e-6, `logProbs ${type} V=${V}`);
            expectClose(got.entropy, want.entropy, tol[type].rtol, 1e-6, `entropy ${type} V=${V}`);
          }
        }
    });
  });
}

describe(`DeviceTensor on the ${cudaTarget} device`, () => {
  it('upload, papoLoss, DeviceTensor gradients equal to the host path, dispose frees everything', async () => {
    for (const type of ['float32', 'bfloat16'] as const) {
      const inputs = makeInputs({ N: 10, V: 5003, type, mask: true });
      const want = papoLossSync(inputs, { backend: 'cpu' });
      const before = cuda.memInfo().liveAllocations;
      const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
      const got = await papoLoss({ ...inputs, logits: z, maskedLogits: zm });
      expect(got.gradLogits).toBeInstanceOf(DeviceTensor);
      expectParity(got, want, type);
      z.dispose();
      zm.dispose();
      expect(cuda.memInfo().liveAllocations).toBe(before);
    }
  });

  it('wrap of memory papo-kernels does not own, on the legacy stream (0n) and on a stream of the caller', async () => {
    const inputs = makeInputs({ N: 8, V: 3001, type: 'bfloat16', mask: true });
    const want = papoLossSync(inputs, { backend: 'cpu' });
    const owner = cuda.upload(inputs.logits as Tensor), ownerMasked = cuda.upload(inputs.maskedLogits as Tensor);
    const dims = [8, 3001];
    const plain = cuda.wrap(owner.pointer, dims, 'bfloat16');
    const plainMasked = cuda.wrap(ownerMasked.pointer, dims, 'bfloat16', { stream: 0n });
    expect(plain.owned).toBe(false);
    expectParity(papoLossSync({ ...inputs, logits: plain, maskedLogits: plainMasked }), want, 'bfloat16');
    const stream = cuda.createStream();
    try {
      const onStream = cuda.wrap(owner.pointer, dims, 'bfloat16', { stream });
      const maskedOnStream = cuda.wrap(ownerMasked.pointer, dims, 'bfloat16', { stream });
      const got = await papoLoss({ ...inputs, logits: onStream, maskedLogits: maskedOnStream });
      expect((got.gradLogits as DeviceTensor).stream).toBe(stream);
      expectParity(got, want, 'bfloat16');
      onStream.dispose();
      expect(owner.disposed).toBe(false);
    } finally {
      cuda.destroyStream(stream);
    }
    // Disposing a view leaves the memory with its owner.
    plain.dispose();
    expect(Array.from(owner.download().data)).toEqual(Array.from((inputs.logits as Tensor).data));
    owner.dispose();
    ownerMasked.dispose();
  });

  it('a wrapped tensor whose dims exceed its allocation is rejected, naming it, and nothing is written', () => {
    const inputs = makeInputs({ N: 4, V: 1000, type: 'float32' });
    const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
    const tooLong = cuda.wrap(z.pointer, [5, 1000], 'float32');
    const e = codeOf(() => papoLossSync({ ...inputs, logits: tooLong, maskedLogits: cuda.wrap(zm.pointer, [5, 1000], 'float32'),
      tokens: new Int32Array(5), advantages: new Float32Array(5), oldLogProbs: undefined, refLogProbs: undefined }, { inPlace: true, klCoef: 0 }));
    expect(e.name).toBe('RangeError');
    expect(e.message).toMatch(/^logits: .*allocation/);
    expect(Array.from(z.download().data)).toEqual(Array.from((inputs.logits as Tensor).data));
    expect(Array.from(zm.download().data)).toEqual(Array.from((inputs.maskedLogits as Tensor).data));
    z.dispose();
    zm.dispose();
  });

  it('device-resident in place, and a NaN row rejected before anything is overwritten', () => {
    const inputs = makeInputs({ N: 6, V: 2000, type: 'bfloat16' });
    const want = papoLossSync(inputs, { backend: 'cpu' });
    const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
    const bad = { ...(inputs.maskedLogits as Tensor), data: (inputs.maskedLogits as Tensor).data.slice() };
    bad.data[3 * 2000 + 7] = 0x7fc0;  // bf16 NaN
    const zbad = cuda.upload(bad);
    const e = codeOf(() => papoLossSync({ ...inputs, logits: z, maskedLogits: zbad }, { inPlace: true }));
    expect(e.message).toMatch(/maskedLogits contains NaN in row 3/);
    expect(Array.from(z.download().data)).toEqual(Array.from((inputs.logits as Tensor).data));
    expect(Array.from(zbad.download().data)).toEqual(Array.from(bad.data));
    const got = papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { inPlace: true });
    expect(got.gradLogits).toBe(z);
    expectParity({ ...got, gradLogits: z.download(), gradMaskedLogits: zm.download() }, want, 'bfloat16');
    for (const t of [z, zm, zbad]) t.dispose();
  });

  it('16 concurrent async calls, host and device data, each equal to its own CPU result', async () => {
    const type = (i: number): DType => (i % 3 ? 'float32' : 'bfloat16');
    const cases = Array.from({ length: 16 }, (_, i) => makeInputs({ N: 5 + i, V: 700 + 37 * i, seed: 100 + i, type: type(i) }));
    const device = cases.map((c, i) => (i % 2 ? { z: cuda.upload(c.logits as Tensor), zm: cuda.upload(c.maskedLogits as Tensor) } : null));
    const results = await Promise.all(cases.map((c, i) => {
      const d = device[i];
      return papoLoss(d ? { ...c, logits: d.z, maskedLogits: d.zm } : c, { backend: 'cuda' });
    }));
    results.forEach((got, i) => expectParity(got, papoLossSync(cases[i], { backend: 'cpu' }), type(i)));
    for (const d of device) if (d) d.z.dispose(), d.zm.dispose();
  });
});
