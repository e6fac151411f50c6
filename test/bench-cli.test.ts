// `npm run bench -- --help` prints the usage and exits at once (no 50 s run), and an unknown option is an error
// that shows the usage too.
import { spawnSync } from 'node:child_process';
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
