// Type-level tests (checked by `tsc`, nothing runs): logits given as an array of vocabulary shards give arrays of
// Tensor gradients (DeviceTensor ones for DeviceTensor shards), present without `!` unless computeGrad may be false;
// the per-process API's types line up.
import {
  mergeVocabShardStats, papoLoss, papoLossSync, vocabShardStats, type DeviceTensor, type SplitPapoGradResult,
  type SplitPapoResult, type Tensor, type VocabShardStats,
} from '../../lib';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
const expectType = <T extends true>(ok: T): T => ok;

declare const f32: Float32Array;
const tokens = Int32Array.of(0, 4);

export async function splitGradients(computeGrad: boolean): Promise<Tensor[]> {
  const shards = [{ data: f32, dims: [2, 3], type: 'float32' }, { data: f32, dims: [2, 2], type: 'float32' }];
  const r = papoLossSync({ logits: shards, maskedLogits: shards, tokens, advantages: [1, -1] });
  expectType<Equal<typeof r, SplitPapoGradResult>>(true);
  const first: Tensor = r.gradLogits[0];
  const maybe = await papoLoss({ logits: shards, tokens, advantages: [1, -1] }, { computeGrad });
  expectType<Equal<typeof maybe, SplitPapoResult>>(true);
  return [first, ...(maybe.gradLogits ?? [])];
}

export async function deviceShards(shards: DeviceTensor[]): Promise<DeviceTensor[]> {
  const r = await papoLoss({ logits: shards, maskedLogits: shards, tokens, advantages: [1, -1] });
  expectType<Equal<typeof r, SplitPapoGradResult<DeviceTensor>>>(true);
  const s = papoLossSync({ logits: shards, tokens, advantages: [1, -1] }, { computeGrad: false });
  expectType<Equal<typeof s, SplitPapoResult<DeviceTensor>>>(true);
  const stats: VocabShardStats = vocabShardStats(shards[0], tokens, { vocabStart: 0, backend: 'cuda' });
  void stats;
  return [...r.gradLogits, ...(s.gradLogits ?? [])];
}

export function perProcess(): number {
  const shard = { data: f32, dims: [2, 3], type: 'float32' as const };
  const stats: VocabShardStats = mergeVocabShardStats([vocabShardStats(shard, tokens, { vocabStart: 0 })]);
  return papoLossSync({ logits: shard, tokens, advantages: [1, -1] }, { vocabShard: { start: 0, stats } }).loss;
}
