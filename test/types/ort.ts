// Type-level tests (checked by tsc, never run): onnxruntime tensors go in without casts, both the Tensor a
// session's outputs are typed as (any element type: checked at run time) and a TypedTensor built by the caller.
import { Tensor, type TypedTensor } from 'onnxruntime-common';
import { papoLossSync, type TensorData } from '../../lib';

export function sessionOutputs(outputs: { logits: Tensor; maskedLogits: Tensor }, tokens: Tensor): TensorData | undefined {
  const r = papoLossSync({ logits: outputs.logits, maskedLogits: outputs.maskedLogits, tokens: tokens.data as BigInt64Array, advantages: [1] });
  return r.gradLogits?.data;
}

export function builtHere(f32: Float32Array, bits: Uint16Array): TensorData[] {
  const f: TypedTensor<'float32'> = new Tensor('float32', f32, [1, f32.length]);
  const h = new Tensor('float16', bits, [1, bits.length]);
  return [papoLossSync({ logits: f, tokens: [0], advantages: [1] }).gradLogits!.data,
    papoLossSync({ logits: h, tokens: [0], advantages: [1] }).gradLogits!.data];
}
