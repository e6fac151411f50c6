// The README's runnable example must keep running.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { expect, it } from 'vitest';

it('examples/train-step.js runs and prints a finite loss', () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'examples', 'train-step.js')], { encoding: 'utf8' });
  expect(out).toMatch(/masked \d+ of 256 cells/);
  const loss = Number(/loss (-?[\d.]+)/.exec(out)![1]);
  expect(Number.isFinite(loss)).toBe(true);
  expect(out).toMatch(/grad dims \[24,1000\] and \[24,1000\]/);
});

it('examples/vocab-parallel.js: worker-thread ranks get the unsplit loss, the same on every rank', () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'examples', 'vocab-parallel.js')], { encoding: 'utf8' });
  const losses = [...out.matchAll(/loss (-?[\d.]+)/g)].map((m) => m[1]);
  expect(losses.length).toBe(4);
  expect(new Set(losses).size).toBe(1);
  expect(out).toMatch(/every rank has the same loss, bit for bit/);
  expect(Number(/largest gradient difference (\S+)/.exec(out)![1].replace(/;$/, ''))).toBeLessThan(1e-6);
});
