// Option resolution: preset values, then explicit options, each validated with an error that names it.
import { describe, rangeError, typeError } from './errors';
import { resolveOut, type OutOption } from './out';
import { defaultPreset, presets } from './presets';
import type {
  BackendName, EntropyModeName, KlEstimatorName, LossAggName, LossTypeName, PapoOptions, PresetName,
} from './types';

export const klEstimators: readonly KlEstimatorName[] = ['k1', 'k2', 'k3', 'abs'];
export const entropyModes: readonly EntropyModeName[] = ['sampled', 'full'];
export const lossAggs: readonly LossAggName[] = [
  'token-mean',
  'seq-mean-token-mean',
  'seq-mean-token-sum',
  'seq-mean-token-sum-norm',
];
export const lossTypes: readonly LossTypeName[] = ['ppo', 'gspo', 'gspo-token', 'cispo', 'sapo'];
export const rolloutModes = ['truncate', 'mask'] as const;
export const backendNames: readonly BackendName[] = ['auto', 'cpu', 'cuda', 'cuda-naive', 'reference'];

export interface ResolvedOptions {
  preset: PresetName;
  lossType: LossTypeName;
  sapoTauPositive: number;
  sapoTauNegative: number;
  rolloutCorrection: { mode: 'truncate' | 'mask'; upper: number; lower: number } | null;
  clipLow: number;
  clipHigh: number;
  clipDual: number;
  klCoef: number;
  klEstimator: KlEstimatorName;
  perceptionCoef: number;
  perceptionEstimator: KlEstimatorName;
  perceptionClip: [number, number] | null;
  perceptionTopP: number | null;
  sftCoef: number | null;
  entropyCoef: number;
  maskedEntropyCoef: number;
  entropyMode: EntropyModeName;
  detachMasked: boolean;
  lossAgg: LossAggName;
  lossScale: number | null;
  temperature: number;
  computeGrad: boolean;
  inPlace: boolean;
  gradType: 'input' | 'float32';
  backend: BackendName;
  out: OutOption;
  /** options.vocabShard as given: checked against the call's inputs in validate.ts. */
  vocabShard: unknown;
}

const optionNames: readonly (keyof PapoOptions)[] = [
  'preset', 'lossType', 'sapoTauPositive', 'sapoTauNegative', 'rolloutCorrection', 'perceptionTopP', 'sftCoef',
  'clipLow', 'clipHigh', 'clipDual', 'klCoef', 'klEstimator', 'perceptionCoef', 'perceptionEstimator',
  'perceptionClip', 'entropyCoef', 'maskedEntropyCoef', 'entropyMode', 'detachMasked', 'lossAgg', 'lossScale',
  'temperature', 'computeGrad', 'inPlace', 'gradType', 'backend', 'out', 'vocabShard',
];

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

/** The closest known name, for "did you mean" hints; case-insensitive matches win. */
export function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dist = k.toLowerCase() === name.toLowerCase() ? 0 : editDistance(name.toLowerCase(), k.toLowerCase());
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

/** Names users reach for that spell differently here: the hint goes by meaning, not by spelling ('gpu' is one
 * letter from 'cpu'). */
const synonyms: Readonly<Record<string, string>> = { gpu: 'cuda', nvidia: 'cuda' };

function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  const synonym = typeof v === 'string' ? synonyms[v.toLowerCase()] : undefined;
  const hint = typeof v === 'string'
    ? (synonym !== undefined && (allowed as readonly string[]).includes(synonym) ? synonym : closest(v, allowed)) : undefined;
  throw rangeError(name, `expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(v)}` +
    (hint ? ` (did you mean '${hint}'?)` : ''));
}

function num(name: string, v: unknown, check: (x: number) => boolean, what: string): number {
  if (typeof v !== 'number') throw typeError(name, `a number (${what})`, v);
  if (!Number.isFinite(v) || !check(v)) throw rangeError(name, `expected ${what}, got ${v}`);
  return v;
}

function bool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw typeError(name, 'a boolean', v);
  return v;
}

export function resolveOptions(options: PapoOptions | undefined): ResolvedOptions {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object' || Array.isArray(options)) throw typeError('options', 'an object', options);
  for (const key of Object.keys(options)) {
    if (!(optionNames as readonly string[]).includes(key)) {
      const hint = closest(key, optionNames);
      throw rangeError('options', `unknown option '${key}'` + (hint ? ` (did you mean '${hint}'?)` : ''));
    }
  }
  const o = options as Record<string, unknown>;
  const given = (k: keyof PapoOptions) => o[k] !== undefined;
  const preset = given('preset') ? oneOf('options.preset', o.preset, Object.keys(presets) as PresetName[]) : defaultPreset;
  const p = presets[preset];
  const nonNeg = (x: number) => x >= 0;

  // GRPO's and verl's 'vanilla' surrogate is PPO's: the edit-distance hint would point to GSPO, another algorithm.
  if (o.lossType === 'grpo' || o.lossType === 'vanilla')
    throw rangeError('options.lossType', `'${o.lossType}' is the PPO clipped surrogate here: use lossType 'ppo' (the default)`);
  const lossType = given('lossType') ? oneOf('options.lossType', o.lossType, lossTypes) : 'ppo';
  const sapo = lossType === 'sapo', cispo = lossType === 'cispo';
  // Options the chosen policy term does not read are errors, not silently ignored.
  const unused: [keyof PapoOptions, boolean, string][] = [
    ['sapoTauPositive', !sapo, "lossType 'sapo'"], ['sapoTauNegative', !sapo, "lossType 'sapo'"],
    ['clipDual', sapo || cispo, "lossTypes 'ppo', 'gspo' and 'gspo-token' (cispo and sapo have no dual clip)"],
    ['clipLow', sapo, "clipped lossTypes (sapo has no clip)"], ['clipHigh', sapo, "clipped lossTypes (sapo has no clip)"],
  ];
  for (const [k, bad, where] of unused)
    if (given(k) && bad) throw rangeError(`options.${k}`, `only used with ${where}; lossType is '${lossType}'`);
  // Bounded so that every product stays finite: 4/tau times an advantage, CISPO's weight exp(log(1 + clipHigh)).
  const tau = (k: 'sapoTauPositive' | 'sapoTauNegative', d: number) =>
    given(k) ? num(`options.${k}`, o[k], (x) => x >= 1e-6 && x <= 1e6, 'a number in [1e-6, 1e6]') : d;
  const r: ResolvedOptions = {
    preset,
    lossType,
    sapoTauPositive: tau('sapoTauPositive', 1.0),
    sapoTauNegative: tau('sapoTauNegative', 1.05),
    rolloutCorrection: null,
    // CISPO may drop the lower bound (clipLow 1), as MiniMax-M1 does; a ratio clip at 0 means nothing elsewhere.
    clipLow: given('clipLow')
      ? lossType === 'cispo'
        ? num('options.clipLow', o.clipLow, (x) => x >= 0 && x <= 1, "a number in [0, 1] (1: no lower bound) for lossType 'cispo'")
        : num('options.clipLow', o.clipLow, (x) => x >= 0 && x < 1, 'a number in [0, 1)')
      : p.clipLow,
    clipHigh: given('clipHigh') ? num('options.clipHigh', o.clipHigh, (x) => x >= 0 && x <= 1e6, 'a number in [0, 1e6]') : p.clipHigh,
    clipDual: given('clipDual') ? num('options.clipDual', o.clipDual, (x) => x > 1, 'a number > 1') : 3,
    klCoef: given('klCoef') ? num('options.klCoef', o.klCoef, nonNeg, 'a number >= 0') : p.klCoef,
    klEstimator: given('klEstimator') ? oneOf('options.klEstimator', o.klEstimator, klEstimators) : 'k3',
    perceptionCoef: given('perceptionCoef')
      ? num('options.perceptionCoef', o.perceptionCoef, nonNeg, 'a number >= 0')
      : p.perceptionCoef,
    perceptionEstimator: given('perceptionEstimator')
      ? oneOf('options.perceptionEstimator', o.perceptionEstimator, klEstimators)
      : 'k3',
    perceptionClip: null,
    perceptionTopP: o.perceptionTopP === undefined || o.perceptionTopP === null ? null
      : num('options.perceptionTopP', o.perceptionTopP, (x) => x > 0 && x < 1, 'a number in (0, 1)'),
    sftCoef: o.sftCoef === undefined || o.sftCoef === null ? null : num('options.sftCoef', o.sftCoef, nonNeg, 'a number >= 0'),
    entropyCoef: given('entropyCoef') ? num('options.entropyCoef', o.entropyCoef, nonNeg, 'a number >= 0') : p.entropyCoef,
    maskedEntropyCoef: given('maskedEntropyCoef')
      ? num('options.maskedEntropyCoef', o.maskedEntropyCoef, nonNeg, 'a number >= 0')
      : p.maskedEntropyCoef,
    entropyMode: given('entropyMode') ? oneOf('options.entropyMode', o.entropyMode, entropyModes) : 'sampled',
    detachMasked: given('detachMasked') ? bool('options.detachMasked', o.detachMasked) : false,
    lossAgg: given('lossAgg') ? oneOf('options.lossAgg', o.lossAgg, lossAggs) : 'token-mean',
    lossScale: given('lossScale') ? num('options.lossScale', o.lossScale, (x) => x > 0, 'a number > 0') : null,
    temperature: given('temperature') ? num('options.temperature', o.temperature, (x) => x > 0, 'a number > 0') : 1,
    computeGrad: given('computeGrad') ? bool('options.computeGrad', o.computeGrad) : true,
    inPlace: given('inPlace') ? bool('options.inPlace', o.inPlace) : false,
    gradType: given('gradType') ? oneOf('options.gradType', o.gradType, ['input', 'float32'] as const) : 'input',
    backend: given('backend') ? oneOf('options.backend', o.backend, backendNames) : 'auto',
    out: null,
    vocabShard: o.vocabShard ?? null,
  };
  if (o.perceptionClip !== undefined && o.perceptionClip !== null) {
    const c = o.perceptionClip;
    if (!Array.isArray(c) || c.length !== 2) throw typeError('options.perceptionClip', '[lo, hi]', c);
    const lo = num('options.perceptionClip[0]', c[0], () => true, 'a finite number');
    const hi = num('options.perceptionClip[1]', c[1], () => true, 'a finite number');
    if (lo > hi) throw rangeError('options.perceptionClip', `expected lo <= hi, got [${lo}, ${hi}]`);
    r.perceptionClip = [lo, hi];
  }
  if (o.rolloutCorrection !== undefined && o.rolloutCorrection !== null) {
    const c = o.rolloutCorrection as Record<string, unknown>;
    if (typeof c !== 'object' || Array.isArray(c))
      throw typeError('options.rolloutCorrection', "{ mode: 'truncate' | 'mask', upper?, lower? }", c);
    for (const key of Object.keys(c))
      if (!['mode', 'upper', 'lower'].includes(key))
        throw rangeError('options.rolloutCorrection', `unknown field '${key}' (expected mode, upper, lower)`);
    const mode = oneOf('options.rolloutCorrection.mode', c.mode, rolloutModes);
    const upper = c.upper === undefined ? 2 : num('options.rolloutCorrection.upper', c.upper, (x) => x > 0, 'a number > 0');
    // Truncation has no lower bound: a given one would be ignored, and a default one must not be checked.
    if (mode === 'truncate' && c.lower !== undefined)
      throw rangeError('options.rolloutCorrection.lower', "only used with mode 'mask' ('truncate' bounds the ratio from above only)");
    const lower = mode === 'truncate' ? Math.min(1 / upper, upper)  // unused
      : c.lower === undefined ? 1 / upper : num('options.rolloutCorrection.lower', c.lower, (x) => x > 0, 'a number > 0');
    if (lower > upper)
      throw rangeError('options.rolloutCorrection', `expected lower <= upper, got lower ${lower}` +
        `${c.lower === undefined ? ' (the default 1 / upper)' : ''} and upper ${upper}`);
    r.rolloutCorrection = { mode, upper, lower };
  }
  if (r.inPlace && !r.computeGrad) throw rangeError('options.inPlace', 'needs computeGrad: true');
  r.out = resolveOut(o.out, r.inPlace, r.computeGrad);
  return r;
}
