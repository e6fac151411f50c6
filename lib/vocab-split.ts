// papoLoss over logits split along the vocabulary, in one call: each shard's per-token statistics, merged in shard
// order, then each shard's call with options.vocabShard (its gradient, the same loss on every shard). Only O(N)
// numbers per shard and path cross between the shards.
import { rangeError, typeError } from './errors';
import { resolveOptions } from './options';
import { sameMemory, toTensor, type NormTensor } from './tensor';
import { mergeStats, shardStats, shardStatsAsync, tokenIds } from './vocab-stats';
import type { PapoOptions, PapoResult, Tensor, VocabShardStats } from './types';

/** papoLoss's inputs with `logits` (and `maskedLogits`) given as arrays of vocabulary shards. */
export interface SplitPlan {
  logits: NormTensor[];
  masked: NormTensor[] | null;
  starts: number[];
  V: number;
  tokens: Int32Array;
  temperature: number;
  backend: 'cpu' | 'reference';
}

/** One shard's papoLoss call: inputs and options as the public API takes them. */
export interface ShardCall {
  inputs: Record<string, unknown>;
  options: PapoOptions;
}

export function isSplit(inputs: unknown): boolean {
  return inputs !== null && typeof inputs === 'object' && Array.isArray((inputs as { logits?: unknown }).logits);
}

function shards(name: string, list: unknown[], like: NormTensor[] | null): NormTensor[] {
  if (list.length === 0) throw rangeError(name, 'expected at least one vocabulary shard');
  if (like && list.length !== like.length) throw rangeError(name, `expected ${like.length} shards like logits, got ${list.length}`);
  const out = list.map((t, k) => toTensor(`${name}[${k}]`, t));
  const lead = (t: NormTensor) => t.dims.slice(0, -1).join(', ');
  out.forEach((t, k) => {
    const ref = like ? like[k] : out[0];
    const what = like ? `logits[${k}]` : `${name}[0]`;
    if (t.device) throw rangeError(`${name}[${k}]`, 'is a DeviceTensor; vocabulary shards run on host data with the cpu backend (download() it)');
    if (like ? t.dims.join() !== ref.dims.join() : t.dims.length !== ref.dims.length || lead(t) !== lead(ref))
      throw rangeError(`${name}[${k}].dims`, like
        ? `expected [${ref.dims.join(', ')}] like ${what}, got [${t.dims.join(', ')}]`
        : `expected [${lead(ref)}, V_${k}] (the rows of ${what}), got [${t.dims.join(', ')}]`);
    if (t.type !== ref.type) throw rangeError(`${name}[${k}].type`, `expected '${ref.type}' like ${what}, got '${t.type}'`);
  });
  return out;
}

/** Checks the shards and the tokens against them; options are the call's. */
export function prepareSplit(inputs: Record<string, unknown>, options: PapoOptions | undefined): SplitPlan {
  const opts = resolveOptions(options);
  if (opts.vocabShard !== null)
    throw rangeError('options.vocabShard', 'is for one shard per call; with logits given as an array of shards, leave it out');
  if (opts.backend !== 'auto' && opts.backend !== 'cpu' && opts.backend !== 'reference')
    throw rangeError('options.backend', `'${opts.backend}' does not take vocabulary shards yet: use 'cpu', 'reference' or 'auto'`);
  const logits = shards('logits', inputs.logits as unknown[], null);
  let masked: NormTensor[] | null = null;
  if (inputs.maskedLogits !== undefined && inputs.maskedLogits !== null) {
    if (!Array.isArray(inputs.maskedLogits)) throw typeError('maskedLogits', 'an array of shards like logits', inputs.maskedLogits);
    masked = shards('maskedLogits', inputs.maskedLogits, logits);
  }
  if (opts.inPlace) {
    const all = [...logits.map((t, k) => [`logits[${k}]`, t] as const), ...(masked ?? []).map((t, k) => [`maskedLogits[${k}]`, t] as const)];
    for (let a = 0; a < all.length; a++)
      for (let b = 0; b < a; b++)
        if (sameMemory(all[a][1], all[b][1]))
          throw rangeError('options.inPlace', `${all[a][0]} and ${all[b][0]} share memory; in-place gradients would overwrite one with the other`);
  }
  const starts: number[] = [];
  let V = 0;
  for (const t of logits) [starts[starts.length], V] = [V, V + t.dims[t.dims.length - 1]];
  const N = logits[0].dims.reduce((a, b) => a * b, 1) / logits[0].dims[logits[0].dims.length - 1];
  const tokens = tokenIds('tokens', inputs.tokens, N);
  for (let i = 0; i < N; i++)
    if (tokens[i] >= V)
      throw rangeError('tokens', `element ${i} is ${tokens[i]}, outside every shard: the shards' widths add up to V = ${V}`);
  return { logits, masked, starts, V, tokens, temperature: opts.temperature, backend: opts.backend === 'reference' ? 'reference' : 'cpu' };
}

/** The merged statistics of one path (name: logits or maskedLogits). */
export function splitStats(plan: SplitPlan, name: 'logits' | 'maskedLogits'): VocabShardStats {
  const list = (name === 'logits' ? plan.logits : plan.masked!).map((t, k) =>
    shardStats(`${name}[${k}]`, t, plan.tokens, plan.starts[k], plan.temperature, plan.backend));
  return mergeStats(list, name);
}

/** splitStats with each shard's pass on a worker thread, one after another (they share the thread pool). */
export async function splitStatsAsync(plan: SplitPlan, name: 'logits' | 'maskedLogits'): Promise<VocabShardStats> {
  const list: VocabShardStats[] = [];
  for (const [k, t] of (name === 'logits' ? plan.logits : plan.masked!).entries())
    list.push(await shardStatsAsync(`${name}[${k}]`, t, plan.tokens, plan.starts[k], plan.temperature, plan.backend));
  return mergeStats(list, name);
}

/** Each shard's papoLoss call, given the merged statistics; options.out's arrays go to their shards. */
export function shardCalls(plan: SplitPlan, inputs: Record<string, unknown>, options: PapoOptions | undefined,
  stats: VocabShardStats, maskedStats: VocabShardStats | null): ShardCall[] {
  const out = options?.out as Record<string, unknown> | undefined;
  const K = plan.logits.length;
  const outFor = (k: number) => {
    if (out === undefined || out === null || typeof out !== 'object') return out;
    const o: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(out)) {
      if (v === undefined || v === null) continue;
      if (!Array.isArray(v) || v.length !== K) throw typeError(`out.${key}`, `an array of ${K} tensors, one per shard`, v);
      o[key] = v[k];
    }
    return o;
  };
  return plan.logits.map((_, k) => ({
    inputs: { ...inputs, logits: (inputs.logits as unknown[])[k],
      ...(plan.masked ? { maskedLogits: (inputs.maskedLogits as unknown[])[k] } : {}) },
    options: { ...options, ...(out !== undefined ? { out: outFor(k) as PapoOptions['out'] } : {}),
      vocabShard: { start: plan.starts[k], stats, ...(maskedStats ? { maskedStats } : {}) } },
  }));
}

/** The one-call result from the shards' results: the first's loss, metrics and per-token values (every shard
 * computes the same), the gradients in shard order. */
export function splitResult(results: PapoResult[]): PapoResult<Tensor> & { gradLogits?: Tensor[]; gradMaskedLogits?: Tensor[] } {
  const { gradLogits: _g, gradMaskedLogits: _gm, ...first } = results[0];
  const r = { ...first } as PapoResult<Tensor> & { gradLogits?: Tensor[]; gradMaskedLogits?: Tensor[] };
  if (results[0].gradLogits) (r as { gradLogits?: Tensor[] }).gradLogits = results.map((x) => x.gradLogits as Tensor);
  if (results[0].gradMaskedLogits) (r as { gradMaskedLogits?: Tensor[] }).gradMaskedLogits = results.map((x) => x.gradMaskedLogits as Tensor);
  return r;
}
