// npm run bench -- --static: what can be said of the CUDA kernels without a GPU. Per kernel instance and
// architecture (sm_90, sm_80): registers, spills, shared memory and the occupancy they allow; k3's serial section
// as its PTX has it (serial-section.ts); then a napkin prediction for N = 8192, V = 151936, both paths, forward +
// backward, on an H100 (3.35 TB/s) and an H200 (4.8 TB/s), against a device copy of the same minimal bytes
// (4 N V elements: both rows read, both gradients written). A prediction, never a measurement: the bounds are
//   bytes:   the DRAM bytes the kernel moves by design over the copy rate (k1: each row read twice; k2: a
//            fraction 1 - L2 / live of the second read misses, live = shape_k2's grid x the row pair's bytes;
//            k3: the minimum; k4: the same miss rule with live = its grid x two items x a slice of both paths,
//            and its partials written and read once);
//   issue:   PTX instructions per element of the row loops (kernel-resources.ts says how they are counted), plus
//            the work loop's fixed cost per iteration spread over the elements of an iteration (k1/k2: a row
//            pair per block; k3: a row pair per cluster of C blocks; k4: a slice), times the elements, over 4
//            warp instructions per clock per SM at the boost clock (k3: on the SMs its clusters fill, 8 x 16 =
//            128 of 132 for clusters of 8);
//   MUFU:    exponentials per element over 16 per clock per SM;
//   k3's serial section: each cluster's SMs wait for it once per row pair, after the statistics and before the
//            gradient, so it adds to the issue time: N / clusters row pairs x K3_SERIAL (a napkin critical path,
//            below). Two clusters per SM (PAPO_CUDA_K3_CO_RESIDENT=2) hide it behind the other cluster's rows. The
//            next row pair's copy overlaps the work (two buffers, or one streamed by chunks): not added.
// The largest is the prediction. Not modelled: latency beyond k3's serial section (k4 overlaps its row's merge
// with the next item), the cluster barriers' release waiting for the gradient stores before it, the launch.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compileKernels, findNvcc, inputBytes, REPO, type KernelResources } from './kernel-resources';

interface SmLimits {
  regs: number; warps: number; blocks: number; smem: number; smemPerBlock: number; reserved: number;
}
// Per SM, from the CUDA programming guide's compute-capability tables.
const SM: Record<number, SmLimits> = {
  80: { regs: 65536, warps: 64, blocks: 32, smem: 167936, smemPerBlock: 166912, reserved: 1024 },
  90: { regs: 65536, warps: 64, blocks: 32, smem: 233472, smemPerBlock: 232448, reserved: 1024 },
};

interface Gpu { name: string; sms: number; clockGHz: number; bandwidth: number; l2: number }
const GPUS: Gpu[] = [
  { name: 'H100 SXM', sms: 132, clockGHz: 1.98, bandwidth: 3.35e12, l2: 50 * 2 ** 20 },
  { name: 'H200', sms: 132, clockGHz: 1.98, bandwidth: 4.8e12, l2: 50 * 2 ** 20 },
];

const N = 8192, V = 151936;
const THREADS = 512;  // every row kernel but k4 (kThreads in row_block.cuh)
// k4: kK4Threads, kK4BlocksPerSm and a slice's 16-byte groups (kStep) in k4_split.cu.
const K4 = { threads: 256, blocksPerSm: 2, step: 1024, maxSlices: 128 };
const threadsOf = (kernel: string) => (kernel.startsWith('papo_rows_k4') ? K4.threads : THREADS);
// k3 (clusters) is sm_90+: below, its kernel is a trap and not reported.
const FILES: [string, number][] = [['native/cuda/kernels/k1_k2_rows.cu', 80], ['native/cuda/kernels/k3_cluster.cu', 90],
  ['native/cuda/kernels/vocab_shard.cu', 80], ['native/cuda/kernels/k4_split.cu', 80]];
/** Kernels launched with other blocks than THREADS: a vocabulary shard's forward, one thread per row. */
const BLOCK_THREADS: Record<string, number> = { vocab_shard_rows: 128 };
// sizeof(K3Shared) in k3_cluster.cu (1000 bytes); a static_assert there keeps it within this bound.
const K3_SHARED = 1024;

// k3's serial section per row pair, in cycles at the boost clock: the critical path of block 0's first warp
// between the two cluster barriers (k3_cluster.cu's lead_row), counted by hand from the PTX of
// papo_rows_k3<BF16, BF16> (the report prints that PTX's counts; the fp32 instance is the same code), with
// latencies from published Hopper microbenchmarks: shared load 30, shuffle 25, distributed shared memory 200,
// fp64 fma 8. Its premise, that the section loads nothing from global memory or other blocks (the counts'
// ld.global and generic loads outside loops), is checked by test/static-report.test.ts.
export const K3_SERIAL: [string, number][] = [
  ['the C partials: one shared load per lane', 30],
  ['a fixed merge tree over 8 ranks: 3 x (shuffle 25 + merge 45)', 210],
  ['both paths finished at once (lanes 0 and 8): fp64 log2 and division', 360],
  ['the token terms in fp64 (exp, expm1, clamps), per-token inputs read ahead', 480],
  ['both paths\' coefficients at once', 80],
  ['pushed into every block: remote stores, drained by the second barrier\'s release', 260],
  ['after the second barrier: one shared load', 30],
  ['the two cluster barriers themselves (assumed)', 400],
];

/** Blocks per SM that the registers, shared memory (static + dynamic) and threads allow. */
export function blocksPerSm(arch: number, registers: number, smem: number, threads = THREADS): number {
  const l = SM[arch];
  const warps = Math.ceil(threads / 32);
  const regsPerWarp = Math.ceil((Math.max(registers, 1) * 32) / 256) * 256;
  const byRegs = Math.floor(l.regs / (regsPerWarp * warps));
  const perBlock = Math.ceil((smem + l.reserved) / 128) * 128;
  const bySmem = smem > l.smemPerBlock ? 0 : Math.floor(l.smem / perBlock);
  return Math.min(l.blocks, Math.floor(l.warps / warps), byRegs, bySmem);
}

/** k3's plan for this V and dtype (k3_cluster.cu's shape_k3): the smallest cluster of 1..8 whose slices fit,
 * double-buffered where two row pairs fit; with coResident, one buffer in blocks of 256 threads, two per SM. */
function k3Plan(esz: number, arch: number, coResident = false, registers = 128, v = V) {
  const groups = Math.floor(v / (16 / esz));
  for (const nbuf of coResident ? [1] : [2, 1])
    for (const C of [1, 2, 4, 8]) {
      const per = Math.ceil(groups / C);
      const smem = nbuf * 2 * per * 16 + K3_SHARED;
      if (smem > SM[arch].smemPerBlock) continue;
      const threads = coResident ? 256 : THREADS;
      if (coResident && blocksPerSm(arch, registers, smem, threads) < 2) continue;
      return { C, nbuf, smem, threads };
    }
  return null;
}

/** k4's slicing at this V (k4_split.cu's slicing()): S slices of `per` groups, `per` a multiple of `step`. */
function k4Slices(esz: number, step = K4.step, v = V) {
  const nvec = Math.floor(v / (16 / esz));
  const per = step * Math.max(1, Math.ceil(nvec / (step * K4.maxSlices)));
  return { per, slices: Math.max(1, Math.ceil(nvec / per)) };
}

/** Blocks per SM a kernel runs with: what fits, and for k4 at most the two its grid has. */
function residentBlocks(k: KernelResources, smemDyn: number): number {
  const b = blocksPerSm(k.arch, k.registers, k.smem + smemDyn, threadsOf(k.kernel));
  return k.kernel.startsWith('papo_rows_k4') ? Math.min(b, K4.blocksPerSm) : b;
}

interface Prediction { version: string; dtype: string; gpu: string; copyMs: number; bytesMs: number; issueMs: number;
  mufuMs: number; serialMs: number; ratio: number; bound: string; fixed: number }

export const k3SerialCycles = () => K3_SERIAL.reduce((a, [, c]) => a + c, 0);

/** What the model needs of a case: its rows (N x V elements per path), the paths it reads and the gradient paths it
 * writes. Both paths, forward + backward: reads 2, writes 2. */
export interface CaseShape { N: number; V: number; reads: number; writes: number }
const BOTH_PATHS: CaseShape = { N, V, reads: 2, writes: 2 };

/** The work loop's fixed PTX instructions per element (kernel-resources.ts' WorkLoop): per iteration and thread,
 * times the threads and iterations a row pair of v columns takes, over its 2 v elements. */
function fixedPerElement(k: KernelResources, version: string, esz: number, k4Step: number, v = V): number {
  const w = k.work;
  if (!w) return 0;
  const once = w.both ?? w.stats + w.grad;
  if (version === 'k1') return ((w.stats + w.grad) * THREADS) / (2 * v);
  if (version.startsWith('k3')) return (once * THREADS * (k3Plan(esz, 90, false, k.registers, v)?.C ?? 1)) / (2 * v);
  if (version.startsWith('k4')) return (once * K4.threads * k4Slices(esz, k4Step, v).slices) / (2 * v);
  return (once * THREADS) / (2 * v);
}

function perElement(k: KernelResources, kind: 'stats' | 'grad') {
  const all = k.loops.filter((l) => l.kind === kind);
  if (!all.length) return null;
  // the unrolled main loop (the most vectors per iteration), not the remainder loop after it
  const most = Math.max(...all.map((l) => l.vectors));
  const sorted = all.filter((l) => l.vectors === most).sort((a, b) => a.perElement - b.perElement);
  const l = sorted[sorted.length >> 1];
  return { ipe: l.perElement, exps: l.exps / l.elements, ftz: l.expsFtz === l.exps };
}

// version: k1, k2, k3 (its own plan), 'k3 x2' (two clusters per SM), k4 (slices of k4Step groups).
function predict(k: KernelResources, version: string, gpu: Gpu, smemDyn: number, c: CaseShape = BOTH_PATHS,
  k4Step = K4.step): Prediction | null {
  const st = perElement(k, 'stats'), gr = perElement(k, 'grad');
  if (!st || !gr) return null;
  const esz = inputBytes(k.kernel);
  const E = c.N * c.V;  // per path
  const copyBytes = (c.reads + c.writes) * E * esz;  // the case's minimal bytes
  let bytes = copyBytes, sms = gpu.sms, serialMs = 0;
  if (version === 'k1') bytes = (c.reads + 2 * c.writes) * E * esz;  // each gradient path's row read again
  if (version === 'k2') {
    const pair = c.reads * c.V * esz, perSm = Math.max(1, residentBlocks(k, smemDyn));
    const fit = Math.floor(gpu.l2 / 2 / pair), blocks = Math.max(gpu.sms, Math.min(gpu.sms * perSm, fit));
    const live = blocks * pair, miss = Math.max(0, 1 - gpu.l2 / live);
    bytes = (c.reads + c.writes * (1 + miss)) * E * esz;
  }
  if (version.startsWith('k4')) {
    const { per, slices } = k4Slices(esz, k4Step, c.V);
    const live = gpu.sms * Math.max(1, residentBlocks(k, smemDyn)) * 2 * per * 16 * c.reads;  // 2 items of the paths read
    const miss = Math.max(0, 1 - gpu.l2 / live);
    bytes = (c.reads + c.writes * (1 + miss)) * E * esz + c.N * slices * 2 * 16 * c.reads;  // + the partials
  }
  const fixed = fixedPerElement(k, version, esz, k4Step, c.V);
  const clock = gpu.clockGHz * 1e9;
  if (version.startsWith('k3')) {
    const coResident = version === 'k3 x2';
    const plan = k3Plan(esz, 90, coResident, k.registers, c.V);
    if (!plan) return null;
    const perSm = coResident ? 2 : 1, clusters = Math.floor(gpu.sms / plan.C) * perSm;
    sms = Math.floor(gpu.sms / plan.C) * plan.C;
    if (!coResident) serialMs = (c.N / clusters) * k3SerialCycles() / clock * 1e3;
  }
  // the fixed cost per element of the rows read
  const issueMs = (E * (c.reads * (st.ipe + fixed) + c.writes * gr.ipe)) / (sms * 4 * 32 * clock) * 1e3;
  const mufuMs = (E * (c.reads * st.exps + c.writes * gr.exps)) / (sms * 16 * clock) * 1e3;
  const copyMs = (copyBytes / gpu.bandwidth) * 1e3, bytesMs = (bytes / gpu.bandwidth) * 1e3;
  const worst = Math.max(bytesMs, issueMs + serialMs, mufuMs);
  const bound = worst === bytesMs ? 'bytes' : worst === issueMs + serialMs ? (serialMs ? 'issue+serial' : 'issue') : 'MUFU';
  return { version, dtype: esz === 2 ? 'bf16' : 'fp32', gpu: gpu.name, copyMs, bytesMs, issueMs, mufuMs, serialMs,
    ratio: worst / copyMs, bound, fixed };
}

// The cases papo_cuda_test --bench measures, by its names, with the versions the plan runs for each (in place, the
// sequence phase and the forward alone run as k1: native/cuda/plan.cu), and the shapes scripts/gpu-check.sh runs.
const BENCH_CASES: (Omit<CaseShape, 'N' | 'V'> & { name: string; versions: string[] })[] = [
  { name: 'fwd+bwd both paths', reads: 2, writes: 2, versions: ['k1', 'k2', 'k3', 'k4'] },
  { name: 'fwd+bwd detachMasked', reads: 2, writes: 1, versions: ['k1', 'k2', 'k3', 'k4'] },
  { name: 'fwd+bwd gspo (phases)', reads: 2, writes: 2, versions: ['k1'] },
  { name: 'fwd+bwd in place', reads: 2, writes: 2, versions: ['k1'] },
  { name: 'forward only (1 path)', reads: 1, writes: 0, versions: ['k1'] },
];
const BENCH_SHAPES: [number, number][] = [[8192, 151936], [8192, 32000], [2048, 151936], [2048, 32000]];

/** The prediction of every benchmarked case, shape, version, dtype and GPU, one tab-separated line each, for
 * papo_cuda_test --bench to print beside what it measures (the same model as the report's table). */
export function predictionTable(all: KernelResources[], commit: string): string {
  const lines = [`# napkin prediction by bench/static-report.ts at commit ${commit}: a prediction, not a measurement`,
    ['gpu', 'case', 'version', 'dtype', 'N', 'V', 'ms', 'ratio', 'bound'].join('\t')];
  for (const kase of BENCH_CASES)
    for (const [n, v] of BENCH_SHAPES)
      for (const version of kase.versions)
        for (const t of ['BF16', 'F32']) {
          const k = all.find((x) => x.arch === 90 && x.kernel === `${version === 'k3' || version === 'k4' ? `papo_rows_${version}` : 'papo_rows'}<${t}, ${t}>`);
          if (!k) continue;
          const dyn = version === 'k3' ? (k3Plan(inputBytes(k.kernel), 90, false, k.registers, v)?.smem ?? 0) : 0;
          for (const gpu of GPUS) {
            const p = predict(k, version, gpu, dyn, { N: n, V: v, reads: kase.reads, writes: kase.writes });
            if (!p) continue;
            lines.push([gpu.name, kase.name, version, t === 'BF16' ? 'bfloat16' : 'float32', n, v,
              Math.max(p.bytesMs, p.issueMs, p.mufuMs).toFixed(4), p.ratio.toFixed(4), p.bound].join('\t'));
          }
        }
  return lines.join('\n') + '\n';
}

function commitOf(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function nvccVersion(nvcc: string): string {
  const v = /release ([\d.]+)/.exec(execFileSync(nvcc, ['--version'], { encoding: 'utf8' }));
  return v ? `nvcc ${v[1]}` : 'nvcc';
}

const pad = (s: string | number, n: number) => String(s).padEnd(n);
const lpad = (s: string | number, n: number) => String(s).padStart(n);

export function staticReport(archs = [90, 80]): { text: string; predictions: string } {
  const nvcc = findNvcc();
  if (!nvcc) throw new Error('bench --static: no nvcc (set NVCC or CUDA_PATH, or put nvcc on PATH)');
  const lines: string[] = [];
  const say = (s = '') => lines.push(s);
  const all: KernelResources[] = [];
  for (const arch of archs)
    for (const [f, minArch] of FILES) {
      if (arch < minArch) continue;
      const t = Date.now();
      all.push(...compileKernels(nvcc, f, arch));
      process.stderr.write(`  compiled ${f} for sm_${arch} in ${((Date.now() - t) / 1e3).toFixed(0)} s\n`);
    }
  say(`Static report of the CUDA kernels at commit ${commitOf()}, ${nvccVersion(nvcc)}: ptxas -v and PTX,`);
  say(`${THREADS} threads per block (vocab_shard_rows: ${BLOCK_THREADS.vocab_shard_rows}; k4: ${K4.threads}, at most ` +
    `${K4.blocksPerSm} blocks an SM: its grid); no GPU involved.`);
  say('occupancy: resident warps / 64 per SM from registers, static + dynamic shared memory and threads; k3\'s');
  say(`dynamic shared memory is its plan at V = ${V}. PTX/elem: PTX instructions per element on the common path`);
  say('of the statistics and gradient loops (an upper bound by about 1: the rare rescale is on it); exp: ftz when');
  say('every exponential of the loop is ex2.approx.ftz; fixed/iter: PTX instructions a thread runs per iteration');
  say('of the work loop outside the row loops (a lower bound: the shortest path, thread 0\'s own work left out).');
  say('');
  // A kernel's line of a table: its name and architecture, then right-aligned columns of these widths.
  const nameWidth = Math.max(26, ...all.map((k) => k.kernel.length + 2));
  const kernelRow = (k: KernelResources | null, widths: number[], cells: (string | number)[]) =>
    say([pad(k ? k.kernel : 'kernel', nameWidth), pad(k ? `sm_${k.arch}` : 'arch', 6), ...cells.map((c, i) => lpad(c, widths[i]))].join(''));
  const resWidths = [5, 12, 6, 8, 10, 7, 15, 14, 8, 11];
  kernelRow(null, resWidths, ['regs', 'spill st/ld', 'stack', 'smem', 'blocks/SM', 'occup.', 'stats PTX/elem', 'grad PTX/elem', 'exp',
    'fixed/iter']);
  for (const k of all) {
    const esz = inputBytes(k.kernel);
    const dyn = k.kernel.startsWith('papo_rows_k3') ? (k3Plan(esz, k.arch)?.smem ?? 0) : 0;
    const threads = BLOCK_THREADS[k.kernel] ?? threadsOf(k.kernel);
    const b = k.kernel.startsWith('papo_rows_k4') ? residentBlocks(k, dyn) : blocksPerSm(k.arch, k.registers, k.smem + dyn, threads);
    const st = perElement(k, 'stats'), gr = perElement(k, 'grad');
    const f = (x: { ipe: number } | null) => (x ? x.ipe.toFixed(2) : '-');
    const exp = st && gr ? (st.ftz && gr.ftz ? 'ftz' : st.ftz || gr.ftz ? 'mixed' : 'no-ftz') : '-';
    const fixed = k.work ? String(k.work.both ?? k.work.stats + k.work.grad) : '-';
    kernelRow(k, resWidths, [k.registers, `${k.spillStores}/${k.spillLoads}`, k.stack, k.smem + dyn, b,
      `${((b * threads) / 32 / 64 * 100).toFixed(0)}%`, f(st), f(gr), exp, fixed]);
  }
  say('');
  say("k3's serial section in its PTX (serial-section.ts: from the first cluster barrier's wait to the second's arrive;");
  say('loops: the scan of a bad row; generic: through a generic pointer, here the other blocks\' shared memory):');
  say('');
  const serialWidths = [6, 5, 10, 11, 10, 10, 11, 8, 9];
  kernelRow(null, serialWidths, ['instr', 'f64', 'ld.global', 'ld generic', 'ld.shared', 'st.global', 'st generic', 'div f64',
    'in loops']);
  for (const k of all) {
    const x = k.serial;
    if (x) kernelRow(k, serialWidths, [x.instructions, x.f64, x.globalLoads, x.genericLoads, x.sharedLoads, x.globalStores,
      x.genericStores, x.f64Divisions, x.inLoops.instructions]);
  }
  say('');
  say(`Napkin prediction, N = ${N}, V = ${V}, both paths, forward + backward, gradients in the input's type`);
  say('(times in ms; ratio = the largest bound over a same-bytes device copy at the full rate; k1 and k2 are');
  say('papo_rows, k3 papo_rows_k3, k4 papo_rows_k4 with its default slices of 16 KB a path, and k4 32K with');
  say(`PAPO_CUDA_K4_SLICE=${2 * K4.step} (32 KB: half the fixed cost per element, twice the bytes in flight); fixed/el:`);
  say('the work loop\'s fixed cost per element, included in issue; a prediction, not a measurement):');
  say('');
  say([pad('version', 8), pad('dtype', 6), pad('GPU', 10), lpad('copy', 7), lpad('bytes', 7), lpad('issue', 7),
    lpad('MUFU', 7), lpad('serial', 7), lpad('fixed/el', 9), lpad('ratio', 7), '  bound'].join(''));
  const sm90 = all.filter((k) => k.arch === 90);
  const instance = (name: string, t: string) => sm90.find((k) => k.kernel === `${name}<${t}, ${t}>`);
  const versions: [string, string, number][] = [['k1', 'papo_rows', K4.step], ['k2', 'papo_rows', K4.step],
    ['k3', 'papo_rows_k3', K4.step], ['k3 x2', 'papo_rows_k3', K4.step], ['k4', 'papo_rows_k4', K4.step],
    ['k4 32K', 'papo_rows_k4', 2 * K4.step]];
  for (const [version, name, k4Step] of versions)
    for (const t of ['BF16', 'F32'])
      for (const gpu of GPUS) {
        const k = instance(name, t);
        if (!k) continue;
        const p = predict(k, version, gpu, 0, BOTH_PATHS, k4Step);
        if (!p) {
          if (version === 'k3 x2') say(`${pad(version, 8)}${pad(t === 'F32' ? 'fp32' : 'bf16', 6)}${pad(gpu.name, 10)}` +
            '  - (two blocks of one buffer do not fit an SM at this V)');
          continue;
        }
        say([pad(version, 8), pad(p.dtype, 6), pad(gpu.name, 10), lpad(p.copyMs.toFixed(2), 7), lpad(p.bytesMs.toFixed(2), 7),
          lpad(p.issueMs.toFixed(2), 7), lpad(p.mufuMs.toFixed(2), 7), lpad(p.serialMs ? p.serialMs.toFixed(2) : '-', 7),
          lpad(p.fixed.toFixed(2), 9),
          lpad(`${p.ratio.toFixed(2)}x`, 7), `  ${p.bound}`].join(''));
      }
  const us = k3SerialCycles() / (GPUS[0].clockGHz * 1e3);
  say('');
  say(`k3's serial section per row pair (K3_SERIAL, a napkin critical path): ${k3SerialCycles()} cycles = ${us.toFixed(2)} us`);
  say(`at ${GPUS[0].clockGHz} GHz; serial = N / clusters row pairs of it (clusters of 8 on 128 SMs: 16):`);
  for (const [what, c] of K3_SERIAL) say(`  ${lpad(c, 5)}  ${what}`);
  say("k3 x2: two clusters per SM (PAPO_CUDA_K3_CO_RESIDENT=2), each cluster's serial part behind the other's rows.");
  return { text: lines.join('\n') + '\n', predictions: predictionTable(all, commitOf()) };
}

/** Prints the report; with a file name, also writes it there (relative to the repository), and the predictions
 * beside it (predictions.tsv, which papo_cuda_test --bench reads). */
export function runStaticReport(file?: string) {
  const { text, predictions } = staticReport();
  process.stdout.write(text);
  if (file) {
    const out = path.resolve(REPO, file);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
    const table = path.join(path.dirname(out), 'predictions.tsv');
    fs.writeFileSync(table, predictions);
    console.log(`\nwritten to ${path.relative(REPO, out)} and ${path.relative(REPO, table)}`);
  }
}
