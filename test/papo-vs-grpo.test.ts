// The README's PAPO-versus-GRPO example must keep running: a few steps of both runs, into a temporary SVG.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { chartSvg } from '../examples/papo-vs-grpo/chart';

const script = path.join(__dirname, '..', 'dist', 'examples', 'papo-vs-grpo.js');

it('dist/examples/papo-vs-grpo.js trains both runs and draws both curves', () => {
  const svg = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'papo-example-')), 'chart.svg');
  const out = execFileSync(process.execPath, [script], {
    encoding: 'utf8', env: { ...process.env, PAPO_EXAMPLE_STEPS: '3', PAPO_EXAMPLE_SVG: svg },
  });
  for (const run of ["GRPO (preset 'grpo')", "PAPO (preset 'papo-g')"]) {
    const m = new RegExp(`${run.replace(/[()]/g, '\\$&')} step 3: reward ([\\d.]+), perception KL ([\\d.]+)`).exec(out);
    expect(m, out).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(Number(m![2]))).toBe(true);
    expect(out).toMatch(new RegExp(`${run.replace(/[()]/g, '\\$&')}: greedy accuracy on 256 held-out images [\\d.]+%`));
  }
  const text = fs.readFileSync(svg, 'utf8');
  expect(text).toMatch(/^<svg /);
  expect(text).toContain('perception KL');
  // two runs x two panels x (per step, moving average), three points each
  const lines = [...text.matchAll(/<polyline points="([^"]+)"/g)].map((m) => m[1].split(' ').length);
  expect(lines).toEqual(new Array(8).fill(3));
});

it('a bad setting is an error naming its variable', () => {
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, PAPO_EXAMPLE_STEPS: 'many' } });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/PAPO_EXAMPLE_STEPS: expected a positive integer, got "many"/);
});

it('without --save it writes the untracked examples/output/, leaving the committed picture alone', () => {
  const committed = path.join(__dirname, '..', 'examples', 'papo-vs-grpo.svg');
  const before = fs.readFileSync(committed, 'utf8');
  const env = { ...process.env, PAPO_EXAMPLE_STEPS: '1' };
  delete env.PAPO_EXAMPLE_SVG;
  const out = execFileSync(process.execPath, [script], { encoding: 'utf8', env });
  expect(out).toContain(`wrote ${path.join(__dirname, '..', 'examples', 'output', 'papo-vs-grpo.svg')}`);
  expect(fs.readFileSync(committed, 'utf8')).toBe(before);
});

it('the perception KL panel marks the k3 clamp at 10 once a run nears it', () => {
  const run = (kl: number) => ({ name: 'PAPO', color: '#d62728', reward: [0.2, 0.5], perceptionKl: [0, kl] });
  expect(chartSvg([run(9.98)], [])).toContain('k3 clamp (10)');
  expect(chartSvg([run(0.3)], [])).not.toContain('k3 clamp');
});
