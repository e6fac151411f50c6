// npm run bench -- --static: what can be said of the CUDA kernels without a GPU. Per kernel instance and
// architecture (sm_90, sm_80): registers, spills, shared memory and the occupancy they allow; then a napkin
// prediction for N = 8192, V = 151936, both paths, forward + backward, on an H100 (3.35 TB/s) and an H200
// (4.8 TB/s), against a device copy of the same minimal bytes (4 N V elements: both rows read, both gradients
// written). A prediction, never a measurement: the three bounds are
//   bytes:   the DRAM bytes the kernel moves by design over the copy rate (k1: each row read twice; k2: a
//            fraction 1 - L2 / live of the second read misses, live = k2_blocks' grid x the row pair's bytes;
//            k3: the minimum; k4: the same miss rule with live = its grid x two items x a slice of both paths,
//            and its partials written and read once);
//   issue:   PTX instructions per element of the row loops (kernel-resources.ts says how they are counted), plus
//            the work loop's fixed cost per iteration spread over the elements of an iteration (k1/k2: a row
//            pair per block; k3: a row pair per cluster of C blocks; k4: a slice), times the elements, over 4
//            warp instructions per clock per SM at the boost clock;
//   MUFU:    exponentials per element over 16 per clock per SM.
// The largest is the prediction. Not modelled: k3's and k4's serial section per row pair (k4 overlaps it with
// the next item), latency, the launch.
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
  ['native/cuda/kernels/k4_split.cu', 80]];
// sizeof(K3Shared) in k3_cluster.cu is a few hundred bytes; 512 bounds it.
const K3_SHARED = 512;

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

/** k3's plan for this V and dtype (k3_cluster.cu's plan()): the smallest cluster of 1..8 whose slices fit,
 * double-buffered where two row pairs fit. */
function k3Plan(esz: number, arch: number) {
  const nvec = Math.ceil(V / (16 / esz));
  for (const nbuf of [2, 1])
    for (const C of [1, 2, 4, 8]) {
      const per = Math.ceil(nvec / C);
      const smem = nbuf * 2 * per * 16 + K3_SHARED;
      if (smem <= SM[arch].smemPerBlock) return { C, nbuf, smem };
    }
  return null;
}

/** k4's slicing at this V (k4_split.cu's slicing()): S slices of `per` groups, `per` a multiple of `step`. */
function k4Slices(esz: number, step = K4.step) {
  const nvec = Math.floor(V / (16 / esz));
  const per = step * Math.max(1, Math.ceil(nvec / (step * K4.maxSlices)));
  return { per, slices: Math.max(1, Math.ceil(nvec / per)) };
}

/** Blocks per SM a kernel runs with: what fits, and for k4 at most the two its grid has. */
function residentBlocks(k: KernelResources, smemDyn: number): number {
  const b = blocksPerSm(k.arch, k.registers, k.smem + smemDyn, threadsOf(k.kernel));
  return k.kernel.startsWith('papo_rows_k4') ? Math.min(b, K4.blocksPerSm) : b;
}

interface Prediction { version: string; dtype: string; gpu: string; copyMs: number; bytesMs: number; issueMs: number;
  mufuMs: number; ratio: number; bound: string; fixed: number }

/** The work loop's fixed PTX instructions per element (kernel-resources.ts' WorkLoop): per iteration and thread,
 * times the threads and iterations a row pair takes, over its 2 V elements. */
function fixedPerElement(k: KernelResources, version: string, esz: number, k4Step: number): number {
  const w = k.work;
  if (!w) return 0;
  const once = w.both ?? w.stats + w.grad;
  if (version === 'k1') return ((w.stats + w.grad) * THREADS) / (2 * V);
  if (version === 'k3') return (once * THREADS * (k3Plan(esz, 90)?.C ?? 1)) / (2 * V);
  if (version.startsWith('k4')) return (once * K4.threads * k4Slices(esz, k4Step).slices) / (2 * V);
  return (once * THREADS) / (2 * V);
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

function predict(k: KernelResources, version: string, gpu: Gpu, smemDyn: number, k4Step = K4.step): Prediction | null {
  const st = perElement(k, 'stats'), gr = perElement(k, 'grad');
  if (!st || !gr) return null;
  const esz = inputBytes(k.kernel);
  const E = N * V;  // per path
  const copyBytes = 4 * E * esz;
  let bytes = copyBytes;
  if (version === 'k1') bytes = 6 * E * esz;
  if (version === 'k2') {
    const pair = 2 * V * esz, perSm = Math.max(1, residentBlocks(k, smemDyn));
    const fit = Math.floor(gpu.l2 / 2 / pair), blocks = Math.max(gpu.sms, Math.min(gpu.sms * perSm, fit));
    const live = blocks * pair, miss = Math.max(0, 1 - gpu.l2 / live);
    bytes = (4 + 2 * miss) * E * esz;
  }
  if (version.startsWith('k4')) {
    const { per, slices } = k4Slices(esz, k4Step);
    const live = gpu.sms * Math.max(1, residentBlocks(k, smemDyn)) * 2 * per * 16 * 2;  // 2 items of both paths
    const miss = Math.max(0, 1 - gpu.l2 / live);
    bytes = (4 + 2 * miss) * E * esz + N * slices * 2 * 16 * 2;
  }
  const fixed = fixedPerElement(k, version, esz, k4Step);
  const clock = gpu.clockGHz * 1e9;
  const issueMs = (2 * E * (st.ipe + gr.ipe + fixed)) / (gpu.sms * 4 * 32 * clock) * 1e3;
  const mufuMs = (2 * E * (st.exps + gr.exps)) / (gpu.sms * 16 * clock) * 1e3;
  const copyMs = (copyBytes / gpu.bandwidth) * 1e3, bytesMs = (bytes / gpu.bandwidth) * 1e3;
  const worst = Math.max(bytesMs, issueMs, mufuMs);
  const bound = worst === bytesMs ? 'bytes' : worst === issueMs ? 'issue' : 'MUFU';
  return { version, dtype: esz === 2 ? 'bf16' : 'fp32', gpu: gpu.name, copyMs, bytesMs, issueMs, mufuMs,
    ratio: worst / copyMs, bound, fixed };
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

export function staticReport(archs = [90, 80]): string {
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
  say(`${THREADS} threads per block (k4: ${K4.threads}, at most ${K4.blocksPerSm} blocks an SM: its grid); no GPU involved.`);
  say('occupancy: resident warps / 64 per SM from registers, static + dynamic shared memory and threads; k3\'s');
  say(`dynamic shared memory is its plan at V = ${V}. PTX/elem: PTX instructions per element on the common path`);
  say('of the statistics and gradient loops (an upper bound by about 1: the rare rescale is on it); exp: ftz when');
  say('every exponential of the loop is ex2.approx.ftz; fixed/iter: PTX instructions a thread runs per iteration');
  say('of the work loop outside the row loops (a lower bound: the shortest path, thread 0\'s own work left out).');
  say('');
  say([pad('kernel', 26), pad('arch', 6), lpad('regs', 5), lpad('spill st/ld', 12), lpad('stack', 6), lpad('smem', 8),
    lpad('blocks/SM', 10), lpad('occup.', 7), lpad('stats PTX/elem', 15), lpad('grad PTX/elem', 14), lpad('exp', 8),
    lpad('fixed/iter', 11)].join(''));
  for (const k of all) {
    const esz = inputBytes(k.kernel);
    const dyn = k.kernel.startsWith('papo_rows_k3') ? (k3Plan(esz, k.arch)?.smem ?? 0) : 0;
    const b = residentBlocks(k, dyn);
    const st = perElement(k, 'stats'), gr = perElement(k, 'grad');
    const f = (x: { ipe: number } | null) => (x ? x.ipe.toFixed(2) : '-');
    const exp = st && gr ? (st.ftz && gr.ftz ? 'ftz' : st.ftz || gr.ftz ? 'mixed' : 'no-ftz') : '-';
    const fixed = k.work ? String(k.work.both ?? k.work.stats + k.work.grad) : '-';
    say([pad(k.kernel, 26), pad(`sm_${k.arch}`, 6), lpad(k.registers, 5), lpad(`${k.spillStores}/${k.spillLoads}`, 12),
      lpad(k.stack, 6), lpad(k.smem + dyn, 8), lpad(b, 10),
      lpad(`${((b * threadsOf(k.kernel)) / 32 / 64 * 100).toFixed(0)}%`, 7), lpad(f(st), 15), lpad(f(gr), 14),
      lpad(exp, 8), lpad(fixed, 11)].join(''));
  }
  say('');
  say(`Napkin prediction, N = ${N}, V = ${V}, both paths, forward + backward, gradients in the input's type`);
  say('(times in ms; ratio = the largest bound over a same-bytes device copy at the full rate; k1 and k2 are');
  say('papo_rows, k3 papo_rows_k3, k4 papo_rows_k4 with its default slices of 16 KB a path, and k4 32K with');
  say(`PAPO_CUDA_K4_SLICE=${2 * K4.step} (32 KB: half the fixed cost per element, twice the bytes in flight); fixed/el:`);
  say('the work loop\'s fixed cost per element, included in issue; a prediction, not a measurement):');
  say('');
  say([pad('version', 8), pad('dtype', 6), pad('GPU', 10), lpad('copy', 7), lpad('bytes', 7), lpad('issue', 7),
    lpad('MUFU', 7), lpad('fixed/el', 9), lpad('ratio', 7), '  bound'].join(''));
  const sm90 = all.filter((k) => k.arch === 90);
  const instance = (name: string, t: string) => sm90.find((k) => k.kernel === `${name}<${t}, ${t}>`);
  const versions: [string, string, number][] = [['k1', 'papo_rows', K4.step], ['k2', 'papo_rows', K4.step],
    ['k3', 'papo_rows_k3', K4.step], ['k4', 'papo_rows_k4', K4.step], ['k4 32K', 'papo_rows_k4', 2 * K4.step]];
  for (const [version, name, k4Step] of versions)
    for (const t of ['BF16', 'F32'])
      for (const gpu of GPUS) {
        const k = instance(name, t);
        if (!k) continue;
        const dyn = version === 'k3' ? (k3Plan(inputBytes(k.kernel), 90)?.smem ?? 0) : 0;
        const p = predict(k, version, gpu, dyn, k4Step);
        if (!p) continue;
        say([pad(version, 8), pad(p.dtype, 6), pad(gpu.name, 10), lpad(p.copyMs.toFixed(2), 7), lpad(p.bytesMs.toFixed(2), 7),
          lpad(p.issueMs.toFixed(2), 7), lpad(p.mufuMs.toFixed(2), 7), lpad(p.fixed.toFixed(2), 9),
          lpad(`${p.ratio.toFixed(2)}x`, 7), `  ${p.bound}`].join(''));
      }
  return lines.join('\n') + '\n';
}

/** Prints the report; with a file name, also writes it there (relative to the repository). */
export function runStaticReport(file?: string) {
  const text = staticReport();
  process.stdout.write(text);
  if (file) {
    const out = path.resolve(REPO, file);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
    console.log(`\nwritten to ${path.relative(REPO, out)}`);
  }
}
