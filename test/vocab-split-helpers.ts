// What the tests of logits split over the vocabulary share (cpu in vocab-split.test.ts, cuda in
// cuda-vocab-split.test.ts): cutting inputs into uneven shards with the targets in chosen shards, joining shard
// gradients, and the comparison of a split call's outputs with the unsplit call's.
import { expect } from 'vitest';
import { fromFloat64, toFloat64 } from '../lib/dtype';
import type { PapoInputs, PapoOptions, PapoResult, SplitPapoInputs, SplitPapoResult, Tensor } from '../lib/types';
import { expectClose, expectNumberClose, makeVariantInputs, maxAbs, type MakeOptions, type VariantInputs } from './helpers';

export const V = 4099;
export const base: PapoOptions = { perceptionCoef: 0.02, entropyCoef: 0.03, maskedEntropyCoef: 0.03 };

/** Columns [start, start + width) of every row of t, as a tensor of t's rows. */
export function columns(t: Tensor, start: number, width: number): Tensor {
  const Vt = t.dims[t.dims.length - 1];
  const rows = t.data.length / Vt;
  const data = t.type === 'float32' ? new Float32Array(rows * width) : new Uint16Array(rows * width);
  for (let i = 0; i < rows; i++) data.set(t.data.subarray(i * Vt + start, i * Vt + start + width), i * width);
  return { data, dims: [...t.dims.slice(0, -1), width], type: t.type };
}

/** Uneven widths summing to Vt: shard k gets about (k + 1) parts. */
export function widthsOf(Vt: number, K: number): number[] {
  const parts = (K * (K + 1)) / 2;
  const w = Array.from({ length: K }, (_, k) => Math.max(1, Math.floor((Vt * (k + 1)) / parts)));
  w[K - 1] += Vt - w.reduce((a, b) => a + b, 0);
  return w;
}

export function startsOf(widths: number[]): number[] {
  return widths.map((_, k) => widths.slice(0, k).reduce((a, b) => a + b, 0));
}

export function split(inputs: PapoInputs, widths: number[]): SplitPapoInputs {
  const starts = startsOf(widths);
  const cut = (t: Tensor) => widths.map((w, k) => columns(t, starts[k], w));
  const { logits, maskedLogits, ...rest } = inputs;
  return { ...rest, logits: cut(logits as Tensor), ...(maskedLogits ? { maskedLogits: cut(maskedLogits as Tensor) } : {}) };
}

export function concat(parts: Tensor[], rows: number): Float64Array {
  const Vt = parts.reduce((a, p) => a + p.dims[p.dims.length - 1], 0);
  const out = new Float64Array(rows * Vt);
  let start = 0;
  for (const p of parts) {
    const w = p.dims[p.dims.length - 1];
    const v = toFloat64(p.data, p.type);
    for (let i = 0; i < rows; i++) out.set(v.subarray(i * w, (i + 1) * w), i * Vt + start);
    start += w;
  }
  return out;
}

/** The split call's outputs against the unsplit call's on the same backend: every output within fp32 rounding, the
 * concatenated gradients the unsplit gradient (host tensors: download device ones first). */
export function expectSplitEqual(parts: SplitPapoResult, whole: PapoResult, widths: number[], tol = 2e-6) {
  const N = whole.logProbs.length;
  expectNumberClose(parts.loss, whole.loss, tol, 1e-7, 'loss');
  for (const [k, v] of Object.entries(whole.metrics)) expectNumberClose((parts.metrics as unknown as Record<string, number>)[k], v, tol, 1e-7, k);
  expectClose(parts.logProbs, whole.logProbs, tol, 1e-6, 'logProbs');
  expectClose(parts.entropy, whole.entropy, tol, 1e-6, 'entropy');
  if (whole.maskedLogProbs) {
    expectClose(parts.maskedLogProbs!, whole.maskedLogProbs, tol, 1e-6, 'maskedLogProbs');
    expectClose(parts.maskedEntropy!, whole.maskedEntropy!, tol, 1e-6, 'maskedEntropy');
  }
  const wg = whole.gradLogits as Tensor;
  const g = toFloat64(wg.data, wg.type);
  expectClose(concat(parts.gradLogits!, N), g, 0, maxAbs(g) * 1e-5, 'gradLogits');
  if (whole.gradMaskedLogits) {
    const wm = whole.gradMaskedLogits as Tensor;
    const gm = toFloat64(wm.data, wm.type);
    expectClose(concat(parts.gradMaskedLogits!, N), gm, 0, maxAbs(gm) * 1e-5, 'gradMaskedLogits');
  }
  expect(parts.gradLogits!.map((t) => t.dims[t.dims.length - 1])).toEqual(widths);
}

/** Tokens placed in the first, a middle and the last shard, at its edges too. */
export function placeTargets(inputs: PapoInputs, widths: number[]) {
  const t = inputs.tokens as Int32Array;
  const starts = startsOf(widths);
  const K = widths.length, mid = Math.floor(K / 2);
  const picks = [starts[0], starts[mid] + Math.floor(widths[mid] / 2), starts[K - 1] + widths[K - 1] - 1, starts[mid]];
  const z = inputs.logits as Tensor, zm = inputs.maskedLogits as Tensor;
  const Vt = z.dims[z.dims.length - 1];
  for (let i = 0; i < t.length; i++) {
    const o = picks[i % picks.length];
    // keep the sampled token likely, as makeInputs does, so log-probs stay moderate
    for (const x of [z, zm]) {
      const v = toFloat64(x.data.subarray(i * Vt, (i + 1) * Vt), x.type);
      [v[o], v[t[i]]] = [v[t[i]], v[o]];
      x.data.set(fromFloat64(v, x.type), i * Vt);
    }
    t[i] = o;
  }
}

export function inputsFor(make: MakeOptions, widths: number[], variant: VariantInputs = {}) {
  const inputs = makeVariantInputs({ N: 8, V, seed: 3, ...make }, variant);
  placeTargets(inputs, widths);
  return inputs;
}

/** The -Infinity case: columns [1000, 1099) of every row (a whole shard of widths [1000, 99, ...]) -Infinity, the
 * tokens there moved to column 1099 (finite), and negInf's scattered -Infinity elsewhere. */
export function withInfShard(inputs: PapoInputs): PapoInputs {
  const z = inputs.logits as Tensor, zm = inputs.maskedLogits as Tensor;
  const Vt = z.dims[z.dims.length - 1], N = z.data.length / Vt;
  for (const x of [z, zm]) for (let i = 0; i < N; i++) (x.data as Float32Array).fill(-Infinity, i * Vt + 1000, i * Vt + 1099);
  const tokens = inputs.tokens as Int32Array;
  for (let i = 0; i < N; i++)
    if (tokens[i] >= 1000 && tokens[i] < 1099) {
      tokens[i] = 1099;
      for (const x of [z, zm]) (x.data as Float32Array)[i * Vt + 1099] = 2;
    }
  return inputs;
}
