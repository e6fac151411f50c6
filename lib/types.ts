// Public types of papo-kernels. The names here are the API contract.
import type { DeviceTensor } from './device-tensor';

/** Element types of logits and gradients. 16-bit data travels as raw bits in a Uint16Array. */
export type DType = 'float32' | 'float16' | 'bfloat16';

/** The storage of each dtype: Float32Array for float32, Uint16Array (raw bits) for float16 and bfloat16. */
export type TensorData = Float32Array | Uint16Array;

/** tfjs-style tensors: `dataSync()` is typed as tfjs types it (by dtype: Float32Array, Int32Array, Uint8Array), so
 * real tfjs tensors are assignable; only float32 ones are accepted at run time (tfjs has no 16-bit floats). */
export interface TfjsLikeTensor {
  shape: readonly number[];
  dtype: string;
  dataSync(): Float32Array | Int32Array | Uint8Array;
}
/** onnxruntime's Tensor as a session's outputs are typed (any element type and location): the element type is
 * checked at run time, and the data must be on the CPU. */
export interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
  readonly type: string;
  readonly location: string;
}
/** A DType, or any string: an object literal written before the call widens `type: 'float32'` to string, and
 * papoLoss checks the value at run time (naming `logits.type`), so such a literal needs no `as const`. */
export type DTypeName = DType | (string & {});
/** onnxruntime-node's tensor shape. */
export interface OrtLikeTensor {
  data: TensorData;
  dims: readonly number[];
  type: DTypeName;
}
/** `{ data, shape, dtype }`, as many array libraries describe a tensor. */
export interface ShapedTensor {
  data: TensorData;
  shape: readonly number[];
  dtype: DTypeName;
}
// OrtTensor first and OrtLikeTensor last on purpose: when a tensor matches no member, TypeScript reports against
// the last of the members that share the most keys with it, so a literal with the wrong data (a Float64Array) is
// told what `data` must be, not that OrtTensor's `location` is missing (test/typing-errors.test.ts).
export type TensorLike = OrtTensor | TfjsLikeTensor | ShapedTensor | OrtLikeTensor;
/** Sampled token ids: int32, or int64 as onnxruntime gives them (each value must fit in int32). */
export type TokenIds = Int32Array | BigInt64Array | readonly number[];

/** A tensor as papo-kernels returns it (onnxruntime-node's shape). */
export interface Tensor {
  data: TensorData;
  dims: number[];
  type: DType;
}

export type FloatArrayLike = Float32Array | Float64Array | readonly number[];

export interface PapoInputs {
  /** Logits of the original-image path: [N, V] (packed) or [B, T, V], host data or a DeviceTensor. */
  logits: TensorLike | DeviceTensor;
  /** Logits of the masked-image path, same dims, dtype and placement. */
  maskedLogits?: TensorLike | DeviceTensor;
  /** Instead of maskedLogits: the masked path's sampled-token log-probs [N] (implies detachMasked). */
  maskedLogProbs?: FloatArrayLike;
  /** Sampled token ids [N]. */
  tokens: TokenIds;
  /** Advantages per token [N] or per sequence [B]. */
  advantages: FloatArrayLike;
  /** Response mask [N] (0/1 or non-negative weights); absent: every token counts. */
  responseMask?: Float32Array | Uint8Array | readonly number[];
  /** Log-probs of the sampling policy [N]; absent: on-policy (ratio 1). */
  oldLogProbs?: FloatArrayLike;
  /** Log-probs of the reference model [N]; required when klCoef > 0. */
  refLogProbs?: FloatArrayLike;
  /** Lengths of the packed sequences (sum N); only for [N, V] input. Absent: one sequence. */
  seqLengths?: Int32Array | readonly number[];
  /** The inference engine's log-probs of the sampled tokens [N]; needs options.rolloutCorrection. */
  rolloutLogProbs?: FloatArrayLike;
  /** A weight on the perception KL per sequence [B] (PAPO's per-sample weights); absent: 1. */
  perceptionWeights?: FloatArrayLike;
  /** Per sequence [B]: 1 for a rollout the SFT term learns from (a correct one), 0 otherwise; needs options.sftCoef. */
  sftMask?: Float32Array | Uint8Array | readonly number[];
}

/** PapoInputs with the logits split along the vocabulary: shards [N, V_k] or [B, T, V_k] of consecutive column
 * ranges, in order, all host data (L = TensorLike) or all DeviceTensors (possibly on several devices, each masked
 * shard on its logits shard's); the masked path's shards have the same widths. */
export type SplitPapoInputs<L extends TensorLike | DeviceTensor = TensorLike> = Omit<PapoInputs, 'logits' | 'maskedLogits'> & {
  logits: readonly L[];
  maskedLogits?: readonly L[];
};
/** SplitPapoInputs of DeviceTensor shards: papoLoss and papoLossSync give DeviceTensor gradients. */
export type DeviceSplitPapoInputs = SplitPapoInputs<DeviceTensor>;

/** PapoInputs with host logits: papoLoss and papoLossSync give Tensor gradients. */
export type HostPapoInputs = PapoInputs & { logits: TensorLike; maskedLogits?: TensorLike };
/** PapoInputs with DeviceTensor logits: papoLoss and papoLossSync give DeviceTensor gradients. */
export type DevicePapoInputs = PapoInputs & { logits: DeviceTensor; maskedLogits?: DeviceTensor };

export type PresetName = 'papo-g' | 'papo-g-7b' | 'papo-d' | 'grpo' | 'dapo';
export type KlEstimatorName = 'k1' | 'k2' | 'k3' | 'abs';
export type EntropyModeName = 'sampled' | 'full';
export type LossAggName = 'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm';
export type BackendName = 'auto' | 'cpu' | 'cuda' | 'cuda-naive' | 'reference';
/** The policy term: PPO/GRPO's clipped surrogate, GSPO's sequence ratio (or its token form), CISPO, SAPO. */
export type LossTypeName = 'ppo' | 'gspo' | 'gspo-token' | 'cispo' | 'sapo';

/** Correction of the rollout/training mismatch by w = exp(old - rollout): TIS ('truncate': min(w, upper)) or
 * IcePop ('mask': w inside [lower, upper], else 0). Defaults: upper 2, lower 1 / upper. */
export interface RolloutCorrection {
  mode: 'truncate' | 'mask';
  upper?: number;
  lower?: number;
}

/**
 * One path's per-token statistics over the columns [vocabStart, vocabStart + vocabSize), x = logits / temperature:
 * data = [max (N) | sumExp (N) | sumExpX (N) | target (N)], float64: max_j x_j (-Infinity for a shard of
 * -Infinity only), sum_j e^(x_j - max), sum_j e^(x_j - max) x_j, and x_o for a token o among the columns, else 0.
 * Merged statistics have vocabStart 0 and cover the whole vocabulary.
 */
export interface VocabShardStats {
  N: number;
  vocabStart: number;
  vocabSize: number;
  data: Float64Array;
}

export interface VocabShardStatsOptions {
  /** The first vocabulary column this shard holds. */
  vocabStart: number;
  temperature?: number;
  /** 'auto' (the default: 'cuda' for a DeviceTensor shard, for host data as papoLoss chooses), 'cpu', 'cuda' or
   * 'reference' (float64). */
  backend?: 'auto' | 'cpu' | 'cuda' | 'reference';
}

/** options.vocabShard: this call's logits are one shard of the vocabulary (one rank's), the statistics those of
 * every shard merged (mergeVocabShardStats); the call returns this shard's gradients and the whole loss. */
export interface VocabShardOption {
  /** The first vocabulary column of this shard. */
  start: number;
  /** The original path's merged statistics. */
  stats: VocabShardStats;
  /** The masked path's, with maskedLogits. */
  maskedStats?: VocabShardStats;
}

export interface PapoOptions {
  /** Released configuration to start from (default 'papo-g'); explicit options override it. */
  preset?: PresetName;
  /** Default 'ppo'. GSPO modes and perceptionTopP cost one more read of the logits (docs/objective.md). */
  lossType?: LossTypeName;
  /** SAPO's gate temperatures where A >= 0 (default 1.0) and A < 0 (default 1.05). */
  sapoTauPositive?: number;
  sapoTauNegative?: number;
  /** With input rolloutLogProbs: scale each token's policy term by the truncated or masked mismatch ratio. */
  rolloutCorrection?: RolloutCorrection | null;
  /** 'cispo' also takes clipLow 1 (no lower bound). */
  clipLow?: number;
  clipHigh?: number;
  clipDual?: number;
  klCoef?: number;
  klEstimator?: KlEstimatorName;
  perceptionCoef?: number;
  perceptionEstimator?: KlEstimatorName;
  perceptionClip?: readonly [number, number] | null;
  /** Keep, per sequence, the perception KL of the tokens at or above its (1 - p) quantile (0 < p < 1). */
  perceptionTopP?: number | null;
  /** Weight of the SFT term on the rollouts selected by input sftMask. */
  sftCoef?: number;
  entropyCoef?: number;
  maskedEntropyCoef?: number;
  entropyMode?: EntropyModeName;
  detachMasked?: boolean;
  lossAgg?: LossAggName;
  lossScale?: number;
  temperature?: number;
  computeGrad?: boolean;
  inPlace?: boolean;
  gradType?: 'input' | 'float32';
  backend?: BackendName;
  /** Gradient buffers of the caller's, written by the call and returned as result.gradLogits / gradMaskedLogits
   * (reuse them across calls: nothing is allocated). Each has the logits' dims, the gradient's dtype (gradType)
   * and the logits' placement (host data, or a DeviceTensor on their device); not with inPlace. */
  out?: PapoOutputs;
  /** The logits are one vocabulary shard (one rank's of several): see VocabShardOption. */
  vocabShard?: VocabShardOption;
}

/** A tensor the call writes into: host data ({ data, dims, type } or { data, shape, dtype }) or a DeviceTensor. */
export type OutTensor = OrtLikeTensor | ShapedTensor | OrtTensor | DeviceTensor;
/** With logits split into shards, each gradient is an array of one tensor per shard. */
export interface PapoOutputs {
  gradLogits?: OutTensor | readonly OutTensor[];
  gradMaskedLogits?: OutTensor | readonly OutTensor[];
}

export interface PapoMetrics {
  pgLoss: number;
  klLoss: number;
  perceptionKl: number;
  entropyLoss: number;
  maskedEntropyLoss: number;
  /** Fraction of response tokens the clip bound; for the GSPO modes, of sequences (each by its tokens' share). */
  clipFrac: number;
  dualClipFrac: number;
  approxKl: number;
  meanEntropy: number;
  /** Absent without masked logits (a precomputed maskedLogProbs carries no entropy). */
  meanMaskedEntropy?: number;
  tokens: number;
  /** With rolloutCorrection: the mean correction weight over response tokens... */
  rolloutCorrectionMean?: number;
  /** ...and the fraction of response tokens it dropped ('mask') or truncated at upper ('truncate'). */
  rolloutCorrectionMaskedFrac?: number;
  rolloutCorrectionTruncatedFrac?: number;
  /** With perceptionTopP: the fraction of response tokens whose perception KL was kept. */
  perceptionKeptFrac?: number;
  /** With sftMask: the SFT term's value, mean -logProb over the selected rollouts' response tokens. */
  sftLoss?: number;
}

/** G: the gradients' type, Tensor for host logits and DeviceTensor for DeviceTensor logits (papoLoss's overloads
 * pick it from the logits' type; isDeviceTensor narrows the union). */
export interface PapoResult<G extends Tensor | DeviceTensor = Tensor | DeviceTensor> {
  loss: number;
  /** Host logits give a host Tensor; DeviceTensor logits give a DeviceTensor (dispose() it when done). */
  gradLogits?: G;
  gradMaskedLogits?: G;
  logProbs: Float32Array;
  maskedLogProbs?: Float32Array;
  entropy: Float32Array;
  maskedEntropy?: Float32Array;
  metrics: PapoMetrics;
  /** The backend that ran ('cpu', 'cuda', 'cuda-naive' or 'reference'). */
  backend: string;
}

/** What papoLoss returns when the options leave computeGrad at its default (true) or set it to true: gradLogits is
 * always there (gradMaskedLogits only with maskedLogits and without detachMasked). */
export interface PapoGradResult<G extends Tensor | DeviceTensor = Tensor | DeviceTensor> extends PapoResult<G> {
  gradLogits: G;
}

/** papoLoss's result for SplitPapoInputs: gradients per shard, in the shards' order (G: Tensor for host shards,
 * DeviceTensor for DeviceTensor shards, each on its shard's device). */
export interface SplitPapoResult<G extends Tensor | DeviceTensor = Tensor> extends Omit<PapoResult<G>, 'gradLogits' | 'gradMaskedLogits'> {
  gradLogits?: G[];
  gradMaskedLogits?: G[];
}
export interface SplitPapoGradResult<G extends Tensor | DeviceTensor = Tensor> extends SplitPapoResult<G> {
  gradLogits: G[];
}

/** Options under which papoLoss computes gradients: computeGrad absent or true (a literal, not a boolean). */
export type GradOptions = PapoOptions & { computeGrad?: true };

export interface LogProbsOptions {
  temperature?: number;
  backend?: BackendName;
}

export interface LogProbsResult {
  logProbs: Float32Array;
  entropy: Float32Array;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
  multiprocessors: number;
}

export interface PapoInfo {
  version: string;
  backends: string[];
  cudaBuilt: boolean;
  cudaDevices: CudaDeviceInfo[];
  threads: number;
  cpuIsa: string;
  cudaArchitectures: string;
  cudaRuntimeVersion: number;
  cudaStatus: string;
}
