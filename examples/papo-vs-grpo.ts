// PAPO against GRPO, from the same seed, on a task only the image can answer (examples/papo-vs-grpo/task.ts), with
// a tiny tfjs policy trained through papo-kernels/tfjs. It draws the reward and the perception KL of both runs per
// step into examples/output/papo-vs-grpo.svg (untracked); `--save` writes the committed examples/papo-vs-grpo.svg
// instead, which the README shows, so a run with other settings never overwrites it by accident.
//
//   npm install && node dist/examples/papo-vs-grpo.js [--save]
//
// Settings from the environment: PAPO_EXAMPLE_STEPS (default 600), PAPO_EXAMPLE_SEED (1), PAPO_EXAMPLE_SVG (the
// output file, overriding both), PAPO_EXAMPLE_BACKEND (tfjs backend: wasm, the default, or cpu).
// In an application the imports are 'papo-kernels' and 'papo-kernels/tfjs'.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { broadcastAdvantages, groupAdvantages, logProbsSync, maskImagePatches, type PresetName } from '../lib';
import { seededRandom, type Random } from '../lib/random';
import { papoLossOp } from '../lib/tfjs';
import { chartSvg, type Series } from './papo-vs-grpo/chart';
import { BOS, createPolicy, PATCH, patchify, type Policy } from './papo-vs-grpo/policy';
import { makeSample, RESPONSE_LEN, score, VOCAB, type Sample } from './papo-vs-grpo/task';

const PROMPTS = 16;        // images per step
const GROUP = 8;           // rollouts per image (GRPO's group)
const PPO_EPOCHS = 2;      // updates per batch of rollouts: the second one runs off-policy, where the clip acts
const LEARNING_RATE = 3e-3;
const MASK_RATIO = 0.6;    // the paper's default; PATCH = 4 px cells make a 7 x 7 grid of the 28 px image
const EVAL_IMAGES = 256;

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: expected a positive integer, got ${JSON.stringify(raw)}`);
  return v;
}

const steps = intEnv('PAPO_EXAMPLE_STEPS', 600);
const seed = intEnv('PAPO_EXAMPLE_SEED', 1);
const args = process.argv.slice(2);
if (args.some((a) => a !== '--save')) throw new RangeError(`papo-vs-grpo: the only option is --save, got ${args.join(' ')}`);
const examples = path.join(__dirname, '..', '..', 'examples');
const svgPath = process.env.PAPO_EXAMPLE_SVG ||
  (args.includes('--save') ? path.join(examples, 'papo-vs-grpo.svg') : path.join(examples, 'output', 'papo-vs-grpo.svg'));
const backend = process.env.PAPO_EXAMPLE_BACKEND || 'wasm';

interface Run {
  name: string;
  preset: PresetName;
  color: string;
}
// The two presets differ only in the perception coefficient (0 and 0.02): clip 0.2/0.3, KL to the reference 0.01.
const runs: Run[] = [
  { name: "GRPO (preset 'grpo')", preset: 'grpo', color: '#1f77b4' },
  { name: "PAPO (preset 'papo-g')", preset: 'papo-g', color: '#d62728' },
];

/** Where each response token sits: rows are image-major, then rollout, then position. */
function positions(rows: number): Int32Array {
  return Int32Array.from({ length: rows * RESPONSE_LEN }, (_, i) => i % RESPONSE_LEN);
}

/** Each token's previous token (BOS first), for teacher-forced logits of whole responses. */
function previousTokens(responses: Int32Array): Int32Array {
  return responses.map((_, i) => (i % RESPONSE_LEN === 0 ? BOS : responses[i - 1]));
}

/** Samples `perImage` responses per image, token by token (greedy when random is null). */
function generate(policy: Policy, patches: tf.Tensor3D, perImage: number, random: Random | null): Int32Array {
  const rows = patches.shape[0] * perImage, V = VOCAB.length;
  const out = new Int32Array(rows * RESPONSE_LEN);
  const features = tf.tidy(() => policy.encode(patches));
  for (let t = 0; t < RESPONSE_LEN; t++) {
    const prev = Int32Array.from({ length: rows }, (_, r) => (t === 0 ? BOS : out[r * RESPONSE_LEN + t - 1]));
    const logits = tf.tidy(() => policy.decode(features, prev, new Int32Array(rows).fill(t)));
    const z = logits.dataSync();
    logits.dispose();
    for (let r = 0; r < rows; r++) {
      const row = z.subarray(r * V, (r + 1) * V);
      let best = 0;
      for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
      let pick = best;
      if (random) {
        const weights = Array.from(row, (v) => Math.exp(v - row[best]));
        let u = random() * weights.reduce((a, b) => a + b, 0);
        for (pick = 0; pick < V - 1 && (u -= weights[pick]) >= 0; pick++);
      }
      out[r * RESPONSE_LEN + t] = pick;
    }
  }
  features.dispose();
  return out;
}

/** The sampled tokens' log-probs under a policy (the rollout policy's: oldLogProbs; the frozen one's: refLogProbs). */
function tokenLogProbs(policy: Policy, patches: tf.Tensor3D, responses: Int32Array): Float32Array {
  const prev = previousTokens(responses), pos = positions(responses.length / RESPONSE_LEN);
  return tf.tidy(() => logProbsSync(policy.decode(policy.encode(patches), prev, pos), responses).logProbs);
}

function mean(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s / v.length;
}

function train(run: Run, evalSet: Sample[]) {
  const policy = createPolicy(tf, seed), reference = createPolicy(tf, seed, false);
  const optimizer = tf.train.adam(LEARNING_RATE);
  const tasks = seededRandom(seed * 7919 + 1), sampling = seededRandom(seed * 7919 + 2);
  const series: Series = { name: run.name, color: run.color, reward: [], perceptionKl: [] };
  const seqLengths = new Int32Array(PROMPTS * GROUP).fill(RESPONSE_LEN);
  for (let step = 0; step < steps; step++) {
    const samples = Array.from({ length: PROMPTS }, () => makeSample(tasks));
    // one mask per image, shared by its rollouts, redrawn every step (the same in both runs)
    const masked = samples.map((s, b) => maskImagePatches(s.image, { patchSize: PATCH, ratio: MASK_RATIO, seed: (seed * 100_003 + step) * PROMPTS + b }).image);
    const x = patchify(tf, samples.map((s) => s.image)), xm = patchify(tf, masked);
    const responses = generate(policy, x, GROUP, sampling);
    const scores = samples.flatMap((s, b) => Array.from({ length: GROUP }, (_, g) =>
      score(responses.subarray((b * GROUP + g) * RESPONSE_LEN, (b * GROUP + g + 1) * RESPONSE_LEN), s.count)));
    const advantages = broadcastAdvantages(groupAdvantages(scores.map((s) => s.reward), { groupSize: GROUP }), seqLengths);
    const prev = previousTokens(responses), pos = positions(PROMPTS * GROUP);
    const loss = papoLossOp({
      tokens: responses, advantages, seqLengths,
      oldLogProbs: tokenLogProbs(policy, x, responses),
      refLogProbs: tokenLogProbs(reference, x, responses),
    }, { preset: run.preset });
    for (let epoch = 0; epoch < PPO_EPOCHS; epoch++) {
      // both paths through the same policy; with perceptionCoef 0 (GRPO) the masked path only reports the KL
      optimizer.minimize(() => loss(policy.decode(policy.encode(x), prev, pos), policy.decode(policy.encode(xm), prev, pos)), false, policy.variables);
      if (epoch === 0) series.perceptionKl.push(loss.lastResult!.metrics.perceptionKl);
    }
    series.reward.push(mean(scores.map((s) => s.reward)));
    tf.dispose([x, xm]);
    if ((step + 1) % 100 === 0 || step + 1 === steps) {
      const recent = (v: number[]) => mean(v.slice(-100)).toFixed(3);
      console.log(`${run.name} step ${step + 1}: reward ${recent(series.reward)}, perception KL ${recent(series.perceptionKl)} (mean of the last 100 steps)`);
    }
  }
  const evalPatches = patchify(tf, evalSet.map((s) => s.image));
  const greedy = generate(policy, evalPatches, 1, null);
  const accuracy = mean(evalSet.map((s, i) => score(greedy.subarray(i * RESPONSE_LEN, (i + 1) * RESPONSE_LEN), s.count).accuracy));
  optimizer.dispose();
  tf.dispose([evalPatches, ...policy.variables, ...reference.variables]);
  return { series, accuracy };
}

async function main() {
  tf.enableProdMode();  // no debug checks, no advice to install tfjs-node
  if (!(await tf.setBackend(backend))) throw new Error(`PAPO_EXAMPLE_BACKEND: tfjs backend '${backend}' did not start`);
  const started = Date.now();
  const evalRandom = seededRandom(seed * 7919 + 3);
  const evalSet = Array.from({ length: EVAL_IMAGES }, () => makeSample(evalRandom));
  console.log(`${steps} steps of ${PROMPTS} images x ${GROUP} rollouts, tfjs ${tf.version.tfjs} on ${tf.getBackend()}, seed ${seed}`);
  const results = runs.map((run) => train(run, evalSet));
  const caption = [
    `Task: count the 1-4 squares in a 28x28 image; the question never changes. Reward 0.9 accuracy + 0.1 format of "<a> digit </a>".`,
    `${PROMPTS} images x ${GROUP} rollouts per step, ${PPO_EPOCHS} Adam updates (lr ${LEARNING_RATE}) per batch; masked path: ${PATCH}-px cells, ratio ${MASK_RATIO}; seed ${seed}.`,
    `Greedy accuracy on ${EVAL_IMAGES} held-out images after ${steps} steps: ` + runs.map((r, i) => `${r.name.split(' ')[0]} ${(100 * results[i].accuracy).toFixed(1)}%`).join(', ') + '.',
  ];
  fs.mkdirSync(path.dirname(svgPath), { recursive: true });
  fs.writeFileSync(svgPath, chartSvg(results.map((r) => r.series), caption));
  for (const [i, r] of runs.entries()) console.log(`${r.name}: greedy accuracy on ${EVAL_IMAGES} held-out images ${(100 * results[i].accuracy).toFixed(1)}%`);
  console.log(`wrote ${svgPath} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
