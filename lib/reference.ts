// The float64 reference backend: docs/objective.md written out for clarity, not speed. It is the oracle of the tests
// (itself checked against finite differences) and the naive baseline of the benchmarks. It shares no code with
// the native backends on purpose.
import { toFloat64 } from './dtype';
import { hostData, type NormTensor } from './tensor';
import { rangeError } from './errors';
import type { ResolvedOptions } from './options';
import type { PreparedCall } from './validate';
import type { DType, TensorData } from './types';

export interface ReferenceRows {
  logProbs: Float64Array;
  entropy: Float64Array;
}

/** log-softmax of z/τ for one row, with the sampled token's log-prob and the full entropy. */
export function rowLogSoftmax(z: ArrayLike<number>, temperature: number) {
  const x = Array.from(z, (v) => v / temperature);
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  const logp = x.map((v) => v - lse);
  const p = logp.map(Math.exp);
  let entropy = 0;
  for (let j = 0; j < x.length; j++) if (p[j] > 0) entropy -= p[j] * logp[j];  // p = 0 adds nothing (no 0·-inf)
  return { logp, p, lse, entropy };
}

/** The same checks as the native backends: NaN and +Infinity are errors, -Infinity (excluded) is not. */
function checkedRow(z: Float64Array, temperature: number, name: string, i: number) {
  let finite = false;
  for (const v of z) {
    if (Number.isNaN(v)) throw rangeError(name, `contains NaN in row ${i}`);
    if (v === Infinity) throw rangeError(name, `contains +Infinity in row ${i} (only -Infinity, an excluded token, is allowed)`);
    finite ||= v > -Infinity;
  }
  if (!finite) throw rangeError(name, `row ${i} has no finite entry (every token excluded)`);
  return rowLogSoftmax(z, temperature);
}

/** logProbs(): every row's sampled-token log-prob and full entropy, with papoLoss's checks (every token is a
 * response token here). */
export function referenceLogProbs(logits: NormTensor, tokens: Int32Array, N: number, V: number, temperature: number): ReferenceRows {
  const z = toFloat64(hostData(logits), logits.type);
  const logProbs = new Float64Array(N), entropy = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const row = checkedRow(z.subarray(i * V, (i + 1) * V), temperature, 'logits', i);
    logProbs[i] = row.logp[tokens[i]];
    entropy[i] = row.entropy;
    if (logProbs[i] === -Infinity)
      throw rangeError('logits', `tokens[${i}] = ${tokens[i]} has logit -Infinity (probability 0) but is a response token`);
  }
  return { logProbs, entropy };
}

/**
 * One vocabulary shard's per-token statistics in float64 (lib/vocab-stats.ts's layout): the max of x = z/τ over
 * the shard's columns, Σ e^(x − max), Σ e^(x − max)·x over the finite x, and x_o where the shard holds o (else 0).
 * NaN and +Infinity are errors as in a whole row; a row of the shard with no finite entry is not.
 */
export function referenceShardStats(data: TensorData, type: DType, N: number, Vk: number, tokens: Int32Array,
  start: number, temperature: number, name: string): Float64Array {
  const z = toFloat64(data, type);
  const out = new Float64Array(4 * N);
  for (let i = 0; i < N; i++) {
    const x = Array.from(z.subarray(i * Vk, (i + 1) * Vk), (v) => v / temperature);
    for (const v of x) {
      if (Number.isNaN(v)) throw rangeError(name, `contains NaN in row ${i}`);
      if (v === Infinity) throw rangeError(name, `contains +Infinity in row ${i} (only -Infinity, an excluded token, is allowed)`);
    }
    const max = Math.max(...x);
    let sum = 0, sumX = 0;
    if (max > -Infinity) for (const v of x) if (v > -Infinity) [sum, sumX] = [sum + Math.exp(v - max), sumX + Math.exp(v - max) * v];
    const column = tokens[i] - start;
    [out[i], out[N + i], out[2 * N + i], out[3 * N + i]] = [max, sum, sumX, column >= 0 && column < Vk ? x[column] : 0];
  }
  return out;
}

/** Merged statistics (the whole vocabulary's) as a row's log-sum-exp and entropy: lse = m + log S, H = lse − U/S. */
function mergedRow(stats: Float64Array, N: number, i: number, name: string) {
  const [m, S, U, t] = [stats[i], stats[N + i], stats[2 * N + i], stats[3 * N + i]];
  if (!(m > -Infinity)) throw rangeError(name, `row ${i} has no finite entry (every token excluded)`);
  const lse = m + Math.log(S);
  return { lse, entropy: Math.max(0, lse - U / S), lp: t - lse };
}

/** Schulman's estimators of KL(π‖q) with d = log q − log π: value and derivative in d. */
export function klEstimator(kind: string, d: number): { value: number; dd: number } {
  switch (kind) {
    case 'k1':
      return { value: -d, dd: -1 };
    case 'k2':
      return { value: 0.5 * d * d, dd: d };
    case 'abs':
      return { value: Math.abs(d), dd: Math.sign(d) };
    default: {
      const delta = Math.min(Math.max(d, -20), 20);
      const inRange = d >= -20 && d <= 20 ? 1 : 0;
      const raw = Math.expm1(delta) - delta;
      const value = Math.min(Math.max(raw, -10), 10);
      const passes = raw >= -10 && raw <= 10 ? 1 : 0;
      return { value, dd: passes * inRange * Math.expm1(delta) };
    }
  }
}

/** The ratio clip with dual clip on a log-ratio x: value and d/dx. */
function clippedSurrogate(o: ResolvedOptions, x: number, adv: number) {
  const logRatio = Math.min(Math.max(x, -20), 20);
  const dLog = x >= -20 && x <= 20 ? 1 : 0;
  const ratio = Math.exp(logRatio);
  const clippedRatio = Math.min(Math.max(ratio, 1 - o.clipLow), 1 + o.clipHigh);
  const dClipped = ratio >= 1 - o.clipLow && ratio <= 1 + o.clipHigh ? 1 : 0;
  const L1 = -adv * ratio;
  const L2 = -adv * clippedRatio;
  let pg = L1 >= L2 ? L1 : L2;
  let dpg = L1 >= L2 ? -adv * ratio : -adv * ratio * dClipped;
  const clipped = L2 > L1;
  let dualClipped = false;
  if (adv < 0) {
    const L3 = -adv * o.clipDual;
    if (pg > L3) [pg, dpg, dualClipped] = [L3, 0, true];
  }
  return { pg, dx: dpg * dLog, clipped, dualClipped };
}

/** One token's policy term under lossType: value, derivative (in lp, or in the GSPO x_t when !direct). */
function policyTerm(o: ResolvedOptions, t: { lp: number; old: number; adv: number; seqLogRatio: number; mask: number }) {
  const logRatio = t.lp - t.old;
  switch (o.lossType) {
    case 'gspo':
      return { ...clippedSurrogate(o, t.seqLogRatio * t.mask, t.adv), direct: false };
    case 'gspo-token':
      return { ...clippedSurrogate(o, t.seqLogRatio, t.adv), direct: true };
    case 'cispo': {
      const lo = o.clipLow === 1 ? -Infinity : Math.log(1 - o.clipLow);
      const hi = Math.log(1 + o.clipHigh);
      const weight = Math.exp(Math.min(Math.max(logRatio, lo), hi));
      return { pg: -t.adv * t.lp * weight, dx: -t.adv * weight, clipped: logRatio < lo || logRatio > hi, dualClipped: false, direct: true };
    }
    case 'sapo': {
      const l = Math.min(Math.max(logRatio, -20), 20);
      const r = Math.exp(l);
      const tau = t.adv >= 0 ? o.sapoTauPositive : o.sapoTauNegative;
      const sig = 1 / (1 + Math.exp(-tau * (r - 1)));
      const dl = logRatio >= -20 && logRatio <= 20 ? 1 : 0;
      return { pg: -t.adv * (4 / tau) * sig, dx: -t.adv * 4 * sig * (1 - sig) * r * dl, clipped: false, dualClipped: false, direct: true };
    }
    default:
      return { ...clippedSurrogate(o, logRatio, t.adv), direct: true };
  }
}

export interface TokenContext {
  lp: number; a: number; H: number; Hm: number; old: number | null; ref: number; adv: number; hasMasked: boolean;
  /** Rollout-correction log-prob, weight on kp, share of the SFT term, mask value. */
  rollout?: number; kpWeight?: number; sftWeight?: number; mask?: number;
  /** Sequence-level values: GSPO's s_i and the top-p threshold θ_i. */
  seqLogRatio?: number; kpThreshold?: number;
}

/** The per-token loss terms of docs/objective.md and their derivatives in lp, a, H, Hm (unweighted). */
export function tokenTerms(o: ResolvedOptions, t: TokenContext) {
  const old = t.old === null ? t.lp : t.old;
  const rawLog = t.lp - old;
  const logRatio = Math.min(Math.max(rawLog, -20), 20);
  let corr = 1;
  let rolloutBound = false;
  if (o.rolloutCorrection) {
    const w = Math.exp(old - (t.rollout ?? 0));
    const { mode, upper, lower } = o.rolloutCorrection;
    rolloutBound = mode === 'truncate' ? w > upper : !(w >= lower && w <= upper);
    corr = mode === 'truncate' ? Math.min(w, upper) : rolloutBound ? 0 : w;
  }
  const pol = policyTerm(o, { lp: t.lp, old, adv: t.adv, seqLogRatio: t.seqLogRatio ?? 0, mask: t.mask ?? 1 });

  const kref = o.klCoef > 0 ? klEstimator(o.klEstimator, t.ref - t.lp) : { value: 0, dd: 0 };
  let kp = { value: 0, dd: 0 };
  let kpKept = true;
  if (t.hasMasked) {
    const k = klEstimator(o.perceptionEstimator, t.a - t.lp);
    const wk = t.kpWeight ?? 1;
    kp = { value: wk * k.value, dd: wk * k.dd };
    if (kp.value < (t.kpThreshold ?? -Infinity)) [kp, kpKept] = [{ value: 0, dd: 0 }, false];
    if (o.perceptionClip) {
      const [lo, hi] = o.perceptionClip;
      kp = { value: Math.min(Math.max(kp.value, lo), hi), dd: kp.value >= lo && kp.value <= hi ? kp.dd : 0 };
    }
  }
  const full = o.entropyMode === 'full';
  return {
    pg: corr * pol.pg, kref: kref.value, kp: kp.value, ent: full ? t.H : -t.lp, maskedEnt: full ? t.Hm : -t.a,
    sft: -t.lp, clipped: pol.clipped, dualClipped: pol.dualClipped, approxKl: -logRatio, corr, rolloutBound, kpKept,
    // derivatives of each term in lp / a (dd/dlp = -1 for both estimators, dd/da = +1); GSPO's policy derivative
    // is in x_t (dpgX), which reaches lp through the sequence's mean.
    dpg: pol.direct ? corr * pol.dx : 0, dpgX: pol.direct ? 0 : corr * pol.dx,
    dkref: -kref.dd, dkpLp: -kp.dd, dkpA: kp.dd,
    dentLp: full ? 0 : -1, dentH: full ? 1 : 0, dmentA: full ? 0 : -1, dmentHm: full ? 1 : 0,
  };
}

/** The (1 − p) quantile of `values` with linear interpolation (numpy's default). */
export function upperQuantile(values: number[], p: number): number {
  if (values.length === 0) return -Infinity;
  const v = [...values].sort((x, y) => x - y);
  const pos = (1 - p) * (v.length - 1);
  const lo = Math.floor(pos), hi = Math.min(lo + 1, v.length - 1);
  const t = pos - lo;
  return t < 0.5 ? v[lo] + (v[hi] - v[lo]) * t : v[hi] - (v[hi] - v[lo]) * (1 - t);  // numpy's _lerp
}

/** Aggregation weights of docs/objective.md: the weight of each token under lossAgg, and under token-mean. */
export function aggregationWeights(call: PreparedCall) {
  const { N, seqLengths, mask } = call;
  const m = (i: number) => (mask ? mask[i] : 1);
  const B = seqLengths.length;
  let maskSum = 0;
  for (let i = 0; i < N; i++) maskSum += m(i);
  const denom = call.lossScale > 0 ? call.lossScale : maskSum;
  const agg = new Float64Array(N);
  const ent = new Float64Array(N);
  for (let s = 0, start = 0; s < B; start += seqLengths[s], s++) {
    let seqSum = 0;
    for (let i = start; i < start + seqLengths[s]; i++) seqSum += m(i);
    for (let i = start; i < start + seqLengths[s]; i++) {
      if (m(i) === 0) continue;
      ent[i] = m(i) / denom;
      switch (call.opts.lossAgg) {
        case 'seq-mean-token-mean': agg[i] = m(i) / seqSum / B; break;
        case 'seq-mean-token-sum': agg[i] = m(i) / B; break;
        case 'seq-mean-token-sum-norm': agg[i] = m(i) / call.normScale; break;
        default: agg[i] = m(i) / denom;
      }
    }
  }
  return { agg, ent, maskSum };
}

export interface ReferenceResult {
  loss: number;
  metrics: Record<string, number>;
  logProbs: Float64Array;
  entropy: Float64Array;
  maskedLogProbs: Float64Array | null;
  maskedEntropy: Float64Array | null;
  /** dL/dlogits and dL/dmaskedLogits in float64 (null when not computed or detached). */
  gradLogits: Float64Array | null;
  gradMaskedLogits: Float64Array | null;
}

export function referencePapo(call: PreparedCall): ReferenceResult {
  const { N, V, opts } = call;
  const tau = opts.temperature;
  const z = toFloat64(hostData(call.logits), call.logits.type);
  const zm = call.maskedLogits ? toFloat64(hostData(call.maskedLogits), call.maskedLogits.type) : null;
  const hasMasked = zm !== null || call.maskedLogProbs !== null;
  const detach = opts.detachMasked || call.maskedLogProbs !== null;
  const { agg, ent, maskSum } = aggregationWeights(call);
  const wantGrad = opts.computeGrad;
  const grad = wantGrad ? new Float64Array(N * V) : null;
  const gradM = wantGrad && zm && !detach ? new Float64Array(N * V) : null;
  const logProbs = new Float64Array(N), entropy = new Float64Array(N);
  const maskedLogProbs = zm ? new Float64Array(N) : null, maskedEntropy = zm ? new Float64Array(N) : null;
  const m = { loss: 0, pgLoss: 0, klLoss: 0, perceptionKl: 0, entropyLoss: 0, maskedEntropyLoss: 0, clipFrac: 0,
    dualClipFrac: 0, approxKl: 0, meanEntropy: 0, meanMaskedEntropy: 0, tokens: maskSum } as Record<string, number>;
  const weight = (i: number) => (call.mask ? call.mask[i] : 1);

  // Sequences: the sequence of each row, and each sequence's mask sum n_i.
  const B = call.seqLengths.length;
  const seqOf = new Int32Array(N);
  const n = new Float64Array(B);
  for (let s = 0, row = 0; s < B; s++)
    for (let k = 0; k < call.seqLengths[s]; k++, row++) [seqOf[row], n[s]] = [s, n[s] + weight(row)];

  // 1. Every row's statistics: from the row, or for a vocabulary shard the merged ones of every shard.
  type Row = { lse: number; entropy: number };
  const shard = call.vocabShard;
  const rows: { row: Row; mrow: Row | null; lp: number; a: number }[] = [];
  for (let i = 0; i < N; i++) {
    const o = call.tokens[i];
    const whole = (data: Float64Array, name: string) => {
      const r = checkedRow(data.subarray(i * V, (i + 1) * V), tau, name, i);
      return { lse: r.lse, entropy: r.entropy, lp: r.logp[o] };
    };
    const row = shard ? mergedRow(shard.stats, N, i, 'logits') : whole(z, 'logits');
    const lp = row.lp;
    logProbs[i] = lp;
    entropy[i] = row.entropy;
    let mrow: Row | null = null;
    let a = 0;
    if (zm) {
      const r = shard ? mergedRow(shard.maskedStats!, N, i, 'maskedLogits') : whole(zm, 'maskedLogits');
      [mrow, a] = [r, r.lp];
      maskedLogProbs![i] = a;
      maskedEntropy![i] = r.entropy;
    } else if (call.maskedLogProbs) {
      a = call.maskedLogProbs[i];
    }
    if (weight(i) !== 0 && (lp === -Infinity || a === -Infinity))
      throw rangeError(lp === -Infinity ? 'logits' : 'maskedLogits',
        `tokens[${i}] = ${o} has logit -Infinity (probability 0) but is a response token`);
    rows.push({ row, mrow, lp, a });
  }

  // 2. Per sequence: GSPO's mean log-ratio s_i and the perception top-p threshold θ_i.
  const old = (i: number) => (call.oldLogProbs ? call.oldLogProbs[i] : rows[i].lp);
  const s = new Float64Array(B);
  for (let i = 0; i < N; i++) if (weight(i) !== 0) s[seqOf[i]] += weight(i) * (rows[i].lp - old(i));
  for (let b = 0; b < B; b++) s[b] = n[b] > 0 ? s[b] / n[b] : 0;
  const theta = new Float64Array(B).fill(-Infinity);
  if (opts.perceptionTopP !== null) {
    const values: number[][] = Array.from({ length: B }, () => []);
    for (let i = 0; i < N; i++)
      if (weight(i) !== 0)
        values[seqOf[i]].push((call.perceptionWeights ? call.perceptionWeights[seqOf[i]] : 1) *
          klEstimator(opts.perceptionEstimator, rows[i].a - rows[i].lp).value);
    for (let b = 0; b < B; b++) theta[b] = upperQuantile(values[b], opts.perceptionTopP);
  }
  // Each token's share of the SFT term: c_i m_t / Σ c m (0 when nothing is selected).
  const sftWeights = new Float64Array(N);
  if (call.sftMask) {
    let sftDenom = 0;
    for (let i = 0; i < N; i++) sftDenom += call.sftMask[seqOf[i]] * weight(i);
    if (sftDenom > 0) for (let i = 0; i < N; i++) sftWeights[i] = call.sftMask[seqOf[i]] * weight(i) / sftDenom;
  }
  const sftCoef = opts.sftCoef ?? 0;

  // 3. Every token's terms, then (GSPO) the sequences' sums of dL/dx_t, then the gradient rows.
  const terms: (ReturnType<typeof tokenTerms> | null)[] = [];
  const seqGradX = new Float64Array(B);
  const seqClip = new Float64Array(B), seqDual = new Float64Array(B);
  let corrSum = 0, boundSum = 0, keptSum = 0, sftLoss = 0;
  for (let i = 0; i < N; i++) {
    const { row, mrow, lp, a } = rows[i];
    if (weight(i) === 0) {
      terms.push(null);
      continue;
    }
    const sftWeight = sftWeights[i];
    const t = tokenTerms(opts, { lp, a, H: row.entropy, Hm: mrow ? mrow.entropy : 0, old: call.oldLogProbs ? call.oldLogProbs[i] : null,
      ref: call.refLogProbs ? call.refLogProbs[i] : 0, adv: call.advantages[i], hasMasked,
      rollout: call.rolloutLogProbs ? call.rolloutLogProbs[i] : 0,
      kpWeight: call.perceptionWeights ? call.perceptionWeights[seqOf[i]] : 1, sftWeight, mask: weight(i),
      seqLogRatio: s[seqOf[i]], kpThreshold: theta[seqOf[i]] });
    terms.push(t);
    const w = agg[i], we = ent[i], mi = weight(i);
    const entM = hasMasked ? opts.maskedEntropyCoef * t.maskedEnt : 0;
    m.loss += w * (t.pg + opts.klCoef * t.kref - opts.perceptionCoef * t.kp) + we * (opts.entropyCoef * t.ent + entM) +
      sftCoef * sftWeight * t.sft;
    m.pgLoss += w * t.pg;
    m.klLoss += w * t.kref;
    m.perceptionKl += w * t.kp;
    m.entropyLoss += we * t.ent;
    m.maskedEntropyLoss += hasMasked ? we * t.maskedEnt : 0;
    m.clipFrac += mi * (t.clipped ? 1 : 0);
    m.dualClipFrac += mi * (t.dualClipped ? 1 : 0);
    seqClip[seqOf[i]] += mi * (t.clipped ? 1 : 0) / n[seqOf[i]];
    seqDual[seqOf[i]] += mi * (t.dualClipped ? 1 : 0) / n[seqOf[i]];
    m.approxKl += mi * t.approxKl;
    m.meanEntropy += mi * row.entropy;
    m.meanMaskedEntropy += mrow ? mi * mrow.entropy : 0;
    corrSum += mi * t.corr;
    boundSum += mi * (t.rolloutBound ? 1 : 0);
    keptSum += mi * (t.kpKept ? 1 : 0);
    sftLoss += sftWeight * t.sft;
    seqGradX[seqOf[i]] += w * t.dpgX * mi;
  }
  for (let i = 0; i < N; i++) {
    const t = terms[i];
    if (!t) continue;
    const { row, mrow } = rows[i];
    const o = call.tokens[i];
    const w = agg[i], we = ent[i];
    const sftWeight = sftWeights[i];
    // dL/dz_j = (1/τ)[g_lp (1[j=o] − p_j) − g_H p_j (log p_j + H)]; GSPO adds dL/ds_i · ds_i/dlp = Σ_t dL/dx_t m_t · m_u / n_i.
    const gLp = w * (t.dpg + opts.klCoef * t.dkref - opts.perceptionCoef * t.dkpLp) + we * opts.entropyCoef * t.dentLp -
      sftCoef * sftWeight + seqGradX[seqOf[i]] * weight(i) / n[seqOf[i]];
    const gH = we * opts.entropyCoef * t.dentH;
    const gA = -w * opts.perceptionCoef * t.dkpA + we * opts.maskedEntropyCoef * t.dmentA;
    const gHm = we * opts.maskedEntropyCoef * t.dmentHm;
    // A vocabulary shard's columns are o's only where it holds o; p_j comes from the whole row's lse.
    const column = o - (shard ? shard.start : 0);
    const writeRow = (out: Float64Array, zs: Float64Array, r: Row, g: number, h: number) => {
      for (let j = 0; j < V; j++) {
        const logp = zs[i * V + j] / tau - r.lse;
        const pj = Math.exp(logp);
        const entropyPart = pj > 0 ? -h * pj * (logp + r.entropy) : 0;
        out[i * V + j] = (g * ((j === column ? 1 : 0) - pj) + entropyPart) / tau;
      }
    };
    if (grad) writeRow(grad, z, row, gLp, gH);
    if (gradM && mrow) writeRow(gradM, zm!, mrow, gA, gHm);
  }
  if (opts.lossType === 'gspo' || opts.lossType === 'gspo-token') {
    // Clip fractions over sequences (those with response tokens).
    let seqs = 0;
    m.clipFrac = m.dualClipFrac = 0;
    for (let b = 0; b < B; b++) if (n[b] > 0) [seqs, m.clipFrac, m.dualClipFrac] = [seqs + 1, m.clipFrac + seqClip[b], m.dualClipFrac + seqDual[b]];
    if (seqs > 0) [m.clipFrac, m.dualClipFrac] = [m.clipFrac / seqs, m.dualClipFrac / seqs];
  } else if (maskSum > 0) {
    m.clipFrac /= maskSum;
    m.dualClipFrac /= maskSum;
  }
  if (maskSum > 0) for (const k of ['approxKl', 'meanEntropy', 'meanMaskedEntropy']) m[k] /= maskSum;
  const frac = (x: number) => (maskSum > 0 ? x / maskSum : 0);
  if (opts.rolloutCorrection) {
    m.rolloutCorrectionMean = frac(corrSum);
    m[opts.rolloutCorrection.mode === 'mask' ? 'rolloutCorrectionMaskedFrac' : 'rolloutCorrectionTruncatedFrac'] = frac(boundSum);
  }
  if (opts.perceptionTopP !== null) m.perceptionKeptFrac = frac(keptSum);
  if (call.sftMask) m.sftLoss = sftLoss;
  return { loss: m.loss, metrics: m, logProbs, entropy, maskedLogProbs, maskedEntropy, gradLogits: grad, gradMaskedLogits: gradM };
}
