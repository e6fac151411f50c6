// A CUDA call's fixed cost, by the emulated device's counters: the runtime calls it makes, its copies and their
// bytes, once its shape is planned and its buffers pooled (second call onward). The loss terms are reduced on the
// device and the results come back in one copy of O(N) bytes: the per-token outputs the caller reads (4 bytes
// each) and a header, not every row's full record. Every per-token copy goes through pinned memory. The values are
// the CPU backend's within the suite's tolerances. docs/steady-state.md turns these counts into an estimate.
import { emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, logProbsSync, papoLossSync, type DeviceTensor } from '../lib';
import { native } from '../lib/native';
import type { PapoInputs, PapoOptions, Tensor } from '../lib/types';
import { expectParity } from './cuda-family';
import { makeInputs } from './helpers';

// Read once per process: no idle pinned buffer is freed while a test counts (a free is a runtime call).
process.env.PAPO_CUDA_PINNED_IDLE_MS = '600000';

describe.runIf(emulated)('the fixed cost of a CUDA call (emulated device counters)', () => {
  const emu = native();
  interface Cost { api: number; toHost: number; bytesToHost: number; toDevice: number; bytesToDevice: number;
    pageable: number; byName: Record<string, number> }
  /** The counters of the second of two calls of `call`. */
  function cost(call: () => void): Cost {
    call();
    const a = emu.emuStats!();
    call();
    const b = emu.emuStats!();
    const byName: Record<string, number> = {};
    for (const [k, v] of Object.entries(b.apiCallsByName)) if (v - (a.apiCallsByName[k] ?? 0)) byName[k] = v - (a.apiCallsByName[k] ?? 0);
    return { api: b.apiCalls - a.apiCalls, toHost: b.copiesToHost - a.copiesToHost, bytesToHost: b.bytesToHost - a.bytesToHost,
      toDevice: b.copiesToDevice - a.copiesToDevice, bytesToDevice: b.bytesToDevice - a.bytesToDevice,
      pageable: b.pageableCopies - a.pageableCopies, byName };
  }
  const upload = (inputs: PapoInputs) => ({ ...inputs, logits: cuda.upload(inputs.logits as Tensor),
    maskedLogits: inputs.maskedLogits ? cuda.upload(inputs.maskedLogits as Tensor) : undefined });
  const dispose = (...ts: (DeviceTensor | Tensor | undefined)[]) => {
    for (const t of ts) if (t && 'dispose' in t) (t as DeviceTensor).dispose();
  };
  /** A device call into `out`, and its result against the CPU backend's. */
  function deviceCall(N: number, options: PapoOptions = {}, masked = true) {
    const inputs = makeInputs({ N, V: 300, seed: N, masked });
    if (!masked) inputs.maskedLogProbs = Float32Array.from({ length: N }, (_, i) => -1 - i / N);
    const on = upload(inputs);
    const out = { gradLogits: cuda.upload(inputs.logits as Tensor),
      gradMaskedLogits: masked && !options.detachMasked ? cuda.upload(inputs.logits as Tensor) : undefined };
    let result = papoLossSync(on, { ...options, backend: 'cuda', out });
    const c = cost(() => { result = papoLossSync(on, { ...options, backend: 'cuda', out }); });
    expectParity({ ...result, gradLogits: out.gradLogits.download(), gradMaskedLogits: out.gradMaskedLogits?.download() },
      papoLossSync(inputs, { ...options, backend: 'cpu' }), 'float32');
    dispose(on.logits, on.maskedLogits as DeviceTensor | undefined, out.gradLogits, out.gradMaskedLogits);
    return c;
  }

  it('a steady-state device call into out: 10 runtime calls, one copy back of 16 bytes a row and a header', () => {
    const small = deviceCall(8), large = deviceCall(64);
    for (const c of [small, large]) {
      expect(c.api, JSON.stringify(c.byName)).toBeLessThanOrEqual(10);
      expect(c, JSON.stringify(c.byName)).toMatchObject({ toHost: 1, toDevice: 1, pageable: 0 });
    }
    // lp, entropy and both of the masked path: 4 floats a row, after a header of at most 256 bytes
    expect(large.bytesToHost - small.bytesToHost).toBe(56 * 16);
    expect(small.bytesToHost - 8 * 16).toBeGreaterThan(0);
    expect(small.bytesToHost - 8 * 16).toBeLessThanOrEqual(256);
  });

  it('without masked logits the copy back is 8 bytes a row', () => {
    const small = deviceCall(8, {}, false), large = deviceCall(64, {}, false);
    expect(large.bytesToHost - small.bytesToHost).toBe(56 * 8);
    expect(large).toMatchObject({ toHost: 1, pageable: 0 });
    expect(large.api).toBeLessThanOrEqual(10);
  });

  it('in place waits for the forward phase once more, still one copy back', () => {
    const inputs = makeInputs({ N: 16, V: 300, seed: 5 });
    const want = papoLossSync(inputs, { backend: 'cpu' });
    const on = upload(inputs);
    const c = cost(() => papoLossSync(on, { backend: 'cuda', inPlace: true }));
    expect(c, JSON.stringify(c.byName)).toMatchObject({ toHost: 1, toDevice: 1, pageable: 0 });
    // the fused call's 10, the second phase's launch and its cudaGetLastError, and the wait before it
    expect(c.byName.cudaStreamSynchronize).toBe(2);
    expect(c.api, JSON.stringify(c.byName)).toBeLessThanOrEqual(13);
    on.logits.dispose();
    (on.maskedLogits as DeviceTensor).dispose();
    const fresh = upload(inputs);
    const got = papoLossSync(fresh, { backend: 'cuda', inPlace: true });
    expectParity({ ...got, gradLogits: fresh.logits.download(), gradMaskedLogits: (fresh.maskedLogits as DeviceTensor).download() },
      want, 'float32');
    dispose(fresh.logits, fresh.maskedLogits as DeviceTensor);
  });

  it('the sequence phase copies every row\'s record down and its terms up once, mid-call', () => {
    const N = 32;
    const inputs = { ...makeInputs({ N, V: 300, seed: 6 }), seqLengths: Int32Array.of(10, 22) };
    const options: PapoOptions = { lossType: 'gspo' };
    const on = upload(inputs);
    const out = { gradLogits: cuda.upload(inputs.logits as Tensor), gradMaskedLogits: cuda.upload(inputs.logits as Tensor) };
    const c = cost(() => papoLossSync(on, { ...options, backend: 'cuda', out }));
    expect(c, JSON.stringify(c.byName)).toMatchObject({ toHost: 1, toDevice: 2, pageable: 0 });
    expect(c.bytesToHost).toBeGreaterThan(N * 16 * 4);  // the whole record of each row, ~216 bytes
    expect(c.byName.cudaStreamSynchronize).toBe(2);
    expectParity({ ...papoLossSync(on, { ...options, backend: 'cuda', out }), gradLogits: out.gradLogits.download(),
      gradMaskedLogits: out.gradMaskedLogits.download() }, papoLossSync(inputs, { ...options, backend: 'cpu' }), 'float32');
    dispose(on.logits, on.maskedLogits as DeviceTensor, out.gradLogits, out.gradMaskedLogits);
  });

  it('logProbs on device data: 10 runtime calls, one copy back of 8 bytes a row and a header', () => {
    const inputs = makeInputs({ N: 64, V: 300, seed: 7, masked: false });
    const z = cuda.upload(inputs.logits as Tensor);
    const c = cost(() => logProbsSync(z, inputs.tokens));
    expect(c.api, JSON.stringify(c.byName)).toBeLessThanOrEqual(10);
    expect(c).toMatchObject({ toHost: 1, toDevice: 1, pageable: 0 });
    expect(c.bytesToHost - 64 * 8).toBeLessThanOrEqual(256);
    z.dispose();
  });

  it('host data: every copy through pinned memory, the results still in one copy back beside the gradients\'', () => {
    const inputs = makeInputs({ N: 16, V: 300, seed: 8 });
    const c = cost(() => papoLossSync(inputs, { backend: 'cuda' }));
    expect(c.pageable, JSON.stringify(c.byName)).toBe(0);
    // the gradients of both paths (one chunk), then the results
    expect(c.toHost).toBe(3);
    expect(c.bytesToHost - 2 * 16 * 300 * 4).toBeLessThanOrEqual(256 + 16 * 16);
  });

  it('the device reduction gives the same bits every call', () => {
    const inputs = makeInputs({ N: 100, V: 20, seed: 9, mask: true });
    const on = upload(inputs);
    const runs = Array.from({ length: 3 }, () => papoLossSync(on, { backend: 'cuda', detachMasked: true }));
    const bits = (r: typeof runs[0]) => JSON.stringify([r.loss, r.metrics]);
    expect(new Set(runs.map(bits)).size).toBe(1);
    for (const r of runs) dispose(r.gradLogits as DeviceTensor, r.gradMaskedLogits as DeviceTensor | undefined);
    dispose(on.logits, on.maskedLogits as DeviceTensor);
  });
});
