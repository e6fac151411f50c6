// Per-token softmax statistics of one vocabulary shard, and their merge in a fixed order: what ranks holding one
// shard each exchange (O(N) numbers per path) so that each can compute the loss and its own shard's gradient.
// The layout is native/core/vocab_stats.h's and docs/objective.md's.
import { chooseBackend, nativeTensor, placement } from './backend';
import { rangeError, typeError } from './errors';
import { native, type NativeVocabStatsDesc } from './native';
import { CODES } from './codes';
import { resolveOptions } from './options';
import { hostData, toTensor, type NormTensor } from './tensor';
import { referenceShardStats } from './reference';
import type { DeviceTensor } from './device-tensor';
import type { BackendName, TensorLike, TokenIds, VocabShardStats, VocabShardStatsOptions } from './types';

/** The four fields per token, each N values long, in this order (field-major). */
export const VOCAB_STATS_FIELDS = ['max', 'sumExp', 'sumExpX', 'target'] as const;

export function nonNegativeInt(name: string, v: unknown): number {
  if (typeof v !== 'number') throw typeError(name, 'an integer >= 0', v);
  if (!Number.isSafeInteger(v) || v < 0) throw rangeError(name, `expected an integer >= 0, got ${v}`);
  return v;
}

/** Token ids as an Int32Array of N values, each >= 0 (which shard holds each is the caller's concern). */
export function tokenIds(name: string, tokens: unknown, N: number): Int32Array {
  let t: Int32Array;
  if (tokens instanceof Int32Array) t = tokens;
  else if (tokens instanceof BigInt64Array || Array.isArray(tokens)) {
    t = new Int32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const v = Number(tokens[i]);
      if (!Number.isInteger(v) || v >= 2 ** 31) throw rangeError(name, `element ${i} is ${tokens[i]}, expected an int32 token id`);
      t[i] = v;
    }
  } else throw typeError(name, 'an Int32Array, a BigInt64Array or an array of integers (sampled token ids)', tokens);
  if (t.length !== N) throw rangeError(name, `expected ${N} values (one per logits row), got ${t.length}`);
  for (let i = 0; i < N; i++) if (t[i] < 0) throw rangeError(name, `element ${i} is ${t[i]}, expected a token id >= 0`);
  return t;
}

/** One shard's statistics by the backend asked for; `name` is what a bad row's error names. The reference computes
 * them here; for the cpu and cuda, desc is the native call that fills result.data (a DeviceTensor shard runs on its
 * device and stream, and only the statistics come back). */
function statsJob(name: string, shard: NormTensor, tokens: Int32Array, vocabStart: number, temperature: number,
  backend: ShardBackend): { result: VocabShardStats; desc: NativeVocabStatsDesc | null } {
  const Vk = shard.dims[shard.dims.length - 1];
  const N = shard.dims.reduce((a, b) => a * b, 1) / Vk;
  if (backend === 'reference') {
    const data = referenceShardStats(hostData(shard), shard.type, N, Vk, tokens, vocabStart, temperature, name);
    return { result: { N, vocabStart, vocabSize: Vk, data }, desc: null };
  }
  const data = new Float64Array(4 * N);
  const desc: NativeVocabStatsDesc = { backend: CODES.backend[backend], ...placement({ logits: shard, maskedLogits: null }),
    N, V: Vk, temperature, logits: nativeTensor(shard), dtype: CODES.dtype[shard.type], tokens, vocabStart, out: data, name };
  return { result: { N, vocabStart, vocabSize: Vk, data }, desc };
}

export function shardStats(...args: Parameters<typeof statsJob>): VocabShardStats {
  const { result, desc } = statsJob(...args);
  if (desc) native().vocabShardStats(desc, false);
  return result;
}

/** shardStats on a worker thread. */
export async function shardStatsAsync(...args: Parameters<typeof statsJob>): Promise<VocabShardStats> {
  const { result, desc } = statsJob(...args);
  if (desc) await native().vocabShardStats(desc, true);
  return result;
}

/** A shard's per-token statistics for one path (see VocabShardStats), to exchange with the other shards' ranks. */
export function vocabShardStats(shard: TensorLike | DeviceTensor, tokens: TokenIds, options: VocabShardStatsOptions): VocabShardStats {
  if (options === null || typeof options !== 'object') throw typeError('options', '{ vocabStart, temperature?, backend? }', options);
  for (const k of Object.keys(options))
    if (!['vocabStart', 'temperature', 'backend'].includes(k))
      throw rangeError('options', `unknown option '${k}' (vocabShardStats takes vocabStart, temperature and backend)`);
  const vocabStart = nonNegativeInt('options.vocabStart', options.vocabStart);
  const opts = resolveOptions({ temperature: options.temperature, backend: options.backend });
  const t = toTensor('shard', shard);
  const N = t.dims.reduce((a, b) => a * b, 1) / t.dims[t.dims.length - 1];
  const backend = shardBackend(opts.backend, t, N * t.dims[t.dims.length - 1], 'shard');
  return shardStats('shard', t, tokenIds('tokens', tokens, N), vocabStart, opts.temperature, backend);
}

export type ShardBackend = 'cpu' | 'cuda' | 'reference';

/** The backend of a shard's calls: chooseBackend's rule, `name` the shard's argument. */
export function shardBackend(requested: BackendName, shard: NormTensor, elements: number, name: string): ShardBackend {
  return chooseBackend(requested, shard, elements, true, name) as ShardBackend;
}

/** Checks one entry of stats: its shape and that it is from a call with N tokens. */
export function checkStats(name: string, s: unknown, N: number | null): VocabShardStats {
  if (s === null || typeof s !== 'object') throw typeError(name, '{ N, vocabStart, vocabSize, data } (vocabShardStats)', s);
  const v = s as VocabShardStats;
  if (N !== null && v.N !== N) throw rangeError(`${name}.N`, `the statistics are of ${v.N} tokens, this call has N = ${N}`);
  if (!Number.isSafeInteger(v.N) || v.N < 1) throw rangeError(`${name}.N`, `expected a positive integer, got ${v.N}`);
  nonNegativeInt(`${name}.vocabStart`, v.vocabStart);
  if (!Number.isSafeInteger(v.vocabSize) || v.vocabSize < 1)
    throw rangeError(`${name}.vocabSize`, `expected a positive integer, got ${v.vocabSize}`);
  if (!(v.data instanceof Float64Array)) throw typeError(`${name}.data`, `a Float64Array [${4 * v.N}]`, v.data);
  if (v.data.length !== 4 * v.N) throw rangeError(`${name}.data`, `expected ${4 * v.N} values (4 fields of N), got ${v.data.length}`);
  return v;
}

/**
 * The statistics of consecutive shards merged in list order (the order fixes the rounding: every rank that merges
 * the same list gets the same bits): max = max_k max_k, sumExp = sum_k sumExp_k e^(max_k - max), sumExpX likewise,
 * target = sum_k target_k (one shard holds each token). The list must cover columns from its first vocabStart on
 * without gaps; a row with no finite logit in any shard is an error.
 */
export function mergeVocabShardStats(list: readonly VocabShardStats[]): VocabShardStats {
  if (!Array.isArray(list) || list.length === 0) throw typeError('list', 'a non-empty array of vocabShardStats results', list);
  return mergeStats(list, 'list');
}

const EXP_TAYLOR = [1.6059043836821613e-10, 2.08767569878681e-9, 2.505210838544172e-8, 2.755731922398589e-7,
  2.7557319223985893e-6, 2.48015873015873e-5, 1.984126984126984e-4, 1.388888888888889e-3, 8.333333333333333e-3,
  4.1666666666666664e-2, 1.6666666666666666e-1, 0.5, 1.0, 1.0];
const powBits = new DataView(new ArrayBuffer(8));

/**
 * e^x for x <= 0, the merge's rescaling factor: the arithmetic of native/core/vocab_merge.cpp's merge_exp, step
 * for step, so that a one-call split (merged natively) and statistics merged here agree to the bit; Math.exp and
 * the C library's exp differ in the last bit. Change both or neither.
 */
export function mergeExp(x: number): number {
  if (!(x >= -708)) return 0;
  const k = Math.floor(x * 1.4426950408889634 + 0.5);
  const r = (x - k * 0.693145751953125) - k * 1.428606820309417e-6;
  let p = EXP_TAYLOR[0];
  for (let n = 1; n < EXP_TAYLOR.length; n++) p = p * r + EXP_TAYLOR[n];
  powBits.setUint32(0, (k + 1023) * 2 ** 20);  // 2^k from its exponent bits (big-endian: the high word first)
  powBits.setUint32(4, 0);
  return p * powBits.getFloat64(0);
}

/** mergeVocabShardStats, with a row without any finite logit named as `name`'s. */
export function mergeStats(list: readonly VocabShardStats[], name: string): VocabShardStats {
  const first = checkStats('list[0]', list[0], null);
  const N = first.N;
  let end = first.vocabStart;
  for (let k = 0; k < list.length; k++) {
    const s = checkStats(`list[${k}]`, list[k], N);
    if (s.vocabStart !== end)
      throw rangeError(`list[${k}].vocabStart`, `expected ${end} (where list[${k - 1}] ends), got ${s.vocabStart}: shards must be consecutive, in order`);
    end += s.vocabSize;
  }
  const out = new Float64Array(4 * N);
  for (let i = 0; i < N; i++) {
    let m = -Infinity;
    for (const s of list) if (s.data[i] > m) m = s.data[i];
    if (m === -Infinity) throw rangeError(name, `row ${i} has no finite logit in any shard (every token excluded)`);
    let S = 0, U = 0, t = 0;
    for (const s of list) {
      const mk = s.data[i];
      t += s.data[3 * N + i];
      if (mk === -Infinity) continue;
      const f = mergeExp(mk - m);
      S += s.data[N + i] * f;
      U += s.data[2 * N + i] * f;
    }
    [out[i], out[N + i], out[2 * N + i], out[3 * N + i]] = [m, S, U, t];
  }
  return { N, vocabStart: first.vocabStart, vocabSize: end - first.vocabStart, data: out };
}
