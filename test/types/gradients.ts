// Type-level tests: `tsc -p tsconfig.json`, the first step of `npm test`, checks this file; nothing here runs.
// Host logits give Tensor gradients whose `.data` reads without a cast, DeviceTensor logits give DeviceTensors,
// and logits typed as either give the union, which isDeviceTensor narrows. gradLogits is present (no `!`, no `?.`)
// unless the options may set computeGrad to false; a `type` widened to string is accepted (checked at run time).
import {
  DeviceTensor, isDeviceTensor, papoLoss, papoLossSync, type PapoGradResult, type PapoInputs, type PapoOptions,
  type PapoResult, type Tensor, type TensorData,
} from '../../lib';

/** true when A and B are the same type (not merely assignable either way). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
/** Compiles only for `true`. */
const expectType = <T extends true>(ok: T): T => ok;

declare const f32: Float32Array;
declare const bits: Uint16Array;
declare const device: DeviceTensor;
declare const either: PapoInputs;
const perToken = { tokens: Int32Array.of(0, 1), advantages: [1, -1] };

export async function hostGradients(): Promise<TensorData[]> {
  const ort = { ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' as const } };
  const r = papoLossSync(ort, { preset: 'dapo' });
  expectType<Equal<typeof r, PapoGradResult<Tensor>>>(true);
  const data: TensorData = r.gradLogits.data;  // the point: no cast, no `!`

  const shaped = papoLossSync({ ...perToken, logits: { data: bits, shape: [2, 3], dtype: 'bfloat16' },
    maskedLogits: { data: bits, shape: [2, 3], dtype: 'bfloat16' } });
  const masked: Tensor | undefined = shaped.gradMaskedLogits;

  const tfjs = { shape: [2, 3], dtype: 'float32', dataSync: (): Float32Array => f32 };
  const asyncResult = await papoLoss({ ...perToken, logits: tfjs, maskedLogits: tfjs });
  expectType<Equal<typeof asyncResult, PapoGradResult<Tensor>>>(true);
  return [data, masked!.data, asyncResult.gradLogits.data];
}

export function literalWrittenFirst(): TensorData {
  // `type` widens to string here: accepted, and checked at run time (logits.type).
  const logits = { data: f32, dims: [2, 3], type: 'float32' };
  return papoLossSync({ ...perToken, logits }).gradLogits.data;
}

export function computeGradOption(flag: boolean, options: PapoOptions): void {
  const explicitTrue = papoLossSync({ ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' } }, { computeGrad: true });
  expectType<Equal<typeof explicitTrue.gradLogits, Tensor>>(true);
  const off = papoLossSync({ ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' } }, { computeGrad: false });
  expectType<Equal<typeof off, PapoResult<Tensor>>>(true);
  expectType<Equal<typeof off.gradLogits, Tensor | undefined>>(true);
  const unknownFlag = papoLossSync({ ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' } }, { computeGrad: flag });
  expectType<Equal<typeof unknownFlag.gradLogits, Tensor | undefined>>(true);
  const anyOptions = papoLossSync({ ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' } }, options);
  expectType<Equal<typeof anyOptions.gradLogits, Tensor | undefined>>(true);
  // @ts-expect-error an unknown option is still a compile error (excess property check)
  papoLossSync({ ...perToken, logits: { data: f32, dims: [2, 3], type: 'float32' } }, { presett: 'grpo' });
}

export async function deviceGradients(): Promise<void> {
  const r = await papoLoss({ ...perToken, logits: device, maskedLogits: device }, { backend: 'cuda' });
  expectType<Equal<typeof r.gradLogits, DeviceTensor>>(true);
  // @ts-expect-error device memory has no host data: download() it
  void r.gradLogits.data;
  r.gradLogits.dispose();
}

export function eitherPlacement(): TensorData | null {
  const r = papoLossSync(either);
  expectType<Equal<typeof r.gradLogits, Tensor | DeviceTensor>>(true);
  const g = r.gradLogits;
  return isDeviceTensor(g) ? null : g.data;
}
