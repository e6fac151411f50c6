// The typed interface of the native addon and its loader. The addon is loaded on first use, so the
// 'reference' backend works even where the build failed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import bindings = require('bindings');

import type { CodeTables } from './codes';

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

/** One vocabulary shard's statistics (host or device logits); out is host memory either way. */
export interface NativeVocabStatsDesc extends NativePlacement {
  backend: number; N: number; V: number; temperature: number; logits: NativeTensor;
  dtype: number; tokens: Int32Array; vocabStart: number; out: Float64Array; name: string;
}

export interface NativeShardsDesc {
  backend: number;
  onDevice: false;
  shards: NativePapoDesc[];
  stats: Float64Array;
  maskedStats?: Float64Array;
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
  /** A vocabulary shard: its first column, the whole vocabulary's size, the merged statistics per path. */
  vocabStart?: number;
  vocabTotal?: number;
  vocabStats?: Float64Array;
  maskedVocabStats?: Float64Array;
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
  /** cudaDeviceGetAttribute and occupancy queries. */
  deviceQueries: number;
  mallocs: number;
  frees: number;
  /** Implicit device-wide waits (cudaFree, cudaFreeHost). */
  deviceDrains: number;
  poolAllocs: number;
  poolFrees: number;
  poolGrowths: number;
  poolReleases: number;
  liveHostBytes: number;
  liveDeviceBytes: number;
  /** Runtime and driver API calls on any host thread (a kernel launch is one), and per entry point. */
  apiCalls: number;
  apiCallsByName: Record<string, number>;
  /** Copies between host and device memory, their bytes, and those with pageable host memory. */
  copiesToHost: number;
  bytesToHost: number;
  copiesToDevice: number;
  bytesToDevice: number;
  pageableCopies: number;
  contexts: number[];
  /** Launches run, by kernel name (papo_rows, papo_rows_k3, ...). */
  kernels: Record<string, number>;
}

/** The test hooks of the emulated build (build/Emulated, PAPO_CUDA_EMULATE=1); release builds lack them. */
export interface NativeEmulator {
  /** Makes the nth next call of that kind fail, and the times - 1 (default 0) after it. */
  emuInjectFault(kind: 'cudaMalloc' | 'cudaHostAlloc' | 'launch' | 'memcpy', nth: number, times?: number): void;
  emuStats(): NativeEmulatorStats;
  emuReset(): void;
  /** Makes the next cudaAlloc throw (PAPO_INTERNAL) right before its allocation gets a JavaScript handle. */
  emuFailNextExternal(): void;
  /** The kernels run since the last emuReset, in the order they ended (steady-clock milliseconds). */
  emuKernelRuns(): { name: string; device: number; startMs: number; endMs: number }[];
  /** Every kernel of that launch name sleeps `ms` on its stream before it runs (0 ends it; emuReset ends all). */
  emuKernelDelay(name: string, ms: number): void;
}

export interface NativeBinding extends Partial<NativeEmulator> {
  info(): NativeInfo;
  papoLoss(desc: NativePapoDesc, async: false): NativeMetrics;
  papoLoss(desc: NativePapoDesc, async: true): Promise<NativeMetrics>;
  /** Host vocabulary shards in one call (the cpu backend): each shard's papoLoss descriptor, all pointing their
   * vocabStats at stats (and maskedStats), which the call fills with the merged statistics. */
  papoLossShards(desc: NativeShardsDesc, async: false): NativeMetrics;
  papoLossShards(desc: NativeShardsDesc, async: true): Promise<NativeMetrics>;
  logProbs(desc: NativeLogProbsDesc, async: false): void;
  logProbs(desc: NativeLogProbsDesc, async: true): Promise<void>;
  /** One vocabulary shard's statistics into desc.out (Float64Array [4 N], core/vocab_stats.h). */
  vocabShardStats(desc: NativeVocabStatsDesc, async: false): void;
  vocabShardStats(desc: NativeVocabStatsDesc, async: true): Promise<void>;
  /** Stream-ordered on `stream`: usable by work there from now on; cudaFree frees it in that stream's order. */
  cudaAlloc(bytes: number, device: number, zero: boolean, stream: bigint): { handle: unknown; ptr: bigint };
  cudaFree(handle: unknown): void;
  cudaCopy(ptr: bigint, device: number, data: Float32Array | Uint16Array, toDevice: boolean, stream: bigint): void;
  cudaCopyDevice(dst: bigint, src: bigint, bytes: number, device: number): void;
  cudaMemInfo(device: number): { free: number; total: number; liveAllocations: number; liveBytes: number };
  /** core/vocab_merge.cpp's merge_exp over the array, in place (the tests hold it to lib/vocab-stats.ts's mergeExp). */
  mergeExp(x: Float64Array): void;
  /** Exponentials per second of the CPU kernels on all their threads (the benchmarks' floor). */
  cpuExpFloor(): number;
  /** Seconds to copy `bytes` between resident buffers with streaming stores on every CPU thread (a call's memory floor). */
  cpuCopyFloor(bytes: number): number;
  /** The codes of every enum native code reads, from its C++ enums (lib/codes.ts must agree). */
  enums: CodeTables;
  /** Advises a fresh ArrayBuffer's whole huge pages as such (before their first touch); returns the byte offset
   * (< 64) where its memory is 64-byte aligned. */
  adviseHostBuffer(buffer: ArrayBuffer): number;
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
/** Set when PAPO_CUDA_EMULATE=1 found no emulated build and the release build stands in for the CPU only. */
let emulationMissing: string | null = null;

const REBUILD = "run 'npm rebuild papo-kernels' (in a checkout of papo-kernels itself: 'npm run build')";
const EMULATED_REBUILD = "it is a test tool of the papo-kernels repository, not part of the package: 'npm install' " +
  "in a checkout of papo-kernels builds it";

/** The release build standing in where PAPO_CUDA_EMULATE=1 finds no emulated one: its CPU backend serves 'cpu'
 * and 'auto', and it reports no CUDA device, so no call reaches a real GPU (or fails on a missing one) believing
 * it is emulated. */
function cpuOnlyStandIn(release: NativeBinding, why: string): NativeBinding {
  return { ...release, info: () => ({ ...release.info(), cudaDevices: [], cudaStatus: why }) };
}

/** Why the addon is unavailable, with what to do about it. bindings throws an error carrying `tries` when no
 * candidate file exists; any other error is a file that exists but did not load. */
function loadFailure(e: unknown, emulated: boolean, root: string): Error {
  const err = e as Error & { tries?: string[] };
  const only = "Only backend 'reference' works without it.";
  if (emulated && err.tries)
    return new Error(`papo-kernels: PAPO_CUDA_EMULATE=1 asks for the emulated build, but it is missing ` +
      `(${err.tries.join(', ')}), and so is the release build: ${EMULATED_REBUILD}. ${only}`);
  if (err.tries)
    return new Error(`papo-kernels: the native addon is not built (no papo_kernels.node in ${path.join(root, 'build', 'Release')} ` +
      `nor in the ${err.tries.length - 1} other places the bindings package looks). The package's install script builds it, ` +
      `so it did not run (npm install --ignore-scripts?) or failed: ${REBUILD}. ${only}`);
  return new Error(`papo-kernels: the native addon could not be loaded (${err.message}); it may have been built for ` +
    `another Node.js or machine: ${REBUILD}. ${only}`);
}

/** The addon, or null with the reason in nativeLoadError(). The bindings package finds it under the package
 * root (build/Release, where cmake-js and node-gyp put it, among the places it knows). PAPO_CUDA_EMULATE=1 looks
 * in build/Emulated only, the build on the emulated CUDA runtime (the tests' GPU stand-in): a release build must
 * never stand in for it unnoticed. PAPO_ADDON_PATH names the file instead. Both variables are read at the first
 * load. */
export function tryNative(): NativeBinding | null {
  if (binding || loadError) return binding;
  const file = process.env.PAPO_ADDON_PATH;
  const emulated = !file && process.env.PAPO_CUDA_EMULATE === '1';
  const root = packageRoot();
  // explicit module_root: bindings would otherwise guess the root from the stack, which bundlers break
  const load = (emulatedOnly: boolean) => (file ? require(file) : bindings({
    bindings: 'papo_kernels.node',
    module_root: root,
    ...(emulatedOnly ? { try: [['module_root', 'build', 'Emulated', 'bindings']] } : {}),
  })) as NativeBinding;
  try {
    binding = load(emulated);
  } catch (e) {
    const tries = (e as { tries?: string[] }).tries;
    if (!emulated || !tries) {
      loadError = loadFailure(e, emulated, root);
      return binding;
    }
    emulationMissing = `PAPO_CUDA_EMULATE=1 asks for the emulated CUDA device, but this install has none ` +
      `(${tries.join(', ')}): ${EMULATED_REBUILD}. Backends 'cpu' and 'auto' run on the CPU meanwhile.`;
    try {
      binding = cpuOnlyStandIn(load(false), `papo-kernels: ${emulationMissing}`);
    } catch (e2) {
      loadError = (e2 as { tries?: string[] }).tries ? loadFailure(e, true, root) : loadFailure(e2, false, root);
    }
  }
  return binding;
}

/** Why CUDA is refused although an addon loaded: PAPO_CUDA_EMULATE=1 without an emulated build (else null). */
export function emulatedBuildMissing(): string | null {
  tryNative();
  return emulationMissing;
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
