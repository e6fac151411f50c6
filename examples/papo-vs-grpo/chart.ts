// The example's picture, hand-written SVG (no plotting dependency): reward and perception KL per step of each run,
// each as the raw per-step values (faint) and their moving average (bold).

export interface Series {
  name: string;
  color: string;
  reward: number[];
  perceptionKl: number[];
}

const WINDOW = 10;

function movingAverage(v: number[]): number[] {
  return v.map((_, i) => {
    const from = Math.max(0, i - WINDOW + 1);
    return v.slice(from, i + 1).reduce((a, b) => a + b, 0) / (i + 1 - from);
  });
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v)!;
}

/** The k3 estimator's clamp (docs/objective.md): each token's perception KL term is at most this, so a policy that
 * learns to give its answer no probability on masked images flattens against it. */
const K3_CLAMP = 10;

function panel(x0: number, title: string, series: Series[], pick: (s: Series) => number[], yMax: number,
  mark?: { value: number; label: string }): string {
  const w = 430, h = 300, left = 56, top = 36, pw = w - left - 16, ph = h - top - 46;
  const steps = Math.max(...series.map((s) => pick(s).length));
  const fx = (i: number) => (steps > 1 ? (i / (steps - 1)) * pw : pw / 2);
  const fy = (v: number) => ph - (Math.min(v, yMax) / yMax) * ph;
  const out = [`<g transform="translate(${x0 + left},${top})">`,
    `<text x="${pw / 2}" y="-14" text-anchor="middle" font-weight="bold">${title}</text>`,
    `<rect width="${pw}" height="${ph}" fill="none" stroke="#999"/>`];
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    out.push(`<line x1="0" x2="${pw}" y1="${fy(v)}" y2="${fy(v)}" stroke="#eee"/>`,
      `<text x="-6" y="${fy(v) + 4}" text-anchor="end" font-size="11">${+v.toPrecision(3)}</text>`);
  }
  for (let k = 0; k <= 4; k++) {
    const step = Math.round((steps * k) / 4);  // after `step` steps: point step - 1
    out.push(`<text x="${fx(Math.max(step - 1, 0))}" y="${ph + 16}" text-anchor="middle" font-size="11">${step}</text>`);
  }
  out.push(`<text x="${pw / 2}" y="${ph + 34}" text-anchor="middle" font-size="12">training step</text>`);
  const line = (v: number[], color: string, width: number, opacity: number) =>
    `<polyline points="${v.map((y, i) => `${fx(i).toFixed(1)},${fy(y).toFixed(1)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="${width}" stroke-opacity="${opacity}"/>`;
  for (const s of series) out.push(line(pick(s), s.color, 1, 0.3), line(movingAverage(pick(s)), s.color, 2.5, 1));
  if (mark && mark.value <= yMax)
    out.push(`<line x1="0" x2="${pw}" y1="${fy(mark.value)}" y2="${fy(mark.value)}" stroke="#000" stroke-dasharray="6,4"/>`,
      `<text x="6" y="${fy(mark.value) - 5}" font-size="11">${mark.label}</text>`);
  out.push('</g>');
  return out.join('\n');
}

/** Two panels side by side, a legend and the caption lines under them. */
export function chartSvg(series: Series[], caption: string[]): string {
  // room above the clamp for its label when a run reaches it
  const klPeak = Math.max(...series.flatMap((s) => s.perceptionKl));
  const klMax = klPeak > K3_CLAMP / 2 ? 12 : niceMax(klPeak);
  const legend = series.map((s, i) =>
    `<g transform="translate(${70 + i * 170},322)"><line x2="24" stroke="${s.color}" stroke-width="3"/><text x="30" y="4">${s.name}</text></g>`).join('\n');
  const height = 340 + caption.length * 15;
  const lines = caption.map((c, i) => `<text x="70" y="${348 + i * 15}" font-size="11">${c.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="880" height="${height}" font-family="sans-serif" font-size="12">
<rect width="880" height="${height}" fill="white"/>
${panel(0, 'mean reward of the rollouts', series, (s) => s.reward, 1)}
${panel(440, 'perception KL (k3, token mean)', series, (s) => s.perceptionKl, klMax,
    { value: K3_CLAMP, label: `k3 clamp (${K3_CLAMP}): no token's KL term goes higher` })}
${legend}
<text x="420" y="326" font-size="11">faint: per step; bold: mean of the last ${WINDOW} steps</text>
${lines}
</svg>
`;
}
