// The CPU gradient takes one of two ways (native/cpu/row_kernels.h): from the exponentials the statistics kept (out
// of place, no sequence phase) or from exponentials recomputed block by block (in place, GSPO and top-p, vocabulary
// shards); gradients of 16 MiB or more in a call are written with non-temporal stores, from the first 64-byte
// boundary of each block. Every way gives the same bits and matches the float64 reference, on rows of several
// 2048-element blocks whose max moves to a later block and whose first blocks are all excluded (-Infinity); rows
// without weight are all +0 whichever way they are written.
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';
import type { DType, PapoInputs, PapoOptions, PapoResult, Tensor } from '../lib/types';
import { fromFloat64 } from '../lib/dtype';
import { expectClose, makeInputs, maxAbs, values } from './helpers';

const V = 5001;  // two full blocks and a partial one; odd, so every row starts at another offset mod 64 bytes

/** Six rows; row 0 has its first two blocks excluded but for nothing, row 1 its max late, in both paths. */
function blockInputs(type: DType, seed: number): PapoInputs {
  const inputs = makeInputs({ N: 6, V, type: 'float32', seed });
  const tokens = inputs.tokens as Int32Array;
  tokens[0] = 4500;
  for (const t of [inputs.logits, inputs.maskedLogits] as Tensor[]) {
    const z = t.data as Float32Array;
    z.fill(-Infinity, 0, 2 * 2048);
    z[4500] = 2;
    z[V + 4700] = 9;  // above anything in the row's first two blocks: the running max moves in block 2
  }
  if (type === 'float32') return inputs;
  const to = (t: Tensor): Tensor => ({ data: fromFloat64(Float64Array.from(t.data), 'bfloat16'), dims: t.dims, type });
  return { ...inputs, logits: to(inputs.logits as Tensor), maskedLogits: to(inputs.maskedLogits as Tensor) };
}

/** The rows of `inputs` `copies` times over. */
function repeated(inputs: PapoInputs, copies: number): PapoInputs {
  const rep = (t: Tensor): Tensor => {
    const d = t.data as Float32Array | Uint16Array;
    const out = new (d.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(d.length * copies);
    for (let c = 0; c < copies; c++) out.set(d, c * d.length);
    return { data: out, dims: [t.dims[0] * copies, V], type: t.type };
  };
  const f = (a: Float32Array) => Float32Array.from({ length: a.length * copies }, (_, i) => a[i % a.length]);
  return {
    logits: rep(inputs.logits as Tensor), maskedLogits: rep(inputs.maskedLogits as Tensor),
    tokens: Int32Array.from({ length: inputs.tokens.length * copies }, (_, i) => (inputs.tokens as Int32Array)[i % inputs.tokens.length]),
    advantages: f(inputs.advantages as Float32Array), oldLogProbs: f(inputs.oldLogProbs as Float32Array),
    refLogProbs: f(inputs.refLogProbs as Float32Array),
  };
}

function copyLogits(inputs: PapoInputs): PapoInputs {
  const copy = (t: Tensor): Tensor => ({ ...t, data: t.data.slice() });
  return { ...inputs, logits: copy(inputs.logits as Tensor), maskedLogits: copy(inputs.maskedLogits as Tensor) };
}

/** Output buffers whose data start 4 bytes past a 64-byte boundary (of the gradient's type). */
function offsetOut(like: PapoResult): PapoOptions['out'] {
  const make = (t: Tensor): Tensor => {
    const d = t.data as Float32Array | Uint16Array;
    const C = d.constructor as Float32ArrayConstructor | Uint16ArrayConstructor;
    const buffer = new ArrayBuffer(d.byteLength + 128);
    const base = new C(buffer);
    const skip = (((64 - (base.byteOffset % 64)) % 64) + 4) / d.BYTES_PER_ELEMENT;
    return { data: new C(buffer, skip * d.BYTES_PER_ELEMENT, d.length), dims: t.dims, type: t.type };
  };
  return { gradLogits: make(like.gradLogits as Tensor), gradMaskedLogits: make(like.gradMaskedLogits as Tensor) };
}

/** The raw bits of a gradient (fp32 as integers, 16-bit types as they are). */
const bitsOf = (t: Tensor | undefined): Uint32Array | Uint16Array => {
  const d = t!.data as Float32Array | Uint16Array;
  return d instanceof Float32Array ? new Uint32Array(d.buffer, d.byteOffset, d.length) : d;
};

/** a[from, from + length) bit for bit equal to b[0, length), or the number of elements that differ and the first. */
function expectSameBits(a: Uint32Array | Uint16Array, b: Uint32Array | Uint16Array, what: string, from = 0, length = b.length) {
  let differ = 0, first = -1;
  for (let i = 0; i < length; i++)
    if (a[from + i] !== b[i]) {
      if (first < 0) first = i;
      differ++;
    }
  expect(differ, `${what}: ${differ} of ${length} elements differ, the first at ${first}`).toBe(0);
}

describe('cpu gradients from kept and from recomputed exponentials', () => {
  const cases: [DType, string, PapoOptions][] = [
    ['float32', 'no entropy term (papo-g)', { preset: 'papo-g' }],
    ['float32', 'entropy terms (papo-g-7b)', { preset: 'papo-g-7b' }],
    ['bfloat16', 'no entropy term (papo-g)', { preset: 'papo-g' }],
    ['bfloat16', 'entropy terms, fp32 gradients', { preset: 'papo-g-7b', gradType: 'float32' }],
  ];
  for (const [type, what, options] of cases) {
    it(`${type}, ${what}: against the reference; in place gives the same bits`, () => {
      const inputs = blockInputs(type, 41);
      const opts = { ...options, backend: 'cpu' as const };
      const out = papoLossSync(inputs, opts);
      const ref = papoLossSync(inputs, { ...options, backend: 'reference', gradType: 'float32' });
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
        const want = values(ref[g]);
        expectClose(values(out[g]), want, type === 'float32' ? 1e-5 : 1e-2, 1e-6 * maxAbs(want), g);
      }
      expectClose(out.logProbs, ref.logProbs, 1e-5, 1e-6, 'logProbs');
      if (options.gradType === 'float32') return;  // in place writes the input's type only
      const inPlace = papoLossSync(copyLogits(inputs), { ...opts, inPlace: true });
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) expectSameBits(bitsOf(inPlace[g]), bitsOf(out[g]), `${g} in place`);
    });
  }

  for (const type of ['float32', 'bfloat16'] as DType[]) {
    it(`${type}: streamed gradients (16 MiB and more) equal in place, at every row offset and into an unaligned out`, () => {
      const copies = Math.ceil((16 << 20) / (6 * V * 2 * (type === 'float32' ? 4 : 2)));
      const inputs = repeated(blockInputs(type, 42), copies);
      const opts: PapoOptions = { backend: 'cpu', preset: 'papo-g-7b' };
      const streamed = papoLossSync(inputs, opts);
      const inPlace = papoLossSync(copyLogits(inputs), { ...opts, inPlace: true });
      const unaligned = papoLossSync(inputs, { ...opts, out: offsetOut(streamed) });
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
        const want = bitsOf(streamed[g]);
        expectSameBits(bitsOf(inPlace[g]), want, `${g} in place`);
        expectSameBits(bitsOf(unaligned[g]), want, `${g} into an unaligned out`);
        // the same six rows at another position (at other offsets mod 64 bytes) have the same bits
        const slab = 6 * V;
        for (let c = 1; c < copies; c++) expectSameBits(want, want.subarray(0, slab), `${g}, copy ${c}`, c * slab, slab);
      }
    });

    it(`${type}: rows without weight are streamed +0, over whatever the out held`, () => {
      const copies = Math.ceil((16 << 20) / (6 * V * 2 * (type === 'float32' ? 4 : 2)));
      const inputs = repeated(blockInputs(type, 43), copies);
      const N = inputs.tokens.length;
      const responseMask = Float32Array.from({ length: N }, (_, i) => (i % 3 === 1 ? 0 : 1));
      const opts: PapoOptions = { backend: 'cpu', preset: 'papo-g' };
      const streamed = papoLossSync({ ...inputs, responseMask }, opts);
      const out = offsetOut(streamed)!;
      for (const t of [out.gradLogits, out.gradMaskedLogits] as Tensor[]) (t.data as Float32Array | Uint16Array).fill(type === 'float32' ? NaN : 0xffff);
      const unaligned = papoLossSync({ ...inputs, responseMask }, { ...opts, out });
      const inPlace = papoLossSync(copyLogits({ ...inputs, responseMask }), { ...opts, inPlace: true });
      for (const g of ['gradLogits', 'gradMaskedLogits'] as const) {
        const want = bitsOf(inPlace[g]);
        expectSameBits(bitsOf(streamed[g]), want, `${g} streamed`);
        expectSameBits(bitsOf(unaligned[g]), want, `${g} into an unaligned out`);
        const zeros = new (want.constructor as Uint32ArrayConstructor | Uint16ArrayConstructor)(V);
        for (let i = 1; i < N; i += 3) expectSameBits(want, zeros, `${g}, row ${i} (no weight)`, i * V, V);
      }
    });
  }
});
