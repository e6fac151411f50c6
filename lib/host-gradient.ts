// Fresh host gradient buffers: native/napi/host_buffers.cpp advises large ones onto transparent huge pages
// before their first touch (the page faults of 4 KB pages took most of a CPU call) and says where their memory
// is 64-byte aligned. Plain typed arrays where the addon is not loaded (the reference backend runs without it).
import { tryNative } from './native';
import type { DType, TensorData } from './types';

/** Below two huge pages, a buffer has no whole huge page to gain: a plain typed array. */
const ADVISE_MIN_BYTES = 4 << 20;
const ALIGN = 64;

export function hostGradient(n: number, type: DType): TensorData {
  const esz = type === 'float32' ? 4 : 2;
  const b = n * esz >= ADVISE_MIN_BYTES ? tryNative() : null;
  if (!b) return type === 'float32' ? new Float32Array(n) : new Uint16Array(n);
  const buf = new ArrayBuffer(n * esz + ALIGN);
  const offset = b.adviseHostBuffer(buf);
  return type === 'float32' ? new Float32Array(buf, offset, n) : new Uint16Array(buf, offset, n);
}
