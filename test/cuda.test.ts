// The CUDA backends. On a machine without a GPU: info() reports no device, every CUDA entry point fails with
// PAPO_UNSUPPORTED and the reason, and DeviceTensor views are checked in TypeScript. On a GPU machine: parity of
// 'cuda' and 'cuda-naive' with 'cpu' on every option, preset, dtype and layout, host-staged and device-resident,
// in place and not (fp32 within 1e-5 relative, fp16/bf16 within 1e-2).
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, info, logProbsSync, papoLoss, papoLossSync, presets } from '../lib';
import type { DType, PapoInputs, PapoOptions, PapoResult, Tensor } from '../lib/types';
import { expectClose, expectNumberClose, makeInputs, maxAbs, values } from './helpers';

const gpu = cuda.available();
const noGpuReason = gpu ? '' : `no CUDA device here (${info().cudaStatus})`;
if (!gpu) console.warn(`test/cuda.test.ts: GPU parity tests skipped: ${noGpuReason}`);

function codeOf(fn: () => unknown): { code?: string; message: string; name: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string; name: string };
  }
  throw new Error('expected a throw');
}

describe('CUDA without a device', () => {
  it.skipIf(gpu)('info() reports no device and the reason', () => {
    const i = info();
    expect(i.cudaDevices).toEqual([]);
    expect(i.cudaStatus.length).toBeGreaterThan(0);
    expect(i.backends).not.toContain('cuda');
  });
  it.skipIf(gpu)("backends 'cuda' and 'cuda-naive' fail with PAPO_UNSUPPORTED and the reason", () => {
    for (const backend of ['cuda', 'cuda-naive'] as const) {
      const e = codeOf(() => papoLossSync(makeInputs(), { backend }));
      expect(e.code).toBe('PAPO_UNSUPPORTED');
      expect(e.message).toMatch(new RegExp(`backend '${backend}' is not available: .*(no CUDA device|not part of this build)`));
      expect(codeOf(() => logProbsSync(makeInputs().logits, makeInputs().tokens, { backend })).code).toBe('PAPO_UNSUPPORTED');
    }
  });
  it.skipIf(gpu)('cuda.upload fails with PAPO_UNSUPPORTED', () => {
    const e = codeOf(() => cuda.upload(makeInputs().logits as Tensor));
    expect(e.code).toBe('PAPO_UNSUPPORTED');
    expect(e.message).toMatch(/cuda.upload is not available/);
  });
  it("'auto' runs small host data on the CPU", () => {
    expect(papoLossSync(makeInputs(), { backend: 'auto' }).backend).toBe('cpu');
  });
});

describe('DeviceTensor views (no device needed)', () => {
  const wrapped = () => cuda.wrap(0x7f0000000000n, [8, 300], 'float32');
  it('wrap describes the memory without touching it', () => {
    const t = wrapped();
    expect(t).toBeInstanceOf(DeviceTensor);
    expect(t.dims).toEqual([8, 300]);
    expect(t.byteLength).toBe(8 * 300 * 4);
    expect(t.owned).toBe(false);
    expect(t.pointer).toBe(0x7f0000000000n);
  });
  it('wrap checks its arguments', () => {
    expect(codeOf(() => cuda.wrap(0n, [2, 3], 'float32')).name).toBe('TypeError');
    expect(codeOf(() => cuda.wrap(0x1001n, [2, 3], 'bfloat16')).message).toMatch(/pointer: not aligned/);
    expect(codeOf(() => cuda.wrap(0x1000n, [2, 0], 'float32')).message).toMatch(/dims/);
    expect(codeOf(() => cuda.wrap(0x1000n, [2, 3], 'int8' as DType)).message).toMatch(/type: expected/);
    expect(codeOf(() => cuda.wrap(0x1000n, [2, 3], 'float32', { device: -1 })).message).toMatch(/options.device/);
  });
  it('a host backend refuses DeviceTensor logits, naming the argument', () => {
    const inputs = { ...makeInputs(), logits: wrapped(), maskedLogits: wrapped() };
    for (const backend of ['cpu', 'reference'] as const) {
      const e = codeOf(() => papoLossSync(inputs, { backend }));
      expect(e.name).toBe('RangeError');
      expect(e.message).toMatch(new RegExp(`logits: is a DeviceTensor; backend '${backend}' needs host data`));
    }
  });
  it('host and device paths cannot be mixed', () => {
    const inputs = { ...makeInputs(), maskedLogits: wrapped() };
    expect(codeOf(() => papoLossSync(inputs)).message).toMatch(/maskedLogits: expected host data like logits/);
  });
  it('a disposed DeviceTensor cannot be used', () => {
    const t = wrapped();
    t.dispose();
    t.dispose();  // idempotent
    expect(t.disposed).toBe(true);
    expect(codeOf(() => t.pointer).message).toMatch(/pointer: the DeviceTensor was disposed/);
    expect(codeOf(() => t.download()).message).toMatch(/download: the DeviceTensor was disposed/);
    const e = codeOf(() => papoLossSync({ ...makeInputs(), logits: t, maskedLogits: undefined }, { perceptionCoef: 0, maskedEntropyCoef: 0 }));
    expect(e.name).toBe('RangeError');
    expect(e.message).toMatch(/logits: the DeviceTensor was disposed/);
  });
  it('using disposes', () => {
    let t: DeviceTensor;
    {
      using u = wrapped();
      t = u;
    }
    expect(t.disposed).toBe(true);
  });
});

// ---- parity on a GPU -------------------------------------------------------------------------------------------

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

function cudaVsCpu(inputs: PapoInputs, options: PapoOptions, backend: 'cuda' | 'cuda-naive', type: DType) {
  const want = papoLossSync(inputs, { ...options, backend: 'cpu', inPlace: false });
  const got = papoLossSync(inputs, { ...options, backend, inPlace: false });
  expect(got.backend).toBe(backend);
  expectParity(got, want, type);
}

const optionSets: [string, PapoOptions][] = [
  ...(Object.keys(presets) as (keyof typeof presets)[]).map((p) => [`preset ${p}`, { preset: p }] as [string, PapoOptions]),
  ...(['k1', 'k2', 'k3', 'abs'] as const).map((e) => [`perception ${e}`, { perceptionEstimator: e, klEstimator: e }] as [string, PapoOptions]),
  ['perceptionClip', { perceptionClip: [0, 0.05] }],
  ['full entropy', { entropyMode: 'full', entropyCoef: 0.01, maskedEntropyCoef: 0.02 }],
  ['detachMasked', { detachMasked: true }],
  ['seq-mean-token-sum-norm, temperature', { lossAgg: 'seq-mean-token-sum-norm', temperature: 0.7 }],
  ['seq-mean-token-mean', { lossAgg: 'seq-mean-token-mean' }],
];

describe.skipIf(!gpu)(`cuda parity with cpu${gpu ? '' : ` (skipped: ${noGpuReason})`}`, () => {
  for (const backend of ['cuda', 'cuda-naive'] as const) {
    for (const [name, options] of optionSets)
      it(`${backend}: ${name}`, () => cudaVsCpu(makeInputs({ N: 12, V: 1003, mask: true }), options, backend, 'float32'));
    for (const type of ['float32', 'float16', 'bfloat16'] as const) {
      it(`${backend}: ${type}, -inf logits, [B, T, V]`, () =>
        cudaVsCpu(makeInputs({ dims: [3, 4, 4099], type, negInf: 0.05, mask: true }), {}, backend, type));
      it(`${backend}: ${type} with float32 gradients`, () =>
        cudaVsCpu(makeInputs({ N: 7, V: 2049, type }), { gradType: 'float32' }, backend, type));
    }
    it(`${backend}: maskedLogProbs`, () => {
      const inputs = makeInputs({ N: 9, V: 777, masked: false });
      inputs.maskedLogProbs = Float32Array.from({ length: 9 }, (_, i) => -1 - i / 10);
      cudaVsCpu(inputs, {}, backend, 'float32');
    });
    it(`${backend}: V = 1 and V = 7`, () => {
      cudaVsCpu(makeInputs({ N: 3, V: 1 }), {}, backend, 'float32');
      cudaVsCpu(makeInputs({ N: 5, V: 7 }), {}, backend, 'float32');
    });
    it(`${backend}: in place into host logits equals out of place`, () => {
      const a = makeInputs({ N: 6, V: 3001, type: 'bfloat16' }), b = makeInputs({ N: 6, V: 3001, type: 'bfloat16' });
      const out = papoLossSync(a, { backend });
      const inp = papoLossSync(b, { backend, inPlace: true });
      expect(inp.gradLogits!.data === (b.logits as Tensor).data).toBe(true);
      expect(Array.from((inp.gradLogits as Tensor).data)).toEqual(Array.from((out.gradLogits as Tensor).data));
    });
  }

  it('device-resident logits give DeviceTensor gradients equal to the host path', async () => {
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
    const got = papoLossSync({ ...inputs, logits: z, maskedLogits: zm }, { inPlace: true });
    expect(got.gradLogits).toBe(z);
    expectParity({ ...got, gradLogits: z.download(), gradMaskedLogits: zm.download() }, want, 'bfloat16');
    for (const t of [z, zm, zbad]) t.dispose();
  });
  it('logProbs on device data equals the CPU', () => {
    const inputs = makeInputs({ N: 9, V: 4099, type: 'float16' });
    const want = logProbsSync(inputs.logits, inputs.tokens, { backend: 'cpu' });
    const z = cuda.upload(inputs.logits as Tensor);
    const got = logProbsSync(z, inputs.tokens);
    expectClose(got.logProbs, want.logProbs, 1e-5, 1e-6, 'logProbs');
    expectClose(got.entropy, want.entropy, 1e-5, 1e-6, 'entropy');
    z.dispose();
  });
});
