// The public entry points: papoLoss (worker thread), papoLossSync, logProbs and info.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rangeError, typeError, unsupported } from './errors';
import { resolveOptions, klEstimators, lossAggs, type ResolvedOptions } from './options';
import { BACKEND_CODE, DTYPE_CODE, native, nativeLoadError, packageRoot, tryNative, type NativeLogProbsDesc, type NativeMetrics, type NativePapoDesc } from './native';
import { fromFloat64 } from './dtype';
import { referencePapo } from './reference';
import { toTensor } from './tensor';
import type {
  BackendName, DType, LogProbsOptions, LogProbsResult, PapoInfo, PapoInputs, PapoOptions, PapoResult, Tensor,
} from './types';
import { prepareCall, type PreparedCall } from './validate';

type Resolved = 'cpu' | 'cuda' | 'reference';

function chooseBackend(requested: BackendName): Resolved {
  if (requested === 'reference') return 'reference';
  if (requested === 'cuda') {
    const b = tryNative();
    // This version builds a CUDA device probe only; the kernels are not part of it on any machine.
    const status = b ? b.info().cudaStatus : nativeLoadError()!.message;
    const reason = status || 'the CUDA kernels are not part of this version';
    throw unsupported(`backend 'cuda' is not available: ${reason}. Use backend 'cpu' or 'auto'.`);
  }
  return 'cpu';  // 'auto' and 'cpu'
}

function gradArray(call: PreparedCall, path: 'logits' | 'maskedLogits'): { data: Float32Array | Uint16Array; type: DType } {
  const t = call[path]!;
  if (call.opts.inPlace) return { data: t.data, type: t.type };
  const type: DType = call.opts.gradType === 'float32' ? 'float32' : t.type;
  const n = call.N * call.V;
  return { data: type === 'float32' ? new Float32Array(n) : new Uint16Array(n), type };
}

function nativeDesc(call: PreparedCall, backend: Resolved) {
  const o = call.opts;
  const detached = o.detachMasked || call.maskedLogProbs !== null;
  const grad = o.computeGrad ? gradArray(call, 'logits') : null;
  const mgrad = o.computeGrad && call.maskedLogits && !detached ? gradArray(call, 'maskedLogits') : null;
  const N = call.N;
  const desc: NativePapoDesc = {
    backend: BACKEND_CODE[backend as 'cpu' | 'cuda'],
    N, V: call.V, temperature: o.temperature,
    logits: call.logits.data, dtype: DTYPE_CODE[call.logits.type],
    tokens: call.tokens, advantages: call.advantages, seqLengths: call.seqLengths,
    params: {
      clipLow: o.clipLow, clipHigh: o.clipHigh, clipDual: o.clipDual, klCoef: o.klCoef,
      klEstimator: klEstimators.indexOf(o.klEstimator), perceptionCoef: o.perceptionCoef,
      perceptionEstimator: klEstimators.indexOf(o.perceptionEstimator), entropyCoef: o.entropyCoef,
      maskedEntropyCoef: o.maskedEntropyCoef, entropyMode: o.entropyMode === 'full' ? 1 : 0, detachMasked: detached,
    },
    lossAgg: lossAggs.indexOf(o.lossAgg), lossScale: call.lossScale, normScale: call.normScale,
    outLogProbs: new Float32Array(N), outEntropy: new Float32Array(N),
  };
  if (o.perceptionClip) [desc.params.perceptionClipLo, desc.params.perceptionClipHi] = o.perceptionClip;
  if (call.maskedLogits) {
    desc.maskedLogits = call.maskedLogits.data;
    desc.maskedDtype = DTYPE_CODE[call.maskedLogits.type];
    desc.outMaskedLogProbs = new Float32Array(N);
    desc.outMaskedEntropy = new Float32Array(N);
  }
  if (call.maskedLogProbs) desc.maskedLogProbs = call.maskedLogProbs;
  if (call.mask) desc.mask = call.mask;
  if (call.oldLogProbs) desc.oldLogProbs = call.oldLogProbs;
  if (call.refLogProbs) desc.refLogProbs = call.refLogProbs;
  if (grad) [desc.gradLogits, desc.gradType] = [grad.data, DTYPE_CODE[grad.type]];
  if (mgrad) [desc.gradMaskedLogits, desc.gradMaskedType] = [mgrad.data, DTYPE_CODE[mgrad.type]];
  return { desc, grad, mgrad };
}

function assemble(call: PreparedCall, backend: Resolved, d: ReturnType<typeof nativeDesc>, m: NativeMetrics): PapoResult {
  const dims = call.logits.dims;
  const { loss, meanMaskedEntropy, ...rest } = m;
  const result: PapoResult = {
    loss,
    logProbs: d.desc.outLogProbs,
    entropy: d.desc.outEntropy,
    metrics: call.maskedLogits ? { ...rest, meanMaskedEntropy } : rest,
    backend,
  };
  if (d.grad) result.gradLogits = { data: d.grad.data, dims: [...dims], type: d.grad.type } satisfies Tensor;
  if (d.mgrad) result.gradMaskedLogits = { data: d.mgrad.data, dims: [...dims], type: d.mgrad.type };
  if (d.desc.outMaskedLogProbs) {
    result.maskedLogProbs = d.desc.outMaskedLogProbs;
    result.maskedEntropy = d.desc.outMaskedEntropy;
  }
  return result;
}

function runReference(call: PreparedCall): PapoResult {
  const r = referencePapo(call);
  const { loss, meanMaskedEntropy, ...rest } = r.metrics;
  const dims = call.logits.dims;
  const gradTensor = (values: Float64Array | null, path: 'logits' | 'maskedLogits'): Tensor | undefined => {
    if (!values) return undefined;
    const g = gradArray(call, path);
    g.data.set(fromFloat64(values, g.type));  // set: in place, g.data is the caller's logits buffer
    return { data: g.data, dims: [...dims], type: g.type };
  };
  const result: PapoResult = {
    loss,
    logProbs: Float32Array.from(r.logProbs),
    entropy: Float32Array.from(r.entropy),
    metrics: {
      pgLoss: rest.pgLoss, klLoss: rest.klLoss, perceptionKl: rest.perceptionKl, entropyLoss: rest.entropyLoss,
      maskedEntropyLoss: rest.maskedEntropyLoss, clipFrac: rest.clipFrac, dualClipFrac: rest.dualClipFrac,
      approxKl: rest.approxKl, meanEntropy: rest.meanEntropy, tokens: rest.tokens,
      ...(call.maskedLogits ? { meanMaskedEntropy } : {}),
    },
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
  return { call, backend: chooseBackend(opts.backend) };
}

/** The PAPO loss, its gradients and per-token statistics, computed on the calling thread. */
export function papoLossSync(inputs: PapoInputs, options?: PapoOptions): PapoResult {
  const { call, backend } = prepare(inputs, options);
  if (backend === 'reference') return runReference(call);
  const d = nativeDesc(call, backend);
  return assemble(call, backend, d, native().papoLoss(d.desc, false));
}

/**
 * The PAPO loss on a worker thread: the event loop keeps turning while the rows are processed. The inputs must
 * not be modified until the promise settles. Validation errors reject the promise.
 */
export async function papoLoss(inputs: PapoInputs, options?: PapoOptions): Promise<PapoResult> {
  const { call, backend } = prepare(inputs, options);
  if (backend === 'reference') return runReference(call);
  const d = nativeDesc(call, backend);
  return assemble(call, backend, d, await native().papoLoss(d.desc, true));
}

function prepareLogProbs(logits: unknown, tokens: unknown, options: LogProbsOptions | undefined) {
  if (options !== undefined && (options === null || typeof options !== 'object')) throw typeError('options', 'an object', options);
  for (const k of Object.keys(options ?? {}))
    if (k !== 'temperature' && k !== 'backend') throw rangeError('options', `unknown option '${k}' (logProbs takes temperature and backend)`);
  const opts = resolveOptions({ temperature: options?.temperature, backend: options?.backend });
  const t = toTensor('logits', logits);
  const V = t.dims[t.dims.length - 1];
  const N = t.data.length / V;
  // tokens are checked by the same rules as papoLoss's
  const call = prepareCall({ logits: t, tokens: tokens as Int32Array, advantages: new Float32Array(N) },
    { ...opts, klCoef: 0, perceptionCoef: 0, maskedEntropyCoef: 0 });
  return { call, backend: chooseBackend(opts.backend) };
}

function referenceLogProbs(call: PreparedCall): LogProbsResult {
  const r = referencePapo({ ...call, opts: { ...call.opts, computeGrad: false } });
  return { logProbs: Float32Array.from(r.logProbs), entropy: Float32Array.from(r.entropy) };
}

function logProbsDesc(call: PreparedCall, backend: Resolved): NativeLogProbsDesc {
  return {
    backend: BACKEND_CODE[backend as 'cpu'], N: call.N, V: call.V, temperature: call.opts.temperature,
    logits: call.logits.data, dtype: DTYPE_CODE[call.logits.type], tokens: call.tokens,
    outLogProbs: new Float32Array(call.N), outEntropy: new Float32Array(call.N),
  };
}

/** Sampled-token log-probs and full entropies, without gradients (rollout and reference models). */
export function logProbsSync(logits: unknown, tokens: unknown, options?: LogProbsOptions): LogProbsResult {
  const { call, backend } = prepareLogProbs(logits, tokens, options);
  if (backend === 'reference') return referenceLogProbs(call);
  const desc = logProbsDesc(call, backend);
  native().logProbs(desc, false);
  return { logProbs: desc.outLogProbs, entropy: desc.outEntropy };
}

/** logProbsSync on a worker thread. */
export async function logProbs(logits: unknown, tokens: unknown, options?: LogProbsOptions): Promise<LogProbsResult> {
  const { call, backend } = prepareLogProbs(logits, tokens, options);
  if (backend === 'reference') return referenceLogProbs(call);
  const desc = logProbsDesc(call, backend);
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
    backends: ['reference', 'cpu'],
    cudaBuilt: i.cudaBuilt,
    cudaDevices: i.cudaDevices,
    threads: i.threads,
    cpuIsa: i.cpuIsa,
    cudaArchitectures: i.cudaArchitectures,
    cudaRuntimeVersion: i.cudaRuntimeVersion,
    cudaStatus: i.cudaStatus,
  };
}
