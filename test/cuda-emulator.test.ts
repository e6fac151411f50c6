// What only the emulated device can show: its own checks (tools/cuda-emulator/test/emulator_test.cpp), the kernels' test
// program on it, injected failures, and the counters behind the review's host-side defects (pinned staging
// reused and released, no device-wide synchronisation, no leak when a DeviceTensor's wrapper fails). No device
// queries after a call's first: each family's planSuite (cuda-family.ts); the runtime calls and copies of a
// steady-state call: cuda-fixed-cost.test.ts.
// On a GPU machine the same kernels' test program runs on the hardware instead (last block).
import { cudaTarget, emulated } from './cuda-target';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cuda, papoLossSync } from '../lib';
import { native } from '../lib/native';
import type { Tensor } from '../lib/types';
import { codeOf, makeInputs } from './helpers';

const build = path.join(__dirname, '..', 'build');

function runProgram(file: string, args: string[] = []) {
  expect(fs.existsSync(file), `${file} (built by npm install)`).toBe(true);
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 120_000 });
  const out = `${r.stdout}\n${r.stderr}`;
  expect(r.status, out.slice(-4000)).toBe(0);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// Read once, by this process's first call that pins memory: idle pinned buffers go after 300 ms here.
process.env.PAPO_CUDA_PINNED_IDLE_MS = '300';

describe.runIf(emulated)('the emulated device', () => {
  it('passes its own checks against what a GPU does (barriers, shuffles, bounds, alignment, streams, faults)', () => {
    const out = runProgram(path.join(build, 'Emulated', 'emulator_test'));
    expect(out).toMatch(/\d+ passed, 0 failed/);
  });

  it('runs the kernels\' test program (papo_cuda_test) on every family, staged and device-resident', () => {
    const out = runProgram(path.join(build, 'Emulated', 'papo_cuda_test'));
    expect(out).toMatch(/all CUDA parity checks passed/);
  });

  it('the GPU benchmark (papo_cuda_test --bench) runs every case, rehearsed at a small size, with its predictions', () => {
    // The GPU lease runs it at N=8192 (scripts/gpu-check.sh) with the static report's predictions; here it proves
    // every case runs and reports, and that a prediction for the device's model, case and shape is printed beside
    // its row (a file of the static report's format with one row for this shape).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'papo-predictions-'));
    const file = path.join(dir, 'predictions.tsv');
    fs.writeFileSync(file, ['# napkin prediction by a test', 'gpu\tcase\tversion\tdtype\tN\tV\tms\tratio\tbound',
      'H200\tfwd+bwd both paths\tk2\tbfloat16\t16\t257\t9.8765\t1.5\tissue',
      'H100 SXM\tfwd+bwd both paths\tk2\tbfloat16\t16\t257\t1.2345\t1.1\tbytes',
      'H100 SXM\tforward only (1 path)\tk1\tfloat32\t16\t257\t0.5\t1.02\tbytes', ''].join('\n'));
    const out = runProgram(path.join(build, 'Emulated', 'papo_cuda_test'), ['--bench', '16', '257', '--predictions', file]);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(out).toMatch(/# predictions: napkin prediction by a test/);
    const rows = out.split('\n').filter((l) => l.startsWith('JSON ')).map((l) => JSON.parse(l.slice(5)));
    const cases = ['fwd+bwd both paths', 'fwd+bwd detachMasked', 'fwd+bwd gspo (phases)', 'fwd+bwd in place', 'forward only (1 path)'];
    for (const dtype of ['bfloat16', 'float32'])
      for (const c of cases) {
        const row = rows.find((r) => r.dtype === dtype && r.case === c);
        expect(row, `${dtype} ${c}`).toBeDefined();
        expect(row.medianMs).toBeGreaterThan(0);
        expect(row.extraDeviceMiB, `${dtype} ${c}: the call's own device memory, O(N)`).toBeLessThan(64);
      }
    expect(rows.filter((r) => r.case === 'fwd+bwd both paths').map((r) => r.kernel).sort()).toEqual(
      ['k0 naive', 'k0 naive', 'k1 two-pass', 'k1 two-pass', 'k2 fused', 'k2 fused', 'k3 cluster', 'k3 cluster',
      'k4 split rows', 'k4 split rows']);
    // the emulated device is an H100: its model's rows, matched by case, version, dtype and shape
    const predicted = rows.filter((r) => r.predictedMs !== undefined)
      .map((r) => `${r.case} ${r.kernel} ${r.dtype}: ${r.predictedMs} ${r.predictedBound} ${r.predictedGpu}`);
    expect(predicted.sort()).toEqual(['forward only (1 path) k1 two-pass float32: 0.5 bytes H100 SXM',
      'fwd+bwd both paths k2 fused bfloat16: 1.2345 bytes H100 SXM']);
  });

  it('papo_cuda_test --host-cost counts a steady-state call and estimates its host time from the counts', () => {
    const out = runProgram(path.join(build, 'Emulated', 'papo_cuda_test'), ['--host-cost', '256']);
    expect(out).toMatch(/a steady-state call, N=256: 10 runtime calls \(2 launches, 2 copies, 1 stream waits, 3 light queries\), 6144 bytes up, 4240 bytes down/);
    expect(out).toMatch(/estimated host time beyond the kernels: [\d.]+ us/);
  });

  it('an allocation that fails again after the pool gave its idle memory back is PAPO_OUT_OF_MEMORY with the bytes; the next call works', () => {
    const emu = native();
    const inputs = makeInputs({ N: 4, V: 500 });
    const want = papoLossSync(inputs, { backend: 'cpu' }).loss;
    emu.emuInjectFault!('cudaMalloc', 1);  // once: the retry after trimming the pool succeeds
    expect(papoLossSync(inputs, { backend: 'cuda' }).loss).toBeCloseTo(want, 6);
    emu.emuInjectFault!('cudaMalloc', 1, 2);
    const e = codeOf(() => papoLossSync(inputs, { backend: 'cuda' }));
    expect(e.code).toBe('PAPO_OUT_OF_MEMORY');
    expect(e.message).toMatch(/\d+ bytes/);
    expect(papoLossSync(inputs, { backend: 'cuda' }).loss).toBeCloseTo(papoLossSync(inputs, { backend: 'cpu' }).loss, 6);
  });

  it('an injected launch or copy failure is PAPO_CUDA_ERROR; the next call works', () => {
    const emu = native();
    const inputs = makeInputs({ N: 4, V: 500 });
    for (const kind of ['launch', 'memcpy'] as const) {
      emu.emuInjectFault!(kind, 1);
      const e = codeOf(() => papoLossSync(inputs, { backend: 'cuda' }));
      expect(e.code, kind).toBe('PAPO_CUDA_ERROR');
      expect(e.message).toMatch(/injected/);
    }
    const z = cuda.upload(inputs.logits as Tensor);
    emu.emuInjectFault!('memcpy', 1);
    expect(codeOf(() => z.download()).code).toBe('PAPO_CUDA_ERROR');
    expect(Array.from(z.download().data)).toEqual(Array.from((inputs.logits as Tensor).data));
    z.dispose();
    expect(papoLossSync(inputs, { backend: 'cuda' }).loss).toBeCloseTo(papoLossSync(inputs, { backend: 'cpu' }).loss, 6);
  });

  it('pinned staging is reused across host-data calls and released when idle', async () => {
    const emu = native();
    const inputs = makeInputs({ N: 16, V: 3000, type: 'bfloat16' });
    papoLossSync(inputs, { backend: 'cuda' });
    const first = emu.emuStats!().hostAllocs;
    for (let i = 0; i < 3; i++) papoLossSync(inputs, { backend: 'cuda' });
    expect(emu.emuStats!().hostAllocs).toBe(first);
    expect(emu.emuStats!().liveHostBytes).toBeGreaterThan(0);
    // PAPO_CUDA_PINNED_IDLE_MS=300 (this file's): well before 3 s
    for (let i = 0; i < 30 && emu.emuStats!().liveHostBytes > 0; i++) await sleep(100);
    expect(emu.emuStats!().liveHostBytes).toBe(0);
  });

  it('nothing synchronises the whole device: upload, memset, copy, download, papoLoss, logProbs', () => {
    const emu = native();
    const inputs = makeInputs({ N: 6, V: 1000, type: 'float32' });
    emu.emuReset!();
    const z = cuda.upload(inputs.logits as Tensor), zm = cuda.upload(inputs.maskedLogits as Tensor);
    const r = papoLossSync({ ...inputs, logits: z, maskedLogits: zm });
    papoLossSync(inputs, { backend: 'cuda' });
    (r.gradLogits as { download(): Tensor }).download();
    for (const t of [z, zm, r.gradLogits, r.gradMaskedLogits] as { dispose(): void }[]) t.dispose();
    expect(emu.emuStats!().deviceSyncs).toBe(0);
  });

  it('a failure while wrapping a new allocation frees it', () => {
    const emu = native();
    const inputs = makeInputs({ N: 4, V: 1000 });
    const before = emu.emuStats!();
    const liveBefore = cuda.memInfo().liveAllocations;
    emu.emuFailNextExternal!();
    expect(codeOf(() => cuda.upload(inputs.logits as Tensor)).code).toBe('PAPO_INTERNAL');
    // freed back to the stream-ordered pool, which may keep it for the next allocation
    const after = emu.emuStats!();
    expect(after.poolFrees - before.poolFrees).toBe(after.poolAllocs - before.poolAllocs);
    expect(after.poolAllocs - before.poolAllocs).toBe(1);
    expect(cuda.memInfo().liveAllocations).toBe(liveBefore);
  });
});

describe.runIf(!emulated)(`the kernels' test program on the ${cudaTarget} GPU`, () => {
  it('papo_cuda_test passes against the hardware', () => {
    const out = runProgram(path.join(build, 'Release', 'papo_cuda_test'));
    expect(out).toMatch(/all CUDA parity checks passed/);
  });
});
