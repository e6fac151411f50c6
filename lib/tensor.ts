// Tensor adapters: onnxruntime-node `{ data, dims, type }`, `{ data, shape, dtype }` and tfjs-style objects
// (`shape`, `dtype`, `dataSync()`) all become one normalised view. Nothing is copied but tfjs's dataSync().
import { DeviceTensor } from './device-tensor';
import { describe, rangeError, typeError } from './errors';
import type { DType, TensorData } from './types';

/** A tensor's data is either host memory (data) or device memory (device), never both. */
export interface NormTensor {
  data: TensorData | null;
  device: DeviceTensor | null;
  dims: number[];
  type: DType;
}

/** The host data of a tensor that a host backend runs on (chooseBackend keeps device tensors away from them). */
export function hostData(t: NormTensor): TensorData {
  if (!t.data) throw new Error('papo-kernels internal error: device tensor given to a host backend');
  return t.data;
}

export const dtypes: readonly DType[] = ['float32', 'float16', 'bfloat16'];

function storageOk(data: unknown, type: DType): boolean {
  return type === 'float32' ? data instanceof Float32Array : data instanceof Uint16Array;
}

/** Runtimes with Float16Array hold float16 data in one (onnxruntime's float16 tensors do there); the kernels read
 * the same bytes as raw bits, so it is viewed as a Uint16Array, not copied (in place, gradients land in it). */
function float16Bits(data: unknown, type: DType): unknown {
  const F16 = (globalThis as { Float16Array?: abstract new (...args: never[]) => object }).Float16Array;
  if (type !== 'float16' || F16 === undefined || !(data instanceof F16)) return data;
  const v = data as unknown as { buffer: ArrayBufferLike; byteOffset: number; length: number };
  return new Uint16Array(v.buffer, v.byteOffset, v.length);
}

export function storageName(type: DType): string {
  return type === 'float32' ? 'Float32Array' : 'Uint16Array (raw bits)';
}

export function toTensor(name: string, t: unknown): NormTensor {
  if (t === null || typeof t !== 'object') throw typeError(name, 'a tensor ({ data, dims, type })', t);
  if (t instanceof DeviceTensor) {
    t.assertLive(name);
    return { data: null, device: t, dims: [...t.dims], type: t.type };
  }
  const o = t as Record<string, unknown>;
  let data: unknown;
  let dims: unknown;
  let type: unknown;
  if ('dims' in o) {
    // onnxruntime: reading .data of a tensor held elsewhere throws an error that names no argument
    if (typeof o.location === 'string' && o.location !== 'cpu')
      throw rangeError(name, `an onnxruntime tensor on '${o.location}': pass its data on the CPU (await tensor.getData())`);
    [data, dims, type] = [o.data, o.dims, o.type];
  } else if (typeof o.dataSync === 'function') {
    [dims, type] = [o.shape, o.dtype];
    if (type !== 'float32') throw rangeError(`${name}.dtype`, `a tfjs-style tensor must be float32, got ${describe(type)}`);
    data = (o.dataSync as () => unknown).call(t);
    // a duck-typed tensor may claim float32 and hold integers: name the method that lied, not a `data` field it lacks
    if (!(data instanceof Float32Array)) throw typeError(`${name}.dataSync()`, 'a Float32Array (the tensor says float32)', data);
  } else if ('shape' in o) {
    [data, dims, type] = [o.data, o.shape, o.dtype];
  } else {
    throw typeError(name, 'a tensor: { data, dims, type }, { data, shape, dtype } or a tfjs-style tensor', t);
  }
  if (typeof type !== 'string' || !(dtypes as readonly string[]).includes(type))
    throw rangeError(`${name}.type`, `expected 'float32', 'float16' or 'bfloat16', got ${describe(type)}`);
  const dt = type as DType;
  data = float16Bits(data, dt);
  if (!storageOk(data, dt)) throw typeError(`${name}.data`, `a ${storageName(dt)} for ${dt}`, data);
  if (!Array.isArray(dims) || (dims.length !== 2 && dims.length !== 3))
    throw typeError(`${name}.dims`, '[N, V] or [B, T, V]', dims);
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1)
      throw rangeError(`${name}.dims`, `expected positive integers, got [${dims.map(String).join(', ')}]`);
  }
  const buf = data as TensorData;
  const elements = (dims as number[]).reduce((a, b) => a * b, 1);
  if (buf.length !== elements) {
    const detached = buf.length === 0 && buf.byteOffset === 0 && buf.buffer.byteLength === 0;
    throw rangeError(`${name}.data`, detached
      ? 'its ArrayBuffer is detached (transferred or freed)'
      : `dims [${(dims as number[]).join(', ')}] need ${elements} elements, data has ${buf.length}`);
  }
  return { data: buf, device: null, dims: [...(dims as number[])], type: dt };
}

/** Whether two typed arrays share any byte of memory. */
export function sharesMemory(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** Whether two tensors (host or device) overlap in memory. */
export function sameMemory(a: NormTensor, b: NormTensor): boolean {
  if (a.data && b.data) return sharesMemory(a.data, b.data);
  if (!a.device || !b.device || a.device.device !== b.device.device) return false;
  const [pa, pb] = [a.device.pointer, b.device.pointer];
  return pa < pb + BigInt(b.device.byteLength) && pb < pa + BigInt(a.device.byteLength);
}
