// Shared test inputs: seeded, so every failure reproduces.
import { expect } from 'vitest';
import { fromFloat64, toFloat64 } from '../lib/dtype';
import type { DType, PapoInputs, Tensor } from '../lib/types';

// mulberry32, shared with the child-process fixtures (plain JavaScript).
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const rng: (seed: number) => () => number = require('./fixtures/inputs.js').rng;

export interface MakeOptions {
  N?: number;
  V?: number;
  dims?: number[];
  type?: DType;
  seed?: number;
  scale?: number;
  masked?: boolean;
  /** fraction of logits set to -Infinity (never the sampled token) */
  negInf?: number;
  mask?: boolean;
  /** no oldLogProbs (the ratio is 1 with lp held constant) */
  onPolicy?: boolean;
}

/** A plausible PAPO micro-batch: logits of two nearby paths, tokens drawn near the top, old/ref close to lp. */
export function makeInputs(o: MakeOptions = {}): PapoInputs {
  const r = rng(o.seed ?? 1);
  const dims = o.dims ?? [o.N ?? 8, o.V ?? 300];
  const V = dims[dims.length - 1];
  const N = dims.slice(0, -1).reduce((a, b) => a * b, 1);
  const type = o.type ?? 'float32';
  const scale = o.scale ?? 3;
  const z = new Float64Array(N * V);
  const zm = new Float64Array(N * V);
  const tokens = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    tokens[i] = Math.floor(r() * V);
    for (let j = 0; j < V; j++) {
      const base = (r() - 0.5) * 2 * scale;
      z[i * V + j] = base + (j === tokens[i] ? scale : 0);
      zm[i * V + j] = base + (r() - 0.5) * scale * 0.6 + (j === tokens[i] ? scale * 0.7 : 0);
      if (o.negInf && j !== tokens[i] && r() < o.negInf) {
        z[i * V + j] = -Infinity;
        zm[i * V + j] = -Infinity;
      }
    }
  }
  const tensor = (v: Float64Array) => ({ data: fromFloat64(v, type), dims, type });
  const advantages = Float32Array.from({ length: N }, () => (r() - 0.5) * 2);
  const oldLogProbs = Float32Array.from({ length: N }, () => -1.5 + (r() - 0.5) * 1.6);
  const refLogProbs = Float32Array.from({ length: N }, () => -1.5 + (r() - 0.5) * 1.2);
  const inputs: PapoInputs = { logits: tensor(z), tokens, advantages, oldLogProbs, refLogProbs };
  if (o.masked !== false) inputs.maskedLogits = tensor(zm);
  if (o.onPolicy) delete inputs.oldLogProbs;
  if (o.mask) inputs.responseMask = Uint8Array.from({ length: N }, (_, i) => (i % 4 === 3 ? 0 : 1));
  return inputs;
}

export function values(t: Tensor | undefined): Float64Array {
  if (!t) throw new Error('missing tensor');
  return toFloat64(t.data, t.type);
}

/** |a - b| <= atol + rtol |b| elementwise, with the worst element in the message. */
export function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number, what = '') {
  expect(a.length, `${what} length`).toBe(b.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const excess = Math.abs(a[i] - b[i]) - (atol + rtol * Math.abs(b[i]));
    if (!(excess <= worstExcess) || Number.isNaN(a[i]) !== Number.isNaN(b[i])) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) expect.fail(`${what}[${worst}]: ${a[worst]} vs ${b[worst]} (rtol ${rtol}, atol ${atol})`);
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

export function expectNumberClose(a: number, b: number, rtol: number, atol: number, what = '') {
  if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) expect.fail(`${what}: ${a} vs ${b}`);
}

/** The error fn throws (fails the test when it returns). */
export function codeOf(fn: () => unknown): { code?: string; message: string; name: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string; name: string };
  }
  throw new Error('expected a throw');
}

export interface VariantInputs {
  /** Packed sequences (else one sequence, or the [B, T, V] layout's). */
  seqLengths?: number[];
  /** rolloutLogProbs = old + noise wide enough that some ratios leave [1/2, 2] (at most 0, as log-probs are). */
  rollout?: boolean;
  perceptionWeights?: boolean;
  sftMask?: boolean;
}

/** makeInputs plus the inputs of the policy-loss variants and PAPO's per-sequence options, seeded. */
export function makeVariantInputs(make: MakeOptions, v: VariantInputs): PapoInputs {
  const inputs = makeInputs(make);
  const N = (inputs.tokens as Int32Array).length;
  const dims = make.dims;
  const B = v.seqLengths ? v.seqLengths.length : dims && dims.length === 3 ? dims[0] : 1;
  const r = rng((make.seed ?? 1) + 101);
  if (v.seqLengths) inputs.seqLengths = Int32Array.from(v.seqLengths);
  if (v.rollout) {
    const old = inputs.oldLogProbs as Float32Array;
    inputs.rolloutLogProbs = Float32Array.from({ length: N }, (_, i) => Math.min(0, old[i] + (r() - 0.5) * 2.4));
  }
  if (v.perceptionWeights) inputs.perceptionWeights = Float32Array.from({ length: B }, (_, b) => (b % 3 === 1 ? 0 : 0.5 + r()));
  if (v.sftMask) inputs.sftMask = Uint8Array.from({ length: B }, (_, b) => (b % 2 === 0 ? 1 : 0));
  return inputs;
}

/** MiB that ASan's quarantine (256 MiB by default) may hold back from the OS after frees, when scripts/sanitize.sh
 * has preloaded its runtime; 0 otherwise. Memory checks add it to their limits, so they stay tight in plain runs. */
export function asanSlackMiB(): number {
  return (process.env.LD_PRELOAD ?? '').includes('libasan') ? 360 : 0;
}
