// Patch masking for PAPO's second forward pass (docs/objective.md, "Around the loss"): a grid of patchSize-px cells from (0, 0),
// edge cells partial, each cell blacked (every channel set to `fill`) independently with probability `ratio`
// (the released code's behaviour), or exactly round(ratio * cells) of them, or the highest-scoring ones.
// The input is never modified; the same seed gives the same mask.
import { describe, rangeError, typeError } from './errors';
import { seededRandom } from './random';

export interface Image {
  data: Uint8Array | Uint8ClampedArray | Float32Array;
  width: number;
  height: number;
  channels: number;
  /** Float32Array data only: 'hwc' (default) or 'chw'. 8-bit data is HWC, as decoded images are. */
  layout?: 'hwc' | 'chw';
}

export interface MaskOptions {
  /** Cell side in pixels (default 14, the ViT patch of Qwen2.5-VL). */
  patchSize?: number;
  /** Fraction of cells to mask, in [0, 1] (default 0.6). */
  ratio?: number;
  /** 'bernoulli' (default): each cell with probability ratio; 'exact': exactly round(ratio * cells). */
  mode?: 'bernoulli' | 'exact';
  /** Same seed, same mask. Absent: a fresh random mask each call. */
  seed?: number;
  /** The masked value: one number, or one per channel (default 0). */
  fill?: number | readonly number[];
  /** One score per cell: masks the round(ratio * cells) highest-scoring cells ("semantic" masking). */
  scores?: ArrayLike<number>;
}

export interface MaskedImage {
  image: Image;
  /** One byte per cell, row-major: 1 = masked. */
  mask: Uint8Array;
  gridWidth: number;
  gridHeight: number;
}

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw rangeError(name, `expected a positive integer, got ${describe(v)}`);
  return v;
}

/** Which of `cells` cells to mask, per the options. */
export function drawCellMask(cells: number, options: MaskOptions = {}, name = 'options'): Uint8Array {
  const known = ['patchSize', 'ratio', 'mode', 'seed', 'fill', 'scores', 'dim'];
  for (const k of Object.keys(options)) if (!known.includes(k)) throw rangeError(name, `unknown option '${k}'`);
  const ratio = options.ratio ?? 0.6;
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio <= 1)) throw rangeError(`${name}.ratio`, `expected a number in [0, 1], got ${describe(ratio)}`);
  const mode = options.mode ?? 'bernoulli';
  if (mode !== 'bernoulli' && mode !== 'exact') throw rangeError(`${name}.mode`, `expected 'bernoulli' or 'exact', got ${describe(mode)}`);
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isSafeInteger(options.seed)))
    throw typeError(`${name}.seed`, 'an integer', options.seed);
  const mask = new Uint8Array(cells);
  const count = Math.round(ratio * cells);
  if (options.scores !== undefined) {
    const s = options.scores;
    if (s === null || typeof s !== 'object' || typeof s.length !== 'number') throw typeError(`${name}.scores`, `${cells} numbers (one per cell)`, s);
    if (s.length !== cells) throw rangeError(`${name}.scores`, `expected ${cells} values (one per cell), got ${s.length}`);
    for (let i = 0; i < cells; i++) if (!Number.isFinite(s[i])) throw rangeError(`${name}.scores`, `element ${i} is ${s[i]}, expected a finite number`);
    // highest first; ties go to the lower cell index, so the result never depends on the sort's stability
    const order = Array.from({ length: cells }, (_, i) => i).sort((a, b) => s[b] - s[a] || a - b);
    for (let k = 0; k < count; k++) mask[order[k]] = 1;
    return mask;
  }
  const random = seededRandom(options.seed);
  if (mode === 'bernoulli') {
    for (let i = 0; i < cells; i++) mask[i] = random() < ratio ? 1 : 0;
  } else {
    // partial Fisher-Yates: the first `count` of a uniform random permutation
    const idx = Array.from({ length: cells }, (_, i) => i);
    for (let k = 0; k < count; k++) {
      const j = k + Math.floor(random() * (cells - k));
      [idx[k], idx[j]] = [idx[j], idx[k]];
      mask[idx[k]] = 1;
    }
  }
  return mask;
}

function fillValues(fill: MaskOptions['fill'], channels: number, eightBit: boolean): number[] {
  const values = fill === undefined ? [0] : typeof fill === 'number' ? [fill] : fill;
  if (!Array.isArray(values) || (values.length !== 1 && values.length !== channels))
    throw typeError('options.fill', `a number or ${channels} numbers (one per channel)`, fill);
  for (const v of values) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw rangeError('options.fill', `expected finite numbers, got ${describe(v)}`);
    if (eightBit && (!Number.isInteger(v) || v < 0 || v > 255)) throw rangeError('options.fill', `8-bit images take integers in [0, 255], got ${v}`);
  }
  return values.length === 1 ? new Array<number>(channels).fill(values[0]) : [...values];
}

/** A copy of `image` with a grid of cells blacked out, and the cell mask. */
export function maskImagePatches(image: Image, options: MaskOptions = {}): MaskedImage {
  if (image === null || typeof image !== 'object') throw typeError('image', '{ data, width, height, channels }', image);
  const width = positiveInt('image.width', image.width);
  const height = positiveInt('image.height', image.height);
  const channels = positiveInt('image.channels', image.channels);
  const { data } = image;
  const eightBit = data instanceof Uint8Array || data instanceof Uint8ClampedArray;
  if (!eightBit && !(data instanceof Float32Array)) throw typeError('image.data', 'a Uint8Array, Uint8ClampedArray or Float32Array', data);
  const layout = image.layout ?? 'hwc';
  if (layout !== 'hwc' && layout !== 'chw') throw rangeError('image.layout', `expected 'hwc' or 'chw', got ${describe(layout)}`);
  if (eightBit && layout !== 'hwc') throw rangeError('image.layout', "8-bit images are HWC; 'chw' is for Float32Array data");
  if (data.length !== width * height * channels)
    throw rangeError('image.data', `expected width * height * channels = ${width * height * channels} values, got ${data.length}`);
  if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
  const patch = positiveInt('options.patchSize', options.patchSize ?? 14);
  const gridWidth = Math.ceil(width / patch), gridHeight = Math.ceil(height / patch);
  const mask = drawCellMask(gridWidth * gridHeight, options);
  const fill = fillValues(options.fill, channels, eightBit);
  const uniform = fill.every((v) => v === fill[0]);

  const out = data.slice();
  for (let gy = 0; gy < gridHeight; gy++) {
    const y0 = gy * patch, y1 = Math.min(y0 + patch, height);
    for (let gx = 0; gx < gridWidth; gx++) {
      if (!mask[gy * gridWidth + gx]) continue;
      const x0 = gx * patch, x1 = Math.min(x0 + patch, width);  // edge cells are partial
      for (let y = y0; y < y1; y++) {
        if (layout === 'chw') {
          for (let c = 0; c < channels; c++) out.fill(fill[c], (c * height + y) * width + x0, (c * height + y) * width + x1);
        } else if (uniform) {
          out.fill(fill[0], (y * width + x0) * channels, (y * width + x1) * channels);
        } else {
          for (let x = x0; x < x1; x++) for (let c = 0; c < channels; c++) out[(y * width + x) * channels + c] = fill[c];
        }
      }
    }
  }
  return { image: { data: out, width, height, channels, ...(image.layout ? { layout } : {}) }, mask, gridWidth, gridHeight };
}

export interface PatchTokens {
  data: Float32Array;
  dims: readonly [number, number] | readonly number[];
}

/**
 * Masks whole rows of vision-encoder patches ([P, D], one row per patch, as Qwen2.5-VL-style processors emit).
 * Note that such pixel values are usually normalised: fill 0 is then the mean colour, not black.
 */
export function maskPatchTokens(pixelValues: Float32Array | PatchTokens, options: MaskOptions & { dim?: number } = {}) {
  let data: Float32Array;
  let D: number;
  if (pixelValues instanceof Float32Array) {
    data = pixelValues;
    if (options.dim === undefined) throw rangeError('options.dim', 'required with a bare Float32Array: the patch row length D');
    D = positiveInt('options.dim', options.dim);
  } else if (pixelValues && pixelValues.data instanceof Float32Array && Array.isArray(pixelValues.dims) && pixelValues.dims.length === 2) {
    data = pixelValues.data;
    D = positiveInt('pixelValues.dims[1]', pixelValues.dims[1]);
    positiveInt('pixelValues.dims[0]', pixelValues.dims[0]);
    if (pixelValues.dims[0] * D !== data.length) throw rangeError('pixelValues.dims', `[${pixelValues.dims.join(', ')}] does not match ${data.length} values`);
  } else {
    throw typeError('pixelValues', 'a Float32Array [P * D] or { data: Float32Array, dims: [P, D] }', pixelValues);
  }
  if (data.length % D !== 0) throw rangeError('pixelValues', `length ${data.length} is not a multiple of D = ${D}`);
  const P = data.length / D;
  const mask = drawCellMask(P, options);
  const fill = options.fill === undefined ? [0] : typeof options.fill === 'number' ? [options.fill] : [...options.fill];
  if (fill.length !== 1 && fill.length !== D) throw typeError('options.fill', `a number or ${D} numbers (one per feature)`, options.fill);
  if (!fill.every(Number.isFinite)) throw rangeError('options.fill', 'expected finite numbers');
  const out = data.slice();
  for (let p = 0; p < P; p++) {
    if (!mask[p]) continue;
    if (fill.length === 1) out.fill(fill[0], p * D, (p + 1) * D);
    else out.set(fill, p * D);
  }
  return { pixelValues: out, mask };
}
