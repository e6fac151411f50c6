// onnxruntime's float16 tensors where the runtime has Float16Array (Node 24 on): their data is a Float16Array,
// whose bytes are the raw bits the kernels read. Node 20 has none, so this file installs a stand-in first (a
// 2-byte typed array that is not a Uint16Array), before onnxruntime-common looks for one at its first tensor.
// A file of its own: onnxruntime-common decides once per process.
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';
import { makeInputs } from './helpers';

const g = globalThis as { Float16Array?: unknown };
const native = g.Float16Array !== undefined;
if (!native) g.Float16Array = class Float16Array extends Int16Array {};

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Tensor } = require('onnxruntime-common') as {
  Tensor: new (type: string, data: ArrayBufferView, dims: readonly number[]) => { data: ArrayBufferView; dims: readonly number[]; type: string };
};

describe(`float16 tensors held in a Float16Array (${native ? 'the runtime\'s' : 'a stand-in'})`, () => {
  it('give the bits of the same data in a Uint16Array, in place too', () => {
    const inputs = makeInputs({ N: 4, V: 30, seed: 44, type: 'float16' });
    const plain = inputs.logits as { data: Uint16Array; dims: number[] };
    const masked = inputs.maskedLogits as typeof plain;
    const logits = new Tensor('float16', plain.data.slice(), plain.dims);
    expect(logits.data).toBeInstanceOf(g.Float16Array as typeof Int16Array);
    const ort = { ...inputs, logits, maskedLogits: new Tensor('float16', masked.data.slice(), masked.dims) };
    const expected = papoLossSync(inputs, { backend: 'cpu' });
    const r = papoLossSync(ort, { backend: 'cpu' });
    expect(r.loss).toBe(expected.loss);
    expect(Array.from(r.gradLogits!.data)).toEqual(Array.from(expected.gradLogits!.data));

    papoLossSync(ort, { backend: 'cpu', inPlace: true });
    const bits = logits.data as unknown as ArrayBufferView;
    expect(Array.from(new Uint16Array(bits.buffer, bits.byteOffset, 4 * 30))).toEqual(Array.from(expected.gradLogits!.data));
  });
});
