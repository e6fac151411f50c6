// onnxruntime tensors passed straight in. onnxruntime-node's Tensor is onnxruntime-common's class (it re-exports
// it), so this uses that small package rather than onnxruntime-node's 290 MB of native binaries.
import { describe, expect, it } from 'vitest';
import { papoLossSync } from '../lib';
import { makeInputs } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Tensor } = require('onnxruntime-common') as {
  Tensor: {
    new (type: string, data: ArrayBufferView, dims: readonly number[]): { data: ArrayBufferView; dims: readonly number[]; type: string };
    fromGpuBuffer(buffer: object, o: { dataType: string; dims: number[] }): { dims: readonly number[]; type: string; location: string };
  };
};

describe('onnxruntime tensors', () => {
  for (const type of ['float32', 'float16'] as const) {
    it(`${type} logits as ort.Tensor and int64 token ids give what plain objects give`, () => {
      const inputs = makeInputs({ N: 5, V: 40, seed: 43, type });
      const plain = inputs.logits as { data: Float32Array | Uint16Array; dims: number[] };
      const masked = inputs.maskedLogits as typeof plain;
      const tokens = new Tensor('int64', BigInt64Array.from(inputs.tokens as Int32Array, (t) => BigInt(t)), [5]);
      const ort = {
        ...inputs,
        logits: new Tensor(type, plain.data, plain.dims),
        maskedLogits: new Tensor(type, masked.data, masked.dims),
        tokens: tokens.data as BigInt64Array,
      };
      const expected = papoLossSync(inputs, { backend: 'cpu' });
      const r = papoLossSync(ort, { backend: 'cpu' });
      expect(r.loss).toBe(expected.loss);
      expect(r.gradLogits!.type).toBe(type);
      expect(Array.from(r.gradLogits!.data)).toEqual(Array.from(expected.gradLogits!.data));
    });
  }
  it('a tensor whose data is not on the CPU is refused, naming the argument', () => {
    const gpu = Tensor.fromGpuBuffer({ size: 5 * 40 * 4, usage: 0x84 }, { dataType: 'float32', dims: [5, 40] });
    expect(() => papoLossSync({ ...makeInputs({ N: 5, V: 40 }), logits: gpu })).toThrow(
      /^logits: an onnxruntime tensor on 'gpu-buffer': pass its data on the CPU \(await tensor.getData\(\)\)$/);
  });
  it('onnxruntime has no bfloat16 tensor: bf16 bits go in as a plain { data, dims, type }', () => {
    expect(() => new Tensor('bfloat16', new Uint16Array(4), [2, 2])).toThrow(/Unsupported tensor type: bfloat16/);
  });
});
