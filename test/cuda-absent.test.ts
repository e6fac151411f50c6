// The CUDA entry points as the real addon reports them on a machine without a GPU: info() says why there is no
// device, every CUDA entry point fails with PAPO_UNSUPPORTED and the reason, and DeviceTensor views are checked
// in TypeScript. (test/cuda.test.ts runs the CUDA backend itself, on the emulated device or a GPU.)
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, info, logProbsSync, papoLossSync } from '../lib';
import type { DType, Tensor } from '../lib/types';
import { native } from '../lib/native';
import { codeOf, makeInputs } from './helpers';

delete process.env.PAPO_CUDA_EMULATE;
const gpu = cuda.available();

describe('CUDA without a device', () => {
  it.skipIf(gpu)('info() reports no device and the reason', () => {
    const i = info();
    expect(i.cudaDevices).toEqual([]);
    expect(i.cudaStatus.length).toBeGreaterThan(0);
    expect(i.backends).not.toContain('cuda');
  });
  // The runtime reports cudaErrorInsufficientDriver when there is no driver at all, which reads as "upgrade it".
  const noDriver = !gpu && info().cudaBuilt && native().info().cudaDriverVersion === 0;
  it.runIf(noDriver)('a machine without an NVIDIA driver is told so, not that its driver is insufficient', () => {
    expect(info().cudaStatus).toBe('no NVIDIA driver found (cudaErrorInsufficientDriver)');
    expect(codeOf(() => papoLossSync(makeInputs(), { backend: 'cuda' })).message)
      .toMatch(/^backend 'cuda' is not available: no CUDA device \(no NVIDIA driver found \(cudaErrorInsufficientDriver\)\)/);
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
