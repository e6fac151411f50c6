// The float64 reference backend: docs/objective.md written out for clarity, not speed. It is the oracle of the tests
// (itself checked against finite differences) and the naive baseline of the benchmarks. It shares no code with
// the native backends on purpose.
import { toFloat64 } from './dtype';
import { hostData } from './tensor';
import { rangeError } from './errors';
import type { ResolvedOptions } from './options';
import type { PreparedCall } from './validate';

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

/** The per-token loss terms of docs/objective.md and their derivatives in lp, a, H, Hm (unweighted). */
export function tokenTerms(o: ResolvedOptions, t: { lp: number; a: number; H: number; Hm: number; old: number | null; ref: number; adv: number; hasMasked: boolean }) {
  // Policy surrogate with dual clip.
  const old = t.old === null ? t.lp : t.old;
  const rawLog = t.lp - old;
  const logRatio = Math.min(Math.max(rawLog, -20), 20);
  const dLog = rawLog >= -20 && rawLog <= 20 ? 1 : 0;
  const ratio = Math.exp(logRatio);
  const clippedRatio = Math.min(Math.max(ratio, 1 - o.clipLow), 1 + o.clipHigh);
  const dClipped = ratio >= 1 - o.clipLow && ratio <= 1 + o.clipHigh ? 1 : 0;
  const L1 = -t.adv * ratio;
  const L2 = -t.adv * clippedRatio;
  let pg = L1 >= L2 ? L1 : L2;
  let dpg = L1 >= L2 ? -t.adv * ratio : -t.adv * ratio * dClipped;
  const clipped = L2 > L1;
  let dualClipped = false;
  if (t.adv < 0) {
    const L3 = -t.adv * o.clipDual;
    if (pg > L3) [pg, dpg, dualClipped] = [L3, 0, true];
  }
  const pgLp = dpg * dLog;

  const kref = o.klCoef > 0 ? klEstimator(o.klEstimator, t.ref - t.lp) : { value: 0, dd: 0 };
  let kp = { value: 0, dd: 0 };
  if (t.hasMasked) {
    const k = klEstimator(o.perceptionEstimator, t.a - t.lp);
    kp = k;
    if (o.perceptionClip) {
      const [lo, hi] = o.perceptionClip;
      kp = { value: Math.min(Math.max(k.value, lo), hi), dd: k.value >= lo && k.value <= hi ? k.dd : 0 };
    }
  }
  const full = o.entropyMode === 'full';
  return {
    pg, kref: kref.value, kp: kp.value, ent: full ? t.H : -t.lp, maskedEnt: full ? t.Hm : -t.a,
    clipped, dualClipped, approxKl: -logRatio,
    // derivatives of each term in lp / a (dd/dlp = -1 for both estimators, dd/da = +1)
    dpg: pgLp, dkref: -kref.dd, dkpLp: -kp.dd, dkpA: kp.dd,
    dentLp: full ? 0 : -1, dentH: full ? 1 : 0, dmentA: full ? 0 : -1, dmentHm: full ? 1 : 0,
  };
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
    dualClipFrac: 0, approxKl: 0, meanEntropy: 0, meanMaskedEntropy: 0, tokens: maskSum };

  for (let i = 0; i < N; i++) {
    const o = call.tokens[i];
    const row = checkedRow(z.subarray(i * V, (i + 1) * V), tau, 'logits', i);
    const lp = row.logp[o];
    logProbs[i] = lp;
    entropy[i] = row.entropy;
    let mrow: ReturnType<typeof rowLogSoftmax> | null = null;
    let a = 0;
    if (zm) {
      mrow = checkedRow(zm.subarray(i * V, (i + 1) * V), tau, 'maskedLogits', i);
      a = mrow.logp[o];
      maskedLogProbs![i] = a;
      maskedEntropy![i] = mrow.entropy;
    } else if (call.maskedLogProbs) {
      a = call.maskedLogProbs[i];
    }
    const weight = call.mask ? call.mask[i] : 1;
    if (weight === 0) continue;
    if (lp === -Infinity || a === -Infinity)
      throw rangeError(lp === -Infinity ? 'logits' : 'maskedLogits',
        `tokens[${i}] = ${o} has logit -Infinity (probability 0) but is a response token`);

    const t = tokenTerms(opts, { lp, a, H: row.entropy, Hm: mrow ? mrow.entropy : 0, old: call.oldLogProbs ? call.oldLogProbs[i] : null,
      ref: call.refLogProbs ? call.refLogProbs[i] : 0, adv: call.advantages[i], hasMasked });
    const w = agg[i], we = ent[i];
    const entM = hasMasked ? opts.maskedEntropyCoef * t.maskedEnt : 0;
    m.loss += w * (t.pg + opts.klCoef * t.kref - opts.perceptionCoef * t.kp) + we * (opts.entropyCoef * t.ent + entM);
    m.pgLoss += w * t.pg;
    m.klLoss += w * t.kref;
    m.perceptionKl += w * t.kp;
    m.entropyLoss += we * t.ent;
    m.maskedEntropyLoss += hasMasked ? we * t.maskedEnt : 0;
    m.clipFrac += weight * (t.clipped ? 1 : 0);
    m.dualClipFrac += weight * (t.dualClipped ? 1 : 0);
    m.approxKl += weight * t.approxKl;
    m.meanEntropy += weight * row.entropy;
    m.meanMaskedEntropy += mrow ? weight * mrow.entropy : 0;

    // dL/dz_j = (1/τ)[g_lp (1[j=o] − p_j) − g_H p_j (log p_j + H)]
    const gLp = w * (t.dpg + opts.klCoef * t.dkref - opts.perceptionCoef * t.dkpLp) + we * opts.entropyCoef * t.dentLp;
    const gH = we * opts.entropyCoef * t.dentH;
    const gA = -w * opts.perceptionCoef * t.dkpA + we * opts.maskedEntropyCoef * t.dmentA;
    const gHm = we * opts.maskedEntropyCoef * t.dmentHm;
    const writeRow = (out: Float64Array, r: ReturnType<typeof rowLogSoftmax>, g: number, h: number) => {
      for (let j = 0; j < V; j++) {
        const pj = r.p[j];
        const entropyPart = pj > 0 ? -h * pj * (r.logp[j] + r.entropy) : 0;
        out[i * V + j] = (g * ((j === o ? 1 : 0) - pj) + entropyPart) / tau;
      }
    };
    if (grad) writeRow(grad, row, gLp, gH);
    if (gradM && mrow) writeRow(gradM, mrow, gA, gHm);
  }
  if (maskSum > 0) {
    for (const k of ['clipFrac', 'dualClipFrac', 'approxKl', 'meanEntropy', 'meanMaskedEntropy'] as const) m[k] /= maskSum;
  }
  return { loss: m.loss, metrics: m, logProbs, entropy, maskedLogProbs, maskedEntropy, gradLogits: grad, gradMaskedLogits: gradM };
}
