// Concurrency, determinism and soak: many calls in flight give the bits of sequential calls; inputs stay alive
// while a call runs; thousands of calls leave RSS (and, on a GPU, device allocations) where they were.
import { describe, expect, it } from 'vitest';
import { cuda, papoLoss, papoLossSync } from '../lib';
import type { PapoResult, Tensor } from '../lib/types';
import { asanSlackMiB, makeInputs } from './helpers';

const bits = (r: PapoResult) => [r.loss, ...r.logProbs, ...r.entropy, ...(r.gradLogits as Tensor).data, ...(r.gradMaskedLogits as Tensor).data];

describe('concurrency', () => {
  it('24 papoLoss calls in flight equal sequential calls bit for bit', async () => {
    const inputs = Array.from({ length: 24 }, (_, k) => makeInputs({ N: 16, V: 4000 + k, seed: k + 1, type: k % 2 ? 'bfloat16' : 'float32' }));
    const sequential = inputs.map((i) => bits(papoLossSync(i)));
    const concurrent = await Promise.all(inputs.map((i) => papoLoss(i)));
    concurrent.forEach((r, k) => expect(bits(r)).toEqual(sequential[k]));
  });
  it('inputs stay alive while a call runs, even with no reference left', async () => {
    const want = bits(papoLossSync(makeInputs({ N: 64, V: 20000, seed: 9 })));
    const pending = papoLoss(makeInputs({ N: 64, V: 20000, seed: 9 }));  // nothing else holds these inputs
    const garbage: unknown[] = [];
    for (let k = 0; k < 200; k++) garbage.push(new Float64Array(50000));  // pressure the collector meanwhile
    (globalThis as { gc?: () => void }).gc?.();
    expect(bits(await pending)).toEqual(want);
  });
  it('repeated runs give identical bits', () => {
    const i = makeInputs({ N: 32, V: 9000, seed: 4 });
    const first = bits(papoLossSync(i));
    for (let k = 0; k < 5; k++) expect(bits(papoLossSync(i))).toEqual(first);
  });
});

describe('soak', () => {
  it('3000 calls (sync and async) leave RSS where it was', async () => {
    const inputs = makeInputs({ N: 8, V: 2000, seed: 3 });
    const round = async (n: number) => {
      for (let k = 0; k < n; k++) {
        if (k % 2) papoLossSync(inputs);
        else await papoLoss(inputs);
      }
    };
    await round(300);  // warm-up: pool threads, allocator arenas, JIT
    (globalThis as { gc?: () => void }).gc?.();
    const before = process.memoryUsage().rss;
    await round(3000);
    (globalThis as { gc?: () => void }).gc?.();
    const grown = (process.memoryUsage().rss - before) / 2 ** 20;
    console.log(`soak: 3000 calls, RSS ${grown >= 0 ? '+' : ''}${grown.toFixed(1)} MiB`);
    expect(grown).toBeLessThan(40 + asanSlackMiB());
  }, 60_000);
  it.skipIf(!cuda.available())('on a GPU: 1000 device-resident calls leave no device allocation behind', async () => {
    const i = makeInputs({ N: 8, V: 5000, type: 'bfloat16' });
    const z = cuda.upload(i.logits as Tensor), zm = cuda.upload(i.maskedLogits as Tensor);
    const before = cuda.memInfo();
    for (let k = 0; k < 1000; k++) {
      const r = await papoLoss({ ...i, logits: z, maskedLogits: zm });
      (r.gradLogits as { dispose(): void }).dispose();
      (r.gradMaskedLogits as { dispose(): void }).dispose();
    }
    const after = cuda.memInfo();
    expect(after.liveAllocations).toBe(before.liveAllocations);
    expect(before.free - after.free).toBeLessThan(64 * 2 ** 20);
    z.dispose();
    zm.dispose();
  }, 120_000);
});
