// Kernel k3's serial section, counted in its PTX: the code between the two cluster barriers of a row pair, where
// every SM of the cluster waits for what one part of block 0 computes. Found as the instructions reachable from
// a barrier.cluster.wait to the next barrier.cluster.arrive without a block barrier (bar.sync) on the way: the
// other stretches between cluster barriers hold the row loops and their block reductions. Instructions on a cycle
// of that stretch's control flow (a loop: the rank-by-rank merge of older code, the scan of a bad row) are counted
// apart, since their count is not their cost.
//
// What the counts say, and what the static report's napkin latency of the section rests on: loads from global
// memory (ld.global) and through generic pointers (ld without a state space: here the distributed shared memory
// of other blocks, mapped by mapa) each cost hundreds of cycles when a thread waits for them; shared loads and
// shuffles tens; fp64 divisions (div / rcp .f64) a few dozen.

export interface SectionCounts {
  instructions: number;
  f64: number;           // instructions on fp64 values
  globalLoads: number;
  genericLoads: number;
  sharedLoads: number;
  globalStores: number;
  genericStores: number;
  f64Divisions: number;  // div.*.f64 and rcp.*.f64
}

export interface SerialSection extends SectionCounts {
  inLoops: SectionCounts;
}

const empty = (): SectionCounts => ({ instructions: 0, f64: 0, globalLoads: 0, genericLoads: 0, sharedLoads: 0,
  globalStores: 0, genericStores: 0, f64Divisions: 0 });

const opOf = (insn: string) => insn.replace(/^@!?%p\d+\s+/, '').split(/\s+/)[0];
const branchTarget = (insn: string) => /bra(\.uni)?\s+(\$\w+);/.exec(insn)?.[2] ?? null;
const BLOCK_BARRIER = /^(bar\.sync|bar\.red|barrier\.sync|barrier\.red|bar\.arrive|barrier\.arrive)\b/;

function count(c: SectionCounts, insn: string) {
  const o = opOf(insn);
  c.instructions++;
  if (/\.f64\b/.test(o)) c.f64++;
  if (/^ld\.global/.test(o)) c.globalLoads++;
  else if (/^ld\.shared/.test(o)) c.sharedLoads++;
  else if (/^ld\.(?!param|local|const)/.test(o)) c.genericLoads++;
  if (/^st\.global/.test(o)) c.globalStores++;
  else if (/^st\.(?!shared|param|local)/.test(o)) c.genericStores++;
  if (/^(div|rcp)\..*f64/.test(o)) c.f64Divisions++;
}

/** Per entry function (mangled name) of a PTX file: its serial section, or null where it has none. */
export function serialSections(ptx: string): Map<string, SerialSection | null> {
  const out = new Map<string, SerialSection | null>();
  for (const e of ptx.split(/\.entry\s+/).slice(1)) out.set(/^(\w+)/.exec(e)![1], serialSection(e));
  return out;
}

/** The serial section of one entry's PTX body, or null when it has no cluster barriers. */
export function serialSection(body: string): SerialSection | null {
  const lines = body.split('\n').map((l) => l.replace(/\/\/.*$/, '').trim())
    .filter((l) => /^\$\w+:$/.test(l) || (l.endsWith(';') && !l.startsWith('.')));
  const labels = new Map<string, number>();
  lines.forEach((l, i) => { if (l.endsWith(':')) labels.set(l.slice(0, -1), i); });
  const isCluster = (i: number) => lines[i].includes('barrier.cluster');
  const successors = (i: number): number[] => {
    const l = lines[i], t = branchTarget(l), out: number[] = [];
    if (t !== null && labels.has(t)) out.push(labels.get(t)!);
    const unconditional = !l.startsWith('@') && (t !== null || /^(ret|exit)\b/.test(opOf(l)));
    if (!unconditional && i + 1 < lines.length) out.push(i + 1);
    return out;
  };
  for (let w = 0; w < lines.length; w++) {
    if (!lines[w].includes('barrier.cluster.wait')) continue;
    // The stretch after this wait, up to (not through) any cluster barrier.
    const seen = new Set<number>(), edges = new Map<number, number[]>();
    let arrives = false, blockBarrier = false;
    const stack = [w + 1];
    while (stack.length) {
      const i = stack.pop()!;
      if (i >= lines.length || seen.has(i)) continue;
      if (isCluster(i)) {
        arrives = arrives || lines[i].includes('barrier.cluster.arrive');
        continue;
      }
      seen.add(i);
      if (BLOCK_BARRIER.test(opOf(lines[i]))) blockBarrier = true;
      const next = successors(i);
      edges.set(i, next.filter((j) => !isCluster(j)));
      stack.push(...next);
    }
    if (!arrives || blockBarrier || !seen.size) continue;
    const inLoop = onCycles(seen, edges);
    const s: SerialSection = { ...empty(), inLoops: empty() };
    for (const i of seen) if (!lines[i].endsWith(':')) count(inLoop.has(i) ? s.inLoops : s, lines[i]);
    return s;
  }
  return null;
}

/** The nodes of the graph that lie on a cycle (strongly connected components of more than one node, or a self-loop). */
function onCycles(nodes: Set<number>, edges: Map<number, number[]>): Set<number> {
  const index = new Map<number, number>(), low = new Map<number, number>(), onStack = new Set<number>();
  const stack: number[] = [], out = new Set<number>();
  let next = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: [number, number][] = [[root, 0]];
    while (work.length) {
      const [v, k] = work[work.length - 1];
      if (k === 0) {
        index.set(v, next); low.set(v, next); next++;
        stack.push(v); onStack.add(v);
      }
      const es = edges.get(v) ?? [];
      if (k < es.length) {
        work[work.length - 1][1] = k + 1;
        const u = es[k];
        if (!index.has(u)) work.push([u, 0]);
        else if (onStack.has(u)) low.set(v, Math.min(low.get(v)!, index.get(u)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const p = work[work.length - 1][0];
        low.set(p, Math.min(low.get(p)!, low.get(v)!));
      }
      if (low.get(v) === index.get(v)) {
        const comp: number[] = [];
        for (;;) {
          const u = stack.pop()!;
          onStack.delete(u);
          comp.push(u);
          if (u === v) break;
        }
        if (comp.length > 1 || (edges.get(v) ?? []).includes(v)) comp.forEach((u) => out.add(u));
      }
    }
  }
  return out;
}
