// Defect 3 of the CUDA review: a call on device 1 must never create a context on device 0 (the "restore" of
// the previous device used to select device 0 on fresh worker threads). Two emulated devices (the context
// counter is the emulator's); skipped on hardware.
import { cudaTarget, emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, info, papoLoss, papoLossSync } from '../lib';
import { native } from '../lib/native';
import type { Tensor } from '../lib/types';
import { makeInputs } from './helpers';

// Read when the addon loads, which is at the first call below (imports do not load it).
process.env.PAPO_EMU_DEVICES = '2';

describe.runIf(emulated)(`contexts on the ${cudaTarget} devices`, () => {
  it('calls on device 1, sync and on worker threads, touch no other device', async () => {
    expect(info().cudaDevices).toHaveLength(2);
    const emu = native();
    emu.emuReset!();
    const inputs = makeInputs({ N: 6, V: 900 });
    const z = cuda.upload(inputs.logits as Tensor, { device: 1 }), zm = cuda.upload(inputs.maskedLogits as Tensor, { device: 1 });
    const a = papoLossSync({ ...inputs, logits: z, maskedLogits: zm });
    const b = await Promise.all([0, 1, 2, 3, 4].map(() => papoLoss({ ...inputs, logits: z, maskedLogits: zm })));
    expect(b[4].loss).toBe(a.loss);
    cuda.memInfo(1);
    for (const t of [z, zm, a.gradLogits, a.gradMaskedLogits, ...b.flatMap((r) => [r.gradLogits, r.gradMaskedLogits])])
      (t as { dispose(): void }).dispose();
    expect(emu.emuStats!().contexts).toEqual([1]);
  });
});
