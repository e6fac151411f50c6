// Where a call runs: the backend for its data (one rule for papoLoss, logProbs and a vocabulary shard's
// statistics), and its tensors and their placement as native code takes them.
import { rangeError } from './errors';
import { cuda, requireDevice } from './cuda';
import type { NativePlacement, NativeTensor } from './native';
import type { NormTensor } from './tensor';
import type { DeviceTensor } from './device-tensor';
import type { BackendName } from './types';

export type Resolved = 'cpu' | 'cuda' | 'cuda-naive' | 'reference';

/** Below this many logits elements (both paths), 'auto' stays on the CPU: a GPU call's fixed costs (uploads,
 * launches, synchronisation) exceed what it saves, and host data must cross PCIe first. */
export const AUTO_CUDA_MIN_ELEMENTS = 1 << 24;

/** The backend for a call from what it runs on: its logits' placement (`logits`, the first shard for a split;
 * `name` is what an error calls them) and the logits elements it reads (both paths). `shard`: a vocabulary shard,
 * which the naive chain does not take. */
export function chooseBackend(requested: BackendName, logits: NormTensor, elements: number, shard = false,
  name = 'logits'): Resolved {
  const device = logits.device;
  if (shard && requested === 'cuda-naive')
    throw rangeError('options.backend', "'cuda-naive' does not take vocabulary shards: use 'cuda', 'cpu', 'reference' or 'auto'");
  if (requested === 'reference' || requested === 'cpu') {
    if (device)
      throw rangeError(name, `is a DeviceTensor; backend '${requested}' needs host data: use backend 'cuda' or 'auto', or download() it`);
    return requested;
  }
  if (requested === 'cuda' || requested === 'cuda-naive') {
    requireDevice(device ? device.device : 0, `backend '${requested}'`);
    return requested;
  }
  // 'auto'
  if (device) {
    requireDevice(device.device, "backend 'auto' with DeviceTensor logits");
    return 'cuda';
  }
  return elements >= AUTO_CUDA_MIN_ELEMENTS && cuda.available() ? 'cuda' : 'cpu';
}

/** A logits or gradient tensor as native code takes it: a typed array, or { ptr, bytes } of device memory. */
export function nativeTensor(t: { data: NormTensor['data']; device: DeviceTensor | null }): NativeTensor {
  return t.device ? { ptr: t.device.pointer, bytes: t.device.byteLength } : t.data!;
}

/** Device data runs on the logits' stream (0n: the legacy default stream), ordered with the masked logits' own
 * stream when that differs; host data on a stream of the call's own. */
export function placement(call: { logits: NormTensor; maskedLogits: NormTensor | null }): NativePlacement {
  const d = call.logits.device;
  if (!d) return { onDevice: false };
  const m = call.maskedLogits?.device;
  return { onDevice: true, device: d.device, stream: d.stream, ...(m ? { maskedStream: m.stream } : {}) };
}
