// What the compiler says about the CUDA kernels, without a GPU: each kernel file compiled to PTX by nvcc for one
// architecture, then assembled by ptxas -v. From ptxas: registers, spills, stack and static shared memory per
// kernel; from the PTX: the instructions per element of each row loop.
//
// Instructions per element, from the PTX (no SASS disassembler ships with this toolkit's nvcc package): a row
// loop is a backward branch whose body loads 16-byte vectors (ld.global.v4 / ld.global.nc.v4, or ld.shared.v4
// for k3's held slices). Its common path is the longest path through the body's basic blocks that avoids the
// blocks of the misaligned path (scalar global loads or stores); that path still includes the rare rescale of
// the online softmax, so the figure is an upper bound by about one instruction per element. Per element: the
// path's instructions over the elements its vector loads bring (16 bytes / element size each). A statistics loop
// has exponentials and no global store; a gradient loop stores.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { serialSections, type SerialSection } from './serial-section';

export interface KernelResources {
  kernel: string;      // demangled and shortened: papo_rows<BF16, F32>
  arch: number;        // 80, 90
  registers: number;
  spillStores: number; // bytes
  spillLoads: number;  // bytes
  stack: number;       // bytes of stack frame
  smem: number;        // bytes of static shared memory
  loops: RowLoop[];
  serial: SerialSection | null;  // k3's, between its cluster barriers (serial-section.ts)
  work: WorkLoop | null;
}

/** What a thread runs per iteration of the kernel's work loop (its loop over rows, row pairs or items) outside its
 * row loops: PTX instructions on the shortest path from the loop's head through the main row loops (counted as
 * nothing: they are the per-element figures) back to the head. Shortest, so branches taken by one thread (thread
 * 0's bookkeeping) and the rare paths (a row's publication, a wait) are left out: a lower bound of the fixed cost.
 * stats: through the main statistics loops; grad: through the main gradient loops; both: through all of them in
 * one iteration (null where no iteration does both). */
export interface WorkLoop {
  stats: number;
  grad: number;
  both: number | null;
}

export interface RawLoop {
  kind: 'stats' | 'grad';
  instructions: number;   // PTX instructions on the common path of one iteration
  vectors: number;        // 16-byte loads on it
  exps: number;           // ex2 on it
  expsFtz: number;        // of which ex2.approx.ftz
}

export interface RowLoop extends RawLoop {
  elements: number;       // per iteration: vectors x 16 / the input's element size
  perElement: number;
}

/** The input storage type of a kernel instance, from its template arguments: papo_rows<BF16, F32> reads bf16. */
export function inputBytes(kernel: string): number {
  const m = /<\s*(BF16|F16|F32)\b/.exec(kernel);
  return m && m[1] === 'F32' ? 4 : 2;
}

/** nvcc from $NVCC, $CUDA_PATH/bin or PATH; null where there is none. */
export function findNvcc(): string | null {
  const candidates = [process.env.NVCC, process.env.CUDA_PATH && path.join(process.env.CUDA_PATH, 'bin', 'nvcc'), 'nvcc'];
  for (const c of candidates) {
    if (!c) continue;
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore', env: toolEnv() });
      return c;
    } catch {
      // next candidate
    }
  }
  return null;
}

/** ptxas from beside nvcc (the same toolkit). */
function ptxasBeside(nvcc: string): string {
  const beside = path.join(path.dirname(nvcc), 'ptxas');
  return fs.existsSync(beside) ? beside : 'ptxas';
}

export const REPO = path.resolve(__dirname, '..', fs.existsSync(path.resolve(__dirname, '..', 'native')) ? '' : '..');

/** The toolkit runs without what a sanitized test run preloads (scripts/sanitize.sh sets LD_PRELOAD to the ASan
 * runtime, under which nvcc crashes): the compilers are not the code under test. */
function toolEnv(): NodeJS.ProcessEnv {
  const { LD_PRELOAD: _preload, ...env } = process.env;
  return env;
}

/** One kernel file (relative to the repository) for one architecture: PTX, then ptxas -v on it. */
export function compileKernels(nvcc: string, file: string, arch: number): KernelResources[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'papo-static-'));
  try {
    const ptx = path.join(dir, 'k.ptx');
    // The flags of the real build that change device code: C++17, -lineinfo; nvcc's -O3 is its default.
    execFileSync(nvcc, ['-std=c++17', '-lineinfo', `-arch=compute_${arch}`, '-ptx', '-I', path.join(REPO, 'native'),
      '-o', ptx, path.join(REPO, file)], { stdio: ['ignore', 'ignore', 'pipe'], env: toolEnv() });
    // ptxas -v reports on stderr
    const as = spawnSync(ptxasBeside(nvcc), ['-v', `-arch=sm_${arch}`, '-o', path.join(dir, 'k.cubin'), ptx], { encoding: 'utf8', env: toolEnv() });
    if (as.status !== 0) throw Object.assign(new Error(`ptxas exited with ${as.status}`), { stderr: as.stderr });
    const log = `${as.stdout}\n${as.stderr}`;
    const res = parsePtxasLog(log, arch);
    const text = fs.readFileSync(ptx, 'utf8');
    const loops = rowLoops(text), serial = serialSections(text), work = workLoops(text);
    for (const r of res) {
      r.serial = serial.get(r.mangled) ?? null;
      const per = 16 / inputBytes(r.kernel);
      r.loops = (loops.get(r.mangled) ?? []).map((l) => ({ ...l, elements: l.vectors * per,
        perElement: l.instructions / (l.vectors * per) }));
      r.work = work.get(r.mangled) ?? null;
    }
    return res.map(({ mangled: _m, ...r }) => r);
  } catch (e) {
    const err = e as { stderr?: Buffer | string; message: string };
    throw new Error(`compiling ${file} for sm_${arch} failed: ${err.stderr?.toString() || err.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The ptxas -v lines of every entry function (device functions have no 'Used' line of their own here). A
 * non-inlined device function's frame line follows some entry's: its spills and stack are counted with that
 * entry's (conservatively: the function may serve others too), never instead of them. */
export function parsePtxasLog(log: string, arch: number): (KernelResources & { mangled: string })[] {
  const out: (KernelResources & { mangled: string })[] = [];
  let cur: (KernelResources & { mangled: string }) | null = null;
  let ofEntry = false;  // the next frame line is the current entry's own
  for (const line of log.split('\n')) {
    const entry = /Compiling entry function '([^']+)'/.exec(line);
    if (entry) {
      cur = { mangled: entry[1], kernel: shortName(entry[1]), arch, registers: 0, spillStores: 0, spillLoads: 0, stack: 0,
        smem: 0, loops: [], serial: null, work: null };
      out.push(cur);
      ofEntry = true;
      continue;
    }
    if (!cur) continue;
    const props = /Function properties for (\S+)/.exec(line);
    if (props) ofEntry = props[1] === cur.mangled;
    const frame = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
    if (frame) {
      const [stack, st, ld] = frame.slice(1).map(Number);
      if (ofEntry) [cur.stack, cur.spillStores, cur.spillLoads] = [stack, st, ld];
      else [cur.stack, cur.spillStores, cur.spillLoads] = [Math.max(cur.stack, stack), cur.spillStores + st, cur.spillLoads + ld];
    }
    const used = /Used (\d+) registers/.exec(line);
    if (used) cur.registers = Number(used[1]);
    const smem = /(\d+) bytes smem/.exec(line);
    if (smem) cur.smem = Number(smem[1]);
  }
  return out;
}

function shortName(mangled: string): string {
  let name = mangled;
  try {
    name = execFileSync('c++filt', [mangled], { encoding: 'utf8', env: toolEnv() }).trim();
  } catch {
    return mangled;
  }
  name = name.replace(/papo::cuda::/g, '').replace(/\(anonymous namespace\)::/g, '');
  return name.replace(/\(.*\)$/, '').replace(/^void /, '');  // the parameter list, the return type
}

// ---- PTX row loops ------------------------------------------------------------------------------------------

interface Block {
  label: string;
  insns: string[];
}

const VEC_LOAD = /^ld\.(global(\.nc)?|shared)(\.\w+)*\.v4\./;
const SCALAR_LOAD = /^ld\.global(\.(nc|L1::\w+|L2::\w+))*\.(u16|b16|f32|u32|b32)\s/;
const SCALAR_STORE = /^st\.global(\.(cs|L1::\w+|L2::\w+))*\.(u16|b16|f32|u32|b32)\s/;

/** Per entry function (mangled name): its row loops' common paths. */
export function rowLoops(ptx: string): Map<string, RawLoop[]> {
  const out = new Map<string, RawLoop[]>();
  for (const [name, body] of entries(ptx)) out.set(name, loopsOf(blocksOf(body)).map((f) => f.loop));
  return out;
}

/** Per entry function (mangled name): its work loop's fixed cost, where it has one around its row loops. */
export function workLoops(ptx: string): Map<string, WorkLoop | null> {
  const out = new Map<string, WorkLoop | null>();
  for (const [name, body] of entries(ptx)) {
    const blocks = blocksOf(body);
    out.set(name, workLoopOf(blocks, loopsOf(blocks)));
  }
  return out;
}

function entries(ptx: string): [string, string][] {
  return ptx.split(/\.entry\s+/).slice(1).map((e) => [/^(\w+)/.exec(e)![1], e]);
}

function blocksOf(body: string): Block[] {
  const blocks: Block[] = [{ label: '', insns: [] }];
  for (const raw of body.split('\n')) {
    const line = raw.replace(/\/\/.*$/, '').trim();
    if (!line) continue;
    const label = /^(\$\w+):$/.exec(line);
    if (label) {
      blocks.push({ label: label[1], insns: [] });
      continue;
    }
    if (line.startsWith('.') || line === '{' || line === '}' || line.startsWith(')') || line.startsWith('(')) continue;
    if (!line.endsWith(';')) continue;
    blocks[blocks.length - 1].insns.push(line);
  }
  // A branch or a return ends a block: split there, so that edges are between blocks only.
  const split: Block[] = [];
  for (const b of blocks) {
    let cur: Block = { label: b.label, insns: [] };
    for (const i of b.insns) {
      cur.insns.push(i);
      if (/^(bra|ret|exit)/.test(op(i))) {
        split.push(cur);
        cur = { label: '', insns: [] };
      }
    }
    if (cur.insns.length || cur.label) split.push(cur);
  }
  return split;
}

function target(insn: string): string | null {
  const m = /^bra(\.uni)?\s+(\$\w+);/.exec(insn);
  return m ? m[2] : null;
}

const op = (insn: string) => insn.replace(/^@!?%p\d+\s+/, '');
const guarded = (insn: string) => /^@/.test(insn);

interface FoundLoop {
  loop: RawLoop;
  head: number;   // block indices
  latch: number;
}

function labelIndex(blocks: Block[]): Map<string, number> {
  return new Map(blocks.filter((b) => b.label).map((b) => [b.label, blocks.indexOf(b)]));
}

function loopsOf(blocks: Block[]): FoundLoop[] {
  const index = labelIndex(blocks);
  const loops: FoundLoop[] = [];
  blocks.forEach((b, latch) => {
    const t = target(op(b.insns[b.insns.length - 1] ?? ''));
    const head = t === null ? undefined : index.get(t);
    if (head === undefined || head > latch) return;
    const body = blocks.slice(head, latch + 1);
    if (!body.some((x) => x.insns.some((i) => VEC_LOAD.test(op(i))))) return;
    const inner = body.slice(0, -1).some((x, k) => {  // an outer loop (the row loop) holds row loops
      const j = index.get(target(op(x.insns[x.insns.length - 1] ?? '')) ?? '');
      return j !== undefined && j >= head && j <= head + k;
    });
    if (inner) return;
    // Vector stores where the compiler kept them; where it split them into scalars on every path, those.
    const path = commonPath(body, index, head, (i) => SCALAR_LOAD.test(i) || SCALAR_STORE.test(i))
      ?? commonPath(body, index, head, (i) => SCALAR_LOAD.test(i));
    if (!path) return;
    const insns = path.flatMap((x) => x.insns).map(op);
    const vectors = insns.filter((i) => VEC_LOAD.test(i)).length;
    const exps = insns.filter((i) => i.startsWith('ex2.')).length;
    const expsFtz = insns.filter((i) => i.startsWith('ex2.approx.ftz')).length;
    if (!exps || !vectors) return;
    loops.push({ loop: { kind: insns.some((i) => i.startsWith('st.global')) ? 'grad' : 'stats', instructions: insns.length,
      vectors, exps, expsFtz }, head, latch });
  });
  return loops;
}

/** The successors of block k: its branch's target and, unless the branch is unconditional, the next block. */
function successors(blocks: Block[], index: Map<string, number>, k: number): number[] {
  const last = blocks[k].insns[blocks[k].insns.length - 1] ?? '';
  const t = target(op(last));
  const out: number[] = [];
  const j = t === null ? undefined : index.get(t);
  if (j !== undefined) out.push(j);
  if (!/^(ret|exit)/.test(op(last)) && (t === null || guarded(last))) out.push(k + 1);
  return out;
}

/** Natural loops of the control-flow graph (PTX lays blocks out in any order, so not by index): each header
 * (the target of a back edge found by a depth-first walk from the entry) with its blocks and latches. */
function naturalLoops(blocks: Block[], succ: number[][]): Map<number, { body: Set<number>; latches: number[] }> {
  const pred: number[][] = blocks.map(() => []);
  succ.forEach((ss, k) => ss.forEach((s) => pred[s].push(k)));
  const state = new Array<number>(blocks.length).fill(0);  // 0 unseen, 1 on the stack, 2 done
  const back: [number, number][] = [];
  const stack: [number, number][] = [[0, 0]];
  state[0] = 1;
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [k, i] = top;
    if (i < succ[k].length) {
      top[1]++;
      const s = succ[k][i];
      if (state[s] === 1) back.push([k, s]);
      else if (state[s] === 0) {
        state[s] = 1;
        stack.push([s, 0]);
      }
    } else {
      state[k] = 2;
      stack.pop();
    }
  }
  const loops = new Map<number, { body: Set<number>; latches: number[] }>();
  for (const [latch, h] of back) {
    const l = loops.get(h) ?? { body: new Set([h]), latches: [] };
    l.latches.push(latch);
    const todo = [latch];
    while (todo.length) {
      const k = todo.pop()!;
      if (l.body.has(k)) continue;
      l.body.add(k);
      todo.push(...pred[k]);
    }
    loops.set(h, l);
  }
  return loops;
}

/** The innermost loop around the main row loops (those with the most vectors of their kind), and what one
 * iteration of it costs outside them (WorkLoop). */
function workLoopOf(blocks: Block[], rows: FoundLoop[]): WorkLoop | null {
  const index = labelIndex(blocks);
  const succ = blocks.map((_, k) => successors(blocks, index, k).filter((s) => s < blocks.length));
  const loops = naturalLoops(blocks, succ);
  const main = (kind: 'stats' | 'grad') => {
    const all = rows.filter((r) => r.loop.kind === kind);
    const most = Math.max(0, ...all.map((r) => r.loop.vectors));
    return all.filter((r) => r.loop.vectors === most).map((r) => r.head).sort((a, b) => a - b);
  };
  const stats = main('stats'), grad = main('grad');
  if (!stats.length || !grad.length) return null;
  const rowBlocks = new Set<number>();
  for (const r of rows) for (const k of loops.get(r.head)?.body ?? []) rowBlocks.add(k);
  let work: { head: number; body: Set<number>; latches: number[] } | null = null;
  for (const [head, l] of loops)
    if (!rows.some((r) => r.head === head) && [...stats, ...grad].every((h) => l.body.has(h)) &&
        (!work || l.body.size < work.body.size)) work = { head, ...l };
  if (!work) return null;
  const { head, body, latches } = work;
  const weight = (k: number) => (rowBlocks.has(k) ? 0 : blocks[k].insns.length);
  // Shortest paths inside the work loop from `from` (its own weight included), never back through its head.
  const from = (a: number) => {
    const d = new Map<number, number>([[a, weight(a)]]);
    const done = new Set<number>();
    for (;;) {
      let k = -1;
      for (const [b, v] of d) if (!done.has(b) && (k < 0 || v < d.get(k)!)) k = b;
      if (k < 0) return d;
      done.add(k);
      for (const s of succ[k]) {
        if (!body.has(s) || s === head) continue;
        const v = d.get(k)! + weight(s);
        if (v < (d.get(s) ?? Infinity)) d.set(s, v);
      }
    }
  };
  const chain = (stops: number[]) => {
    let at = head, cost = weight(head);
    for (const s of [...stops, -1]) {
      const d = from(at);
      const v = s < 0 ? Math.min(...latches.map((l) => d.get(l) ?? Infinity)) : d.get(s) ?? Infinity;
      if (v === Infinity) return null;
      cost += v - weight(at);
      at = s;
    }
    return cost;
  };
  const st = chain(stats), gr = chain(grad);
  if (st === null || gr === null) return null;
  // One iteration through all of them: in the order the blocks are laid out, else statistics first.
  return { stats: st, grad: gr, both: chain([...stats, ...grad].sort((a, b) => a - b)) ?? chain([...stats, ...grad]) };
}

/** The longest path from the loop's head to its latch through blocks with no instruction that `avoid` names. */
function commonPath(body: Block[], index: Map<string, number>, head: number, avoid: (insn: string) => boolean): Block[] | null {
  const n = body.length;
  const ok = (b: Block) => !b.insns.some((i) => avoid(op(i)));
  const weight = (p: Block[]) => p.reduce((a, x) => a + x.insns.length, 0);
  const best: (Block[] | null)[] = new Array(n).fill(null);
  if (!ok(body[0])) return null;
  best[0] = [body[0]];
  for (let k = 0; k < n; k++) {
    const cur = best[k];
    if (!cur) continue;
    const last = body[k].insns[body[k].insns.length - 1] ?? '';
    const t = target(op(last));
    const succ: number[] = [];
    const j = t === null ? undefined : index.get(t);
    if (j !== undefined && j - head > k) succ.push(j - head);
    if (t === null || guarded(last)) succ.push(k + 1);  // falls through unless an unconditional branch
    for (const s of succ) {
      if (s >= n || !ok(body[s])) continue;
      const cand = [...cur, body[s]];
      if (!best[s] || weight(cand) > weight(best[s]!)) best[s] = cand;
    }
  }
  return best[n - 1];
}
