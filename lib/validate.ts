// Everything papoLoss is given is checked here, before native code runs, with errors that name the argument.
// The result, a PreparedCall, is what every backend consumes.
import { rangeError, typeError } from './errors';
import { closest, type ResolvedOptions } from './options';
import { prepareOut, type PreparedOut } from './out';
import { sameMemory, toTensor, type NormTensor } from './tensor';
import type { PapoInputs } from './types';
import { checkStats, nonNegativeInt } from './vocab-stats';

/** options.vocabShard, checked: the logits are columns [start, start + V) of a vocabulary of `total`. */
export interface PreparedVocabShard {
  start: number;
  total: number;
  stats: Float64Array;
  maskedStats: Float64Array | null;
}

export interface PreparedCall {
  N: number;
  V: number;
  /** Sequences: lengths summing to N (one entry per sequence). */
  seqLengths: Int32Array;
  logits: NormTensor;
  maskedLogits: NormTensor | null;
  maskedLogProbs: Float32Array | null;
  tokens: Int32Array;
  /** Per token (a per-sequence input is broadcast). */
  advantages: Float32Array;
  mask: Float32Array | null;
  oldLogProbs: Float32Array | null;
  refLogProbs: Float32Array | null;
  rolloutLogProbs: Float32Array | null;
  /** Per sequence [B]. */
  perceptionWeights: Float32Array | null;
  sftMask: Float32Array | null;
  opts: ResolvedOptions;
  /** options.out, checked: the caller's gradient buffers (null: allocate). */
  out: PreparedOut;
  /** token-mean denominator when given (else 0: the mask sum). */
  lossScale: number;
  /** seq-mean-token-sum-norm denominator: lossScale, else T ([B,T,V]) or the longest packed sequence. */
  normScale: number;
  /** With options.vocabShard: V is this shard's width and tokens index the whole vocabulary. */
  vocabShard: PreparedVocabShard | null;
}

function prepareVocabShard(option: unknown, N: number, V: number, masked: boolean): PreparedVocabShard | null {
  if (option === null) return null;
  if (typeof option !== 'object' || Array.isArray(option))
    throw typeError('options.vocabShard', '{ start, stats, maskedStats? }', option);
  for (const k of Object.keys(option))
    if (!['start', 'stats', 'maskedStats'].includes(k))
      throw rangeError('options.vocabShard', `unknown field '${k}' (expected start, stats, maskedStats)`);
  const o = option as Record<string, unknown>;
  const start = nonNegativeInt('options.vocabShard.start', o.start);
  const merged = (name: string, v: unknown) => {
    const s = checkStats(name, v, N);
    if (s.vocabStart !== 0)
      throw rangeError(`${name}.vocabStart`, `is ${s.vocabStart}: expected the statistics of every shard merged ` +
        '(mergeVocabShardStats), which start at column 0');
    return s;
  };
  const stats = merged('options.vocabShard.stats', o.stats);
  if (start + V > stats.vocabSize)
    throw rangeError('options.vocabShard.start', `the shard's columns [${start}, ${start + V}) end beyond the ` +
      `vocabulary of ${stats.vocabSize} that the merged statistics cover`);
  let maskedStats: Float64Array | null = null;
  if (masked) {
    if (o.maskedStats === undefined || o.maskedStats === null)
      throw rangeError('options.vocabShard.maskedStats', 'required with maskedLogits (the masked path\'s merged statistics)');
    const m = merged('options.vocabShard.maskedStats', o.maskedStats);
    if (m.vocabSize !== stats.vocabSize)
      throw rangeError('options.vocabShard.maskedStats.vocabSize', `expected ${stats.vocabSize} like stats, got ${m.vocabSize}`);
    maskedStats = m.data;
  } else if (o.maskedStats !== undefined && o.maskedStats !== null) {
    throw rangeError('options.vocabShard.maskedStats', 'given without maskedLogits');
  }
  return { start, total: stats.vocabSize, stats: stats.data, maskedStats };
}

/** How far above 0 a response token's log-prob may be and still count as rounding of a float32 log-softmax. */
const LOG_PROB_ROUNDING = 1e-3;

const inputNames: readonly (keyof PapoInputs)[] = [
  'logits', 'maskedLogits', 'maskedLogProbs', 'tokens', 'advantages', 'responseMask', 'oldLogProbs',
  'refLogProbs', 'seqLengths', 'rolloutLogProbs', 'perceptionWeights', 'sftMask',
];

function isNumericArray(v: unknown): v is ArrayLike<number> {
  return (ArrayBuffer.isView(v) && !(v instanceof DataView) && !(v instanceof BigInt64Array) &&
    !(v instanceof BigUint64Array)) || (Array.isArray(v) && v.every((x) => typeof x === 'number'));
}

function lengthOk(name: string, v: ArrayLike<number>, expected: number, what: string) {
  if (v.length !== expected) throw rangeError(name, `expected ${expected} values (${what}), got ${v.length}`);
}

/** Float32Array [n] from a Float32Array, Float64Array or number[]; finite where `needed(i)`. */
function floats(name: string, v: unknown, n: number, what: string, needed: (i: number) => boolean): Float32Array {
  if (!(v instanceof Float32Array) && !(v instanceof Float64Array) && !(Array.isArray(v) && isNumericArray(v)))
    throw typeError(name, `a Float32Array [${n}] (${what})`, v);
  lengthOk(name, v, n, what);
  // Checked after the conversion: a float64 value beyond float32's range would become Infinity in native code.
  const f = v instanceof Float32Array ? v : Float32Array.from(v);
  for (let i = 0; i < n; i++)
    if (needed(i) && !Number.isFinite(f[i]))
      throw rangeError(name, `element ${i} is ${v[i]}, expected a finite number` + (Number.isFinite(v[i]) ? ' within float32 range' : ''));
  return f;
}

function ints(name: string, v: unknown, what: string): Int32Array {
  if (v instanceof Int32Array) return v;
  if (Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31)) return Int32Array.from(v);
  // int64 ids (onnxruntime's, PyTorch's) are copied to int32 when every value fits; a value that does not is
  // named, never wrapped around.
  if (v instanceof BigInt64Array) {
    const out = new Int32Array(v.length);
    for (let i = 0; i < v.length; i++) {
      if (v[i] < -(2n ** 31n) || v[i] >= 2n ** 31n) throw rangeError(name, `element ${i} is ${v[i]}, outside the int32 range`);
      out[i] = Number(v[i]);
    }
    return out;
  }
  throw typeError(name, `an Int32Array, a BigInt64Array or an array of integers (${what})`, v);
}

/** The sampled token ids: [N] integers in [0, V). */
function tokenIds(v: unknown, N: number, V: number): Int32Array {
  const tokens = ints('tokens', v, `[${N}] sampled token ids`);
  lengthOk('tokens', tokens, N, 'one per logits row');
  for (let i = 0; i < N; i++)
    if (tokens[i] < 0 || tokens[i] >= V) throw rangeError('tokens', `element ${i} is ${tokens[i]}, outside [0, ${V})`);
  return tokens;
}

/** What logProbs() runs on: one logits tensor and its token ids, by the same rules as papoLoss's. */
export interface PreparedLogProbs {
  N: number;
  V: number;
  logits: NormTensor;
  maskedLogits: null;
  tokens: Int32Array;
}

export function prepareLogProbsCall(logits: unknown, tokens: unknown): PreparedLogProbs {
  const t = toTensor('logits', logits);
  const V = t.dims[t.dims.length - 1];
  const N = t.dims.reduce((a, b) => a * b, 1) / V;
  return { N, V, logits: t, maskedLogits: null, tokens: tokenIds(tokens, N, V) };
}

export function prepareCall(inputs: PapoInputs, opts: ResolvedOptions): PreparedCall {
  if (inputs === null || typeof inputs !== 'object') throw typeError('inputs', 'an object', inputs);
  for (const key of Object.keys(inputs)) {
    if (!(inputNames as readonly string[]).includes(key)) {
      const hint = closest(key, inputNames);
      throw rangeError('inputs', `unknown input '${key}'` + (hint ? ` (did you mean '${hint}'?)` : ''));
    }
  }
  const logits = toTensor('logits', inputs.logits);
  const V = logits.dims[logits.dims.length - 1];
  const N = logits.dims.reduce((a, b) => a * b, 1) / V;
  const batched = logits.dims.length === 3;

  let maskedLogits: NormTensor | null = null;
  if (inputs.maskedLogits !== undefined && inputs.maskedLogits !== null) {
    maskedLogits = toTensor('maskedLogits', inputs.maskedLogits);
    if (maskedLogits.dims.join() !== logits.dims.join())
      throw rangeError('maskedLogits.dims', `expected [${logits.dims.join(', ')}] like logits, got [${maskedLogits.dims.join(', ')}]`);
    if (maskedLogits.type !== logits.type)
      throw rangeError('maskedLogits.type', `expected '${logits.type}' like logits, got '${maskedLogits.type}'`);
    if (!maskedLogits.device !== !logits.device)
      throw rangeError('maskedLogits', `expected ${logits.device ? 'a DeviceTensor like logits' : 'host data like logits'}`);
    if (maskedLogits.device && maskedLogits.device.device !== logits.device!.device)
      throw rangeError('maskedLogits.device', `expected device ${logits.device!.device} like logits, got ${maskedLogits.device.device}`);
  }

  // Sequences: [B, T, V] gives B sequences of T tokens; packed input may give seqLengths.
  let seqLengths: Int32Array;
  let padded: number;
  if (batched) {
    if (inputs.seqLengths !== undefined)
      throw rangeError('seqLengths', 'only for packed [N, V] logits; [B, T, V] logits already give the sequences');
    seqLengths = new Int32Array(logits.dims[0]).fill(logits.dims[1]);
    padded = logits.dims[1];
  } else if (inputs.seqLengths !== undefined) {
    seqLengths = ints('seqLengths', inputs.seqLengths, 'one length per packed sequence');
    if (seqLengths.length === 0) throw rangeError('seqLengths', 'expected at least one sequence');
    let total = 0;
    for (let i = 0; i < seqLengths.length; i++) {
      if (seqLengths[i] < 0) throw rangeError('seqLengths', `element ${i} is ${seqLengths[i]}, expected >= 0`);
      total += seqLengths[i];
    }
    if (total !== N) throw rangeError('seqLengths', `they add up to ${total}, but logits have N = ${N} rows`);
    padded = Math.max(...seqLengths);
  } else {
    seqLengths = Int32Array.of(N);
    padded = N;
  }
  const B = seqLengths.length;

  const vocabShard = prepareVocabShard(opts.vocabShard, N, V, maskedLogits !== null);
  const tokens = tokenIds(inputs.tokens, N, vocabShard ? vocabShard.total : V);

  let mask: Float32Array | null = null;
  if (inputs.responseMask !== undefined && inputs.responseMask !== null) {
    const m = inputs.responseMask;
    if (!(m instanceof Float32Array) && !(m instanceof Uint8Array) && !(Array.isArray(m) && isNumericArray(m)))
      throw typeError('responseMask', `a Float32Array or Uint8Array [${N}] of 0/1`, m);
    lengthOk('responseMask', m, N, 'one per logits row');
    mask = m instanceof Float32Array ? m : Float32Array.from(m);
    for (let i = 0; i < N; i++)
      if (!(mask[i] >= 0) || !Number.isFinite(mask[i]))
        throw rangeError('responseMask', `element ${i} is ${mask[i]}, expected 0/1 (or a finite weight >= 0)`);
  }
  const counts = (i: number) => mask === null || mask[i] !== 0;

  const advIn = inputs.advantages;
  if (!isNumericArray(advIn) || !(advIn instanceof Float32Array || advIn instanceof Float64Array || Array.isArray(advIn)))
    throw typeError('advantages', `a Float32Array [${N}] per token or [${B}] per sequence`, advIn);
  let advantages: Float32Array;
  if (advIn.length === N) {
    advantages = floats('advantages', advIn, N, 'per token', () => true);
  } else if (advIn.length === B) {
    const perSeq = floats('advantages', advIn, B, 'per sequence', () => true);
    advantages = new Float32Array(N);
    for (let s = 0, row = 0; s < B; row += seqLengths[s], s++) advantages.fill(perSeq[s], row, row + seqLengths[s]);
  } else {
    // Without seqLengths a packed batch is one sequence, so per-sequence advantages for several cannot be placed.
    const hint = !batched && inputs.seqLengths === undefined && advIn.length > 1 && advIn.length < N
      ? `; ${advIn.length} values look like one per sequence: pass seqLengths (the packed sequences' lengths, summing ` +
        `to ${N}) to say where each sequence starts, or broadcastAdvantages(advantages, seqLengths) for per-token values`
      : '';
    throw rangeError('advantages', `expected ${N} values (per token) or ${B} (per sequence), got ${advIn.length}${hint}`);
  }

  const optional = (name: 'oldLogProbs' | 'refLogProbs' | 'maskedLogProbs' | 'rolloutLogProbs') => {
    const v = inputs[name];
    if (v === undefined || v === null) return null;
    const f = floats(name, v, N, 'one log-prob per token', counts);
    // A log-prob above 0 is a probability above 1: a sign flipped, logits passed instead, or the wrong array. On
    // a response token it would enter the ratio or the KL silently; rounding alone never gets this far above 0.
    for (let i = 0; i < N; i++)
      if (counts(i) && f[i] > LOG_PROB_ROUNDING)
        throw rangeError(name, `element ${i} is ${v[i]}, but a log-prob is at most 0 (a probability at most 1); ` +
          'expected log-probs of the sampled tokens, not logits or negated log-probs');
    return f;
  };
  const oldLogProbs = optional('oldLogProbs');
  const refLogProbs = optional('refLogProbs');
  const maskedLogProbs = optional('maskedLogProbs');
  const rolloutLogProbs = optional('rolloutLogProbs');
  if (rolloutLogProbs && !opts.rolloutCorrection)
    throw rangeError('rolloutLogProbs', "needs options.rolloutCorrection ({ mode: 'truncate' } for TIS, { mode: 'mask' } for IcePop)");
  if (opts.rolloutCorrection && !rolloutLogProbs)
    throw rangeError('rolloutLogProbs', 'required with options.rolloutCorrection (the inference engine\'s log-probs of the sampled tokens)');

  // Per-sequence inputs: one finite value >= 0 per sequence.
  const perSequence = (name: 'perceptionWeights' | 'sftMask', what: string) => {
    const v = inputs[name];
    if (v === undefined || v === null) return null;
    if (!(v instanceof Uint8Array) && !(v instanceof Float32Array) && !(v instanceof Float64Array) && !(Array.isArray(v) && isNumericArray(v)))
      throw typeError(name, `a Float32Array [${B}] (${what})`, v);
    lengthOk(name, v, B, `${what}, one per sequence`);
    const out = Float32Array.from(v as ArrayLike<number>);
    for (let i = 0; i < B; i++)
      if (!Number.isFinite(out[i]) || out[i] < 0) throw rangeError(name, `element ${i} is ${v[i]}, expected a finite number >= 0`);
    return out;
  };
  const perceptionWeights = perSequence('perceptionWeights', 'a weight on the perception KL');
  const sftMask = perSequence('sftMask', '1 for a rollout the SFT term learns from');
  if (sftMask && opts.sftCoef === null) throw rangeError('options.sftCoef', 'required with sftMask (the SFT term\'s weight)');
  if (!sftMask && opts.sftCoef !== null && opts.sftCoef > 0)
    throw rangeError('sftMask', 'required when options.sftCoef > 0 (which rollouts the SFT term learns from)');

  if (maskedLogits && maskedLogProbs) throw rangeError('maskedLogProbs', 'give maskedLogits or maskedLogProbs, not both');
  if (opts.klCoef > 0 && !refLogProbs)
    throw rangeError('refLogProbs', `required when klCoef > 0 (preset '${opts.preset}' has klCoef ${opts.klCoef}; set klCoef: 0 to train without it)`);
  const hasMasked = maskedLogits !== null || maskedLogProbs !== null;
  if (!hasMasked && (opts.perceptionCoef > 0 || opts.maskedEntropyCoef > 0))
    throw rangeError('maskedLogits', `required when perceptionCoef or maskedEntropyCoef > 0 (preset '${opts.preset}'); ` +
      'pass the masked-image logits, or maskedLogProbs');
  // A packed batch without seqLengths is one sequence: right for one rollout, silently wrong for a micro-batch of
  // several, where GSPO's ratio and the top-p threshold are per sequence. So those ask for the layout explicitly.
  const perSequenceTerm = opts.lossType === 'gspo' || opts.lossType === 'gspo-token' ? `lossType '${opts.lossType}'`
    : opts.perceptionTopP !== null ? 'options.perceptionTopP' : null;
  if (perSequenceTerm && !batched && inputs.seqLengths === undefined)
    throw rangeError('seqLengths', `required with ${perSequenceTerm}, which works per sequence: give the packed sequences' ` +
      `lengths (seqLengths: [${N}] for one sequence), or [B, T, V] logits`);
  if (!hasMasked && (perceptionWeights || opts.perceptionTopP !== null))
    throw rangeError('maskedLogits', `required with ${perceptionWeights ? 'perceptionWeights' : 'options.perceptionTopP'} ` +
      '(they select and weight the perception KL, which needs the masked path)');
  if (opts.entropyMode === 'full' && !maskedLogits && maskedLogProbs && opts.maskedEntropyCoef > 0)
    throw rangeError('maskedLogProbs', "entropyMode 'full' needs maskedLogits (the masked entropy), not precomputed log-probs");
  if (maskedLogProbs) opts = { ...opts, detachMasked: true };

  if (opts.inPlace) {
    if (opts.gradType === 'float32' && logits.type !== 'float32')
      throw rangeError('options.gradType', `'float32' gradients cannot be written in place into ${logits.type} logits`);
    if (maskedLogits && sameMemory(logits, maskedLogits))
      throw rangeError('options.inPlace', 'logits and maskedLogits share memory; in-place gradients would overwrite one path with the other');
  }
  const lossScale = opts.lossScale ?? 0;
  const out = prepareOut(opts, inputs, logits, maskedLogits, maskedLogits !== null && !opts.detachMasked);
  return {
    N, V, seqLengths, logits, maskedLogits, maskedLogProbs, tokens, advantages, mask, oldLogProbs, refLogProbs,
    rolloutLogProbs, perceptionWeights, sftMask, opts, out,
    lossScale, normScale: opts.lossScale ?? padded, vocabShard,
  };
}
