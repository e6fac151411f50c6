// The roofline measured in the same run: a memory copy that moves the same minimal bytes as the case (it reads
// half of them and writes the other half). Host memcpy for the CPU, device-to-device copy for a GPU.
import { cuda } from '../lib';
import { native } from '../lib/native';
import { measure, type Timing } from './harness';

export function hostCopy(bytes: number, maxTimeS: number): Timing {
  const half = Math.max(8, Math.round(bytes / 2 / 8) * 8);
  const src = new Uint8Array(half).fill(1), dst = new Uint8Array(half);
  return measure('host memcpy', () => dst.set(src), maxTimeS);
}

export function deviceCopy(bytes: number, maxTimeS: number): Timing {
  const half = Math.max(8, Math.round(bytes / 2 / 8) * 8);
  const src = cuda.upload({ data: new Uint16Array(half / 2), dims: [1, half / 2], type: 'bfloat16' });
  const dst = cuda.upload({ data: new Uint16Array(half / 2), dims: [1, half / 2], type: 'bfloat16' });
  try {
    return measure('device copy', () => native().cudaCopyDevice(dst.pointer, src.pointer, half, 0), maxTimeS);
  } finally {
    src.dispose();
    dst.dispose();
  }
}
