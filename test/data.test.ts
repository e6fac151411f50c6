// The data side: patch masks (statistics, whole cells, partial edges, seeds, layouts, fills, scores) and group
// advantages against hand-computed values.
import { describe, expect, it } from 'vitest';
import { broadcastAdvantages, groupAdvantages, maskImagePatches, maskPatchTokens } from '../lib';

function rgb(width: number, height: number) {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = 1 + (i % 250);  // never 0, so a 0 means masked
  return { data, width, height, channels: 3 };
}

describe('maskImagePatches', () => {
  it('bernoulli masks about ratio of the cells (binomial, 5 sigma)', () => {
    const cells = 100 * 100;
    const { mask, gridWidth, gridHeight } = maskImagePatches(rgb(1400, 1400), { seed: 1 });
    expect([gridWidth, gridHeight]).toEqual([100, 100]);
    const frac = mask.reduce((a, b) => a + b, 0) / cells;
    expect(Math.abs(frac - 0.6)).toBeLessThan(5 * Math.sqrt(0.6 * 0.4 / cells));
  });
  it('exact mode masks round(ratio * cells) cells', () => {
    for (const ratio of [0, 0.25, 0.6, 0.8, 1]) {
      const { mask } = maskImagePatches(rgb(100, 70), { mode: 'exact', ratio, seed: 3 });  // 8 x 5 cells
      expect(mask.reduce((a, b) => a + b, 0)).toBe(Math.round(ratio * 40));
    }
  });
  it('whole cells only, edge cells partial, unmasked pixels untouched', () => {
    const img = rgb(30, 17);  // 14-px grid: 3 x 2 cells, last column 2 px wide, last row 3 px tall
    const { image, mask, gridWidth, gridHeight } = maskImagePatches(img, { seed: 5, ratio: 0.5 });
    expect([gridWidth, gridHeight]).toEqual([3, 2]);
    for (let y = 0; y < 17; y++)
      for (let x = 0; x < 30; x++)
        for (let c = 0; c < 3; c++) {
          const i = (y * 30 + x) * 3 + c;
          const masked = mask[Math.floor(y / 14) * 3 + Math.floor(x / 14)] === 1;
          expect(image.data[i]).toBe(masked ? 0 : img.data[i]);
        }
    expect(mask.some((m) => m === 1) && mask.some((m) => m === 0)).toBe(true);
  });
  it('never modifies the input', () => {
    const img = rgb(64, 64);
    const before = img.data.slice();
    const { image } = maskImagePatches(img, { ratio: 1, seed: 1 });
    expect(img.data).toEqual(before);
    expect(image.data).not.toBe(img.data);
    expect(image.data.every((v) => v === 0)).toBe(true);
  });
  it('same seed, same mask; another seed, another mask', () => {
    const a = maskImagePatches(rgb(280, 280), { seed: 42 }).mask;
    expect(maskImagePatches(rgb(280, 280), { seed: 42 }).mask).toEqual(a);
    expect(maskImagePatches(rgb(280, 280), { seed: 43 }).mask).not.toEqual(a);
    expect(maskImagePatches(rgb(280, 280)).mask).not.toEqual(maskImagePatches(rgb(280, 280)).mask);  // unseeded: fresh
  });
  it('per-channel fill and Uint8ClampedArray', () => {
    const img = { ...rgb(28, 14), data: new Uint8ClampedArray(28 * 14 * 3).fill(9) };
    const { image, mask } = maskImagePatches(img, { ratio: 1, mode: 'exact', fill: [10, 20, 30] });
    expect(mask).toEqual(Uint8Array.of(1, 1));
    expect(image.data).toBeInstanceOf(Uint8ClampedArray);
    expect(Array.from(image.data.slice(0, 6))).toEqual([10, 20, 30, 10, 20, 30]);
  });
  it('float32 images in hwc and chw give the same cells', () => {
    const w = 20, h = 16, c = 2;
    const hwc = new Float32Array(w * h * c).map((_, i) => 0.5 + i);
    const chw = new Float32Array(w * h * c);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) chw[(k * h + y) * w + x] = hwc[(y * w + x) * c + k];
    const opts = { patchSize: 7, seed: 8, fill: [-1, -2] };
    const a = maskImagePatches({ data: hwc, width: w, height: h, channels: c, layout: 'hwc' }, opts);
    const b = maskImagePatches({ data: chw, width: w, height: h, channels: c, layout: 'chw' }, opts);
    expect(a.mask).toEqual(b.mask);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++)
      expect(b.image.data[(k * h + y) * w + x]).toBe(a.image.data[(y * w + x) * c + k]);
    expect(Array.from(a.image.data).filter((v) => v === -2).length).toBe(a.mask.reduce((s, m, i) => s + m * (Math.min(7, w - (i % 3) * 7) * Math.min(7, h - Math.floor(i / 3) * 7)), 0));
  });
  it('scores mask the highest-scoring cells, ties to the lower index', () => {
    const scores = [0.1, 0.9, 0.5, 0.9, 0.2, 0.0];  // 3 x 2 cells
    const { mask } = maskImagePatches(rgb(42, 28), { scores, ratio: 0.5 });
    expect(Array.from(mask)).toEqual([0, 1, 1, 1, 0, 0]);
    const { mask: one } = maskImagePatches(rgb(42, 28), { scores, ratio: 0.2 });  // round(1.2) = 1
    expect(Array.from(one)).toEqual([0, 1, 0, 0, 0, 0]);
  });
  it('rejects bad options clearly', () => {
    const img = rgb(28, 28);
    expect(() => maskImagePatches(img, { ratio: 1.5 })).toThrow(/options.ratio: expected a number in \[0, 1\]/);
    expect(() => maskImagePatches(img, { patchSize: 0 })).toThrow(/options.patchSize/);
    expect(() => maskImagePatches(img, { mode: 'random' as never })).toThrow(/options.mode/);
    expect(() => maskImagePatches(img, { fill: 300 })).toThrow(/options.fill: 8-bit/);
    expect(() => maskImagePatches(img, { fill: [1, 2] })).toThrow(/options.fill/);
    expect(() => maskImagePatches(img, { scores: [1, 2, 3] })).toThrow(/options.scores: expected 4 values/);
    expect(() => maskImagePatches(img, { seed: 1.5 })).toThrow(TypeError);
    expect(() => maskImagePatches(img, { ratoi: 0.5 } as never)).toThrow(/unknown option 'ratoi'/);
    expect(() => maskImagePatches({ ...img, width: 27 }, {})).toThrow(/image.data: expected/);
    expect(() => maskImagePatches({ ...img, layout: 'chw' }, {})).toThrow(/image.layout/);
  });
});

describe('maskPatchTokens', () => {
  it('masks whole rows with the same options, on a copy', () => {
    const P = 50, D = 6;
    const data = new Float32Array(P * D).map((_, i) => i + 1);
    const { pixelValues, mask } = maskPatchTokens({ data, dims: [P, D] }, { mode: 'exact', ratio: 0.6, seed: 2, fill: -0.5 });
    expect(mask.reduce((a, b) => a + b, 0)).toBe(30);
    for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) expect(pixelValues[p * D + d]).toBe(mask[p] ? -0.5 : data[p * D + d]);
    expect(data[0]).toBe(1);
    const again = maskPatchTokens(data, { dim: D, mode: 'exact', ratio: 0.6, seed: 2, fill: -0.5 });
    expect(again.mask).toEqual(mask);
    expect(() => maskPatchTokens(data, {})).toThrow(/options.dim: required/);
  });
});

describe('group advantages', () => {
  it('(s - mean) / (std + eps) with the unbiased std, per consecutive group', () => {
    const a = groupAdvantages([1, 0, 0, 1, 0.5, 0.5, 0.5, 0.5], { groupSize: 4 });
    const std = Math.sqrt((4 * 0.25) / 3);  // scores 1,0,0,1: mean 0.5, unbiased std sqrt(1/3)
    expect(a[0]).toBeCloseTo(0.5 / (std + 1e-6), 6);
    expect(a[1]).toBeCloseTo(-0.5 / (std + 1e-6), 6);
    expect(Array.from(a.slice(4))).toEqual([0, 0, 0, 0]);  // identical scores give zeros
  });
  it('Dr.GRPO: no std division', () => {
    expect(Array.from(groupAdvantages([3, 1, 2, 2], { groupSize: 2, normalizeStd: false }))).toEqual([1, -1, 0, 0]);
  });
  it('explicit group ids, in any order', () => {
    const a = groupAdvantages([1, 5, 3, 7], { groupIds: ['a', 'b', 'a', 'b'], eps: 0 });
    const s = Math.sqrt(2);  // pairs (1, 3) and (5, 7): mean 2 / 6, unbiased std sqrt(2)
    expect(a[0]).toBeCloseTo(-1 / s, 6);
    expect(a[2]).toBeCloseTo(1 / s, 6);
    expect(a[1]).toBeCloseTo(-1 / s, 6);
  });
  it('a group of one keeps its score (mean 0, std 1, as verl)', () => {
    expect(groupAdvantages([0.7], { groupSize: 1, eps: 0 })[0]).toBeCloseTo(0.7, 6);
  });
  it('rejects bad input', () => {
    expect(() => groupAdvantages([1, 2, 3], { groupSize: 2 })).toThrow(/do not split into groups of 2/);
    expect(() => groupAdvantages([1, NaN], { groupSize: 2 })).toThrow(/scores: element 1/);
    expect(() => groupAdvantages([1, 2], { groupSize: 2, groupIds: [1, 1] })).toThrow(/not both/);
    expect(() => groupAdvantages([1, 2], {} as never)).toThrow(/options.groupSize/);
  });
  it('broadcastAdvantages repeats per sequence', () => {
    expect(Array.from(broadcastAdvantages([0.5, -1, 2], [2, 0, 3]))).toEqual([0.5, 0.5, 2, 2, 2]);
    expect(() => broadcastAdvantages([1, 2], [1])).toThrow(/seqLengths: expected 2 lengths/);
  });
});
