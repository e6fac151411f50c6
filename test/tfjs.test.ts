// papo-kernels/tfjs against tfjs autodiff: a dense model trained through papoLossOp must get the weight gradients
// that tf.variableGrads gives for the objective written in plain tfjs ops (bench/tfjs-peer.ts), on every preset,
// with and without detachMasked, on the CPU and WASM backends.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logProbsSync } from '../lib';
import { logProbs, papoLossOp, type PapoBatch } from '../lib/tfjs';
import type { PapoOptions, PresetName } from '../lib/types';
import { peerObjective, type PeerBatch } from '../bench/tfjs-peer';
import { codeOf, expectClose, expectNumberClose, maxAbs, rng } from './helpers';

tf.enableProdMode();  // silences tfjs's advice to install tfjs-node

const D = 6, V = 40;
const seqLengths = [5, 7, 4];
const N = seqLengths.reduce((a, b) => a + b, 0);

/** A dense layer giving the logits of both paths from two inputs (the real and the "masked" features). */
function makeModel(seed: number) {
  const r = rng(seed);
  const values = (n: number, scale: number) => Float32Array.from({ length: n }, () => (r() - 0.5) * 2 * scale);
  const W = tf.variable(tf.tensor2d(values(D * V, 1), [D, V]));
  const b = tf.variable(tf.tensor1d(values(V, 0.5)));
  const X = tf.tensor2d(values(N * D, 1), [N, D]);
  const Xm = tf.add(X, tf.tensor2d(values(N * D, 0.7), [N, D]));
  const forward = (x: tf.Tensor) => tf.add(tf.matMul(x, W), b);
  return { W, b, X, Xm, forward, dispose: () => tf.dispose([W, b, X, Xm]) };
}

/** Tokens, advantages and old/ref log-probs around the model's own: ratios from 0.2 to 5, so that the clip and the
 * dual clip bind on some tokens; one padding token. */
function makeBatch(model: ReturnType<typeof makeModel>): PapoBatch & PeerBatch {
  const r = rng(7);
  const tokens = Int32Array.from({ length: N }, () => Math.floor(r() * V));
  const lp = tf.tidy(() => logProbsSync(model.forward(model.X), tokens).logProbs);
  return {
    tokens,
    advantages: Float32Array.from({ length: N }, (_, i) => (i % 2 ? -1 : 1) * (0.4 + r())),
    oldLogProbs: Float32Array.from(lp, (v, i) => v + 1.6 - 3.2 * (i / (N - 1)) + 0.01),
    refLogProbs: Float32Array.from(lp, (v) => v + (r() - 0.5) * 2),
    responseMask: Float32Array.from({ length: N }, (_, i) => (i === 6 ? 0 : 1)),
    seqLengths,
  };
}

function expectGradsMatch(options: PapoOptions) {
  const model = makeModel(3);
  const batch = makeBatch(model);
  const op = papoLossOp(batch, options);
  const peer = peerObjective(tf, batch, options);
  const vars = [model.W, model.b];
  const ours = tf.variableGrads(() => op(model.forward(model.X), model.forward(model.Xm)), vars);
  let peerTerms: number[] = [];
  const theirs = tf.variableGrads(() => {
    const t = peer(model.forward(model.X), model.forward(model.Xm));
    peerTerms = [t.pgLoss, t.klLoss, t.perceptionKl].map((s) => s.dataSync()[0]);
    return t.loss;
  }, vars);
  const r = op.lastResult!;
  expectNumberClose(ours.value.dataSync()[0], theirs.value.dataSync()[0], 1e-5, 1e-7, 'loss');
  expectNumberClose(r.metrics.pgLoss, peerTerms[0], 1e-5, 1e-7, 'pgLoss');
  expectNumberClose(r.metrics.klLoss, peerTerms[1], 1e-5, 1e-7, 'klLoss');
  expectNumberClose(r.metrics.perceptionKl, peerTerms[2], 1e-5, 1e-7, 'perceptionKl');
  expect(r.metrics.clipFrac, 'the clip binds somewhere').toBeGreaterThan(0);
  expect(r.metrics.dualClipFrac, 'the dual clip binds somewhere').toBeGreaterThan(0);
  for (const v of vars) {
    const a = ours.grads[v.name].dataSync(), b = theirs.grads[v.name].dataSync();
    expect(maxAbs(b), `${v.name} gradient is not trivially zero`).toBeGreaterThan(1e-3);
    expectClose(a, b, 1e-5, 1e-5 * maxAbs(b), v.name);
  }
  tf.dispose([ours.value, theirs.value, ...Object.values(ours.grads), ...Object.values(theirs.grads)]);
  model.dispose();
}

const presetsUnderTest: PresetName[] = ['papo-g', 'papo-d', 'grpo', 'papo-g-7b'];

describe('on the cpu backend', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const preset of presetsUnderTest) {
    for (const detachMasked of [false, true]) {
      it(`${preset}${detachMasked ? ', detachMasked' : ''}: weight gradients equal tfjs autodiff of the plain-tfjs objective`, () => {
        expectGradsMatch({ preset, detachMasked });
      });
    }
  }

  it('the gradient is dy · dL/dlogits, float32 and shaped like [B, T, V] input; detached, the masked one is zeros', () => {
    const model = makeModel(5);
    const z = tf.reshape(model.forward(model.X).slice([0, 0], [12, V]), [3, 4, V]);
    const zm = tf.reshape(model.forward(model.Xm).slice([0, 0], [12, V]), [3, 4, V]);
    const batch = { tokens: Int32Array.from({ length: 12 }, (_, i) => (i * 7) % V), advantages: [1, -0.5, 0.25] };
    const op = papoLossOp(batch, { preset: 'papo-d' });
    const [g, gm] = tf.grads((x: tf.Tensor, xm: tf.Tensor) => op(x, xm))([z, zm]);
    const [g3] = tf.grads((x: tf.Tensor, xm: tf.Tensor) => tf.mul(op(x, xm), 3))([z, zm]);
    expect(g.shape).toEqual([3, 4, V]);
    expect(gm.shape).toEqual([3, 4, V]);
    expect(g.dtype).toBe('float32');
    expectClose(g3.dataSync(), Float32Array.from(g.dataSync(), (v) => 3 * v), 1e-6, 1e-9, 'dy scaling');
    expect(maxAbs(gm.dataSync())).toBeGreaterThan(0);
    const [, gmDetached] = tf.grads((x: tf.Tensor, xm: tf.Tensor) => papoLossOp(batch, { preset: 'papo-d', detachMasked: true })(x, xm))([z, zm]);
    expect(maxAbs(gmDetached.dataSync())).toBe(0);
    // without masked logits the op has one input; precomputed masked log-probs are the detached masked path
    const maskedLogProbs = logProbs(zm, batch.tokens).logProbs;
    const [gOnly] = tf.grads((x: tf.Tensor) => papoLossOp({ ...batch, maskedLogProbs: maskedLogProbs.dataSync() as Float32Array }, { preset: 'papo-d' })(x))([z]);
    const [gDetached] = tf.grads((x: tf.Tensor, xm: tf.Tensor) => papoLossOp(batch, { preset: 'papo-d', detachMasked: true })(x, xm))([z, zm]);
    expect(gOnly.shape).toEqual([3, 4, V]);
    expectClose(gOnly.dataSync(), gDetached.dataSync(), 1e-6, 1e-9, 'maskedLogProbs vs detachMasked');
    expect(maxAbs(gOnly.dataSync())).toBeGreaterThan(0);
    tf.dispose([z, zm, g, gm, g3, gmDetached, gOnly, gDetached, maskedLogProbs]);
    model.dispose();
  });

  it('an optimizer step through the op moves the loss down', () => {
    const model = makeModel(11);
    const batch = makeBatch(model);
    const op = papoLossOp(batch, { preset: 'papo-g' });
    const optimizer = tf.train.adam(0.05);
    const losses: number[] = [];
    for (let step = 0; step < 10; step++) {
      const loss = optimizer.minimize(() => op(model.forward(model.X), model.forward(model.Xm)), true, [model.W, model.b])!;
      losses.push(loss.dataSync()[0]);
      loss.dispose();
    }
    expect(losses[9]).toBeLessThan(losses[0] - 0.05);
    optimizer.dispose();
    model.dispose();
  });

  it('logProbs returns the package\'s log-probs and entropies as tfjs tensors shaped like the rows', () => {
    const model = makeModel(13);
    const z = model.forward(model.X);
    const tokens = Int32Array.from({ length: N }, (_, i) => (i * 5) % V);
    const expected = logProbsSync({ data: z.dataSync() as Float32Array, dims: [N, V], type: 'float32' }, tokens, { temperature: 0.7 });
    const got = logProbs(z, tokens, { temperature: 0.7 });
    expect(got.logProbs.shape).toEqual([N]);
    expect(Array.from(got.logProbs.dataSync())).toEqual(Array.from(expected.logProbs));
    expect(Array.from(got.entropy.dataSync())).toEqual(Array.from(expected.entropy));
    const z3 = tf.reshape(z, [2, 8, V]);
    expect(logProbs(z3, tokens).entropy.shape).toEqual([2, 8]);
    tf.dispose([z, z3, got.logProbs, got.entropy]);
    model.dispose();
  });

  it('errors name the argument: a non-float32 tensor, a non-tensor, a lying duck-typed tensor, unusable options', () => {
    const batch = { tokens: [1, 2], advantages: [1, -1] };
    const z = tf.zeros([2, 4]);
    const ints = tf.zeros([2, 4], 'int32');
    const e = codeOf(() => papoLossOp(batch)(ints));
    expect(e.message).toMatch(/^logits\.dtype: a tfjs-style tensor must be float32, got "int32"/);
    expect(e.code).toBe('PAPO_INVALID_ARGUMENT');
    expect(codeOf(() => papoLossOp(batch)(z, ints)).message).toMatch(/^maskedLogits\.dtype: a tfjs-style tensor must be float32/);
    expect(codeOf(() => logProbs(ints, [1, 2])).message).toMatch(/^logits\.dtype: a tfjs-style tensor must be float32/);
    expect(codeOf(() => papoLossOp(batch)(z, [1, 2] as unknown as tf.Tensor)).message).toMatch(/^maskedLogits: expected a tfjs Tensor, got an array/);
    const liar = { shape: [2, 4], dtype: 'float32', dataSync: () => new Int32Array(8) };
    expect(codeOf(() => logProbs(liar as unknown as tf.Tensor, [1, 2])).message).toMatch(/^logits\.dataSync\(\): expected a Float32Array/);
    expect(codeOf(() => papoLossOp(batch, { inPlace: true })).message).toMatch(/^options\.inPlace:/);
    expect(codeOf(() => papoLossOp(batch, { computeGrad: false })).message).toMatch(/^options\.computeGrad:/);
    expect(codeOf(() => papoLossOp({ ...batch, logits: z } as PapoBatch)).message).toMatch(/^batch\.logits:/);
    tf.dispose([z, ints]);
  });
});

describe('on the wasm backend', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const detachMasked of [false, true]) {
    it(`papo-g-7b${detachMasked ? ', detachMasked' : ''}: weight gradients equal tfjs autodiff`, () => {
      expect(tf.getBackend()).toBe('wasm');
      expectGradsMatch({ preset: 'papo-g-7b', detachMasked });
    });
  }
});

describe('packaging', () => {
  const root = path.join(__dirname, '..');
  const node = (code: string) => execFileSync(process.execPath, ['-e', code], { cwd: root, encoding: 'utf8' });

  it("'papo-kernels' never loads tfjs; 'papo-kernels/tfjs' resolves through package.json exports", () => {
    expect(node("require('papo-kernels'); process.stdout.write(String(Object.keys(require.cache).some((k) => k.includes('@tensorflow'))))")).toBe('false');
    expect(node("process.stdout.write(typeof require('papo-kernels/tfjs').papoLossOp)")).toBe('function');
  });
});
