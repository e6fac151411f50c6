// The tfjs peer as a benchmark backend: tfjs (a dev dependency, absent from a consumer's install) on the fastest
// backend that installs offline, WASM (SIMD; tfjs-node downloads a binary at install time), else its plain-JS CPU
// backend, said in a note. The logits are uploaded once per case (as DeviceTensor data is for the GPU rows); a call
// is the peer's forward, or forward + tf.grads, with the results read back to JS as papoLoss returns them.
import type * as TF from '@tensorflow/tfjs-core';
import type { PapoInputs, Tensor } from '../lib/types';
import type { Kind } from './cases';
import { peerLogProbs, peerObjective, type PeerBatch, type Tfjs } from './tfjs-peer';

export interface TfjsRunner {
  /** The row's backend label: 'tfjs-wasm' or 'tfjs-cpu'. */
  backend: string;
  /** Where it ran, for the table's machine column: tfjs version, backend, SIMD and threads. */
  description: string;
  /** The timed call for a case, and the release of its uploaded tensors. */
  prepare(kind: Kind, batch: PapoInputs): { run: () => void; release: () => void };
}

/** The runner, or why there is none (printed by the caller, who then skips the rows). */
export async function loadTfjsRunner(): Promise<{ runner: TfjsRunner | null; notes: string[] }> {
  let tf: Tfjs;
  try {
    // the union package: tfjs-core alone registers no gradients and no backend
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    tf = require('@tensorflow/tfjs') as Tfjs;
  } catch {
    return { runner: null, notes: ['tfjs peer skipped: @tensorflow/tfjs (a dev dependency of papo-kernels) is not installed'] };
  }
  tf.enableProdMode();  // no debug checks, no advice to install tfjs-node
  const notes: string[] = [];
  let detail = '1 thread';
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const wasm = require('@tensorflow/tfjs-backend-wasm') as { getThreadsCount(): number };
    if (!(await tf.setBackend('wasm'))) throw new Error('setBackend returned false');
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    detail = `${simd ? 'SIMD' : 'no SIMD'}, ${wasm.getThreadsCount()} thread${wasm.getThreadsCount() === 1 ? '' : 's'}`;
  } catch (e) {
    notes.push(`tfjs peer: the wasm backend did not load (${(e as Error).message}); using tfjs's plain-JS cpu backend`);
    await tf.setBackend('cpu');
  }
  const name = tf.getBackend();
  return {
    notes,
    runner: {
      backend: `tfjs-${name}`,
      description: `tfjs ${tf.version_core} ${name}, ${detail}`,
      prepare: (kind, batch) => prepareCase(tf, kind, batch),
    },
  };
}

function prepareCase(tf: Tfjs, kind: Kind, batch: PapoInputs) {
  const upload = (t: PapoInputs['logits'] | undefined) => {
    const { data, dims, type } = t as Tensor;
    if (type !== 'float32') throw new Error(`tfjs peer: tfjs has no ${type}`);
    return tf.tensor(data as Float32Array, dims, 'float32');
  };
  const z = upload(batch.logits);
  const read = (ts: TF.Tensor[]) => {
    for (const t of ts) t.dataSync();
    tf.dispose(ts);
  };
  if (kind === 'fwd') {
    const tokens = tf.tensor1d(batch.tokens as Int32Array, 'int32');
    return {
      run: () => read(tf.tidy(() => Object.values(peerLogProbs(tf, z, tokens)))),
      release: () => tf.dispose([z, tokens]),
    };
  }
  const zm = upload(batch.maskedLogits);
  const objective = peerObjective(tf, batch as PapoInputs & PeerBatch);
  const grads = tf.grads((x: TF.Tensor, xm: TF.Tensor) => objective(x, xm).loss);
  return { run: () => read(grads([z, zm])), release: () => tf.dispose([z, zm]) };
}
