// The same row gives the same bits wherever it sits (docs/determinism.md): a CUDA kernel family (k0-k3; each
// in its test file, cuda-family.ts), at every position 0-7 of a batch (so at every byte offset mod 16 of an odd
// V), against the row alone in a batch of 1, with the family's staging: in one chunk, or in chunks of 1 MiB
// (then a batch of 8 rows of V >= 32000 takes several, the row alone one). Statistics (log-prob, entropy) of
// both paths are compared with the batch of 1; the gradient rows (whose scale depends on the batch through the
// token weights) with each other within the batch.
import { cudaTarget } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';
import type { DType, PapoInputs, Tensor } from '../lib/types';
import { staging, type Family } from './cuda-family';
import { makeInputs } from './helpers';

const ROWS = 8;

/** The one row of `one`, repeated ROWS times. */
function repeated(one: PapoInputs): PapoInputs {
  const rep = (t: Tensor): Tensor => {
    const d = t.data as Float32Array | Uint16Array;
    const out = new (d.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(d.length * ROWS);
    for (let r = 0; r < ROWS; r++) out.set(d, r * d.length);
    return { data: out, dims: [ROWS, t.dims[1]], type: t.type };
  };
  const f = (a: Float32Array) => Float32Array.from({ length: ROWS }, () => a[0]);
  return {
    logits: rep(one.logits as Tensor), maskedLogits: rep(one.maskedLogits as Tensor),
    tokens: Int32Array.from({ length: ROWS }, () => one.tokens[0]),
    advantages: f(one.advantages as Float32Array), oldLogProbs: f(one.oldLogProbs as Float32Array),
    refLogProbs: f(one.refLogProbs as Float32Array),
  };
}

const bits = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0];

export function batchInvarianceSuite(fam: Family) {
  describe(`the same bits for a row at any position (${cudaTarget} ${fam.name})`, () => {
    for (const type of ['float32', 'bfloat16'] as DType[]) {
      for (const V of [4099, 32000, 32001]) {
        it(`${type}, V = ${V}, positions 0-${ROWS - 1}, host data ${staging(fam)}`, () => {
          const one = makeInputs({ N: 1, V, type, seed: V });
          const batch = repeated(one);
          const opts = { backend: fam.backend, preset: 'papo-g-7b' as const, gradType: 'float32' as const };
          const differing: string[] = [];
          const alone = papoLossSync(one, opts);
          const r = papoLossSync(batch, opts);
          const g = (r.gradLogits as Tensor).data as Float32Array;
          const gm = (r.gradMaskedLogits as Tensor).data as Float32Array;
          for (let p = 0; p < ROWS; p++) {
            for (const [what, a, b] of [['logProb', r.logProbs, alone.logProbs], ['entropy', r.entropy, alone.entropy],
              ['maskedLogProb', r.maskedLogProbs!, alone.maskedLogProbs!], ['maskedEntropy', r.maskedEntropy!, alone.maskedEntropy!]] as const)
              if (bits(a[p]) !== bits(b[0])) differing.push(`position ${p}: ${what} ${a[p]} vs ${b[0]} alone`);
            let gradDiff = 0;
            for (let j = 0; j < V; j++) {
              if (bits(g[p * V + j]) !== bits(g[j])) gradDiff++;
              if (bits(gm[p * V + j]) !== bits(gm[j])) gradDiff++;
            }
            if (gradDiff) differing.push(`position ${p}: ${gradDiff} gradient elements differ from position 0`);
          }
          expect(differing, differing.slice(0, 6).join('; ')).toEqual([]);
        });
      }
    }
  });
}
