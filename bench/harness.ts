// benchmark.js as the timing harness: it picks the number of samples for the time budget and reports the
// relative margin of error; we keep the raw samples for the median and the spread.
import Benchmark from 'benchmark';

// Call fn through a reference instead of inlining its source (benchmark.js would lose the closure).
(Benchmark as unknown as { support: { decompilation: boolean } }).support.decompilation = false;

export interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** relative margin of error of the mean, in percent (benchmark.js) */
  rme: number;
  samples: number;
}

export function measure(name: string, fn: () => void, maxTimeS: number): Timing {
  let error: unknown = null;
  const b = new Benchmark(name, fn, {
    maxTime: maxTimeS,
    minSamples: 5,
    initCount: 1,
    delay: 0,
    onError: (e: { target: { error: unknown } }) => { error = e.target.error; },
  });
  b.run();
  if (error) throw error;
  const ms = [...b.stats.sample].map((s) => s * 1e3).sort((a, c) => a - c);
  return { medianMs: ms[Math.floor(ms.length / 2)], minMs: ms[0], maxMs: ms[ms.length - 1], rme: b.stats.rme, samples: ms.length };
}
