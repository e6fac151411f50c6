// Scale, opt-in (PAPO_SCALE_TEST=1; about 9 GB of memory and a minute on 2 cores): one bf16 logits tensor of
// 14200 x 151936 = 2.16e9 elements (> 2^31, 4.3 GB), gradients written in place, gives the same per-token results
// and gradients as the same rows run in slices of 1000. Token weights are fixed with lossScale so that a slice's
// rows weigh what they weigh in the whole.
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';

const enabled = process.env.PAPO_SCALE_TEST === '1';
const N = Number(process.env.PAPO_SCALE_ROWS ?? 14200), V = 151936;

// bf16 bits of a deterministic logit: a hash of (row, j) to [-8, 8), exact in bf16 by construction.
function fillRows(out: Uint16Array, row0: number, rows: number) {
  for (let r = 0; r < rows; r++) {
    const base = r * V;
    let h = (Math.imul(row0 + r, 0x9e3779b1) ^ 0x85ebca6b) >>> 0;
    for (let j = 0; j < V; j++) {
      h = (Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) + j) >>> 0;
      // sign, exponent 127-124 (|x| in [2^-3, 8)), 7 mantissa bits
      out[base + j] = ((h >>> 31) << 15) | ((124 + ((h >>> 7) & 3)) << 7) | (h & 0x7f);
    }
  }
}

describe.skipIf(!enabled)(`scale: ${N} x ${V} bf16 in place (${((N * V) / 1e9).toFixed(3)}e9 elements; 2^31 = 2.147e9)`, () => {
  it('equals the same rows in slices', () => {
    const big = new Uint16Array(N * V);
    fillRows(big, 0, N);
    const tokens = Int32Array.from({ length: N }, (_, i) => (i * 7919) % V);
    const advantages = Float32Array.from({ length: N }, (_, i) => ((i % 7) - 3) / 3);
    const maskedLogProbs = Float32Array.from({ length: N }, (_, i) => -5 - (i % 3));
    const opts = { inPlace: true, lossScale: N, maskedEntropyCoef: 0, klCoef: 0 } as const;
    const t0 = Date.now();
    const whole = papoLossSync({ logits: { data: big, dims: [N, V], type: 'bfloat16' }, tokens, advantages, maskedLogProbs }, opts);
    console.log(`scale: ${N} x ${V} bf16 in place in ${((Date.now() - t0) / 1000).toFixed(1)} s, loss ${whole.loss}`);
    expect(Number.isFinite(whole.loss)).toBe(true);
    const S = 1000;
    const slice = new Uint16Array(S * V);
    let loss = 0;
    for (let r0 = 0; r0 < N; r0 += S) {
      const rows = Math.min(S, N - r0);
      const data = slice.subarray(0, rows * V);
      fillRows(data, r0, rows);
      const part = papoLossSync({
        logits: { data, dims: [rows, V], type: 'bfloat16' }, tokens: tokens.subarray(r0, r0 + rows),
        advantages: advantages.subarray(r0, r0 + rows), maskedLogProbs: maskedLogProbs.subarray(r0, r0 + rows),
      }, opts);
      loss += part.loss;
      expect(Array.from(part.logProbs)).toEqual(Array.from(whole.logProbs.subarray(r0, r0 + rows)));
      expect(Array.from(part.entropy)).toEqual(Array.from(whole.entropy.subarray(r0, r0 + rows)));
      const wholeRows = big.subarray(r0 * V, (r0 + rows) * V);
      let mismatch = -1;
      for (let k = 0; k < data.length; k++) if (data[k] !== wholeRows[k]) { mismatch = k; break; }
      expect(mismatch, `first differing gradient element of rows ${r0}..`).toBe(-1);
    }
    expect(loss).toBeCloseTo(whole.loss, 9);
  }, 1_800_000);
});
