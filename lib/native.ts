// The typed interface of the native addon and its loader. The addon is loaded on first use, so the
// 'reference' backend works even where the build failed.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const DTYPE_CODE = { float32: 0, float16: 1, bfloat16: 2 } as const;
export const BACKEND_CODE = { cpu: 0, cuda: 1, 'cuda-naive': 2 } as const;

/** Device memory as native code takes it (napi/args.cpp checks the bytes and, with the driver, the pointer). */
export interface NativeDeviceRecord {
  ptr: bigint;
  bytes: number;
}
export type NativeTensor = Float32Array | Uint16Array | NativeDeviceRecord;

/** Where a CUDA call's logits live: typed arrays (onDevice false) or device records on `device`. */
export interface NativePlacement {
  onDevice: boolean;
  device?: number;
  /** onDevice: the logits' cudaStream_t, which the call runs on (0n: the legacy default stream). Host data: a
   * stream of the call's own. */
  stream?: bigint;
  /** onDevice with DeviceTensor maskedLogits: their stream. When it differs from `stream`, the call waits for
   * its earlier work and its later work waits for the call. */
  maskedStream?: bigint;
}

/** What lib/papo.ts hands native code for papoLoss (validated already; native checks again). */
export interface NativePapoDesc extends NativePlacement {
  backend: number;
  N: number;
  V: number;
  temperature: number;
  logits: NativeTensor;
  dtype: number;
  maskedLogits?: NativeTensor;
  maskedDtype?: number;
  maskedLogProbs?: Float32Array;
  tokens: Int32Array;
  advantages: Float32Array;
  mask?: Float32Array;
  oldLogProbs?: Float32Array;
  refLogProbs?: Float32Array;
  seqLengths: Int32Array;
  params: {
    clipLow: number; clipHigh: number; clipDual: number; klCoef: number; klEstimator: number;
    perceptionCoef: number; perceptionEstimator: number; perceptionClipLo?: number; perceptionClipHi?: number;
    entropyCoef: number; maskedEntropyCoef: number; entropyMode: number; detachMasked: boolean;
    lossType: number; sapoTauPositive?: number; sapoTauNegative?: number;
    rolloutCorrection?: number; rolloutUpper?: number; rolloutLower?: number;
    perceptionTopP?: number; sftCoef?: number;
  };
  rolloutLogProbs?: Float32Array;
  perceptionWeights?: Float32Array;
  sftMask?: Float32Array;
  lossAgg: number;
  lossScale: number;
  normScale: number;
  gradLogits?: NativeTensor;
  gradType?: number;
  gradMaskedLogits?: NativeTensor;
  gradMaskedType?: number;
  outLogProbs: Float32Array;
  outEntropy: Float32Array;
  outMaskedLogProbs?: Float32Array;
  outMaskedEntropy?: Float32Array;
}

export interface NativeMetrics {
  loss: number; pgLoss: number; klLoss: number; perceptionKl: number; entropyLoss: number; maskedEntropyLoss: number;
  clipFrac: number; dualClipFrac: number; approxKl: number; meanEntropy: number; meanMaskedEntropy: number; tokens: number;
  rolloutCorrectionMean?: number; rolloutCorrectionMaskedFrac?: number; rolloutCorrectionTruncatedFrac?: number;
  perceptionKeptFrac?: number; sftLoss?: number;
}

export interface NativeLogProbsDesc extends NativePlacement {
  backend: number;
  N: number;
  V: number;
  temperature: number;
  logits: NativeTensor;
  dtype: number;
  tokens: Int32Array;
  outLogProbs: Float32Array;
  outEntropy: Float32Array;
}

export interface NativeInfo {
  version: string;
  cpuIsa: string;
  threads: number;
  cudaBuilt: boolean;
  cudaRuntimeVersion: number;
  cudaDriverVersion: number;
  cudaArchitectures: string;
  cudaStatus: string;
  cudaDevices: { index: number; name: string; computeCapability: string; totalMemory: number; multiprocessors: number }[];
}

/** What the emulated CUDA runtime counts (build/Emulated only). */
export interface NativeEmulatorStats {
  deviceSyncs: number;
  hostAllocs: number;
  liveHostBytes: number;
  liveDeviceBytes: number;
  contexts: number[];
}

/** The test hooks of the emulated build (build/Emulated, PAPO_CUDA_EMULATE=1); release builds lack them. */
export interface NativeEmulator {
  /** Makes the nth next call of that kind fail. */
  emuInjectFault(kind: 'cudaMalloc' | 'cudaHostAlloc' | 'launch' | 'memcpy', nth: number): void;
  emuStats(): NativeEmulatorStats;
  emuReset(): void;
  /** Makes the next cudaAlloc throw (PAPO_INTERNAL) right before its allocation gets a JavaScript handle. */
  emuFailNextExternal(): void;
}

export interface NativeBinding extends Partial<NativeEmulator> {
  info(): NativeInfo;
  papoLoss(desc: NativePapoDesc, async: false): NativeMetrics;
  papoLoss(desc: NativePapoDesc, async: true): Promise<NativeMetrics>;
  logProbs(desc: NativeLogProbsDesc, async: false): void;
  logProbs(desc: NativeLogProbsDesc, async: true): Promise<void>;
  cudaAlloc(bytes: number, device: number, zero: boolean): { handle: unknown; ptr: bigint };
  cudaFree(handle: unknown): void;
  cudaCopy(ptr: bigint, device: number, data: Float32Array | Uint16Array, toDevice: boolean, stream: bigint): void;
  cudaCopyDevice(dst: bigint, src: bigint, bytes: number, device: number): void;
  cudaMemInfo(device: number): { free: number; total: number; liveAllocations: number; liveBytes: number };
  /** Exponentials per second of the CPU kernels on all their threads (the benchmarks' floor). */
  cpuExpFloor(): number;
  cudaStreamCreate(device: number): bigint;
  cudaStreamDestroy(stream: bigint, device: number): void;
}

export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'papo-kernels') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('papo-kernels: cannot find the package root from ' + __dirname);
    dir = up;
  }
}

let binding: NativeBinding | null = null;
let loadError: Error | null = null;

/** The addon, or null with the reason in nativeLoadError(). PAPO_ADDON_PATH names the file; else
 * PAPO_CUDA_EMULATE=1 picks the build on the emulated CUDA runtime (build/Emulated, the tests' GPU stand-in),
 * and build/Release otherwise. Both variables are read at the first load. */
export function tryNative(): NativeBinding | null {
  if (binding || loadError) return binding;
  const emulated = !process.env.PAPO_ADDON_PATH && process.env.PAPO_CUDA_EMULATE === '1';
  const file = process.env.PAPO_ADDON_PATH ||
    path.join(packageRoot(), 'build', emulated ? 'Emulated' : 'Release', 'papo_kernels.node');
  if (emulated && !fs.existsSync(file)) {
    loadError = new Error(`papo-kernels: PAPO_CUDA_EMULATE=1 asks for the emulated build, but it is missing ` +
      `(${file}); 'npm install' in the papo-kernels repository builds it (a consumer install of the package does ` +
      `not). Only backend 'reference' works without it.`);
    return null;
  }
  try {
    binding = require(file) as NativeBinding;
  } catch (e) {
    loadError = new Error(`papo-kernels: the native addon could not be loaded from ${file} ` +
      `(${(e as Error).message}); run 'npm install' or 'npm run build'. Only backend 'reference' works without it.`);
  }
  return binding;
}

export function nativeLoadError(): Error | null {
  tryNative();
  return loadError;
}

export function native(): NativeBinding {
  const b = tryNative();
  if (!b) throw Object.assign(loadError!, { code: 'PAPO_UNSUPPORTED' });
  return b;
}
