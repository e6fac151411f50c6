// The CUDA backend with the shipped settings (no PAPO_CUDA_* variable): the k2 family's suite (cuda-family.ts),
// batch invariance and plan, the device's listing, DeviceTensor data, and bad settings (in child processes). The
// other kernel versions, k3's cluster shapes and chunked staging each run the same suite in a process of their
// own: test/cuda-kernels/*.test.ts.
import { cudaTarget, emulated } from './cuda-target';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, info, papoLoss, papoLossSync } from '../lib';
import type { DType, Tensor } from '../lib/types';
import { batchInvarianceSuite } from './batch-invariance';
import { expectParity, paritySuite, planSuite, useFamily } from './cuda-family';
import { codeOf, makeInputs } from './helpers';

const f = useFamily({ name: 'k2 fused (default)', version: 'k2', backend: 'cuda', env: {} });

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

paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);

describe('PAPO_CUDA_* settings', () => {
  // In a child process each (they are read once per process): the first CUDA call fails, naming the variable.
  const dist = path.join(__dirname, '..', 'dist', 'lib', 'index.js');
  const script = `const p = require(${JSON.stringify(dist)});
    const N = 2, V = 8, z = new Float32Array(N * V);
    try { p.papoLossSync({ logits: { data: z, dims: [N, V], type: 'float32' }, tokens: new Int32Array(N),
      advantages: new Float32Array(N) }, { backend: 'cuda', preset: 'grpo', klCoef: 0 }); console.log('ran'); }
    catch (e) { console.log(e.code + ' ' + e.message); }`;
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env } }).stdout.trim();
  it('a value out of range, or a version the plan does not know, fails the first call with PAPO_INVALID_ARGUMENT', () => {
    expect(run({ PAPO_CUDA_STAGING_MB: '0' })).toBe("PAPO_INVALID_ARGUMENT PAPO_CUDA_STAGING_MB: expected an integer from 1 to 1048576, got '0'");
    expect(run({ PAPO_CUDA_CLUSTER: '3' })).toBe('PAPO_INVALID_ARGUMENT PAPO_CUDA_CLUSTER: expected 1, 2, 4 or 8, got 3');
    expect(run({ PAPO_CUDA_KERNEL: '7' })).toBe('PAPO_INVALID_ARGUMENT PAPO_CUDA_KERNEL: expected 1 (k1 two-pass), ' +
      '2 (k2 fused), 3 (k3 cluster), 4 (k4 split rows), got 7');
    expect(run({ PAPO_CUDA_KERNEL: '1', PAPO_CUDA_BLOCKS: '3' })).toBe('ran');
  });
});

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
