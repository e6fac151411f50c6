// papo-kernels/tfjs: papoLoss as a differentiable tfjs op (the fused gradient attached with tf.customGrad) and
// logProbs returning tfjs tensors. Only the 'papo-kernels/tfjs' subpath loads this file, so 'papo-kernels' itself
// never needs tfjs; tfjs-core is an optional peer dependency, resolved from the application's own install so that
// the op's tensors belong to the application's tfjs engine.
import type * as TF from '@tensorflow/tfjs-core';
import { rangeError, typeError, unsupported } from './errors';
import { logProbsSync, papoLossSync } from './papo';
import type { LogProbsOptions, PapoInputs, PapoOptions, PapoResult, TokenIds } from './types';

function loadTfjs(): typeof TF {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('@tensorflow/tfjs-core') as typeof TF;
  } catch (e) {
    throw unsupported('papo-kernels/tfjs needs its peer dependency @tensorflow/tfjs-core ' +
      `(npm install @tensorflow/tfjs-core, or @tensorflow/tfjs): ${(e as Error).message}`);
  }
}
const tf = loadTfjs();

/** What papoLoss takes besides the two logits tensors, which the op receives as tfjs tensors. */
export type PapoBatch = Omit<PapoInputs, 'logits' | 'maskedLogits'>;

/** A tfjs op computing the PAPO loss; tf.grad / tf.variableGrads / optimizer.minimize get the fused gradients. */
export interface PapoLossOp {
  (logits: TF.Tensor, maskedLogits?: TF.Tensor): TF.Scalar;
  /** The full result of the latest call (metrics, per-token log-probs and entropies, host gradients). */
  readonly lastResult: PapoResult | undefined;
}

function checkTensor(name: string, t: unknown): asserts t is TF.Tensor {
  // tfjs's own check (customGrad) would not say which argument is wrong
  if (t === null || typeof t !== 'object' || typeof (t as { dataSync?: unknown }).dataSync !== 'function' || !('shape' in t))
    throw typeError(name, 'a tfjs Tensor', t);
}

/** The float32 host gradient of one path as a tfjs tensor of the input's shape. */
function gradTensor(g: PapoResult['gradLogits'], like: TF.Tensor): TF.Tensor {
  const data = g && 'data' in g ? g.data : null;
  if (!(data instanceof Float32Array))
    throw new Error('papo-kernels internal error: papoLoss returned no float32 host gradient for a tfjs tensor');
  return tf.tensor(data, like.shape, 'float32');
}

/**
 * `papoLossOp(batch, options)(logits, maskedLogits?)` is the PAPO loss of `batch` (tokens, advantages, masks, old and
 * reference log-probs, ... as papoLoss takes them) for the given logits, as a tfjs scalar whose gradient is the
 * package's fused gradient: dy · dL/dlogits and dy · dL/dmaskedLogits, float32, shaped like the inputs (zeros for
 * the masked path with detachMasked). Any tfjs backend: the logits are read with dataSync().
 */
export function papoLossOp(batch: PapoBatch, options: PapoOptions = {}): PapoLossOp {
  if (batch === null || typeof batch !== 'object') throw typeError('batch', 'an object (papoLoss inputs without the logits)', batch);
  for (const k of ['logits', 'maskedLogits'] as const)
    if (k in batch) throw rangeError(`batch.${k}`, 'the op takes the logits as its arguments: papoLossOp(batch)(logits, maskedLogits)');
  if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
  // dataSync() may hand out the backend's own storage (the CPU backend does), which in place would overwrite
  if (options.inPlace) throw rangeError('options.inPlace', 'a tfjs tensor\'s storage is not papo-kernels\' to overwrite');
  if (options.computeGrad === false) throw rangeError('options.computeGrad', 'the op always has a gradient; call papoLossSync for the loss alone');

  let lastResult: PapoResult | undefined;
  const run = (inputs: PapoInputs): PapoResult => (lastResult = papoLossSync(inputs, options));
  const logitsOnly = tf.customGrad((...args: Array<TF.Tensor | TF.GradSaveFunc>) => {
    const z = args[0] as TF.Tensor;
    const r = run({ ...batch, logits: z });
    return { value: tf.scalar(r.loss), gradFunc: (dy: TF.Scalar) => [tf.mul(dy, gradTensor(r.gradLogits, z))] };
  });
  const bothPaths = tf.customGrad((...args: Array<TF.Tensor | TF.GradSaveFunc>) => {
    const [z, zm] = args as [TF.Tensor, TF.Tensor];
    const r = run({ ...batch, logits: z, maskedLogits: zm });
    return {
      value: tf.scalar(r.loss),
      gradFunc: (dy: TF.Scalar) => [
        tf.mul(dy, gradTensor(r.gradLogits, z)),
        // detached: the masked path is a constant of the loss
        r.gradMaskedLogits ? tf.mul(dy, gradTensor(r.gradMaskedLogits, zm)) : tf.zerosLike(zm),
      ],
    };
  });
  const op = (logits: TF.Tensor, maskedLogits?: TF.Tensor): TF.Scalar => {
    checkTensor('logits', logits);
    if (maskedLogits === undefined) return logitsOnly(logits);
    checkTensor('maskedLogits', maskedLogits);
    return bothPaths(logits, maskedLogits);
  };
  return Object.defineProperty(op, 'lastResult', { get: () => lastResult, enumerable: true }) as PapoLossOp;
}

export interface TfjsLogProbs {
  /** The sampled tokens' log-probs, shaped like the logits without their last dimension. */
  logProbs: TF.Tensor;
  /** The full entropies, same shape. */
  entropy: TF.Tensor;
}

/** logProbsSync for a tfjs tensor of logits ([N, V] or [B, T, V]), as float32 tfjs tensors; no gradient. */
export function logProbs(logits: TF.Tensor, tokens: TokenIds, options?: LogProbsOptions): TfjsLogProbs {
  checkTensor('logits', logits);
  const r = logProbsSync(logits, tokens, options);
  const shape = logits.shape.slice(0, -1);
  return { logProbs: tf.tensor(r.logProbs, shape, 'float32'), entropy: tf.tensor(r.entropy, shape, 'float32') };
}
