// The same row gives the same bits wherever it sits (docs/determinism.md): every CUDA kernel family, at every
// position 0-7 of a batch (so at every byte offset mod 16 of an odd V), with staging chunks of 1 MiB and of the
// default size (and, for k4, on a grid of 3 blocks), against the row alone in a batch of 1. Statistics (log-prob, entropy) of both paths are
// compared with the batch of 1; the gradient rows (whose scale depends on the batch through the token
// weights) with each other within the batch.
import { cudaTarget } from './cuda-target';
import { afterEach, describe, expect, it } from 'vitest';
import { papoLoss } from '../lib';
import type { DType, PapoInputs, Tensor } from '../lib/types';
import { makeInputs } from './helpers';

// grids: the grid sizes (PAPO_CUDA_BLOCKS; '' the default) the batch also runs with, for the kernel whose blocks
// take their work from a counter (k4): the row alone always runs on the default grid. vs: the vocabularies, where
// not all (k4's short slices give the short row as many slices as the long ones get by default).
interface Family { name: string; backend: 'cuda' | 'cuda-naive'; env: Record<string, string>; grids?: string[]; vs?: number[] }
const FAMILIES: Family[] = [
  { name: 'k0 naive', backend: 'cuda-naive', env: {} },
  { name: 'k1 two-pass', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '1' } },
  { name: 'k2 fused', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '2' } },
  { name: 'k4 split rows', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '4' }, grids: ['', '3'] },
  { name: 'k4 split rows, slices of 64 vectors', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '4', PAPO_CUDA_K4_SLICE: '64' },
    grids: ['', '3'], vs: [4099] },
];
const ENV_KEYS = ['PAPO_CUDA_KERNEL', 'PAPO_CUDA_STAGING_MB', 'PAPO_CUDA_BLOCKS', 'PAPO_CUDA_K4_SLICE'];
const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
afterEach(() => {
  for (const k of ENV_KEYS) if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
});

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

describe(`the same bits for a row at any position (${cudaTarget} cuda)`, () => {
  for (const fam of FAMILIES) {
    for (const type of ['float32', 'bfloat16'] as DType[]) {
      for (const V of fam.vs ?? [4099, 32000, 32001]) {
        // Asynchronous calls: a file of long synchronous ones starves the test runner's messages.
        it(`${fam.name}, ${type}, V = ${V}, positions 0-${ROWS - 1}, staging chunks on and off`, async () => {
          Object.assign(process.env, fam.env);
          const one = makeInputs({ N: 1, V, type, seed: V });
          const batch = repeated(one);
          const opts = { backend: fam.backend, preset: 'papo-g-7b' as const, gradType: 'float32' as const };
          const differing: string[] = [];
          process.env.PAPO_CUDA_STAGING_MB = '256';
          const alone = await papoLoss(one, opts);
          for (const [staging, grid] of ['1', '256'].flatMap((st) => (fam.grids ?? ['']).map((g) => [st, g]))) {
            process.env.PAPO_CUDA_STAGING_MB = staging;
            if (grid) process.env.PAPO_CUDA_BLOCKS = grid;
            else delete process.env.PAPO_CUDA_BLOCKS;
            const r = await papoLoss(batch, opts);
            const where = `staging ${staging} MiB${grid ? `, ${grid} blocks` : ''}`;
            const g = (r.gradLogits as Tensor).data as Float32Array;
            const gm = (r.gradMaskedLogits as Tensor).data as Float32Array;
            for (let p = 0; p < ROWS; p++) {
              for (const [what, a, b] of [['logProb', r.logProbs, alone.logProbs], ['entropy', r.entropy, alone.entropy],
                ['maskedLogProb', r.maskedLogProbs!, alone.maskedLogProbs!], ['maskedEntropy', r.maskedEntropy!, alone.maskedEntropy!]] as const)
                if (bits(a[p]) !== bits(b[0])) differing.push(`${where}, position ${p}: ${what} ${a[p]} vs ${b[0]} alone`);
              let gradDiff = 0;
              for (let j = 0; j < V; j++) {
                if (bits(g[p * V + j]) !== bits(g[j])) gradDiff++;
                if (bits(gm[p * V + j]) !== bits(gm[j])) gradDiff++;
              }
              if (gradDiff) differing.push(`${where}, position ${p}: ${gradDiff} gradient elements differ from position 0`);
            }
          }
          expect(differing, differing.slice(0, 6).join('; ')).toEqual([]);
        });
      }
    }
  }
});
