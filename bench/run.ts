// npm run bench: the native CPU backend against the naive float64 reference on the same inputs, next to the
// machine's roofline (a host memcpy moving the same minimal bytes: both logits read once, both gradients
// written once). Prints a table and appends JSON lines to bench/results/cpu.jsonl.
//   node dist/bench/run.js [--quick] [--n 64] [--v 151936]
import { execSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { info, logProbsSync, papoLossSync } from '../lib';
import type { PapoInputs } from '../lib/types';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const N = arg('n', 64);
const V = arg('v', 151936);
const refRuns = arg('ref-runs', 2);
const runs = arg('runs', 15);

function inputs(n: number): PapoInputs {
  const z = new Float32Array(n * V), zm = new Float32Array(n * V);
  for (let i = 0; i < n * V; i++) {
    z[i] = Math.sin(i * 0.37) * 6;
    zm[i] = Math.cos(i * 0.11) * 6;
  }
  return {
    logits: { data: z, dims: [n, V], type: 'float32' },
    maskedLogits: { data: zm, dims: [n, V], type: 'float32' },
    tokens: Int32Array.from({ length: n }, (_, i) => (i * 7919) % V),
    advantages: Float32Array.from({ length: n }, (_, i) => ((i % 5) - 2) / 2),
    oldLogProbs: Float32Array.from({ length: n }, () => -12),
    refLogProbs: Float32Array.from({ length: n }, () => -12),
  };
}

function time(fn: () => void, count: number): number[] {
  fn();  // warm-up: page faults, thread start, branch predictors
  const ms: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return ms.sort((a, b) => a - b);
}
const median = (a: number[]) => a[Math.floor(a.length / 2)];

const batch = inputs(N);
const elements = 2 * N * V;  // both paths
const bytesFwdBwd = elements * 4 * 2;  // read both logits, write both gradients (fp32)
const bytesFwd = elements * 4;

// Roofline: the same bytes through memcpy (read a buffer, write another), on all cores like the kernels.
const src = new Float32Array(elements), dst = new Float32Array(elements);
src.fill(1);
const memcpyMs = median(time(() => dst.set(src), runs));

type Row = { case: string; backend: string; ms: number[]; bytes: number };
const rows: Row[] = [];
rows.push({ case: 'papoLoss fwd+bwd', backend: 'reference', ms: time(() => papoLossSync(batch, { backend: 'reference' }), refRuns), bytes: bytesFwdBwd });
rows.push({ case: 'papoLoss fwd+bwd', backend: 'cpu', ms: time(() => papoLossSync(batch, { backend: 'cpu' }), runs), bytes: bytesFwdBwd });
rows.push({ case: 'logProbs fwd (1 path)', backend: 'reference', ms: time(() => logProbsSync(batch.logits, batch.tokens, { backend: 'reference' }), refRuns), bytes: bytesFwd / 2 });
rows.push({ case: 'logProbs fwd (1 path)', backend: 'cpu', ms: time(() => logProbsSync(batch.logits, batch.tokens, { backend: 'cpu' }), runs), bytes: bytesFwd / 2 });

const i = info();
const cpuName = os.cpus()[0]?.model ?? 'unknown CPU';
let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { cwd: __dirname, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
} catch { /* not a git checkout */ }

console.log(`papo-kernels ${i.version} @ ${commit}: ${cpuName}, ${os.cpus().length} cores, cpu kernels ${i.cpuIsa}, ${i.threads} threads`);
console.log(`N=${N} V=${V} fp32, both paths; roofline: memcpy of ${(bytesFwdBwd / 2 / 1e6).toFixed(0)} MB in ${memcpyMs.toFixed(2)} ms` +
  ` = ${(bytesFwdBwd / memcpyMs / 1e6).toFixed(1)} GB/s (read + write)`);
console.log('| case | backend | median ms | spread ms | Melem/s | GB/s | % roofline | speedup |');
console.log('|---|---|---|---|---|---|---|---|');
const lines: string[] = [];
for (const r of rows) {
  const med = median(r.ms);
  const elems = r.case.startsWith('logProbs') ? N * V : elements;
  const base = rows.find((x) => x.case === r.case && x.backend === 'reference')!;
  const speedup = median(base.ms) / med;
  const gbs = r.bytes / med / 1e6;
  const roof = (bytesFwdBwd / memcpyMs / 1e6);
  console.log(`| ${r.case} | ${r.backend} | ${med.toFixed(1)} | ${(r.ms[r.ms.length - 1] - r.ms[0]).toFixed(1)} | ` +
    `${(elems / med / 1e3).toFixed(1)} | ${gbs.toFixed(2)} | ${(100 * gbs / roof).toFixed(1)}% | ${speedup.toFixed(1)}x |`);
  lines.push(JSON.stringify({ date: new Date().toISOString(), commit, machine: `${os.hostname()}`, cpu: cpuName, cores: os.cpus().length,
    isa: i.cpuIsa, threads: i.threads, case: r.case, backend: r.backend, N, V, dtype: 'float32', medianMs: med,
    minMs: r.ms[0], maxMs: r.ms[r.ms.length - 1], melemPerS: elems / med / 1e3, gbPerS: gbs, rooflineGbPerS: roof, speedup }));
}
const out = path.join(__dirname, '..', '..', 'bench', 'results', 'cpu.jsonl');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.appendFileSync(out, lines.join('\n') + '\n');
console.log(`appended ${lines.length} lines to ${path.relative(process.cwd(), out)}`);
