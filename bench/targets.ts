// The steady-state targets in one run (node dist/bench/targets.js): V = 151936, N = 64, both paths, forward +
// backward, preset papo-g; fresh gradients against the same options.out buffers reused, fp32 and bf16, the AVX2
// kernels (a child process with PAPO_CPU_ISA=avx2, read at load) and forward only. Medians of 9 calls after 2
// warm-up calls. Throughput in logits elements per second: 2·N·V / t with gradients, N·V / t forward only.
// PAPO_BENCH_BASELINE=<another build's papo_kernels.node> adds old against new: child processes of this script,
// the baseline's addon (PAPO_ADDON_PATH) and this one's taking turns, and the ratio of their medians per case.
import { execFileSync, execSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { info, logProbsSync, papoLossSync } from '../lib';
import { native } from '../lib/native';
import type { DType, PapoInputs, PapoOptions, Tensor } from '../lib/types';
import { makeBatch } from './cases';

const N = 64, V = 151936, CALLS = 9, WARM = 2;

/** Medians of the cases, run in turns (one call of each per round) so that a load that comes and goes on a
 * shared machine weighs on every case alike and the ratios hold. */
function medians(cases: Record<string, () => void>): Record<string, number> {
  const ms: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (let i = 0; i < WARM + CALLS; i++)
    for (const [k, fn] of Object.entries(cases)) {
      const t = process.hrtime.bigint();
      fn();
      if (i >= WARM) ms[k].push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  return Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, v.sort((a, b) => a - b)[CALLS >> 1]]));
}

function outFor(batch: PapoInputs): PapoOptions['out'] {
  const copy = (t: Tensor) => ({ ...t, data: t.data.slice() });
  return { gradLogits: copy(batch.logits as Tensor), gradMaskedLogits: copy(batch.maskedLogits as Tensor) };
}

function emptyOut(batch: PapoInputs): PapoOptions['out'] {
  const empty = (t: Tensor) => ({
    ...t, data: t.type === 'float32' ? new Float32Array(t.data.length) : new Uint16Array(t.data.length),
  });
  return { gradLogits: empty(batch.logits as Tensor), gradMaskedLogits: empty(batch.maskedLogits as Tensor) };
}

/** fresh: also the fresh-allocation cases (the children of the comparisons time the kernels only). */
function measure(fresh: boolean): Record<string, number> {
  const r: Record<string, number> = {};
  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    const batch = makeBatch(N, V, dtype);
    const out = outFor(batch);
    const opts: PapoOptions = { backend: 'cpu', preset: 'papo-g' };
    const cases: Record<string, () => void> = {
      [`${dtype} steady`]: () => papoLossSync(batch, { ...opts, out }),
      // with the entropy terms (papo-g has none), which read each row once more for log p
      [`${dtype} steady, entropy`]: () => papoLossSync(batch, { ...opts, preset: 'papo-g-7b', out }),
      [`${dtype} forward only`]: () => logProbsSync(batch.logits, batch.tokens, { backend: 'cpu' }),
    };
    if (fresh) {
      // the memory floor of fwd+bwd: both paths' logits read once and their gradients written once, as a copy
      // (not in the baseline comparison's children: an older addon may not have it)
      cases[`${dtype} copy floor`] = () => native().cpuCopyFloor(2 * N * V * (dtype === 'float32' ? 4 : 2));
      cases[`${dtype} fresh`] = () => papoLossSync(batch, opts);
      // what fresh gradients cost before they were advised onto huge pages: plain typed arrays each call
      cases[`${dtype} fresh plain`] = () => papoLossSync(batch, { ...opts, out: emptyOut(batch) });
    }
    Object.assign(r, medians(cases));
  }
  return r;
}

type ChildResult = { isa: string; ms: Record<string, number> };
function child(env: Record<string, string>): ChildResult {
  return JSON.parse(execFileSync(process.execPath, [__filename, '--child'], { env: { ...process.env, ...env }, encoding: 'utf8' }));
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];

/** The baseline addon against this one, in turns of child processes (ROUNDS each, both ISAs), per case: the
 * median of each side's per-child medians and the median of the per-round ratios. */
function compare(baseline: string): void {
  const ROUNDS = 5;
  const sides = { baseline: { PAPO_ADDON_PATH: baseline }, 'this build': {} as Record<string, string> };
  const runs: Record<string, ChildResult[]> = {};
  for (let r = 0; r < ROUNDS; r++)
    for (const isa of ['', 'avx2'])
      for (const [side, env] of Object.entries(sides))
        (runs[`${side}|${isa}`] ??= []).push(child(isa ? { ...env, PAPO_CPU_ISA: isa } : env));
  console.log(`\nBaseline ${baseline} against this build, ${ROUNDS} rounds of child processes in turns (ms: medians)\n`);
  console.log('| case | ISA | baseline ms | this ms | baseline / this |\n|---|---|---|---|---|');
  for (const isa of ['', 'avx2'])
    for (const k of Object.keys(runs[`this build|${isa}`][0].ms)) {
      const b = runs[`baseline|${isa}`], t = runs[`this build|${isa}`];
      const ratios = b.map((x, i) => x.ms[k] / t[i].ms[k]);
      console.log(`| ${k} | ${t[0].isa} | ${median(b.map((x) => x.ms[k])).toFixed(2)} | ${median(t.map((x) => x.ms[k])).toFixed(2)} | ` +
        `${median(ratios).toFixed(2)}x (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}) |`);
    }
}

/** A python with torch (PAPO_PYTHON, python3, Debian's /usr/bin/python3), or null. */
function torchPython(): string | null {
  for (const py of [process.env.PAPO_PYTHON, 'python3', '/usr/bin/python3'])
    if (py && spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return py;
  return null;
}

/** PyTorch CPU eager on the same shapes and thread count, after checking that it computes the same objective as
 * the float64 reference (bench/torch_peer.py --check); a note instead where torch is absent or the check fails. */
function torchRow(threads: number): { ms: number; label: string } | string {
  const py = torchPython();
  if (!py) return 'PyTorch peer skipped: no python3 with torch (Debian: apt-get install python3-torch)';
  const peer = path.join(__dirname, '..', '..', 'bench', 'torch_peer.py');
  const fixture = path.join(os.tmpdir(), `papo-torch-fixture-${process.pid}.json`);
  fs.writeFileSync(fixture, execFileSync(process.execPath, [path.join(__dirname, 'torch-fixture.js')]));
  const check = spawnSync(py, [peer, '--check', fixture], { encoding: 'utf8' });
  fs.rmSync(fixture, { force: true });
  if (check.status !== 0) return `PyTorch peer skipped: it does not compute the package's objective\n${check.stdout}${check.stderr}`;
  const r = JSON.parse(execFileSync(py, [peer, '--cpu', String(N), String(V), String(threads)], { encoding: 'utf8' })) as
    { medianMs: number; threads: number; torch: string };
  return { ms: r.medianMs, label: `PyTorch ${r.torch} CPU eager, fp32, ${r.threads} threads (checked against the reference)` };
}

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify({ isa: info().cpuIsa, ms: measure(false) }));
} else {
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { cwd: __dirname }).toString().trim();
  } catch { /* not a checkout */ }
  const i = info();
  console.log(`papo-kernels @ ${commit}: ${os.cpus()[0]?.model.trim()}, ${os.cpus().length} cores, ` +
    `${i.cpuIsa} kernels on ${i.threads} threads`);
  console.log(`V = ${V}, N = ${N}, both paths, preset papo-g, median of ${CALLS} calls\n`);
  const ms = measure(true);
  const expFloor = native().cpuExpFloor();  // exponentials per second
  const avx2 = child({ PAPO_CPU_ISA: 'avx2' });
  const g = (t: number, paths = 2) => ((paths * N * V) / t / 1e3).toFixed(0);
  const vsSteady = (k: string, steady: string) => `${g(ms[k])} (${(ms[k] / ms[steady]).toFixed(2)}x steady)`;
  const rows: [string, string, string][] = [
    ['fp32, steady state (out reused)', ms['float32 steady'].toFixed(2), g(ms['float32 steady'])],
    ['fp32, steady state, entropy terms (papo-g-7b)', ms['float32 steady, entropy'].toFixed(2), g(ms['float32 steady, entropy'])],
    ['fp32, fresh allocation', ms['float32 fresh'].toFixed(2), vsSteady('float32 fresh', 'float32 steady')],
    ['fp32, fresh plain typed arrays (before huge pages)', ms['float32 fresh plain'].toFixed(2), vsSteady('float32 fresh plain', 'float32 steady')],
    ['bf16, steady state', ms['bfloat16 steady'].toFixed(2), g(ms['bfloat16 steady'])],
    ['bf16, steady state, entropy terms (papo-g-7b)', ms['bfloat16 steady, entropy'].toFixed(2), g(ms['bfloat16 steady, entropy'])],
    ['bf16, fresh allocation', ms['bfloat16 fresh'].toFixed(2), vsSteady('bfloat16 fresh', 'bfloat16 steady')],
    [`fp32, ${avx2.isa} kernels (PAPO_CPU_ISA=avx2), steady`, avx2.ms['float32 steady'].toFixed(2), g(avx2.ms['float32 steady'])],
    ['floor: a copy of fp32 fwd+bwd\'s bytes (both paths\' logits in, gradients out; resident, streaming stores, all threads)', ms['float32 copy floor'].toFixed(2), g(ms['float32 copy floor'])],
    ['floor: a copy of bf16 fwd+bwd\'s bytes', ms['bfloat16 copy floor'].toFixed(2), g(ms['bfloat16 copy floor'])],
    ['floor: the kernels\' exp alone, data in L1, all threads (fwd+bwd takes one per element)', (2 * N * V / expFloor * 1e3).toFixed(2), (expFloor / 1e6).toFixed(0)],
    ['fp32 forward only (logProbs, one path)', ms['float32 forward only'].toFixed(2), g(ms['float32 forward only'], 1)],
    ['bf16 forward only (logProbs, one path)', ms['bfloat16 forward only'].toFixed(2), g(ms['bfloat16 forward only'], 1)],
  ];
  const torch = torchRow(i.threads);
  if (typeof torch === 'string') console.log(torch + '\n');
  else rows.push([torch.label, torch.ms.toFixed(2),
    `${g(torch.ms)} (papo-kernels fp32 ${(torch.ms / ms['float32 steady']).toFixed(1)}x faster steady, ` +
    `${(torch.ms / ms['float32 fresh']).toFixed(1)}x fresh)`]);
  console.log('| case | ms | Melem/s |\n|---|---|---|');
  for (const [c, t, m] of rows) console.log(`| ${c} | ${t} | ${m} |`);
  if (process.env.PAPO_BENCH_BASELINE) compare(process.env.PAPO_BENCH_BASELINE);
}
