// A vocabulary-parallel PAPO step: each rank holds one shard of the output layer, so its logits are [N, V_k] for
// its own columns, and nobody holds [N, V]. Worker threads stand in for the ranks and the main thread for the
// collective (an all-gather, as NCCL's or MPI's would do it). Each rank:
//   1. computes its shard's per-token statistics for both paths (vocabShardStats: 4 float64 per token and path);
//   2. all-gathers them (O(N) numbers, never O(N·V));
//   3. merges the list in rank order (mergeVocabShardStats: the same bits on every rank);
//   4. calls papoLoss with options.vocabShard: the loss (the same on every rank) and its own shard's gradients.
// Run after `npm install`: node examples/vocab-parallel.js
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { papoLossSync, papoLoss, vocabShardStats, mergeVocabShardStats } = require('..');

const V = 10007;                  // vocabulary (Qwen2.5-VL has 151936)
const N = 12;                     // response tokens of the micro-batch
const widths = [2500, 2500, 5007];  // one shard per rank, consecutive columns in rank order
const starts = widths.map((_, k) => widths.slice(0, k).reduce((a, b) => a + b, 0));
const tokens = Int32Array.from({ length: N }, (_, i) => (i * 3331) % V);
const advantages = Float32Array.from({ length: N }, (_, i) => (i % 3) - 1);
const options = { preset: 'papo-d', backend: 'cpu' };

// A stand-in for the output layer: the logits of columns [start, start + width) of both paths.
function shardLogits(start, width, masked) {
  const data = new Float32Array(N * width);
  for (let i = 0; i < N; i++)
    for (let j = 0; j < width; j++) {
      const v = start + j;
      data[i * width + j] = Math.sin(0.013 * v * (i + 1) + (masked ? 0.4 : 0)) * 3 + (v === tokens[i] ? (masked ? 4 : 5) : 0);
    }
  return { data, dims: [N, width], type: 'float32' };
}

async function rank() {
  const { k } = workerData;
  const logits = shardLogits(starts[k], widths[k], false), maskedLogits = shardLogits(starts[k], widths[k], true);
  // 1. this shard's statistics, then 2. the all-gather: send ours, receive every rank's, in rank order
  const mine = { stats: vocabShardStats(logits, tokens, { vocabStart: starts[k] }),
    maskedStats: vocabShardStats(maskedLogits, tokens, { vocabStart: starts[k] }) };
  parentPort.postMessage(mine);
  const all = await new Promise((resolve) => parentPort.once('message', resolve));
  // 3. merged in rank order, 4. the loss and this shard's gradients
  const stats = mergeVocabShardStats(all.map((r) => r.stats));
  const maskedStats = mergeVocabShardStats(all.map((r) => r.maskedStats));
  const r = await papoLoss({ logits, maskedLogits, tokens, advantages },
    { ...options, vocabShard: { start: starts[k], stats, maskedStats } });
  parentPort.postMessage({ loss: r.loss, grad: r.gradLogits.data, maskedGrad: r.gradMaskedLogits.data });
}

async function main() {
  const ranks = widths.map((_, k) => new Worker(__filename, { workerData: { k } }));
  const gathered = await Promise.all(ranks.map((w) => new Promise((resolve) => w.once('message', resolve))));
  for (const w of ranks) w.postMessage(gathered);  // the all-gather: every rank gets every rank's statistics
  const results = await Promise.all(ranks.map((w) => new Promise((resolve) => w.once('message', resolve))));
  const bytes = 2 * 4 * 8;  // both paths, 4 float64 each
  console.log(`${widths.length} ranks, shards [${widths.join(', ')}] of V = ${V}; exchanged ${bytes} bytes per token and rank`);
  results.forEach((r, k) => console.log(`rank ${k}: loss ${r.loss.toFixed(9)}, its gradient [${N}, ${widths[k]}]`));

  // The same step unsplit, for comparison: one [N, V] tensor per path.
  const whole = papoLossSync({ logits: shardLogits(0, V, false), maskedLogits: shardLogits(0, V, true), tokens, advantages }, options);
  let maxDiff = 0;
  results.forEach((r, k) => {
    for (let i = 0; i < N; i++)
      for (let j = 0; j < widths[k]; j++)
        maxDiff = Math.max(maxDiff, Math.abs(r.grad[i * widths[k] + j] - whole.gradLogits.data[i * V + starts[k] + j]));
  });
  console.log(`unsplit: loss ${whole.loss.toFixed(9)}; largest gradient difference ${maxDiff.toExponential(2)}`);
  console.log(results.every((r) => r.loss === results[0].loss) ? 'every rank has the same loss, bit for bit' : 'ranks disagree');
}

if (isMainThread) main().catch((e) => { console.error(e); process.exit(1); });
else rank().catch((e) => { console.error(e); process.exit(1); });
