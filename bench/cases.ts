// The inputs of the benchmarks: deterministic logits of both paths with a realistic spread, for any N, V and
// dtype, generated directly in the storage type (no float64 copy of an [N, V] tensor).
import { numberToBf16 } from '../lib/dtype';
import type { DType, PapoInputs, SplitPapoInputs, Tensor, TensorData } from '../lib/types';

export const ELEMENT_BYTES: Record<DType, number> = { float32: 4, float16: 2, bfloat16: 2 };

function logits(n: number, V: number, type: DType, phase: number): TensorData {
  if (type === 'float16') throw new Error('the benchmarks use float32 and bfloat16');
  const out = type === 'float32' ? new Float32Array(n * V) : new Uint16Array(n * V);
  for (let i = 0; i < n * V; i++) {
    const x = Math.sin(i * 0.37 + phase) * 6;
    out[i] = type === 'float32' ? x : numberToBf16(x);
  }
  return out;
}

export function makeBatch(n: number, V: number, type: DType): PapoInputs {
  return {
    logits: { data: logits(n, V, type, 0), dims: [n, V], type },
    maskedLogits: { data: logits(n, V, type, 1.3), dims: [n, V], type },
    tokens: Int32Array.from({ length: n }, (_, i) => (i * 7919) % V),
    advantages: Float32Array.from({ length: n }, (_, i) => ((i % 5) - 2) / 2),
    oldLogProbs: Float32Array.from({ length: n }, () => -12),
    refLogProbs: Float32Array.from({ length: n }, () => -12),
  };
}

export type Kind = 'fwd+bwd' | 'fwd';

/** The minimal bytes a case must move: fwd+bwd reads both logits and writes both gradients (in the input's
 * type); fwd (logProbs of one path) reads that path once. */
export function minimalBytes(kind: Kind, n: number, V: number, type: DType): number {
  const e = ELEMENT_BYTES[type];
  return kind === 'fwd+bwd' ? 2 * n * V * (e + e) : n * V * e;
}

/** Logits elements a case processes (both paths for fwd+bwd). */
export function elements(kind: Kind, n: number, V: number): number {
  return kind === 'fwd+bwd' ? 2 * n * V : n * V;
}

/** The batch with both paths' logits cut into `shards` vocabulary shards of near-equal widths (copied columns). */
export function splitBatch(batch: PapoInputs, shards: number): SplitPapoInputs {
  const cut = (t: Tensor) => {
    const [n, V] = t.dims;
    const bounds = Array.from({ length: shards + 1 }, (_, k) => Math.round((k * V) / shards));
    return bounds.slice(0, -1).map((start, k) => {
      const w = bounds[k + 1] - start;
      const data = t.type === 'float32' ? new Float32Array(n * w) : new Uint16Array(n * w);
      for (let i = 0; i < n; i++) data.set(t.data.subarray(i * V + start, i * V + start + w), i * w);
      return { data, dims: [n, w], type: t.type };
    });
  };
  const { logits, maskedLogits, ...rest } = batch;
  return { ...rest, logits: cut(logits as Tensor), maskedLogits: cut(maskedLogits as Tensor) };
}
