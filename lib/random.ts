// A seeded generator for masks: xoshiro128** (good statistical quality, 2^128 - 1 period) seeded through
// splitmix32, so nearby seeds give unrelated streams. Math.random is neither seedable nor reproducible.
import { randomBytes } from 'node:crypto';

export type Random = () => number;

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Uniform doubles in [0, 1) with 32 random bits, from `seed` (any integer), or a fresh random seed. */
export function seededRandom(seed?: number): Random {
  const init = splitmix32(seed === undefined ? randomBytes(4).readUInt32LE(0) : seed % 2 ** 32);
  let a = init(), b = init(), c = init(), d = init();
  if ((a | b | c | d) === 0) a = 1;
  return () => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result / 4294967296;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
