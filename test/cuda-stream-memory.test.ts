// The GPU path's steady state on the emulated device, by its counters: device calls into caller-owned gradients
// allocate nothing the device must be asked for, fresh DeviceTensor gradients come from the stream-ordered pool
// and go back to it on dispose() without waiting for the device, and staged host-data calls do the same.
import { emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, papoLossSync, type DeviceTensor } from '../lib';
import { native } from '../lib/native';
import type { Tensor } from '../lib/types';
import { makeInputs } from './helpers';

describe.runIf(emulated)('stream-ordered device memory (emulated device counters)', () => {
  const emu = native();
  const stats = () => emu.emuStats!();
  const diff = (a: ReturnType<typeof stats>, b: ReturnType<typeof stats>) => ({
    mallocs: b.mallocs - a.mallocs, frees: b.frees - a.frees, hostAllocs: b.hostAllocs - a.hostAllocs,
    deviceSyncs: b.deviceSyncs - a.deviceSyncs, deviceDrains: b.deviceDrains - a.deviceDrains,
    poolAllocs: b.poolAllocs - a.poolAllocs, poolFrees: b.poolFrees - a.poolFrees, poolGrowths: b.poolGrowths - a.poolGrowths,
  });

  it('100 device calls with options.out: no cudaMalloc, cudaFree or cudaHostAlloc, no device-wide wait', () => {
    const inputs = makeInputs({ N: 4, V: 300, seed: 9 });
    const keep = [cuda.upload(inputs.logits as Tensor), cuda.upload(inputs.maskedLogits as Tensor)];
    const on = { ...inputs, logits: keep[0], maskedLogits: keep[1] };
    const out = { gradLogits: cuda.upload(inputs.logits as Tensor), gradMaskedLogits: cuda.upload(inputs.logits as Tensor) };
    // Device data only: a host-data call would lend pinned staging, whose release later (cudaFreeHost) waits for
    // the device.
    const fresh = papoLossSync(on, { backend: 'cuda' });
    const want = (fresh.gradLogits as DeviceTensor).download();
    (fresh.gradLogits as DeviceTensor).dispose();
    (fresh.gradMaskedLogits as DeviceTensor).dispose();
    papoLossSync(on, { backend: 'cuda', out });  // the first call may grow the pool
    const before = stats();
    for (let i = 0; i < 100; i++) papoLossSync(on, { backend: 'cuda', out });
    const d = diff(before, stats());
    expect(d).toMatchObject({ mallocs: 0, frees: 0, hostAllocs: 0, deviceSyncs: 0, deviceDrains: 0, poolGrowths: 0 });
    expect(d.poolAllocs, 'each call\'s per-token buffer, from the pool').toBe(100);
    expect(d.poolFrees).toBe(100);
    expect(Array.from(out.gradLogits.download().data)).toEqual(Array.from(want.data));
    for (const t of [...keep, ...Object.values(out)]) t.dispose();
  });

  it('fresh DeviceTensor gradients: from the pool, and dispose() gives them back without waiting for the device', () => {
    const inputs = makeInputs({ N: 4, V: 300, seed: 10 });
    const on = { ...inputs, logits: cuda.upload(inputs.logits as Tensor), maskedLogits: cuda.upload(inputs.maskedLogits as Tensor) };
    const step = () => {
      const r = papoLossSync(on, { backend: 'cuda' });
      (r.gradLogits as DeviceTensor).dispose();
      (r.gradMaskedLogits as DeviceTensor).dispose();
    };
    step();
    const before = stats();
    for (let i = 0; i < 20; i++) step();
    const d = diff(before, stats());
    expect(d).toMatchObject({ mallocs: 0, frees: 0, deviceSyncs: 0, deviceDrains: 0, poolGrowths: 0 });
    expect(d.poolAllocs).toBe(60);  // two gradients and the per-token buffer a call
    expect(d.poolFrees).toBe(60);
    on.logits.dispose();
    on.maskedLogits.dispose();
  });

  it('staged host-data calls: device scratch from the pool; pinned staging reused; no device-wide wait', () => {
    const inputs = makeInputs({ N: 8, V: 2000, seed: 11, type: 'bfloat16' });
    for (const backend of ['cuda', 'cuda-naive'] as const) {
      papoLossSync(inputs, { backend });
      const before = stats();
      for (let i = 0; i < 5; i++) papoLossSync(inputs, { backend });
      const d = diff(before, stats());
      expect(d, backend).toMatchObject({ mallocs: 0, frees: 0, hostAllocs: 0, deviceSyncs: 0, deviceDrains: 0, poolGrowths: 0 });
      expect(d.poolAllocs, backend).toBeGreaterThanOrEqual(10);
    }
  });

  it('a kernel reading a DeviceTensor after dispose() is caught as a use after free', () => {
    const inputs = makeInputs({ N: 4, V: 300, seed: 12 });
    const z = cuda.upload(inputs.logits as Tensor);
    const view = cuda.wrap(z.pointer, [4, 300], 'float32');
    const zm = cuda.upload(inputs.maskedLogits as Tensor);
    z.dispose();  // freed in the order of the legacy stream: the next work there finds it gone
    let err: Error | null = null;
    try {
      papoLossSync({ ...inputs, logits: view, maskedLogits: zm }, { backend: 'cuda' });
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(/cudaFreeAsync/);
    zm.dispose();
  });
});
