// papo-kernels: the PAPO training objective (GRPO/DAPO surrogate + implicit perception loss + double entropy
// loss) and its gradients from the logits of any model runner. See README.md and docs/objective.md.
export { papoLoss, papoLossSync, logProbs, logProbsSync, info } from './papo';
export { AUTO_CUDA_MIN_ELEMENTS } from './backend';
export { cuda } from './cuda';
export { vocabShardStats, mergeVocabShardStats, VOCAB_STATS_FIELDS } from './vocab-stats';
export { DeviceTensor, isDeviceTensor } from './device-tensor';
export type { DeviceOptions, WrapOptions } from './cuda';
export { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16 } from './dtype';
export { presets } from './presets';
export type { PresetValues } from './presets';
export type { PapoErrorCode } from './errors';
export * from './types';
export { maskImagePatches, maskPatchTokens } from './masking';
export type { Image, MaskOptions, MaskedImage, PatchTokens } from './masking';
export { groupAdvantages, broadcastAdvantages } from './advantages';
export type { GroupAdvantageOptions } from './advantages';
