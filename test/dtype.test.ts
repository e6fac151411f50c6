// The exported float32 <-> bfloat16 / float16 conversions: exact where the narrow type is exact, rounded to
// nearest even otherwise (checked against a rounding done independently in float64), NaN kept a NaN.
import { describe, expect, it } from 'vitest';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16 } from '../lib';
import { f16ToNumber, numberToF16 } from '../lib/dtype';
import { rng } from './helpers';

/** Random float32 bit patterns of every exponent, plus the exact halfway points between two bf16/f16 values. */
function samples(n: number): Float32Array {
  const r = rng(23);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const u = (Math.floor(r() * 2 ** 32) >>> 0);
    // every fourth one a tie for bf16 (low half 0x8000), every fourth a tie for f16 (low 13 bits 0x1000)
    bits[i] = i % 4 === 1 ? ((u & 0xffff0000) | 0x8000) >>> 0 : i % 4 === 2 ? ((u & 0xffffe000) | 0x1000) >>> 0 : u;
  }
  return new Float32Array(bits.buffer);
}

/** The nearest of two candidates to x, ties to the one with an even last bit. */
function nearest(x: number, lo: number, loBits: number, hi: number, hiBits: number): number {
  const [dl, dh] = [Math.abs(x - lo), Math.abs(x - hi)];
  return dl < dh ? loBits : dh < dl ? hiBits : loBits & 1 ? hiBits : loBits;
}

describe('float32 <-> bfloat16', () => {
  it('is exact from bfloat16 and back for every non-NaN bit pattern', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f = bfloat16ToFloat32(all);
    const back = float32ToBfloat16(f);
    for (let i = 0; i < 65536; i++) {
      if (Number.isNaN(f[i])) expect(Number.isNaN(bfloat16ToFloat32(back.subarray(i, i + 1))[0])).toBe(true);
      else expect(back[i]).toBe(i);
    }
  });

  it('rounds float32 to the nearest bfloat16, ties to even', () => {
    const x = samples(20000);
    const b = float32ToBfloat16(x);
    const u = new Uint32Array(x.buffer);
    for (let i = 0; i < x.length; i++) {
      if (Number.isNaN(x[i])) {
        expect(Number.isNaN(bfloat16ToFloat32(b.subarray(i, i + 1))[0])).toBe(true);
        continue;
      }
      const lo = u[i] >>> 16;  // truncation: the candidate toward zero, and the next one away from it
      const hi = lo + 1;
      const v = bfloat16ToFloat32(Uint16Array.of(lo, hi & 0xffff));
      // past the largest finite value, hi is infinity: the rounding still picks by distance in float64, where
      // the next value after the largest finite bf16 would be 2^128
      const hiValue = Number.isFinite(v[1]) ? v[1] : Math.sign(v[0]) * 2 ** 128;
      expect(b[i]).toBe(nearest(x[i], v[0], lo, hiValue, hi & 0xffff) & 0xffff);
    }
  });

  it('keeps NaN a NaN, including payloads whose upper half is all zero', () => {
    const nan = new Float32Array(new Uint32Array([0x7f800001, 0xff800001, 0x7fc00000]).buffer);
    expect(Array.from(bfloat16ToFloat32(float32ToBfloat16(nan))).every(Number.isNaN)).toBe(true);
  });
});

describe('float32 <-> float16', () => {
  it('is exact from float16 and back for every non-NaN bit pattern, and agrees with the per-value decoder', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f = float16ToFloat32(all);
    const back = float32ToFloat16(f);
    for (let i = 0; i < 65536; i++) {
      if (Number.isNaN(f[i])) {
        expect(Number.isNaN(f16ToNumber(back[i]))).toBe(true);
        continue;
      }
      expect(f[i]).toBe(f16ToNumber(i));
      expect(back[i]).toBe(i);
    }
  });

  it('rounds float32 to the nearest float16, ties to even, subnormals and overflow included', () => {
    const x = samples(20000);
    // and values around float16's range: the largest finite, the overflow threshold, the subnormals
    const extra = Float32Array.of(65504, 65519.99, 65520, -65520, 2 ** -14, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 3 * 2 ** -25,
      2 ** -26, 1e-9, -0, 0, Infinity, -Infinity);
    const all = new Float32Array(x.length + extra.length);
    all.set(x);
    all.set(extra, x.length);
    const h = float32ToFloat16(all);
    for (let i = 0; i < all.length; i++) {
      if (Number.isNaN(all[i])) expect(Number.isNaN(f16ToNumber(h[i]))).toBe(true);
      // numberToF16 rounds in float64 from the value itself; a float32 is exact there, so both round once
      else expect(h[i]).toBe(numberToF16(all[i]));
    }
  });
});
