// papoLoss over logits split along the vocabulary, in one call: each shard's per-token statistics, merged in shard
// order, then each shard's call with options.vocabShard (its gradient, the same loss on every shard). Only O(N)
// numbers per shard and path cross between the shards, through the host: on CUDA each shard's statistics come
// down and the merged ones go up, and papoLoss runs the shards of every device at once.
import { requireDevice } from './cuda';
import { DeviceTensor } from './device-tensor';
import { hostGradient } from './host-gradient';
import { rangeError, typeError } from './errors';
import { resolveOptions } from './options';
import { sameMemory, toTensor, type NormTensor } from './tensor';
import { mergeStats, shardBackend, shardStats, shardStatsAsync, tokenIds, type ShardBackend } from './vocab-stats';
import type { PapoOptions, PapoResult, SplitPapoResult, Tensor, VocabShardStats } from './types';

/** papoLoss's inputs with `logits` (and `maskedLogits`) given as arrays of vocabulary shards. */
export interface SplitPlan {
  logits: NormTensor[];
  masked: NormTensor[] | null;
  starts: number[];
  V: number;
  tokens: Int32Array;
  temperature: number;
  /** One backend for every shard's calls, chosen for the whole split. */
  backend: ShardBackend;
}

/** One shard's papoLoss call: inputs and options as the public API takes them. */
export interface ShardCall {
  inputs: Record<string, unknown>;
  options: PapoOptions;
}

export function isSplit(inputs: unknown): boolean {
  return inputs !== null && typeof inputs === 'object' && Array.isArray((inputs as { logits?: unknown }).logits);
}

const placed = (t: NormTensor) => (t.device ? 'a DeviceTensor' : 'host data');

function shards(name: string, list: unknown[], like: NormTensor[] | null): NormTensor[] {
  if (list.length === 0) throw rangeError(name, 'expected at least one vocabulary shard');
  if (like && list.length !== like.length) throw rangeError(name, `expected ${like.length} shards like logits, got ${list.length}`);
  const out = list.map((t, k) => toTensor(`${name}[${k}]`, t));
  const lead = (t: NormTensor) => t.dims.slice(0, -1).join(', ');
  out.forEach((t, k) => {
    const ref = like ? like[k] : out[0];
    const what = like ? `logits[${k}]` : `${name}[0]`;
    // The shards may be on several devices, a masked shard on its logits shard's.
    if (!t.device !== !ref.device)
      throw rangeError(`${name}[${k}]`, `is ${placed(t)}, ${what} ${placed(ref)}: the shards must all be host data or all DeviceTensors`);
    if (like && t.device && t.device.device !== ref.device!.device)
      throw rangeError(`${name}[${k}].device`, `expected device ${ref.device!.device} like ${what}, got ${t.device.device}`);
    if (t.device) requireDevice(t.device.device, `${name}[${k}]`);
    if (like ? t.dims.join() !== ref.dims.join() : t.dims.length !== ref.dims.length || lead(t) !== lead(ref))
      throw rangeError(`${name}[${k}].dims`, like
        ? `expected [${ref.dims.join(', ')}] like ${what}, got [${t.dims.join(', ')}]`
        : `expected [${lead(ref)}, V_${k}] (the rows of ${what}), got [${t.dims.join(', ')}]`);
    if (t.type !== ref.type) throw rangeError(`${name}[${k}].type`, `expected '${ref.type}' like ${what}, got '${t.type}'`);
  });
  return out;
}

/** Every shard of both paths with the name an error gives it. */
const named = (logits: NormTensor[], masked: NormTensor[] | null) =>
  [...logits.map((t, k) => [`logits[${k}]`, t] as const), ...(masked ?? []).map((t, k) => [`maskedLogits[${k}]`, t] as const)];

/**
 * options.out's buffers against the other shards' logits and each other: each shard's call checks its own buffers
 * against its own inputs only, and a gradient written over another shard's logits (or gradient) would change what
 * that shard reads. Entries that are not tensors are left to the shard's call, which names them.
 */
function checkOutAcrossShards(out: unknown, logits: NormTensor[], masked: NormTensor[] | null) {
  if (out === null || typeof out !== 'object') return;
  const inputs = named(logits, masked);
  const given: (readonly [string, NormTensor])[] = [];
  for (const key of ['gradLogits', 'gradMaskedLogits'] as const) {
    const list = (out as Record<string, unknown>)[key];
    if (!Array.isArray(list)) continue;
    list.forEach((v, k) => {
      if (v === undefined || v === null) return;
      try {
        given.push([`out.${key}[${k}]`, toTensor(`out.${key}[${k}]`, v)]);
      } catch { /* the shard's call names it */ }
    });
  }
  for (const [name, g] of given) {
    for (const [other, t] of inputs)
      if (sameMemory(g, t)) throw rangeError(name, `shares memory with ${other}: the gradient would overwrite logits the call reads`);
    for (const [other, h] of given)
      if (h !== g && name < other && sameMemory(g, h)) throw rangeError(name, `shares memory with ${other}`);
  }
}

/** Checks the shards and the tokens against them; options are the call's. */
export function prepareSplit(inputs: Record<string, unknown>, options: PapoOptions | undefined): SplitPlan {
  const opts = resolveOptions(options);
  if (opts.vocabShard !== null)
    throw rangeError('options.vocabShard', 'is for one shard per call; with logits given as an array of shards, leave it out');
  const logits = shards('logits', inputs.logits as unknown[], null);
  let masked: NormTensor[] | null = null;
  if (inputs.maskedLogits !== undefined && inputs.maskedLogits !== null) {
    if (!Array.isArray(inputs.maskedLogits)) throw typeError('maskedLogits', 'an array of shards like logits', inputs.maskedLogits);
    masked = shards('maskedLogits', inputs.maskedLogits, logits);
  }
  if (opts.inPlace) {
    const all = named(logits, masked);
    for (let a = 0; a < all.length; a++)
      for (let b = 0; b < a; b++)
        if (sameMemory(all[a][1], all[b][1]))
          throw rangeError('options.inPlace', `${all[a][0]} and ${all[b][0]} share memory; in-place gradients would overwrite one with the other`);
  }
  checkOutAcrossShards(opts.out, logits, masked);
  const starts: number[] = [];
  let V = 0;
  for (const t of logits) [starts[starts.length], V] = [V, V + t.dims[t.dims.length - 1]];
  const N = logits[0].dims.reduce((a, b) => a * b, 1) / logits[0].dims[logits[0].dims.length - 1];
  const tokens = tokenIds('tokens', inputs.tokens, N);
  for (let i = 0; i < N; i++)
    if (tokens[i] >= V)
      throw rangeError('tokens', `element ${i} is ${tokens[i]}, outside every shard: the shards' widths add up to V = ${V}`);
  // Chosen once, as the unsplit call would be (by placement, and for 'auto' on host data by its size).
  const backend = shardBackend(opts.backend, logits[0], N * V * (masked ? 2 : 1), 'logits[0]');
  return { logits, masked, starts, V, tokens, temperature: opts.temperature, backend };
}

/** Both paths' merged statistics (the masked path's null without masked logits). */
export type SplitStats = [VocabShardStats, VocabShardStats | null];

type Path = 'logits' | 'maskedLogits';
const paths = (plan: SplitPlan): Path[] => (plan.masked ? ['logits', 'maskedLogits'] : ['logits']);
const shardsOf = (plan: SplitPlan, path: Path) => (path === 'logits' ? plan.logits : plan.masked!);

export function splitStats(plan: SplitPlan): SplitStats {
  const merged = paths(plan).map((path) => mergeStats(shardsOf(plan, path).map((t, k) =>
    shardStats(`${path}[${k}]`, t, plan.tokens, plan.starts[k], plan.temperature, plan.backend)), path));
  return [merged[0], merged[1] ?? null];
}

/**
 * The options of the cpu's one call over host shards, with each path's fresh gradients cut from one buffer: every
 * shard's gradient is a view of it, [N, V_k] after [N, V_(k-1)]. Shards' own buffers of a quarter the size lose
 * more of their memory to the 4 KB pages at the ends of each (hostGradient), and their first touch showed in the
 * call's time. What options.out gives stays the caller's (a path it gives as an array with empty entries gets
 * buffers of the shards' own for those); anything not an object is left to validation.
 */
export function withSharedGradients(plan: SplitPlan, options: PapoOptions | undefined): PapoOptions | undefined {
  const o = resolveOptions(options);
  const given = options?.out;
  if (!o.computeGrad || o.inPlace || (given !== undefined && given !== null && typeof given !== 'object')) return options;
  const N = plan.tokens.length;
  const cut = (list: NormTensor[]) => {
    const type = o.gradType === 'float32' ? 'float32' : list[0].type;
    const buffer = hostGradient(N * plan.V, type);
    return list.map((t, k) => ({ data: buffer.subarray(N * plan.starts[k], N * (plan.starts[k] + t.dims[t.dims.length - 1])),
      dims: [...t.dims], type }));
  };
  const out: Record<string, unknown> = { ...(given ?? {}) };
  if (out.gradLogits === undefined || out.gradLogits === null) out.gradLogits = cut(plan.logits);
  if (plan.masked && !o.detachMasked && (out.gradMaskedLogits === undefined || out.gradMaskedLogits === null))
    out.gradMaskedLogits = cut(plan.masked);
  return { ...options, out: out as PapoOptions['out'] };
}

/** Empty merged statistics of both paths, for a call that merges them itself (the cpu's one call over shards). */
export function mergedStatsBuffers(plan: SplitPlan): SplitStats {
  const N = plan.tokens.length;
  const empty = (): VocabShardStats => ({ N, vocabStart: 0, vocabSize: plan.V, data: new Float64Array(4 * N) });
  return [empty(), plan.masked ? empty() : null];
}

/** splitStats on worker threads: on CUDA every shard of both paths at once (the shards of different devices run
 * concurrently), on the reference one shard after another. (The cpu runs host shards in one call: papo.ts.) */
export async function splitStatsAsync(plan: SplitPlan): Promise<SplitStats> {
  const jobs = paths(plan).flatMap((path) => plan.starts.map((_, k) => [path, k] as const));
  const run = ([path, k]: readonly [Path, number]) =>
    shardStatsAsync(`${path}[${k}]`, shardsOf(plan, path)[k], plan.tokens, plan.starts[k], plan.temperature, plan.backend);
  let all: VocabShardStats[] = [];
  if (plan.backend === 'cuda') all = await settleAll(jobs.map(run));
  else for (const j of jobs) all.push(await run(j));
  const K = plan.starts.length;
  const merged = paths(plan).map((path, p) => mergeStats(all.slice(p * K, (p + 1) * K), path));
  return [merged[0], merged[1] ?? null];
}

/** Every promise settled (none still runs on the caller's inputs), then the first failure in list order thrown,
 * after release() of the others' values. */
async function settleAll<T>(list: Promise<T>[], release: (value: T, k: number) => void = () => {}): Promise<T[]> {
  const settled = await Promise.allSettled(list);
  const failed = settled.find((r) => r.status === 'rejected');
  if (!failed) return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
  settled.forEach((r, k) => r.status === 'fulfilled' && release(r.value, k));
  throw failed.reason;
}

/** Frees the device gradients a shard's call allocated (not the caller's logits, in place, nor options.out). */
function releaseShard(r: PapoResult, c: ShardCall) {
  const mine: unknown[] = [c.inputs.logits, c.inputs.maskedLogits, ...Object.values(c.options.out ?? {})];
  for (const g of [r.gradLogits, r.gradMaskedLogits]) if (g instanceof DeviceTensor && !mine.includes(g)) g.dispose();
}

/** Each shard's papoLoss call on the calling thread; a failure frees the device gradients of the shards before. */
export function runShardsSync(calls: ShardCall[], run: (c: ShardCall) => PapoResult): PapoResult[] {
  const results: PapoResult[] = [];
  try {
    for (const c of calls) results.push(run(c));
  } catch (e) {
    results.forEach((r, k) => releaseShard(r, calls[k]));
    throw e;
  }
  return results;
}

/** Each shard's papoLoss call on worker threads: on CUDA all at once, on the reference one after another. A failure waits
 * for the others and frees the device gradients they allocated. */
export async function runShards(plan: SplitPlan, calls: ShardCall[], run: (c: ShardCall) => Promise<PapoResult>): Promise<PapoResult[]> {
  if (plan.backend === 'cuda') return settleAll(calls.map(run), (r, k) => releaseShard(r, calls[k]));
  const results: PapoResult[] = [];
  for (const c of calls) results.push(await run(c));  // host gradients: nothing to free on a failure
  return results;
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
    options: { ...options, backend: plan.backend, ...(out !== undefined ? { out: outFor(k) as PapoOptions['out'] } : {}),
      vocabShard: { start: plan.starts[k], stats, ...(maskedStats ? { maskedStats } : {}) } },
  }));
}

/** The one-call result from the shards' results: the first's loss, metrics and per-token values (every shard
 * computes the same), the gradients in shard order. */
export function splitResult(results: PapoResult[]): SplitPapoResult<Tensor | DeviceTensor> {
  const { gradLogits: _g, gradMaskedLogits: _gm, ...first } = results[0];
  const r: SplitPapoResult<Tensor | DeviceTensor> = { ...first };
  if (results[0].gradLogits) r.gradLogits = results.map((x) => x.gradLogits!);
  if (results[0].gradMaskedLogits) r.gradMaskedLogits = results.map((x) => x.gradMaskedLogits!);
  return r;
}
