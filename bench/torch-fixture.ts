// Small inputs with the float64 reference's results, for `python bench/torch_peer.py --check`: the PyTorch peer
// is only a fair baseline if it computes the same objective (the bench's options: preset papo-g).
import { papoLossSync } from '../lib';
import type { Tensor } from '../lib/types';
import { makeBatch } from './cases';

const N = 6, V = 50;
const made = makeBatch(N, V, 'float32');
const batch = { ...made, logits: made.logits as Tensor, maskedLogits: made.maskedLogits as Tensor,
  advantages: Float32Array.of(1, -0.5, 0.25, -2, 0.7, -0.1) };
// old/ref near lp, so that the clip, the dual clip (row 3) and both KLs are active but not saturated
batch.oldLogProbs = Float32Array.of(-4, -3.7, -3.4, -4.5, -2.8, -2.5);
batch.refLogProbs = Float32Array.from({ length: N }, (_, i) => -3.5 - 0.2 * i);
const r = papoLossSync(batch, { backend: 'reference', preset: 'papo-g' });
const list = (t: Tensor | undefined) => Array.from(t!.data as Float32Array);
process.stdout.write(JSON.stringify({
  N, V, logits: list(batch.logits), maskedLogits: list(batch.maskedLogits),
  tokens: Array.from(batch.tokens as Int32Array), advantages: Array.from(batch.advantages),
  oldLogProbs: Array.from(batch.oldLogProbs), refLogProbs: Array.from(batch.refLogProbs),
  loss: r.loss, logProbs: Array.from(r.logProbs), gradLogits: list(r.gradLogits), gradMaskedLogits: list(r.gradMaskedLogits),
}) + '\n');
