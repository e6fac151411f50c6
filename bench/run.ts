// npm run bench: every backend against the naive float64 reference on the same inputs, next to the roofline of
// the machine measured in the same run (a copy moving the same minimal bytes), for vocab 32000 and 151936,
// float32 and bfloat16, forward only (logProbs) and forward + backward (papoLoss, both paths). The usage below is
// what --help prints; bench/README.md says how to read the results.
//
// Rows 'cpu out' and 'cuda out' are the steady state of a training loop: the same options.out gradient buffers
// reused by every call, beside the rows that get fresh gradients each call.
//
// CPU rows also say how close they come to the exponential floor measured in the same run: the kernels' vexp
// over data in L1 on every thread, since an exp per element (two with gradients) is what bounds them.
//
// GPU cases run on DeviceTensor data (host transfers excluded): papoLoss returns after the kernels finish, so
// the time measured around the call is the GPU time plus its fixed host costs.
//
// Rows 'cpu split4' and 'cuda split4' are forward + backward with both paths' logits given as 4 vocabulary shards
// (docs/objective.md, "Logits split over the vocabulary"), on the same inputs as 'cpu' and 'cuda' (the cuda shards
// DeviceTensors on one device): their ratios to 'cpu' and 'cuda' are printed after the table.
//
// The tfjs peer (bench/tfjs-peer.ts: the objective in tfjs ops with tf.grad, what a Node user without this package
// would write) runs the float32 cases on tfjs's WASM backend; tfjs has no bfloat16.
import { execSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cuda, DeviceTensor, info, logProbsSync, papoLossSync } from '../lib';
import { native } from '../lib/native';
import { allocDevice } from '../lib/device-tensor';
import type {
  DeviceSplitPapoInputs, DType, PapoInputs, PapoOptions, PapoOutputs, SplitPapoInputs, SplitPapoResult, Tensor,
} from '../lib/types';
import { elements, makeBatch, minimalBytes, splitBatch, type Kind } from './cases';
import { measure, type Timing } from './harness';
import { loadTfjsRunner } from './tfjs-runner';
import { appendJsonLines, chartRows, jsonLines, printTable, writeChart, type Machine, type Row } from './report';
import { deviceCopy, hostCopy } from './roofline';
import { runStaticReport } from './static-report';

const USAGE = `usage: npm run bench [-- OPTION...]

  (none)        quick run: CPU cases only when there is no GPU (about 50 s on a 2-core machine); appends JSON lines
                to bench/results/local/cpu.jsonl (or gpu.jsonl) and draws chart-cpu.svg there, untracked
  --full        every case: vocab 4096 to 151936, more rows, longer sampling (minutes)
  --save        write the committed bench/results/ instead of bench/results/local/
  --no-save     print the table only: no JSON lines, no chart
  --json-lines  also print each row's JSON line, prefixed "JSON " (what scripts/gpu-check.sh collects)
  --chart-only  time nothing: redraw the chart from the latest run in the JSON lines (with --save: the committed ones)
  --targets     the steady-state table instead (V = 151936, N = 64: fresh against reused gradients, bf16, AVX2,
                forward only, and PyTorch CPU eager where python3 has torch), in one run (bench/targets.ts)
  --static      time nothing, no GPU needed: compile the CUDA kernels for sm_90 and sm_80 with ptxas -v and print
                registers, spills, shared memory, occupancy and a napkin prediction (a minute or two); writes
                bench/results/local/static.txt (with --save: bench/results/static.txt)
  --tiny        every row's code path on tiny shapes (V = 1000, 4 rows, no tfjs), saving nothing: the figures mean
                nothing; with PAPO_CUDA_EMULATE=1 it proves the GPU rows on the emulated device
  --help, -h    this text

How to read the table and the chart: bench/README.md.`;

const args = process.argv.slice(2);
const known = ['--full', '--save', '--no-save', '--json-lines', '--chart-only', '--targets', '--static', '--tiny', '--help', '-h'];
const unknown = args.filter((a) => !known.includes(a));
if (args.includes('--help') || args.includes('-h') || unknown.length) {
  if (unknown.length) console.error(`bench: unknown option ${unknown.map((a) => `'${a}'`).join(', ')}\n`);
  (unknown.length ? console.error : console.log)(USAGE);
  process.exit(unknown.length ? 2 : 0);
}
if (args.includes('--targets')) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'targets.js')], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const full = args.includes('--full');
const tiny = args.includes('--tiny');
const save = !args.includes('--no-save') && !tiny;
const committed = args.includes('--save');
const gpu = !args.includes('--static') && cuda.available();  // --static needs no addon

const vocabs = full ? [4096, 32000, 65536, 151936] : tiny ? [1000] : [32000, 151936];
const dtypes: DType[] = ['float32', 'bfloat16'];
const kinds: Kind[] = ['fwd', 'fwd+bwd'];
const rowsFor: Record<string, number> = full
  ? { reference: 4, tfjs: 32, cpu: 256, 'cuda-naive': 2048, cuda: 8192 }
  : tiny ? { reference: 2, tfjs: 2, cpu: 4, 'cuda-naive': 4, cuda: 4 }
  : { reference: 2, tfjs: 8, cpu: 32, 'cuda-naive': 512, cuda: 2048 };
const maxTime = full ? 4 : tiny ? 0.01 : 1;

function commitOf(): string {
  try {
    return execSync('git rev-parse --short HEAD', { cwd: __dirname, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

/** A steady-state row ('cpu out', 'cuda out'): the same options.out buffers reused by every call. */
const STEADY = ' out';
/** The split rows: the same batch as 'cpu' and 'cuda', its logits in SHARDS vocabulary shards. */
const SHARDS = 4;
const SPLIT = ' split' + SHARDS;
const baseBackend = (b: string) => (b.endsWith(STEADY) ? b.slice(0, -STEADY.length) : b.endsWith(SPLIT) ? b.slice(0, -SPLIT.length) : b);

function outBuffers(batch: PapoInputs): { out: PapoOutputs; release: () => void } {
  const like = (t: PapoInputs['logits']) => (t instanceof DeviceTensor
    ? allocDevice(t.dims, t.type, t.device, false)
    : { ...(t as Tensor), data: (t as Tensor).data.slice() });
  const out = { gradLogits: like(batch.logits), gradMaskedLogits: like(batch.maskedLogits!) };
  return { out, release: () => { for (const g of Object.values(out)) if (g instanceof DeviceTensor) g.dispose(); } };
}

function run(kind: Kind, backend: string, batch: PapoInputs, out?: PapoOutputs, shards?: SplitPapoInputs | DeviceSplitPapoInputs) {
  if (kind === 'fwd') return () => logProbsSync(batch.logits, batch.tokens, { backend: backend as 'cpu' });
  if (shards) {
    const options: PapoOptions = { backend: baseBackend(backend) as 'cpu' };
    return () => {
      const r = papoLossSync(shards as SplitPapoInputs, options) as SplitPapoResult<Tensor | DeviceTensor>;
      for (const g of [...(r.gradLogits ?? []), ...(r.gradMaskedLogits ?? [])]) if (g instanceof DeviceTensor) g.dispose();
    };
  }
  const options: PapoOptions = { backend: baseBackend(backend) as 'cpu', ...(out ? { out } : {}) };
  return () => {
    const r = papoLossSync(batch, options);
    if (!out) for (const g of [r.gradLogits, r.gradMaskedLogits]) if (g instanceof DeviceTensor) g.dispose();
  };
}

function onDevice(batch: PapoInputs): { batch: PapoInputs; release: () => void } {
  const z = cuda.upload(batch.logits as Tensor), zm = cuda.upload(batch.maskedLogits as Tensor);
  return { batch: { ...batch, logits: z, maskedLogits: zm }, release: () => { z.dispose(); zm.dispose(); } };
}

/**
 * A split call against the unsplit one on the same inputs, in turns (one call of each per round, so that a load
 * that comes and goes weighs on both alike): fresh gradients, and for host data also out buffers reused. The
 * table's rows are timed one after another, which on a shared machine moved their ratio by more than the
 * difference measured.
 */
function pairedSplit(backend: string, host: PapoInputs, shards: SplitPapoInputs | DeviceSplitPapoInputs): string {
  const ROUNDS = 15, WARM = 2;
  const base = baseBackend(backend);
  const dev = base.startsWith('cuda') ? onDevice(host) : null;
  const whole = dev ? dev.batch : host;
  const pairs: [string, () => void, () => void][] = [['fresh', run('fwd+bwd', base, whole), run('fwd+bwd', backend, whole, undefined, shards)]];
  let wholeOut: ReturnType<typeof outBuffers> | null = null;
  if (!dev) {
    wholeOut = outBuffers(whole);
    const like = (t: Tensor) => ({ ...t, data: t.data.slice() });
    const s = shards as SplitPapoInputs;
    const out = { gradLogits: s.logits.map((t) => like(t as Tensor)), gradMaskedLogits: s.maskedLogits!.map((t) => like(t as Tensor)) };
    const options: PapoOptions = { backend: base as 'cpu', out };
    pairs.push(['out reused', run('fwd+bwd', base, whole, wholeOut.out), () => papoLossSync(s, options)]);
  }
  try {
    return 'in turns (' + ROUNDS + ' rounds, medians): ' + pairs.map(([what, a, b]) => {
      const ta: number[] = [], tb: number[] = [];
      for (let r = 0; r < WARM + ROUNDS; r++)
        for (const [fn, into] of [[a, ta], [b, tb]] as const) {
          const t = process.hrtime.bigint();
          fn();
          if (r >= WARM) into.push(Number(process.hrtime.bigint() - t) / 1e6);
        }
      const med = (v: number[]) => [...v].sort((x, y) => x - y)[v.length >> 1];
      const ratio = med(tb.map((x, i) => x / ta[i]));
      return `${what} ${ratio.toFixed(2)}x (${med(tb).toFixed(2)} / ${med(ta).toFixed(2)} ms)`;
    }).join(', ');
  } finally {
    wholeOut?.release();
    dev?.release();
  }
}

/** A split row's shards, cut once outside the timing: host data, or DeviceTensors for the cuda row. */
function shardsFor(backend: string, host: PapoInputs): { shards: SplitPapoInputs | DeviceSplitPapoInputs; release: () => void } {
  const shards = splitBatch(host, SHARDS);
  if (!backend.startsWith('cuda')) return { shards, release: () => {} };
  const up = (list: readonly unknown[]) => list.map((t) => cuda.upload(t as Tensor));
  const dev = { ...shards, logits: up(shards.logits), maskedLogits: up(shards.maskedLogits!) };
  return { shards: dev, release: () => { for (const t of [...dev.logits, ...dev.maskedLogits]) t.dispose(); } };
}

async function main() {
  const i = info();
  const { runner: tfjs, notes: tfjsNotes } = tiny ? { runner: null, notes: ['--tiny: no tfjs peer'] } : await loadTfjsRunner();
  const expFloor = native().cpuExpFloor() / 1e6;  // Melem/s, all threads
  const machine: Machine = {
    date: new Date().toISOString(), commit: commitOf(), host: os.hostname(), cpu: os.cpus()[0]?.model.trim() ?? 'unknown CPU',
    cores: os.cpus().length, cpuIsa: i.cpuIsa, threads: i.threads, gpu: gpu ? i.cudaDevices[0].name : null,
    ...(tfjs ? { tfjs: tfjs.description } : {}),
  };
  console.log(`papo-kernels ${i.version} @ ${machine.commit}, ${machine.date}`);
  console.log(`${machine.cpu}, ${machine.cores} cores, cpu kernels ${i.cpuIsa} on ${i.threads} threads; ` +
    (gpu ? `GPU ${machine.gpu}` : `no GPU (${i.cudaStatus}): CPU cases only`));
  console.log(`exp floor: ${expFloor.toFixed(0)} Melem/s (${i.cpuIsa} kernels' vexp on ${i.threads} threads, data in L1)`);
  for (const note of tfjsNotes) console.log(note);
  if (tfjs) console.log(`tfjs peer: ${tfjs.description}, float32 cases only (tfjs has no bfloat16)`);
  console.log(`${full ? 'full' : tiny ? 'tiny (code paths only, figures meaningless)' : 'quick'} run: rows per backend ${JSON.stringify(rowsFor)}, ${maxTime} s of sampling per case\n`);

  const rows: Row[] = [];
  const splitLines: string[] = [];
  const backends = ['reference', ...(tfjs ? [tfjs.backend] : []), 'cpu', 'cpu' + STEADY, 'cpu' + SPLIT,
    ...(gpu ? ['cuda-naive', 'cuda', 'cuda' + STEADY, 'cuda' + SPLIT] : [])];
  for (const V of vocabs) {
    for (const dtype of dtypes) {
      for (const kind of kinds) {
        const cpuBytes = minimalBytes(kind, rowsFor.cpu, V, dtype);
        const hostRoof: Timing = hostCopy(cpuBytes, maxTime);
        const hostRate = cpuBytes / hostRoof.medianMs / 1e6;
        let deviceRate = 0;
        if (gpu) {
          const b = minimalBytes(kind, rowsFor.cuda, V, dtype);
          deviceRate = b / deviceCopy(b, maxTime).medianMs / 1e6;
        }
        const caseRows: Row[] = [];
        for (const backend of backends) {
          const isTfjs = backend === tfjs?.backend;
          if (isTfjs && dtype !== 'float32') continue;
          const steady = backend.endsWith(STEADY), splitRow = backend.endsWith(SPLIT);
          if ((steady || splitRow) && kind === 'fwd') continue;  // no gradient: nothing to reuse or split
          const N = rowsFor[isTfjs ? 'tfjs' : baseBackend(backend)];
          const host = makeBatch(N, V, dtype);
          const dev = backend.startsWith('cuda') && !splitRow ? onDevice(host) : null;
          const split = splitRow ? shardsFor(backend, host) : null;
          const peer = isTfjs ? tfjs.prepare(kind, host) : null;
          const outs = steady ? outBuffers(dev ? dev.batch : host) : null;
          try {
            const fn = peer ? peer.run : run(kind, backend, dev ? dev.batch : host, outs?.out, split?.shards);
            const timing = measure(`${kind} ${backend}`, fn, backend === 'reference' ? Math.max(maxTime, 2) : maxTime);
            caseRows.push({ kind, backend, N, V, dtype, timing, bytes: minimalBytes(kind, N, V, dtype), elements: elements(kind, N, V),
              rooflineGBs: backend.startsWith('cuda') ? deviceRate : hostRate, speedup: 0 });
            if (split) splitLines.push(`${backend} / ${baseBackend(backend)}, V = ${V} ${dtype} fwd+bwd, ` + pairedSplit(backend, host, split.shards));
          } finally {
            outs?.release();
            split?.release();
            dev?.release();
            peer?.release();
          }
        }
        const perElem = (r: Row) => r.timing.medianMs / r.elements;
        const ref = caseRows.find((r) => r.backend === 'reference')!;
        const naive = caseRows.find((r) => r.backend === 'cuda-naive');
        for (const r of caseRows) {
          r.speedup = perElem(ref) / perElem(r);
          // exponentials per element: one for the statistics, one more for the gradient
          if (baseBackend(r.backend) === 'cpu') r.expFloorFraction = (r.elements / r.timing.medianMs / 1e3) * (kind === 'fwd' ? 1 : 2) / expFloor;
          if (naive && baseBackend(r.backend) === 'cuda') r.vsNaiveGpu = perElem(naive) / perElem(r);
        }
        rows.push(...caseRows);
        process.stdout.write(`  done: V=${V} ${dtype} ${kind}\n`);
      }
    }
  }

  console.log('');
  printTable(rows, machine);
  console.log('\nhost roofline: memcpy in one thread (Uint8Array.set)' + (gpu ? '; device roofline: cudaMemcpy device to device' : ''));
  for (const l of splitLines) console.log(l);
  if (args.includes('--json-lines'))
    for (const l of jsonLines({ ...machine, expFloorMelemPerS: expFloor }, rows)) console.log(`JSON ${l}`);
  if (save) {
    const { rel, dir, name } = resultsPlace();
    appendJsonLines(path.join(dir, `${name}.jsonl`), { ...machine, expFloorMelemPerS: expFloor }, rows);
    writeChart(path.join(dir, `chart-${name}.svg`), machine, chartRows(rows));
    console.log(`appended ${rows.length} lines to ${rel}/${name}.jsonl; chart: ${rel}/chart-${name}.svg` +
      (committed ? '' : ' (untracked; --save updates the committed results)'));
  }
}

/** Where this run's results go: the committed bench/results/ (--save) or the untracked local/ beside it. */
function resultsPlace() {
  const rel = committed ? path.join('bench', 'results') : path.join('bench', 'results', 'local');
  return { rel, dir: path.join(__dirname, '..', '..', rel), name: gpu ? 'gpu' : 'cpu' };
}

/** --chart-only: the chart of the latest run already in the JSON lines (one run shares one date). */
function redrawChart() {
  const { rel, dir, name } = resultsPlace();
  const file = path.join(dir, `${name}.jsonl`);
  if (!fs.existsSync(file)) throw new Error(`bench --chart-only: no ${rel}/${name}.jsonl to draw from; run the bench first`);
  type Line = Machine & { case: string; backend: string; dtype: string; V: number; melemPerS: number };
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
  const latest = lines.reduce((a, l) => (l.date > a ? l.date : a), '');
  const run = lines.filter((l) => l.date === latest);
  const m = run[0];
  writeChart(path.join(dir, `chart-${name}.svg`), m,
    run.map((l) => ({ kind: l.case, backend: l.backend, dtype: l.dtype, V: l.V, melemPerS: l.melemPerS })));
  console.log(`chart: ${rel}/chart-${name}.svg from the run of ${latest} (commit ${m.commit}, ${run.length} rows)`);
}

function staticOnly() {
  const rel = committed ? path.join('bench', 'results') : path.join('bench', 'results', 'local');
  runStaticReport(save ? path.join(rel, 'static.txt') : undefined);
}

(args.includes('--static') ? Promise.resolve().then(staticOnly)
  : args.includes('--chart-only') ? Promise.resolve().then(redrawChart) : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
