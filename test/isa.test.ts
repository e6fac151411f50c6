// Every instruction-set path of the CPU kernels against the reference, with the gradient's ways agreeing bit for bit
// (native/cpu/row_kernels.h), and bit-identical results across thread counts. The kernels are chosen once per
// process, so each variant runs in a child process.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { info } from '../lib';

const script = path.join(__dirname, 'fixtures', 'isa-child.js');
const dist = path.join(__dirname, '..', 'dist', 'lib', 'index.js');

function runChild(env: Record<string, string>) {
  const out = execFileSync(process.execPath, [script, dist], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return JSON.parse(out) as { isa: string; threads: number; maxRelErr: number; digest: string; badRows: string[]; waysDiffer: string[] };
}

describe('instruction sets and threads', () => {
  const best = info().cpuIsa;
  const isas = ['baseline', 'avx2', 'avx512'].slice(0, ['baseline', 'avx2', 'avx512'].indexOf(best) + 1);
  for (const isa of isas) {
    it(`${isa} kernels match the reference`, () => {
      const r = runChild({ PAPO_CPU_ISA: isa });
      expect(r.isa).toBe(isa);
      expect(r.maxRelErr).toBeLessThan(1e-5);
      for (const message of r.badRows) expect(message).toMatch(/^logits contains NaN in row 1$/);
      expect(r.waysDiffer, 'gradients out of place (kept exponentials, streamed) against in place').toEqual([]);
    });
  }
  it('results are bit-identical for 1, 2 and 3 threads', () => {
    const digests = [1, 2, 3].map((t) => runChild({ PAPO_NUM_THREADS: String(t) }));
    expect(digests.map((d) => d.threads)).toEqual([1, 2, 3]);
    expect(new Set(digests.map((d) => d.digest)).size).toBe(1);
  });
});
