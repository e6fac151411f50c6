// Fresh host gradients (no options.out): advised onto huge pages and 64-byte aligned, yet V8's own memory, freed
// by the collector as any typed array is, also within a synchronous loop; and usable through papo-kernels/tfjs.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { papoLossSync } from '../lib';
import { papoLossOp } from '../lib/tfjs';
import type { Tensor } from '../lib/types';
import { asanSlackMiB, makeInputs } from './helpers';

const script = path.join(__dirname, 'fixtures', 'host-gradient-child.js');
const dist = path.join(__dirname, '..', 'dist', 'lib', 'index.js');

function thpMode(): string {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'none';
  } catch {
    return 'none';
  }
}

describe('fresh host gradients', () => {
  it('200 calls in a synchronous loop: the memory returns after gc(), a held gradient keeps its values', () => {
    const out = execFileSync(process.execPath, ['--expose-gc', script, dist], { encoding: 'utf8' });
    const r = JSON.parse(out) as { before: number; peak: number; after: number; same: boolean; byteOffset: number; length: number; hugeHeld: number };
    const MiB = 2 ** 20;
    // 8 MiB of gradients a call: without prompt frees the loop would reach 1.6 GB
    expect((r.peak - r.before) / MiB, 'peak growth during the loop, MiB').toBeLessThan(400 + asanSlackMiB());
    expect((r.after - r.before) / MiB, 'growth after gc(), MiB').toBeLessThan(64 + asanSlackMiB());
    expect(r.same).toBe(true);
    expect(r.length).toBe(16 * 65536);
    expect(r.byteOffset).toBeLessThan(64);
    if (process.platform === 'linux' && (thpMode() === 'madvise' || thpMode() === 'always') && r.hugeHeld >= 0)
      expect(r.hugeHeld, 'AnonHugePages while a gradient is held, kB').toBeGreaterThanOrEqual(2048);
  });

  it('large gradients are aligned views; small ones plain arrays; both bit-identical to caller-owned buffers', () => {
    for (const V of [50, 70000]) {
      const inputs = makeInputs({ N: 16, V, seed: 3, masked: true });
      const r = papoLossSync(inputs, { backend: 'cpu' });
      const g = r.gradLogits!.data;
      expect(g.length).toBe(16 * V);
      if (V === 50) expect(g.byteOffset).toBe(0);
      else expect(g.buffer.byteLength - g.byteLength).toBe(64);
      const gradLogits = { data: new Float32Array(16 * V), dims: [16, V], type: 'float32' as const };
      papoLossSync(inputs, { backend: 'cpu', out: { gradLogits } });
      expect(Buffer.from(g.buffer, g.byteOffset, g.byteLength).equals(Buffer.from(gradLogits.data.buffer))).toBe(true);
    }
  });

  it('work through papo-kernels/tfjs: tf.grad gets the fused gradient of an advised buffer', async () => {
    await tf.setBackend('cpu');
    const inputs = makeInputs({ N: 16, V: 70000, seed: 4 });
    const { logits, maskedLogits, ...batch } = inputs;
    const z = tf.tensor((logits as Tensor).data as Float32Array, (logits as Tensor).dims);
    const zm = tf.tensor((maskedLogits as Tensor).data as Float32Array, (maskedLogits as Tensor).dims);
    const op = papoLossOp(batch);
    const [g] = tf.grads((a: tf.Tensor, b: tf.Tensor) => op(a, b))([z, zm]);
    const got = g.dataSync() as Float32Array;
    expect(op.lastResult!.gradLogits!.data.byteOffset).toBeLessThan(64);
    const want = papoLossSync(inputs, { backend: 'cpu' }).gradLogits!.data as Float32Array;
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))).toBe(true);
    tf.dispose([z, zm, g]);
  });
});
