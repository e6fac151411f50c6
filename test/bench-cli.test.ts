// `npm run bench -- --help` prints the usage and exits at once (no 50 s run), an unknown option is an error that
// shows the usage too, and `--tiny` runs every row's code path, the GPU rows on the emulated device.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';

const script = path.join(__dirname, '..', 'dist', 'bench', 'run.js');

it('--help and -h print the usage and exit 0 without timing anything', () => {
  for (const flag of ['--help', '-h']) {
    const started = Date.now();
    const r = spawnSync(process.execPath, [script, flag], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: npm run bench \[-- OPTION\.\.\.\]/);
    expect(r.stdout).toMatch(/--full .*\n[\s\S]*--save .*\n[\s\S]*--no-save .*\n[\s\S]*--chart-only[\s\S]*--targets/);
    expect(r.stdout).not.toMatch(/exp floor|done: V=/);
    expect(Date.now() - started).toBeLessThan(10_000);
  }
});

it('an unknown option names itself, prints the usage and exits 2', () => {
  const r = spawnSync(process.execPath, [script, '--fulll'], { encoding: 'utf8' });
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^bench: unknown option '--fulll'\n\nusage: npm run bench/);
  expect(r.stdout).toBe('');
});

const emulatedBuild = fs.existsSync(path.join(__dirname, '..', 'build', 'Emulated', 'papo_kernels.node'));

it.runIf(emulatedBuild)('--tiny runs every row on the emulated device, the split rows beside their unsplit ones', () => {
  const r = spawnSync(process.execPath, [script, '--tiny'], { encoding: 'utf8', env: { ...process.env, PAPO_CUDA_EMULATE: '1' } });
  expect(r.status, r.stderr).toBe(0);
  for (const row of ['cpu split4 | ', 'cuda split4 | Emulated', 'cuda out | Emulated'])
    expect(r.stdout).toContain(`| fwd+bwd | bfloat16 | 1000 | ${row}`);
  for (const b of ['cpu', 'cuda'])
    for (const dtype of ['float32', 'bfloat16'])
      expect(r.stdout).toMatch(new RegExp(`^${b} split4 / ${b}, V = 1000 ${dtype} fwd\\+bwd, in turns \\(15 rounds, medians\\): fresh [\\d.]+x \\([\\d.]+ / [\\d.]+ ms\\)` +
        (b === 'cpu' ? ', out reused [\\d.]+x' : '$'), 'm'));
  expect(r.stdout).not.toMatch(/appended/);  // --tiny saves nothing
}, 180_000);
