// The public entry points: papoLoss (worker thread), papoLossSync, logProbs and info.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rangeError, typeError, unsupported } from './errors';
import { CODES } from './codes';
import { resolveOptions, type ResolvedOptions } from './options';
import {
  native, nativeLoadError, packageRoot, tryNative, type NativeLogProbsDesc, type NativeMetrics,
  type NativePapoDesc, type NativeShardsDesc,
} from './native';
import { fromFloat64 } from './dtype';
import { referenceLogProbs, referencePapo } from './reference';
import { chooseBackend, nativeTensor, placement, type Resolved } from './backend';
import { allocDevice, DeviceTensor } from './device-tensor';
import { hostGradient } from './host-gradient';
import { toTensor } from './tensor';
import type {
  DevicePapoInputs, DType, GradOptions, HostPapoInputs, LogProbsOptions, LogProbsResult, PapoGradResult, PapoInfo,
  PapoInputs, PapoOptions, PapoResult, Tensor, TensorLike, TokenIds,
} from './types';
import { prepareCall, prepareLogProbsCall, type PreparedCall, type PreparedLogProbs } from './validate';
import {
  isSplit, mergedStatsBuffers, withSharedGradients, prepareSplit, runShards, runShardsSync, shardCalls, splitResult, splitStats, splitStatsAsync,
  type SplitPlan,
} from './vocab-split';
import type { DeviceSplitPapoInputs, SplitPapoGradResult, SplitPapoInputs, SplitPapoResult } from './types';

type AnySplitInputs = SplitPapoInputs | DeviceSplitPapoInputs;
type AnySplitResult = SplitPapoResult<Tensor | DeviceTensor>;

/** owned: allocated by this call (a failed call frees it); else the caller's logits (in place) or options.out. */
type Grad = { data: Float32Array | Uint16Array | null; device: DeviceTensor | null; type: DType; owned: boolean };

function gradBuffer(call: PreparedCall, path: 'logits' | 'maskedLogits'): Grad {
  const t = call[path]!;
  if (call.opts.inPlace) return { data: t.data, device: t.device, type: t.type, owned: false };
  const given = call.out[path === 'logits' ? 'gradLogits' : 'gradMaskedLogits'];
  if (given) return { data: given.data, device: given.device, type: given.type, owned: false };
  const type: DType = call.opts.gradType === 'float32' ? 'float32' : t.type;
  // Written by the call on the logits' stream (the masked gradient too), so download() is ordered after it.
  const stream = call.logits.device?.stream ?? 0n;
  if (t.device) return { data: null, device: allocDevice(t.dims, type, t.device.device, false, stream), type, owned: true };
  const n = call.N * call.V;
  return { data: hostGradient(n, type), device: null, type, owned: true };
}

function nativeDesc(call: PreparedCall, backend: Resolved) {
  const o = call.opts;
  const detached = o.detachMasked || call.maskedLogProbs !== null;
  const grad = o.computeGrad ? gradBuffer(call, 'logits') : null;
  let mgrad: Grad | null = null;
  try {
    mgrad = o.computeGrad && call.maskedLogits && !detached ? gradBuffer(call, 'maskedLogits') : null;
  } catch (e) {
    if (grad?.owned) grad.device?.dispose();
    throw e;
  }
  const N = call.N;
  const desc: NativePapoDesc = {
    backend: CODES.backend[backend as 'cpu' | 'cuda' | 'cuda-naive'],
    ...placement(call),
    N, V: call.V, temperature: o.temperature,
    logits: nativeTensor(call.logits), dtype: CODES.dtype[call.logits.type],
    tokens: call.tokens, advantages: call.advantages, seqLengths: call.seqLengths,
    params: {
      clipLow: o.clipLow, clipHigh: o.clipHigh, clipDual: o.clipDual, klCoef: o.klCoef,
      klEstimator: CODES.klEstimator[o.klEstimator], perceptionCoef: o.perceptionCoef,
      perceptionEstimator: CODES.klEstimator[o.perceptionEstimator], entropyCoef: o.entropyCoef,
      maskedEntropyCoef: o.maskedEntropyCoef, entropyMode: CODES.entropyMode[o.entropyMode], detachMasked: detached,
      lossType: CODES.lossType[o.lossType],
    },
    lossAgg: CODES.lossAgg[o.lossAgg], lossScale: call.lossScale, normScale: call.normScale,
    outLogProbs: new Float32Array(N), outEntropy: new Float32Array(N),
  };
  if (o.perceptionClip) [desc.params.perceptionClipLo, desc.params.perceptionClipHi] = o.perceptionClip;
  if (o.lossType === 'sapo') [desc.params.sapoTauPositive, desc.params.sapoTauNegative] = [o.sapoTauPositive, o.sapoTauNegative];
  if (o.rolloutCorrection) {
    desc.params.rolloutCorrection = CODES.rolloutCorrection[o.rolloutCorrection.mode];
    [desc.params.rolloutUpper, desc.params.rolloutLower] = [o.rolloutCorrection.upper, o.rolloutCorrection.lower];
  }
  if (o.perceptionTopP !== null) desc.params.perceptionTopP = o.perceptionTopP;
  if (o.sftCoef !== null) desc.params.sftCoef = o.sftCoef;
  if (call.rolloutLogProbs) desc.rolloutLogProbs = call.rolloutLogProbs;
  if (call.perceptionWeights) desc.perceptionWeights = call.perceptionWeights;
  if (call.sftMask) desc.sftMask = call.sftMask;
  if (call.maskedLogits) {
    desc.maskedLogits = nativeTensor(call.maskedLogits);
    desc.maskedDtype = CODES.dtype[call.maskedLogits.type];
    desc.outMaskedLogProbs = new Float32Array(N);
    desc.outMaskedEntropy = new Float32Array(N);
  }
  if (call.maskedLogProbs) desc.maskedLogProbs = call.maskedLogProbs;
  if (call.vocabShard) {
    const v = call.vocabShard;
    [desc.vocabStart, desc.vocabTotal, desc.vocabStats] = [v.start, v.total, v.stats];
    if (v.maskedStats) desc.maskedVocabStats = v.maskedStats;
  }
  if (call.mask) desc.mask = call.mask;
  if (call.oldLogProbs) desc.oldLogProbs = call.oldLogProbs;
  if (call.refLogProbs) desc.refLogProbs = call.refLogProbs;
  if (grad) [desc.gradLogits, desc.gradType] = [nativeTensor(grad), CODES.dtype[grad.type]];
  if (mgrad) [desc.gradMaskedLogits, desc.gradMaskedType] = [nativeTensor(mgrad), CODES.dtype[mgrad.type]];
  return { desc, grad, mgrad };
}

/** Frees the device gradients a failed call allocated (not the caller's: its logits in place, or options.out). */
function releaseGrads(d: ReturnType<typeof nativeDesc>) {
  for (const g of [d.grad, d.mgrad]) if (g?.owned) g.device?.dispose();
}

function assemble(call: PreparedCall, backend: Resolved, d: ReturnType<typeof nativeDesc>, m: NativeMetrics): PapoResult {
  const dims = call.logits.dims;
  const result: PapoResult = {
    loss: m.loss,
    logProbs: d.desc.outLogProbs,
    entropy: d.desc.outEntropy,
    metrics: resultMetrics(call, m),
    backend,
  };
  const out = (g: Grad): Tensor | DeviceTensor => g.device ?? { data: g.data!, dims: [...dims], type: g.type };
  if (d.grad) result.gradLogits = out(d.grad);
  if (d.mgrad) result.gradMaskedLogits = out(d.mgrad);
  if (d.desc.outMaskedLogProbs) {
    result.maskedLogProbs = d.desc.outMaskedLogProbs;
    result.maskedEntropy = d.desc.outMaskedEntropy;
  }
  return result;
}

/** result.metrics from what a backend computed, native or the reference, which report the same keys: the
 * masked path's mean entropy only when there is a masked path, and the optional metrics only with their option. */
function resultMetrics(call: PreparedCall, m: NativeMetrics | Record<string, number>): PapoResult['metrics'] {
  const { loss: _loss, meanMaskedEntropy, ...rest } = m as NativeMetrics;
  return (call.maskedLogits ? { ...rest, meanMaskedEntropy } : rest) as PapoResult['metrics'];
}

function runReference(call: PreparedCall): PapoResult {
  const r = referencePapo(call);
  const dims = call.logits.dims;
  const gradTensor = (values: Float64Array | null, path: 'logits' | 'maskedLogits'): Tensor | undefined => {
    if (!values) return undefined;
    const g = gradBuffer(call, path);
    const data = g.data!;  // the reference backend runs on host data only
    data.set(fromFloat64(values, g.type));  // set: in place, data is the caller's logits buffer
    return { data, dims: [...dims], type: g.type };
  };
  const result: PapoResult = {
    loss: r.loss,
    logProbs: Float32Array.from(r.logProbs),
    entropy: Float32Array.from(r.entropy),
    metrics: resultMetrics(call, r.metrics),
    backend: 'reference',
  };
  const g = gradTensor(r.gradLogits, 'logits');
  const gm = call.maskedLogits ? gradTensor(r.gradMaskedLogits, 'maskedLogits') : undefined;
  if (g) result.gradLogits = g;
  if (gm) result.gradMaskedLogits = gm;
  if (r.maskedLogProbs) {
    result.maskedLogProbs = Float32Array.from(r.maskedLogProbs);
    result.maskedEntropy = Float32Array.from(r.maskedEntropy!);
  }
  return result;
}

function prepare(inputs: PapoInputs, options: PapoOptions | undefined): { call: PreparedCall; backend: Resolved } {
  const opts: ResolvedOptions = resolveOptions(options);
  const call = prepareCall(inputs, opts);
  const elements = call.N * call.V * (call.maskedLogits ? 2 : 1);
  return { call, backend: chooseBackend(opts.backend, call.logits, elements, call.vocabShard !== null) };
}

/** The PAPO loss, its gradients and per-token statistics, computed on the calling thread. Host logits give
 * Tensor gradients, DeviceTensor logits DeviceTensor gradients, logits split into vocabulary shards (an array) an
 * array of gradients; gradLogits is typed as present unless the options may set computeGrad to false. (The split
 * overloads come first: TypeScript reports a call that matches none against the last one.) */
export function papoLossSync(inputs: DeviceSplitPapoInputs, options?: GradOptions): SplitPapoGradResult<DeviceTensor>;
export function papoLossSync(inputs: DeviceSplitPapoInputs, options?: PapoOptions): SplitPapoResult<DeviceTensor>;
export function papoLossSync(inputs: SplitPapoInputs, options?: GradOptions): SplitPapoGradResult;
export function papoLossSync(inputs: SplitPapoInputs, options?: PapoOptions): SplitPapoResult;
export function papoLossSync(inputs: HostPapoInputs, options?: GradOptions): PapoGradResult<Tensor>;
export function papoLossSync(inputs: HostPapoInputs, options?: PapoOptions): PapoResult<Tensor>;
export function papoLossSync(inputs: DevicePapoInputs, options?: GradOptions): PapoGradResult<DeviceTensor>;
export function papoLossSync(inputs: DevicePapoInputs, options?: PapoOptions): PapoResult<DeviceTensor>;
export function papoLossSync(inputs: PapoInputs, options?: GradOptions): PapoGradResult;
export function papoLossSync(inputs: PapoInputs, options?: PapoOptions): PapoResult;
export function papoLossSync(inputs: PapoInputs | AnySplitInputs, options?: PapoOptions): PapoResult | AnySplitResult {
  if (isSplit(inputs)) {
    // On the cpu one native call over every shard; on CUDA one shard after another, on this thread (papoLoss runs
    // the shards of several devices at once).
    const plan = prepareSplit(inputs as Record<string, unknown>, options);
    if (plan.backend === 'cpu') return runCpuShards(plan, inputs as Record<string, unknown>, options, false) as AnySplitResult;
    const calls = shardCalls(plan, inputs as Record<string, unknown>, options, ...splitStats(plan));
    return splitResult(runShardsSync(calls, (c) => papoLossSync(c.inputs as unknown as PapoInputs, c.options)));
  }
  const { call, backend } = prepare(inputs as PapoInputs, options);
  if (backend === 'reference') return runReference(call);
  const d = nativeDesc(call, backend);
  try {
    return assemble(call, backend, d, native().papoLoss(d.desc, false));
  } catch (e) {
    releaseGrads(d);
    throw e;
  }
}

/**
 * Host shards on the cpu backend in one native call: each shard's call is prepared (checked) as the per-shard
 * form would be, given statistics that the call itself merges row by row (so that a row's shards are read once,
 * as an unsplit row is); the per-token outputs are shards[0]'s, shared by all.
 */
function runCpuShards(plan: SplitPlan, inputs: Record<string, unknown>, options: PapoOptions | undefined,
  async: boolean): AnySplitResult | Promise<AnySplitResult> {
  const [stats, maskedStats] = mergedStatsBuffers(plan);
  const prepared = shardCalls(plan, inputs, withSharedGradients(plan, options), stats, maskedStats).map((c) => prepare(c.inputs as unknown as PapoInputs, c.options).call);
  const descs = prepared.map((call) => nativeDesc(call, 'cpu'));
  const head = descs[0].desc;
  for (const { desc } of descs.slice(1))
    [desc.outLogProbs, desc.outEntropy, desc.outMaskedLogProbs, desc.outMaskedEntropy] =
      [head.outLogProbs, head.outEntropy, head.outMaskedLogProbs, head.outMaskedEntropy];
  const desc: NativeShardsDesc = { backend: CODES.backend.cpu, onDevice: false, shards: descs.map((d) => d.desc), stats: stats.data };
  if (maskedStats) desc.maskedStats = maskedStats.data;
  const results = (m: NativeMetrics) => splitResult(prepared.map((call, k) => assemble(call, 'cpu', descs[k], m)));
  return async ? native().papoLossShards(desc, true).then(results) : results(native().papoLossShards(desc, false));
}

/**
 * The PAPO loss on a worker thread: the event loop keeps turning while the rows are processed. The inputs must
 * not be modified (nor DeviceTensors disposed) until the promise settles. Validation errors reject the promise.
 */
export function papoLoss(inputs: DeviceSplitPapoInputs, options?: GradOptions): Promise<SplitPapoGradResult<DeviceTensor>>;
export function papoLoss(inputs: DeviceSplitPapoInputs, options?: PapoOptions): Promise<SplitPapoResult<DeviceTensor>>;
export function papoLoss(inputs: SplitPapoInputs, options?: GradOptions): Promise<SplitPapoGradResult>;
export function papoLoss(inputs: SplitPapoInputs, options?: PapoOptions): Promise<SplitPapoResult>;
export function papoLoss(inputs: HostPapoInputs, options?: GradOptions): Promise<PapoGradResult<Tensor>>;
export function papoLoss(inputs: HostPapoInputs, options?: PapoOptions): Promise<PapoResult<Tensor>>;
export function papoLoss(inputs: DevicePapoInputs, options?: GradOptions): Promise<PapoGradResult<DeviceTensor>>;
export function papoLoss(inputs: DevicePapoInputs, options?: PapoOptions): Promise<PapoResult<DeviceTensor>>;
export function papoLoss(inputs: PapoInputs, options?: GradOptions): Promise<PapoGradResult>;
export function papoLoss(inputs: PapoInputs, options?: PapoOptions): Promise<PapoResult>;
export async function papoLoss(inputs: PapoInputs | AnySplitInputs, options?: PapoOptions): Promise<PapoResult | AnySplitResult> {
  if (isSplit(inputs)) {
    // Every pass over a shard on a worker thread: on CUDA all shards at once, statistics then gradients, with only
    // the statistics' exchange between the two; on the cpu one native call over every shard.
    const plan = prepareSplit(inputs as Record<string, unknown>, options);
    if (plan.backend === 'cpu') return runCpuShards(plan, inputs as Record<string, unknown>, options, true);
    const calls = shardCalls(plan, inputs as Record<string, unknown>, options, ...await splitStatsAsync(plan));
    return splitResult(await runShards(plan, calls, (c) => papoLoss(c.inputs as unknown as PapoInputs, c.options)));
  }
  const { call, backend } = prepare(inputs as PapoInputs, options);
  if (backend === 'reference') return runReference(call);
  const d = nativeDesc(call, backend);
  try {
    return assemble(call, backend, d, await native().papoLoss(d.desc, true));
  } catch (e) {
    releaseGrads(d);
    throw e;
  }
}

function prepareLogProbs(logits: unknown, tokens: unknown, options: LogProbsOptions | undefined) {
  if (options !== undefined && (options === null || typeof options !== 'object')) throw typeError('options', 'an object', options);
  for (const k of Object.keys(options ?? {}))
    if (k !== 'temperature' && k !== 'backend') throw rangeError('options', `unknown option '${k}' (logProbs takes temperature and backend)`);
  const opts = resolveOptions({ temperature: options?.temperature, backend: options?.backend });
  const call = prepareLogProbsCall(logits, tokens);
  return { call, temperature: opts.temperature, backend: chooseBackend(opts.backend, call.logits, call.N * call.V) };
}

function referenceLogProbsResult(call: PreparedLogProbs, temperature: number): LogProbsResult {
  const r = referenceLogProbs(call.logits, call.tokens, call.N, call.V, temperature);
  return { logProbs: Float32Array.from(r.logProbs), entropy: Float32Array.from(r.entropy) };
}

function logProbsDesc(call: PreparedLogProbs, temperature: number, backend: Resolved): NativeLogProbsDesc {
  return {
    backend: CODES.backend[backend as 'cpu' | 'cuda' | 'cuda-naive'], ...placement(call), N: call.N, V: call.V,
    temperature, logits: nativeTensor(call.logits), dtype: CODES.dtype[call.logits.type], tokens: call.tokens,
    outLogProbs: new Float32Array(call.N), outEntropy: new Float32Array(call.N),
  };
}

/** Sampled-token log-probs and full entropies, without gradients (rollout and reference models). */
export function logProbsSync(logits: TensorLike | DeviceTensor, tokens: TokenIds, options?: LogProbsOptions): LogProbsResult {
  const { call, temperature, backend } = prepareLogProbs(logits, tokens, options);
  if (backend === 'reference') return referenceLogProbsResult(call, temperature);
  const desc = logProbsDesc(call, temperature, backend);
  native().logProbs(desc, false);
  return { logProbs: desc.outLogProbs, entropy: desc.outEntropy };
}

/** logProbsSync on a worker thread. */
export async function logProbs(logits: TensorLike | DeviceTensor, tokens: TokenIds, options?: LogProbsOptions): Promise<LogProbsResult> {
  const { call, temperature, backend } = prepareLogProbs(logits, tokens, options);
  if (backend === 'reference') return referenceLogProbsResult(call, temperature);
  const desc = logProbsDesc(call, temperature, backend);
  await native().logProbs(desc, true);
  return { logProbs: desc.outLogProbs, entropy: desc.outEntropy };
}

/** What this build and machine offer. */
export function info(): PapoInfo {
  const b = tryNative();
  if (!b) {
    const { version } = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
    return { version, backends: ['reference'], cudaBuilt: false, cudaDevices: [],
      threads: 1, cpuIsa: 'none', cudaArchitectures: '', cudaRuntimeVersion: 0, cudaStatus: nativeLoadError()!.message };
  }
  const i = b.info();
  return {
    version: i.version,
    backends: i.cudaDevices.length ? ['reference', 'cpu', 'cuda', 'cuda-naive'] : ['reference', 'cpu'],
    cudaBuilt: i.cudaBuilt,
    cudaDevices: i.cudaDevices,
    threads: i.threads,
    cpuIsa: i.cpuIsa,
    cudaArchitectures: i.cudaArchitectures,
    cudaRuntimeVersion: i.cudaRuntimeVersion,
    cudaStatus: i.cudaStatus,
  };
}
