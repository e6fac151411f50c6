// What a benchmark run leaves behind: the table (stdout), JSON lines appended to bench/results/, and an SVG
// chart of the speedup over the naive baseline and the fraction of the roofline against the vocabulary size.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Timing } from './harness';

export interface Row {
  kind: string;      // 'fwd+bwd' (papoLoss, both paths) or 'fwd' (logProbs, one path)
  backend: string;
  N: number;
  V: number;
  dtype: string;
  timing: Timing;
  bytes: number;      // minimal bytes moved
  elements: number;   // logits elements processed
  rooflineGBs: number;  // copy rate measured in this run for this case's placement (host or device)
  speedup: number;    // per element, over the reference backend
  vsNaiveGpu?: number;  // per element, over cuda-naive (GPU rows)
  expFloorFraction?: number;  // CPU rows: exponentials per second over the exp floor of the same run
}

export interface Machine {
  date: string;
  commit: string;
  host: string;
  cpu: string;
  cores: number;
  cpuIsa: string;
  threads: number;
  gpu: string | null;
  expFloorMelemPerS?: number;
  /** The tfjs peer's version, backend, SIMD and threads, when it ran. */
  tfjs?: string;
}

const gbs = (r: Row) => r.bytes / r.timing.medianMs / 1e6;

/** Where a row ran: the CPU model, kernels and threads, or the GPU. */
export function machineOf(r: Row, m: Machine): string {
  if (r.backend.startsWith('cuda')) return m.gpu ?? 'GPU';
  if (r.backend.startsWith('tfjs-')) return `${m.cpu}, ${m.tfjs ?? 'tfjs'}`;
  return r.backend === 'reference' ? `${m.cpu}, TypeScript, 1 thread` : `${m.cpu}, ${m.cpuIsa}, ${m.threads} threads`;
}

export function printTable(rows: Row[], m: Machine) {
  console.log('| case | dtype | V | backend | machine | N | median ms | spread ms (min–max) | ±rme | Melem/s | GB/s | % roofline | % exp floor | speedup |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const t = r.timing;
    const speed = `${r.speedup >= 100 ? r.speedup.toFixed(0) : r.speedup.toFixed(1)}x` +
      (r.vsNaiveGpu !== undefined ? ` (${r.vsNaiveGpu.toFixed(1)}x cuda-naive)` : '');
    const floor = r.expFloorFraction !== undefined ? `${(100 * r.expFloorFraction).toFixed(0)}%` : '';
    console.log(`| ${r.kind} | ${r.dtype} | ${r.V} | ${r.backend} | ${machineOf(r, m)} | ${r.N} | ${t.medianMs.toFixed(2)} | ` +
      `${t.minMs.toFixed(2)}–${t.maxMs.toFixed(2)} | ${t.rme.toFixed(1)}% | ${(r.elements / t.medianMs / 1e3).toFixed(1)} | ` +
      `${gbs(r).toFixed(2)} | ${(100 * gbs(r) / r.rooflineGBs).toFixed(1)}% | ${floor} | ${speed} |`);
  }
}

export function appendJsonLines(file: string, m: Machine, rows: Row[]) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const lines = rows.map((r) => JSON.stringify({
    ...m, case: r.kind, backend: r.backend, N: r.N, V: r.V, dtype: r.dtype,
    medianMs: r.timing.medianMs, minMs: r.timing.minMs, maxMs: r.timing.maxMs, rme: r.timing.rme, samples: r.timing.samples,
    melemPerS: r.elements / r.timing.medianMs / 1e3, gbPerS: gbs(r), rooflineGbPerS: r.rooflineGBs,
    rooflineFraction: gbs(r) / r.rooflineGBs, speedup: r.speedup, ...(r.vsNaiveGpu !== undefined ? { vsCudaNaive: r.vsNaiveGpu } : {}),
    ...(r.expFloorFraction !== undefined ? { expFloorFraction: r.expFloorFraction } : {}),
  }));
  fs.appendFileSync(file, lines.join('\n') + '\n');
}

// ---- SVG -------------------------------------------------------------------------------------------------------

const COLORS: Record<string, string> = { cpu: '#1f77b4', cuda: '#2ca02c', 'cuda-naive': '#ff7f0e', 'torch-eager': '#9467bd', 'torch-compile': '#8c564b',
  'tfjs-wasm': '#d62728', 'tfjs-cpu': '#e377c2' };

function panel(x0: number, title: string, rows: Row[], value: (r: Row) => number, logY: boolean, yLabel: string): string {
  const w = 420, h = 300, left = 60, top = 40, pw = w - left - 20, ph = h - top - 50;
  const vs = [...new Set(rows.map((r) => r.V))].sort((a, b) => a - b);
  const vals = rows.map(value).filter((v) => v > 0 && Number.isFinite(v));
  let lo = logY ? Math.min(...vals) / 1.5 : 0, hi = logY ? Math.max(...vals) * 1.5 : Math.max(100, ...vals);
  if (!(lo > 0) && logY) lo = 1;
  if (!(hi > lo)) hi = lo * 10;
  const fx = (V: number) => vs.length === 1 ? pw / 2 : ((Math.log(V) - Math.log(vs[0])) / (Math.log(vs[vs.length - 1]) - Math.log(vs[0]))) * pw;
  const fy = (v: number) => ph - (logY ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : (v - lo) / (hi - lo)) * ph;
  const out: string[] = [`<g transform="translate(${x0 + left},${top})">`];
  out.push(`<text x="${pw / 2}" y="-18" text-anchor="middle" font-weight="bold">${title}</text>`);
  out.push(`<rect width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  const ticks = logY ? [1, 3, 10, 30, 100, 300, 1000, 3000, 10000].filter((t) => t >= lo && t <= hi) : [0, 25, 50, 75, 100].filter((t) => t <= hi);
  for (const t of ticks) out.push(`<line x1="0" x2="${pw}" y1="${fy(t)}" y2="${fy(t)}" stroke="#eee"/><text x="-6" y="${fy(t) + 4}" text-anchor="end" font-size="11">${t}</text>`);
  for (const V of vs) out.push(`<text x="${fx(V)}" y="${ph + 16}" text-anchor="middle" font-size="11">${V}</text>`);
  out.push(`<text x="${pw / 2}" y="${ph + 34}" text-anchor="middle" font-size="12">vocabulary size V (log)</text>`);
  out.push(`<text transform="translate(-44,${ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${yLabel}</text>`);
  const series = new Map<string, Row[]>();
  for (const r of rows) {
    const key = `${r.backend} ${r.kind} ${r.dtype}`;
    series.set(key, [...(series.get(key) ?? []), r]);
  }
  for (const [, rs] of series) {
    const pts = rs.filter((r) => value(r) > 0).sort((a, b) => a.V - b.V).map((r) => `${fx(r.V).toFixed(1)},${fy(value(r)).toFixed(1)}`);
    const color = COLORS[rs[0].backend] ?? '#333';
    const dash = rs[0].kind === 'fwd' ? ' stroke-dasharray="5,3"' : '';
    out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const p of pts) {
      const [x, y] = p.split(',');
      out.push(rs[0].dtype === 'bfloat16'
        ? `<rect x="${+x - 3.5}" y="${+y - 3.5}" width="7" height="7" fill="${color}"/>`
        : `<circle cx="${x}" cy="${y}" r="3.5" fill="${color}"/>`);
    }
  }
  out.push('</g>');
  return out.join('\n');
}

export function writeChart(file: string, m: Machine, rows: Row[]) {
  const fast = rows.filter((r) => r.backend !== 'reference');
  const backends = [...new Set(fast.map((r) => r.backend))];
  const legend = backends.map((b, i) => `<g transform="translate(${70 + i * 130},335)"><line x2="24" stroke="${COLORS[b] ?? '#333'}" stroke-width="3"/><text x="30" y="4" font-size="12">${b}</text></g>`).join('\n');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="860" height="380" font-family="sans-serif" font-size="12">
<rect width="860" height="380" fill="white"/>
${panel(0, 'speedup over the naive reference (per element)', fast, (r) => r.speedup, true, 'speedup (x, log)')}
${panel(430, '% of the roofline (copy of the same bytes)', fast, (r) => 100 * gbs(r) / r.rooflineGBs, false, '% of copy rate')}
${legend}
<text x="70" y="362" font-size="11">solid: papoLoss fwd+bwd (both paths); dashed: logProbs fwd; circle: float32, square: bfloat16</text>
<text x="70" y="376" font-size="11">${m.date.slice(0, 10)}, commit ${m.commit}, ${m.gpu ?? m.cpu} (${m.cores} cores, ${m.cpuIsa}, ${m.threads} threads)</text>
</svg>
`;
  fs.writeFileSync(file, svg);
}
