// A worker thread torn down while its papoLoss and logProbs calls are pending must leave the process running:
// the calls' completions then find an environment that can no longer run JavaScript. Each way a worker goes
// (terminate(), process.exit() inside it, an uncaught exception inside it) runs in its own child process, 20
// times, on cpu and on cuda (the emulated device here), several children at once.
import { cudaTarget } from './cuda-target';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const script = path.join(__dirname, 'fixtures', 'teardown-child.js');
const dist = path.join(__dirname, '..', 'dist', 'lib', 'index.js');
const TRIES = 20;
const AT_ONCE = 4;

interface Outcome { code: number | null; signal: string | null; out: string }

function child(backend: string, how: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [script, dist, backend, how], { env: process.env });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

async function tries(backend: string, how: string): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < TRIES) {
      next++;
      outcomes.push(await child(backend, how));
    }
  };
  await Promise.all(Array.from({ length: AT_ONCE }, lane));
  return outcomes;
}

describe.each(['cpu', 'cuda'])('worker teardown with calls pending, %s', (backend) => {
  it.each(['terminate', 'exit', 'throw'])(`%s: the process exits cleanly ${TRIES} times in ${TRIES}`, async (how) => {
    const outcomes = await tries(backend, how);
    const bad = outcomes.filter((o) => o.code !== 0 || o.signal !== null || !o.out.includes('clean'));
    expect(bad.length, `${bad.length} of ${TRIES} on ${backend === 'cuda' ? `${cudaTarget} cuda` : 'cpu'} died, e.g. ${JSON.stringify(bad[0])}`).toBe(0);
  });
});
