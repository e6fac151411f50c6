// A tiny vision-conditioned policy in tfjs: a patch encoder (the image cut into 4x4 patches, as a ViT's
// processor cuts it into 14x14 ones; a shared patch embedding, then a dense layer over all patches) and a head that
// gives the next token's logits from the image features, the previous token and the position. Only ops whose
// gradients every tfjs backend has (matMul, oneHot, relu, tanh): tfjs's WASM backend has no filter gradient for
// conv2d and no gradient for gather.
import type * as TF from '@tensorflow/tfjs-core';
import type { Image } from '../../lib';
import { seededRandom } from '../../lib/random';
import { RESPONSE_LEN, SIZE, VOCAB } from './task';

export const PATCH = 4;
const GRID = SIZE / PATCH, PATCHES = GRID * GRID, PIXELS = PATCH * PATCH;
const EMBED = 16, FEATURES = 64, HIDDEN = 64;
const V = VOCAB.length;
/** The "previous token" of the first response token (one more row of the embedding table). */
export const BOS = V;

export interface Policy {
  variables: TF.Variable[];
  /** [B, PATCHES, PIXELS] patches → [B, FEATURES]. */
  encode(patches: TF.Tensor): TF.Tensor;
  /** The logits of `prev.length` tokens, [B · K, V] for K = prev.length / B tokens per image, given each token's
   * previous token and position. */
  decode(features: TF.Tensor, prev: Int32Array, position: Int32Array): TF.Tensor2D;
}

/** 8-bit one-channel images → [B, PATCHES, PIXELS] patches in [0, 1]. */
export function patchify(tf: typeof TF, images: Image[]): TF.Tensor3D {
  const out = new Float32Array(images.length * PATCHES * PIXELS);
  images.forEach((img, b) => {
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const p = Math.floor(y / PATCH) * GRID + Math.floor(x / PATCH);
        out[(b * PATCHES + p) * PIXELS + (y % PATCH) * PATCH + (x % PATCH)] = img.data[y * SIZE + x] / 255;
      }
    }
  });
  return tf.tensor3d(out, [images.length, PATCHES, PIXELS]);
}

/** The same seed gives the same weights: the GRPO and PAPO runs start from one policy, and the reference model
 * is a frozen copy of it. */
export function createPolicy(tf: typeof TF, seed: number, trainable = true): Policy {
  const random = seededRandom(seed);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const weight = (shape: number[], scale: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.variable(tf.tensor(Float32Array.from({ length: n }, () => gaussian() * scale), shape), trainable);
  };
  const patchW = weight([PIXELS, EMBED], Math.sqrt(2 / PIXELS)), patchB = weight([EMBED], 0);
  const patchPos = weight([PATCHES, EMBED], 0.1);
  const denseW = weight([PATCHES * EMBED, FEATURES], Math.sqrt(2 / (PATCHES * EMBED))), denseB = weight([FEATURES], 0);
  const featW = weight([FEATURES, HIDDEN], 1 / Math.sqrt(FEATURES));
  const tokenEmb = weight([V + 1, HIDDEN], 1), posEmb = weight([RESPONSE_LEN, HIDDEN], 1);
  // a small output layer: the first rollouts are close to uniform over the vocabulary
  const outW = weight([HIDDEN, V], 0.01), outB = weight([V], 0);

  return {
    variables: [patchW, patchB, patchPos, denseW, denseB, featW, tokenEmb, posEmb, outW, outB],
    encode(patches) {
      const B = patches.shape[0];
      const flat = tf.reshape(patches, [B * PATCHES, PIXELS]);
      const embedded = tf.add(tf.reshape(tf.add(tf.matMul(flat, patchW), patchB), [B, PATCHES, EMBED]), patchPos);
      return tf.relu(tf.add(tf.matMul(tf.reshape(tf.relu(embedded), [B, PATCHES * EMBED]), denseW), denseB));
    },
    decode(features, prev, position) {
      const B = features.shape[0], K = prev.length / B;
      const oneHot = (ids: Int32Array, depth: number) => tf.oneHot(tf.tensor1d(ids, 'int32'), depth, 1, 0, 'float32');
      const tokenPart = tf.add(tf.matMul(oneHot(prev, V + 1), tokenEmb), tf.matMul(oneHot(position, RESPONSE_LEN), posEmb));
      const imagePart = tf.reshape(tf.matMul(features, featW), [B, 1, HIDDEN]);
      const hidden = tf.tanh(tf.add(tf.reshape(tokenPart, [B, K, HIDDEN]), imagePart));
      return tf.add(tf.matMul(tf.reshape(hidden, [B * K, HIDDEN]), outW), outB);
    },
  };
}
