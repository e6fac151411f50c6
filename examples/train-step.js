// One PAPO step end to end, with a stand-in model runner: mask the image, run both paths, compute the loss.
// Run after `npm install`: node examples/train-step.js
'use strict';
const { maskImagePatches, groupAdvantages, broadcastAdvantages, papoLoss } = require('..');

const V = 1000;          // vocabulary (Qwen2.5-VL has 151936)
const groupSize = 4;     // rollouts per prompt, sharing one mask
const responseLen = 6;   // tokens per rollout

// A stand-in for the policy: logits that depend on the image's mean brightness and on the token position.
function runModel(image, tokens) {
  let mean = 0;
  for (const v of image.data) mean += v;
  mean /= image.data.length * 255;
  const logits = new Float32Array(tokens.length * V);
  for (let i = 0; i < tokens.length; i++)
    for (let j = 0; j < V; j++) logits[i * V + j] = Math.sin(0.01 * j * (i + 1)) + (j === tokens[i] ? 4 * mean : 0);
  return { data: logits, dims: [tokens.length, V], type: 'float32' };
}

async function main() {
  const image = { data: new Uint8Array(224 * 224 * 3).fill(200), width: 224, height: 224, channels: 3 };
  const { image: masked, mask } = maskImagePatches(image, { ratio: 0.6, seed: 1234 });  // one mask per prompt

  const N = groupSize * responseLen;
  const tokens = Int32Array.from({ length: N }, (_, i) => (i * 37) % V);
  const rewards = [1, 0, 1, 0.1];  // 0.9 * accuracy + 0.1 * format, one per rollout
  const advantages = broadcastAdvantages(groupAdvantages(rewards, { groupSize }), new Array(groupSize).fill(responseLen));
  const seqLengths = new Int32Array(groupSize).fill(responseLen);

  const logits = runModel(image, tokens);
  const maskedLogits = runModel(masked, tokens);
  const r = await papoLoss(
    { logits, maskedLogits, tokens, advantages, seqLengths, refLogProbs: new Float32Array(N).fill(-6.5) },
    { preset: 'papo-g' },
  );
  console.log(`masked ${mask.reduce((a, b) => a + b, 0)} of ${mask.length} cells`);
  console.log(`loss ${r.loss.toFixed(6)}, perception KL ${r.metrics.perceptionKl.toFixed(6)}, ` +
    `grad dims [${r.gradLogits.dims}] and [${r.gradMaskedLogits.dims}]`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
