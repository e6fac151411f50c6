// Logits split over the vocabulary on the CUDA backend, against the unsplit CUDA call: host shards (staged) and
// DeviceTensor shards spread over two devices, the per-process API with its statistics computed on the device,
// and the one-call form's concurrency: each device's shards run without waiting for the other device's kernels,
// beyond the one exchange of statistics. On the emulated device with PAPO_EMU_DEVICES=2 (the trace and its delays
// are the emulator's); on a GPU machine the same cases run on its GPUs (one device: every shard on it).
import { cudaTarget, emulated } from './cuda-target';
import { describe, expect, it } from 'vitest';
import { cuda, DeviceTensor, info, mergeVocabShardStats, papoLoss, papoLossSync, vocabShardStats } from '../lib';
import { native } from '../lib/native';
import type {
  DType, DeviceSplitPapoInputs, PapoInputs, PapoOptions, SplitPapoInputs, SplitPapoResult, Tensor,
} from '../lib/types';
import { expectClose, makeInputs, maxAbs, values } from './helpers';
import {
  base, concat, expectSplitEqual, inputsFor, placeTargets, split, startsOf, V, widthsOf, withInfShard,
} from './vocab-split-helpers';

// Read when the addon loads, which is below (imports do not load it). The CUDA backend reads PAPO_CUDA_* once per
// process: staging slots of 1 MiB for the whole file make host shards of a few rows take several chunks.
process.env.PAPO_EMU_DEVICES = '2';
process.env.PAPO_CUDA_STAGING_MB = '1';
const devices = cuda.available() ? info().cudaDevices.length : 0;

/** The shards uploaded, shard k to device k mod the devices (its masked shard with it). */
function onDevices(s: SplitPapoInputs): DeviceSplitPapoInputs {
  const up = (t: Tensor, k: number) => cuda.upload(t, { device: k % devices });
  return { ...s, logits: s.logits.map((t, k) => up(t as Tensor, k)), ...(s.maskedLogits ? { maskedLogits: s.maskedLogits.map((t, k) => up(t as Tensor, k)) } : {}) };
}

function dispose(s: DeviceSplitPapoInputs) {
  for (const t of [...s.logits, ...(s.maskedLogits ?? [])]) t.dispose();
}

/** The result with its gradients downloaded and their device memory freed. */
function downloaded(r: SplitPapoResult<DeviceTensor>): SplitPapoResult {
  const take = (g: DeviceTensor) => {
    const t = g.download();
    g.dispose();
    return t;
  };
  return { ...r, gradLogits: r.gradLogits?.map(take), gradMaskedLogits: r.gradMaskedLogits?.map(take) };
}

/** The split call on the device (papoLoss, DeviceTensor shards on every device) and on host shards (papoLossSync,
 * staged), both against the unsplit CUDA call. */
async function checkCudaSplit(inputs: PapoInputs, widths: number[], options: PapoOptions, tol = 2e-6) {
  const opts: PapoOptions = { ...options, backend: 'cuda' };
  const whole = papoLossSync(inputs, opts);
  const s = split(inputs, widths);
  expectSplitEqual(papoLossSync(s, opts), whole, widths, tol);
  const d = onDevices(s);
  try {
    const r = await papoLoss(d, { ...options, backend: 'auto' });
    expect(r.backend).toBe('cuda');
    expect(r.gradLogits.map((g) => g.device)).toEqual(d.logits.map((t) => t.device));
    expectSplitEqual(downloaded(r), whole, widths, tol);
  } finally {
    dispose(d);
  }
}

describe.runIf(devices > 0)(`logits split over the vocabulary on the ${cudaTarget} CUDA device(s)`, () => {
  for (const K of [1, 2, 3, 7]) {
    const widths = widthsOf(V, K);
    it(`V = ${V} in ${K} shards [${widths.join(', ')}], targets in the first, middle and last shard`, async () => {
      await checkCudaSplit(inputsFor({}, widths), widths, base);
    });
  }

  it('-Infinity columns, and a whole shard of -Infinity', async () => {
    const widths = [1000, 99, 3000];
    const inputs = withInfShard(inputsFor({ negInf: 0.2 }, widths));
    await checkCudaSplit(inputs, widths, base);
    const r = papoLossSync(split(inputs, widths), { ...base, backend: 'cuda' });
    expect(Array.from((r.gradLogits[1].data as Float32Array)).every((g) => Object.is(g, 0))).toBe(true);
  });

  for (const type of ['bfloat16', 'float16'] as DType[])
    it(`${type} shards and gradients, and float32 gradients of them`, async () => {
      const widths = widthsOf(V, 3);
      await checkCudaSplit(inputsFor({ type }, widths), widths, base, 1e-5);
      await checkCudaSplit(inputsFor({ type, seed: 4 }, widths), widths, { ...base, gradType: 'float32' }, 1e-5);
    });

  it("GSPO, perception top-p, entropyMode 'full' and a temperature", async () => {
    const widths = widthsOf(V, 3);
    const inputs = inputsFor({}, widths, { seqLengths: [3, 5] });
    await checkCudaSplit(inputs, widths, { ...base, lossType: 'gspo', clipLow: 3e-4, clipHigh: 4e-4 });
    await checkCudaSplit(inputs, widths, { ...base, perceptionTopP: 0.5, entropyMode: 'full', temperature: 0.7 });
  });

  it('the other variants, aggregations, detachMasked and precomputed maskedLogProbs', async () => {
    const widths = widthsOf(V, 2);
    const inputs = inputsFor({}, widths, { seqLengths: [3, 5], rollout: true, perceptionWeights: true, sftMask: true });
    const opts = { ...base, sftCoef: 0.1, rolloutCorrection: { mode: 'mask' as const } };
    await checkCudaSplit(inputs, widths, { ...opts, lossType: 'cispo' });
    await checkCudaSplit(inputs, widths, { ...opts, lossType: 'sapo', lossAgg: 'seq-mean-token-mean', rolloutCorrection: { mode: 'truncate' } });
    await checkCudaSplit(inputs, widths, { ...opts, lossType: 'gspo-token', detachMasked: true, perceptionClip: [0, 0.2] });
    const { maskedLogits: _m, ...noMasked } = inputs;
    const a = papoLossSync(inputs, { ...opts, backend: 'cuda' }).maskedLogProbs!;
    await checkCudaSplit({ ...noMasked, maskedLogProbs: a } as PapoInputs, widths, { ...opts, maskedEntropyCoef: 0 });
  });

  it('[B, T, V_k] DeviceTensor shards, out and inPlace', async () => {
    const widths = widthsOf(V, 2);
    const inputs = inputsFor({ dims: [2, 4, V] }, widths);
    await checkCudaSplit(inputs, widths, base);
    const whole = values(papoLossSync(inputs, { ...base, backend: 'cuda' }).gradLogits as Tensor);
    const d = onDevices(split(inputs, widths));
    const out = { gradLogits: d.logits.map((t) => cuda.upload({ data: new Float32Array(8 * t.dims[2]), dims: [...t.dims], type: 'float32' }, { device: t.device })) };
    try {
      const r = await papoLoss(d, { ...base, out });
      expect(r.gradLogits[1]).toBe(out.gradLogits[1]);
      for (const g of r.gradMaskedLogits!) g.dispose();
      expectClose(concat(r.gradLogits.map((g) => g.download()), 8), whole, 0, maxAbs(whole) * 1e-5, 'out');
      const inPlace = await papoLoss(d, { ...base, inPlace: true });
      expect(inPlace.gradLogits[0]).toBe(d.logits[0]);
      expectClose(concat(inPlace.gradLogits.map((g) => g.download()), 8), whole, 0, maxAbs(whole) * 1e-5, 'inPlace');
    } finally {
      dispose(d);  // in place: the gradients too
      for (const t of out.gradLogits) t.dispose();
    }
  });

  it('the per-process form on the device, merged by hand, equals the one-call form bit for bit, sync and async', async () => {
    const widths = widthsOf(V, 3);
    const inputs = inputsFor({}, widths);
    const d = onDevices(split(inputs, widths));
    const starts = startsOf(widths);
    try {
      const one = await papoLoss(d, base);
      const sync = downloaded(papoLossSync(d, base));
      expect([sync.loss, sync.metrics, sync.logProbs]).toEqual([one.loss, one.metrics, one.logProbs]);
      const statsOf = (list: readonly DeviceTensor[]) =>
        mergeVocabShardStats(list.map((t, k) => vocabShardStats(t, inputs.tokens, { vocabStart: starts[k] })));
      const [stats, maskedStats] = [statsOf(d.logits), statsOf(d.maskedLogits!)];
      for (let k = 0; k < widths.length; k++) {
        const r = papoLossSync({ ...inputs, logits: d.logits[k], maskedLogits: d.maskedLogits![k] },
          { ...base, vocabShard: { start: starts[k], stats, maskedStats } });
        expect([r.loss, r.metrics, r.logProbs, r.entropy, r.maskedLogProbs, r.maskedEntropy])
          .toEqual([one.loss, one.metrics, one.logProbs, one.entropy, one.maskedLogProbs, one.maskedEntropy]);
        for (const [g, h, x] of [[r.gradLogits, one.gradLogits[k], sync.gradLogits![k]],
          [r.gradMaskedLogits!, one.gradMaskedLogits![k], sync.gradMaskedLogits![k]]] as const) {
          const bits = g.download().data;
          expect(bits).toEqual(h.download().data);
          expect(bits).toEqual(x.data);
          g.dispose();
          h.dispose();
        }
      }
    } finally {
      dispose(d);
    }
  });

  it("vocabShardStats on the device: the cpu's statistics within fp32 rounding, host data staged in chunks the same bits", async () => {
    const widths = [1000, 3099];
    const inputs = inputsFor({ negInf: 0.1 }, widths);
    const shard = split(inputs, widths).logits[1] as Tensor;
    const opts = { vocabStart: 1000, temperature: 0.8 };
    const cpu = vocabShardStats(shard, inputs.tokens, { ...opts, backend: 'cpu' });
    const dev = cuda.upload(shard, { device: devices - 1 });
    try {
      const gpu = vocabShardStats(dev, inputs.tokens, opts);
      expect([gpu.N, gpu.vocabStart, gpu.vocabSize]).toEqual([8, 1000, 3099]);
      expectClose(gpu.data, cpu.data, 1e-5, 1e-9, 'max | sumExp | sumExpX | target');
      // the row of shard 1 holding its token: target exactly x_o; the others 0
      for (let i = 0; i < 8; i++) {
        const o = (inputs.tokens as Int32Array)[i] - 1000;
        expect(gpu.data[24 + i]).toBe(o >= 0 ? Math.fround((shard.data as Float32Array)[i * 3099 + o] * Math.fround(1 / 0.8)) : 0);
      }
      expect(vocabShardStats(shard, inputs.tokens, { ...opts, backend: 'cuda' }).data).toEqual(gpu.data);
    } finally {
      dev.dispose();
    }
    // rows of 160 KB through 1 MB staging slots: 6 rows a chunk, 3 chunks on 2 slots
    const wide = makeInputs({ N: 16, V: 40000, masked: false, seed: 9 });
    const z = wide.logits as Tensor;
    const staged = vocabShardStats(z, wide.tokens, { vocabStart: 0, backend: 'cuda' });
    const d1 = cuda.upload(z);
    try {
      expect(staged.data).toEqual(vocabShardStats(d1, wide.tokens, { vocabStart: 0 }).data);
    } finally {
      d1.dispose();
    }
  });

  it('errors name the argument; a failed call leaves no device memory behind', async () => {
    const widths = [2000, 2099];
    const inputs = inputsFor({}, widths);
    const s = split(inputs, widths);
    const live = () => cuda.memInfo().liveAllocations;  // papo-kernels' allocations on every device
    const before = live();
    const d = onDevices(s);
    try {
      const bad = (patch: Partial<SplitPapoInputs | DeviceSplitPapoInputs>, msg: RegExp, o: PapoOptions = base) =>
        expect(() => papoLossSync({ ...d, ...patch } as DeviceSplitPapoInputs, o)).toThrow(msg);
      bad({ logits: [d.logits[0], s.logits[1]] } as Partial<DeviceSplitPapoInputs>,
        /^logits\[1\]: is host data, logits\[0\] a DeviceTensor: the shards must all be host data or all DeviceTensors/);
      bad({ maskedLogits: [s.maskedLogits![0], d.maskedLogits![1]] } as Partial<DeviceSplitPapoInputs>, /^maskedLogits\[0\]: is host data, logits\[0\] a DeviceTensor/);
      bad({}, /^logits\[0\]: is a DeviceTensor; backend 'cpu' needs host data/, { ...base, backend: 'cpu' });
      bad({}, /^options\.backend: 'cuda-naive' does not take vocabulary shards/, { ...base, backend: 'cuda-naive' });
      expect(() => vocabShardStats(d.logits[0], inputs.tokens, { vocabStart: 0, backend: 'reference' })).toThrow(/^shard: is a DeviceTensor; backend 'reference'/);
      if (devices > 1)
        bad({ maskedLogits: [d.maskedLogits![0], d.maskedLogits![0]] }, /^maskedLogits\[1\]\.device: expected device 1 like logits\[1\], got 0/);
      // NaN and +Infinity found by the statistics kernel, named by shard, in papoLoss too (it waits for every
      // shard's call, then frees the gradients that the others allocated)
      for (const [v, msg] of [[NaN, /^logits\[1\] contains NaN in row 2$/], [Infinity, /^logits\[1\] contains \+Infinity in row 2/]] as const) {
        const t = { ...(s.logits[1] as Tensor), data: Float32Array.from(s.logits[1].data as Float32Array) };
        (t.data as Float32Array)[2099 * 2 + 5] = v;
        const bad1 = cuda.upload(t, { device: 1 % devices });
        try {
          bad({ logits: [d.logits[0], bad1] }, msg);
          await expect(papoLoss({ ...d, logits: [d.logits[0], bad1] }, base)).rejects.toThrow(msg);
        } finally {
          bad1.dispose();
        }
      }
      const none = s.logits.map((t) => ({ ...(t as Tensor), data: Float32Array.from(t.data as Float32Array) }));
      for (const t of none) t.data.fill(-Infinity, 0, t.dims[1]);
      const dn = onDevices({ ...s, logits: none });
      try {
        bad({ logits: dn.logits }, /^logits: row 0 has no finite logit in any shard/);
      } finally {
        dispose(dn);
      }
      // shard 1's call refused after shard 0's ran: the masked gradient that shard 0 allocated is freed
      const zeros = (n: number, device: number) => cuda.upload({ data: new Float32Array(8 * n), dims: [8, n], type: 'float32' }, { device });
      const out = { gradLogits: [zeros(2000, 0), zeros(2000, 1 % devices)] };
      try {
        bad({}, /^out\.gradLogits\.dims: expected \[8, 2099\] like the logits, got \[8, 2000\]/, { ...base, out });
        await expect(papoLoss(d, { ...base, out })).rejects.toThrow(/^out\.gradLogits\.dims/);
      } finally {
        for (const t of out.gradLogits) t.dispose();
      }
      // a gradient call that fails after the statistics: the masked path's target excluded in shard 1 only
      const o = (inputs.tokens as Int32Array)[3];
      const zm = { ...(s.maskedLogits![1] as Tensor), data: Float32Array.from(s.maskedLogits![1].data as Float32Array) };
      expect(o).toBeGreaterThanOrEqual(2000);
      zm.data[3 * 2099 + o - 2000] = -Infinity;
      const bm = cuda.upload(zm, { device: 1 % devices });
      try {
        await expect(papoLoss({ ...d, maskedLogits: [d.maskedLogits![0], bm] }, base)).rejects.toThrow(/^tokens\[3\] = \d+ has logit -Infinity in maskedLogits/);
      } finally {
        bm.dispose();
      }
    } finally {
      dispose(d);
    }
    expect(live()).toEqual(before);
  });
});

// The benchmark's vocabulary in the benchmark's 4 shards: 16 rows, or with PAPO_SCALE_TEST=1 (opt-in, as
// test/scale.test.ts) PAPO_SPLIT_SCALE_ROWS rows, default 256 (25 s on the emulated device on 2 cores).
const scaleRows = process.env.PAPO_SCALE_TEST === '1' ? Number(process.env.PAPO_SPLIT_SCALE_ROWS ?? 256) : 16;
describe.runIf(devices > 0)('a vocabulary split at the benchmark\'s size', () => {
  it(`V = 151936 in 4 bf16 shards on every device, N = ${scaleRows}, equals the unsplit call`, async () => {
    const widths = [37984, 37984, 37984, 37984];
    const inputs = makeInputs({ N: scaleRows, V: 151936, type: 'bfloat16', seed: 12 });
    placeTargets(inputs, widths);
    await checkCudaSplit(inputs, widths, base, 1e-5);
  }, 600_000);
});

const TRACED = ['vocab_shard_stats', 'vocab_shard_grad'];
const DELAY_MS = 300;

describe.runIf(emulated)('the one-call form on two emulated devices: concurrent but for the exchange of statistics', () => {
  it("each device's statistics and gradient kernels overlap the other device's; every gradient waits only for the statistics", async () => {
    expect(devices).toBe(2);
    const emu = native();
    const widths = widthsOf(V, 2);
    const d = onDevices(split(inputsFor({ N: 4 }, widths), widths));
    try {
      emu.emuReset!();
      for (const name of TRACED) emu.emuKernelDelay!(name, DELAY_MS);
      const r = await papoLoss(d, base);
      const runs = emu.emuKernelRuns!();
      expect(emu.emuStats!().deviceSyncs).toBe(0);  // no device-wide wait either
      emu.emuReset!();
      for (const g of [...r.gradLogits, ...r.gradMaskedLogits!]) g.dispose();
      type Run = (typeof runs)[number];
      const on = (name: string, device: number) => runs.filter((x) => x.name === name && x.device === device);
      const overlap = (a: Run, b: Run) => a.startMs < b.endMs && b.startMs < a.endMs;
      for (const name of TRACED) {
        const [k0, k1] = [on(name, 0), on(name, 1)];
        // both paths' statistics on each device, one gradient kernel (both paths) on each
        expect([k0.length, k1.length], name).toEqual(name === 'vocab_shard_stats' ? [2, 2] : [1, 1]);
        // some kernel of device 0 ran while one of device 1 ran...
        expect({ name, overlap: k0.some((a) => k1.some((b) => overlap(a, b))) }).toEqual({ name, overlap: true });
        // ...and neither device sat idle between its own kernels (for the other's, of DELAY_MS each)
        for (const mine of [k0, k1]) {
          const busy = mine.reduce((t, x) => t + x.endMs - x.startMs, 0);
          const idle = Math.max(...mine.map((x) => x.endMs)) - Math.min(...mine.map((x) => x.startMs)) - busy;
          expect(idle, `${name}: idle time between one device's kernels`).toBeLessThan(DELAY_MS / 2);
        }
      }
      const statsEnd = Math.max(...runs.filter((x) => x.name === 'vocab_shard_stats').map((x) => x.endMs));
      const gradStart = Math.min(...runs.filter((x) => x.name === 'vocab_shard_grad').map((x) => x.startMs));
      expect(gradStart).toBeGreaterThanOrEqual(statsEnd);  // the exchange: every shard's statistics merged first
    } finally {
      emu.emuReset!();
      dispose(d);
    }
  });
});
