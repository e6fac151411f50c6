// What a benchmark run leaves behind: the table (stdout), JSON lines appended to bench/results/, and an SVG
// chart of every backend's rate per case.
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

/** One JSON line per row: the machine's fields, then the row's. */
export function jsonLines(m: Machine, rows: Row[]): string[] {
  return rows.map((r) => JSON.stringify({
    ...m, case: r.kind, backend: r.backend, N: r.N, V: r.V, dtype: r.dtype,
    medianMs: r.timing.medianMs, minMs: r.timing.minMs, maxMs: r.timing.maxMs, rme: r.timing.rme, samples: r.timing.samples,
    melemPerS: r.elements / r.timing.medianMs / 1e3, gbPerS: gbs(r), rooflineGbPerS: r.rooflineGBs,
    rooflineFraction: gbs(r) / r.rooflineGBs, speedup: r.speedup, ...(r.vsNaiveGpu !== undefined ? { vsCudaNaive: r.vsNaiveGpu } : {}),
    ...(r.expFloorFraction !== undefined ? { expFloorFraction: r.expFloorFraction } : {}),
  }));
}

export function appendJsonLines(file: string, m: Machine, rows: Row[]) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.appendFileSync(file, jsonLines(m, rows).join('\n') + '\n');
}

// ---- SVG -------------------------------------------------------------------------------------------------------
// One horizontal bar per backend and case, on a log axis of logits elements per second, each bar named and
// labelled with its rate and how many times faster it is than every slower backend of its case: which backend is
// how much faster than which reads off the picture without the table.

/** What a chart needs of a row (a Row of this run, or a JSON line of an earlier one). */
export interface ChartRow {
  kind: string;
  backend: string;
  dtype: string;
  V: number;
  melemPerS: number;
}

const COLORS: Record<string, string> = { reference: '#7f7f7f', cpu: '#1f77b4', cuda: '#2ca02c', 'cuda-naive': '#ff7f0e',
  'torch-eager': '#9467bd', 'torch-compile': '#8c564b', 'tfjs-wasm': '#d62728', 'tfjs-cpu': '#e377c2' };

const escapeXml = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const ratio = (x: number) => `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(0) : x.toFixed(1)}×`;
const rate = (x: number) => x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);

export function chartRows(rows: Row[]): ChartRow[] {
  return rows.map((r) => ({ kind: r.kind, backend: r.backend, dtype: r.dtype, V: r.V, melemPerS: r.elements / r.timing.medianMs / 1e3 }));
}

export function writeChart(file: string, m: Machine, rows: ChartRow[]) {
  const caseKey = (r: ChartRow) => `${r.kind}|${r.dtype}|${r.V}`;
  const cases = [...new Set(rows.map(caseKey))];
  const labelW = 110, barW = 460, textW = 300, W = labelW + barW + textW, barH = 16, gap = 4, groupGap = 16, top = 64;
  const vals = rows.map((r) => r.melemPerS).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...vals))), hi = 10 ** Math.ceil(Math.log10(Math.max(...vals)));
  const fx = (v: number) => ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * barW;
  const out: string[] = [];
  let y = top;
  for (const c of cases) {
    const [kind, dtype, V] = c.split('|');
    const rs = rows.filter((r) => caseKey(r) === c).sort((a, b) => a.melemPerS - b.melemPerS);
    const what = kind === 'fwd' ? 'logProbs, forward, one path' : 'papoLoss, forward + backward, both paths';
    out.push(`<text x="8" y="${y + 12}"><tspan font-weight="bold">${kind} · ${dtype} · V = ${V}</tspan>` +
      `<tspan dx="12" font-size="11" fill="#555">${what}</tspan></text>`);
    y += 20;
    rs.forEach((r, i) => {
      const by = y + i * (barH + gap);
      const color = COLORS[r.backend] ?? '#333';
      const faster = rs.slice(0, i).reverse().map((s) => `${ratio(r.melemPerS / s.melemPerS)} ${s.backend}`);
      out.push(`<text x="${labelW - 8}" y="${by + 12}" text-anchor="end">${escapeXml(r.backend)}</text>`);
      out.push(`<rect x="${labelW}" y="${by}" width="${Math.max(1, fx(r.melemPerS)).toFixed(1)}" height="${barH}" fill="${color}"/>`);
      out.push(`<text x="${(labelW + fx(r.melemPerS) + 6).toFixed(1)}" y="${by + 12}" font-size="11">${rate(r.melemPerS)}` +
        (faster.length ? `  <tspan font-weight="bold">${escapeXml(faster.join(', '))}</tspan>` : '') + '</text>');
    });
    y += rs.length * (barH + gap) + groupGap;
  }
  const axisY = y;
  const grid: string[] = [];
  for (let t = lo; t <= hi * 1.0001; t *= 10) {
    const x = (labelW + fx(t)).toFixed(1);
    grid.push(`<line x1="${x}" x2="${x}" y1="${top - 6}" y2="${axisY}" stroke="#ddd"/>`);
    grid.push(`<text x="${x}" y="${axisY + 14}" text-anchor="middle" font-size="11">${t >= 1 ? t.toLocaleString('en-US') : t}</text>`);
  }
  const H = axisY + 70;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
<text x="8" y="22" font-size="15" font-weight="bold">Million logits elements per second, per backend (log scale; longer is faster)</text>
<text x="8" y="42" font-size="11" fill="#333">Each bar: its rate, then how many times faster than each slower backend of the same case (per element; rows are sized per backend).</text>
${grid.join('\n')}
${out.join('\n')}
<text x="${labelW + barW / 2}" y="${axisY + 30}" text-anchor="middle" font-size="12">Melem/s (log)</text>
<text x="8" y="${axisY + 52}" font-size="11" fill="#333">${escapeXml(`${m.date.slice(0, 10)}, commit ${m.commit}, ${m.gpu ?? m.cpu} (${m.cores} cores, ${m.cpuIsa} kernels, ${m.threads} threads)` +
    (m.tfjs ? `; ${m.tfjs}` : ''))}</text>
</svg>
`;
  fs.writeFileSync(file, svg);
}
