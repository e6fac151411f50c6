// GRPO group advantages (docs/objective.md, "Around the loss"): per prompt group of n rollouts, (s - mean) / (std + eps) with
// the unbiased std, as verl's compute_grpo_outcome_advantage; a one-rollout group keeps its score (mean 0, std 1,
// as verl); normalizeStd: false is the Dr.GRPO variant (s - mean).
import { describe, rangeError, typeError } from './errors';

export interface GroupAdvantageOptions {
  /** Consecutive groups of this size (scores.length must be a multiple). */
  groupSize?: number;
  /** Or one group id per score (any values; equal ids form a group). */
  groupIds?: ArrayLike<unknown>;
  normalizeStd?: boolean;
  eps?: number;
}

export function groupAdvantages(scores: ArrayLike<number>, options: GroupAdvantageOptions): Float32Array {
  if (scores === null || typeof scores !== 'object' || typeof scores.length !== 'number') throw typeError('scores', 'an array of numbers', scores);
  const n = scores.length;
  for (let i = 0; i < n; i++) if (typeof scores[i] !== 'number' || !Number.isFinite(scores[i])) throw rangeError('scores', `element ${i} is ${describe(scores[i])}, expected a finite number`);
  if (options === null || typeof options !== 'object') throw typeError('options', '{ groupSize } or { groupIds }', options);
  for (const k of Object.keys(options)) if (!['groupSize', 'groupIds', 'normalizeStd', 'eps'].includes(k)) throw rangeError('options', `unknown option '${k}'`);
  const normalizeStd = options.normalizeStd ?? true;
  if (typeof normalizeStd !== 'boolean') throw typeError('options.normalizeStd', 'a boolean', normalizeStd);
  const eps = options.eps ?? 1e-6;
  if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) throw rangeError('options.eps', `expected a finite number >= 0, got ${describe(eps)}`);

  const groups = new Map<unknown, number[]>();
  if (options.groupIds !== undefined) {
    if (options.groupSize !== undefined) throw rangeError('options', 'give groupSize or groupIds, not both');
    const ids = options.groupIds;
    if (ids === null || typeof ids !== 'object' || ids.length !== n) throw rangeError('options.groupIds', `expected ${n} ids (one per score)`);
    for (let i = 0; i < n; i++) {
      const g = groups.get(ids[i]);
      if (g) g.push(i);
      else groups.set(ids[i], [i]);
    }
  } else {
    const size = options.groupSize;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) throw rangeError('options.groupSize', `expected a positive integer, got ${describe(size)}`);
    if (n % size !== 0) throw rangeError('options.groupSize', `${n} scores do not split into groups of ${size}`);
    for (let start = 0; start < n; start += size) groups.set(start, Array.from({ length: size }, (_, k) => start + k));
  }

  const out = new Float32Array(n);
  for (const members of groups.values()) {
    const k = members.length;
    let mean = 0, std = 1;
    if (k > 1) {
      for (const i of members) mean += scores[i];
      mean /= k;
      let ss = 0;
      for (const i of members) ss += (scores[i] - mean) ** 2;
      std = Math.sqrt(ss / (k - 1));
    }
    for (const i of members) out[i] = normalizeStd ? (scores[i] - mean) / (std + eps) : scores[i] - mean;
  }
  return out;
}

/** Per-sequence values repeated over each sequence's tokens (length: the sum of seqLengths). */
export function broadcastAdvantages(perSequence: ArrayLike<number>, seqLengths: ArrayLike<number>): Float32Array {
  if (perSequence === null || typeof perSequence !== 'object') throw typeError('perSequence', 'an array of numbers', perSequence);
  if (seqLengths === null || typeof seqLengths !== 'object' || seqLengths.length !== perSequence.length)
    throw rangeError('seqLengths', `expected ${perSequence.length} lengths (one per sequence)`);
  let total = 0;
  for (let s = 0; s < seqLengths.length; s++) {
    if (!Number.isSafeInteger(seqLengths[s]) || seqLengths[s] < 0) throw rangeError('seqLengths', `element ${s} is ${describe(seqLengths[s])}, expected an integer >= 0`);
    total += seqLengths[s];
  }
  const out = new Float32Array(total);
  for (let s = 0, row = 0; s < seqLengths.length; row += seqLengths[s], s++) out.fill(perSequence[s], row, row + seqLengths[s]);
  return out;
}
