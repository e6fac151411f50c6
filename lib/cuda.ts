// GPU-resident tensors: cuda.upload() copies host data to a device, cuda.wrap() views memory that another
// runtime owns (no copy), and papoLoss() given DeviceTensor logits returns DeviceTensor gradients, so [N, V]
// data never crosses PCIe. A DeviceTensor owns its memory only when papo-kernels allocated it.
import { describe, rangeError, typeError, unsupported } from './errors';
import { native, tryNative, nativeLoadError } from './native';
import { dtypes, toTensor } from './tensor';
import type { DType, Tensor, TensorLike } from './types';

export interface DeviceOptions {
  /** CUDA device index (default 0). */
  device?: number;
}
export interface WrapOptions extends DeviceOptions {
  /**
   * The cudaStream_t the owning runtime writes this memory on (default 0n). A papoLoss or logProbs call with
   * these logits runs its copies and kernels on that stream, after the work already enqueued there, and
   * returns once they are done; its gradient DeviceTensors carry the same stream. 0n is the legacy default
   * stream (cudaStream_t 0), which also orders the call after the work of every blocking stream of the device
   * (a stream created without cudaStreamNonBlocking): pass the producer's real stream when it has one. A
   * maskedLogits tensor on another stream is waited for too, and its stream waits for the call.
   */
  stream?: bigint;
}

const ELEMENT_BYTES: Record<DType, number> = { float32: 4, float16: 2, bfloat16: 2 };
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

function deviceIndex(options: DeviceOptions | undefined, name: string): number {
  const d = options?.device ?? 0;
  if (!Number.isInteger(d) || d < 0) throw rangeError(`${name}.device`, `expected a device index >= 0, got ${describe(d)}`);
  return d;
}

/** Throws PAPO_UNSUPPORTED unless `device` exists. */
/** Whether t is device memory: narrows a gradient of `Tensor | DeviceTensor` (papoLoss on logits whose placement
 * the caller's types do not say) to one or the other. */
export function isDeviceTensor(t: unknown): t is DeviceTensor {
  return t instanceof DeviceTensor;
}

export function requireDevice(device: number, what: string): void {
  const b = tryNative();
  if (!b) throw unsupported(`${what} is not available: ${nativeLoadError()!.message}`);
  const i = b.info();
  if (!i.cudaBuilt || i.cudaDevices.length === 0)
    throw unsupported(`${what} is not available: no CUDA device (${i.cudaStatus || 'none found'}). ` +
      "Backend 'cpu' (or 'auto') runs on host data.");
  if (device >= i.cudaDevices.length)
    throw rangeError(`${what}.device`, `device ${device} does not exist (${i.cudaDevices.length} device(s))`);
}

/** Device memory of papo-kernels' own (uninitialised unless zero), allocated and freed in the order of `stream`
 * (default 0n: the legacy default stream): usable by work on that stream, or anywhere once the stream has been
 * synchronised (every papo-kernels call does before it returns). Zeroing is complete on return. */
export function allocDevice(dims: readonly number[], type: DType, device: number, zero: boolean, stream = 0n): DeviceTensor {
  const bytes = dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[type];
  const { handle, ptr } = native().cudaAlloc(bytes, device, zero, stream);
  return new DeviceTensor(owner, ptr, dims, type, device, stream, handle);
}

export const cuda = {
  /** Whether a CUDA device is usable (the build has CUDA and the driver reports a device). */
  available(): boolean {
    const b = tryNative();
    return !!b && b.info().cudaDevices.length > 0;
  },

  /** Copies a host tensor to a device (complete on return). The tensor's stream is 0n, the legacy default stream. */
  upload(tensor: TensorLike, options?: DeviceOptions): DeviceTensor {
    const t = toTensor('tensor', tensor);
    if (t.device) throw typeError('tensor', 'a host tensor (this one is already a DeviceTensor)');
    const device = deviceIndex(options, 'options');
    requireDevice(device, 'cuda.upload');
    const dt = allocDevice(t.dims, t.type, device, false);
    try {
      native().cudaCopy(dt.pointer, device, t.data!, true, 0n);
    } catch (e) {
      dt.dispose();
      throw e;
    }
    return dt;
  },

  /** A view of device memory owned by another runtime (not copied, never freed by papo-kernels). */
  wrap(pointer: bigint, dims: readonly number[], type: DType, options?: WrapOptions): DeviceTensor {
    if (typeof pointer !== 'bigint' || pointer <= 0n) throw typeError('pointer', 'a device address as a bigint > 0n', pointer);
    if (!Array.isArray(dims) || dims.length < 2 || dims.length > 3 || !dims.every((d) => Number.isSafeInteger(d) && d >= 1))
      throw typeError('dims', '[N, V] or [B, T, V] of positive integers', dims);
    if (!(dtypes as readonly unknown[]).includes(type)) throw rangeError('type', `expected 'float32', 'float16' or 'bfloat16', got ${describe(type)}`);
    if (pointer % BigInt(ELEMENT_BYTES[type]) !== 0n) throw rangeError('pointer', `not aligned to ${ELEMENT_BYTES[type]}-byte ${type} elements`);
    const device = deviceIndex(options, 'options');
    const stream = options?.stream ?? 0n;
    if (typeof stream !== 'bigint' || stream < 0n) throw typeError('options.stream', 'a cudaStream_t as a bigint', stream);
    return new DeviceTensor(owner, pointer, dims, type, device, stream, null);
  },

  /** A non-blocking CUDA stream on `device` (for cuda.wrap's `stream` when the caller has none of its own, and
   * for ordering work around papo-kernels' calls). Release it with destroyStream. */
  createStream(options?: DeviceOptions): bigint {
    const device = deviceIndex(options, 'options');
    requireDevice(device, 'cuda.createStream');
    return native().cudaStreamCreate(device);
  },

  /** Releases a stream from createStream: returns at once, work already on it completes. */
  destroyStream(stream: bigint, options?: DeviceOptions): void {
    if (typeof stream !== 'bigint' || stream <= 0n) throw typeError('stream', 'a stream from cuda.createStream()', stream);
    const device = deviceIndex(options, 'options');
    requireDevice(device, 'cuda.destroyStream');
    native().cudaStreamDestroy(stream, device);
  },

  /** Device memory counters: free/total bytes, and papo-kernels' live allocations (for leak checks). */
  memInfo(device = 0): { free: number; total: number; liveAllocations: number; liveBytes: number } {
    requireDevice(device, 'cuda.memInfo');
    return native().cudaMemInfo(device);
  },
};
