// The DeviceTensor class: tensor memory on a CUDA device, owned (cuda.upload, papoLoss gradients) or a view of
// another runtime's memory (cuda.wrap). Its own module so that the tensor adapters and the API's types can name it
// without importing the cuda namespace that uses them.
import { rangeError } from './errors';
import { native } from './native';
import type { DType, Tensor } from './types';

export const ELEMENT_BYTES: Record<DType, number> = { float32: 4, float16: 2, bfloat16: 2 };
const owner = Symbol('papo-kernels device tensor');

/** Tensor memory on a CUDA device. dispose() (or `using`) frees what papo-kernels allocated; a disposed tensor
 * cannot be used. */
export class DeviceTensor {
  readonly dims: readonly number[];
  readonly type: DType;
  readonly device: number;
  readonly byteLength: number;
  /** The stream this memory is used on (WrapOptions.stream): papo-kernels' work on it is ordered on this stream.
   * 0n is the legacy default stream; cuda.upload() gives 0n, papoLoss gradients their logits' stream. */
  readonly stream: bigint;
  #pointer: bigint;
  #handle: unknown;  // the native allocation when owned, else null
  #disposed = false;

  /** @internal use cuda.upload / cuda.wrap */
  constructor(key: symbol, pointer: bigint, dims: readonly number[], type: DType, device: number, stream: bigint, handle: unknown) {
    if (key !== owner) throw new TypeError('DeviceTensor: use cuda.upload() or cuda.wrap()');
    this.#pointer = pointer;
    this.dims = Object.freeze([...dims]);
    this.type = type;
    this.device = device;
    this.stream = stream;
    this.byteLength = dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[type];
    this.#handle = handle;
  }

  get disposed(): boolean {
    return this.#disposed;
  }
  /** Whether papo-kernels allocated this memory (and dispose() frees it). */
  get owned(): boolean {
    return this.#handle !== null;
  }
  /** The device address (throws once disposed). */
  get pointer(): bigint {
    this.assertLive('pointer');
    return this.#pointer;
  }

  /** Throws a RangeError naming `name` when the tensor was disposed. */
  assertLive(name: string): void {
    if (this.#disposed) throw rangeError(name, 'the DeviceTensor was disposed');
  }

  /** A host copy, in the tensor's storage type (Float32Array, or Uint16Array bits for 16-bit types). */
  download(): Tensor {
    this.assertLive('download');
    const n = this.byteLength / ELEMENT_BYTES[this.type];
    const data = this.type === 'float32' ? new Float32Array(n) : new Uint16Array(n);
    native().cudaCopy(this.#pointer, this.device, data, false, this.stream);
    return { data, dims: [...this.dims], type: this.type };
  }

  /** Frees owned memory (idempotent) in the order of the tensor's stream, without waiting for the device: work
   * already enqueued on that stream may still use it, work on other streams must be complete (or ordered before
   * it). A wrapped tensor only becomes unusable. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#handle !== null) native().cudaFree(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Device memory of papo-kernels' own (uninitialised unless zero), allocated and freed in the order of `stream`
 * (default 0n: the legacy default stream): usable by work on that stream, or anywhere once the stream has been
 * synchronised (every papo-kernels call does before it returns). Zeroing is complete on return. */
export function allocDevice(dims: readonly number[], type: DType, device: number, zero: boolean, stream = 0n): DeviceTensor {
  const bytes = dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[type];
  const { handle, ptr } = native().cudaAlloc(bytes, device, zero, stream);
  return new DeviceTensor(owner, ptr, dims, type, device, stream, handle);
}


/** A view of device memory that another runtime owns: never freed by papo-kernels. */
export function viewDevice(pointer: bigint, dims: readonly number[], type: DType, device: number, stream: bigint): DeviceTensor {
  return new DeviceTensor(owner, pointer, dims, type, device, stream, null);
}

/** Whether t is device memory: narrows a gradient of `Tensor | DeviceTensor` (papoLoss on logits whose placement
 * the caller's types do not say) to one or the other. */
export function isDeviceTensor(t: unknown): t is DeviceTensor {
  return t instanceof DeviceTensor;
}
