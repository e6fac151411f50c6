// float32 <-> bfloat16 / float16 conversions: the exported array conversions, and the per-value ones of the
// float64 reference and the tests. Every rounding here is to nearest, ties to even, with NaN kept a (quiet) NaN.
// Native code has its own (vectorised) copies with the same rounding.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of the float32 whose bits are `u`: the upper half, rounded to nearest even on the lower half. */
function bf16FromBits(u: number): number {
  // NaN: truncating could clear every payload bit left and make it an infinity, so set the quiet bit instead
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float16 bits of the float32 whose bits are `u`, rounded to nearest even (overflow to infinity, underflow
 * through the subnormals to zero). */
function f16FromBits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;  // float16's biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // a subnormal float16, n * 2^-24 with n = the 24-bit significand >> (14 - e), rounded
    if (e < -10) return sign;  // below half of the smallest subnormal
    const m = mant | 0x800000;
    const shift = 14 - e;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    let n = m >>> shift;
    if (rem > half || (rem === half && n & 1)) n += 1;
    return sign | n;  // n = 0x400 is the smallest normal's encoding
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h += 1;  // a carry into the exponent is right, up to infinity
  return sign | h;
}

/** float32 bits of the float16 `h` (exact: every float16 is a float32). */
function f32BitsFromF16(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    let e = 127 - 15 + 1;
    while (!(mant & 0x400)) {
      mant <<= 1;
      e -= 1;
    }
    return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
}

/** Each float32 of `values`, by its bits, through `round` into 16 bits. */
function narrow(values: Float32Array, round: (bits: number) => number): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < out.length; i++) out[i] = round(bits[i]);
  return out;
}

/** Each 16-bit value through `widen` into float32 bits. */
function widen(bits: Uint16Array, expand: (bits: number) => number): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < out.length; i++) out[i] = expand(bits[i]);
  return new Float32Array(out.buffer);
}

/** float32 values as bfloat16 bits (what `{ data, dims, type: 'bfloat16' }` takes), rounded to nearest even. */
export function float32ToBfloat16(values: Float32Array): Uint16Array {
  return narrow(values, bf16FromBits);
}

/** bfloat16 bits as float32 values (exact). */
export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  return widen(bits, (h) => h << 16);
}

/** float32 values as float16 bits (what `{ data, dims, type: 'float16' }` takes), rounded to nearest even. */
export function float32ToFloat16(values: Float32Array): Uint16Array {
  return narrow(values, f16FromBits);
}

/** float16 bits as float32 values (exact). */
export function float16ToFloat32(bits: Uint16Array): Float32Array {
  return widen(bits, f32BitsFromF16);
}

export function bf16ToNumber(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/** bfloat16 bits of x, rounded to float32 first, as native code holds the values it rounds. */
export function numberToBf16(x: number): number {
  f32[0] = x;
  return bf16FromBits(u32[0]);
}

export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function numberToF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;  // rounds to infinity
  if (a < 2 ** -14) {
    // subnormal: units of 2^-24, round half to even
    const q = a / 2 ** -24;
    let n = Math.floor(q);
    const r = q - n;
    if (r > 0.5 || (r === 0.5 && n % 2 === 1)) n += 1;
    return sign | n;  // n === 1024 carries into the smallest normal correctly
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;  // log2 rounding
  if (2 ** (e + 1) <= a) e += 1;
  const m = a / 2 ** e - 1;  // [0, 1)
  const q = m * 1024;
  let n = Math.floor(q);
  const r = q - n;
  if (r > 0.5 || (r === 0.5 && n % 2 === 1)) n += 1;
  if (n === 1024) {
    n = 0;
    e += 1;
  }
  if (e + 15 >= 0x1f) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | n;
}

export function elementToNumber(type: 'float32' | 'float16' | 'bfloat16'): (v: number) => number {
  if (type === 'float16') return f16ToNumber;
  if (type === 'bfloat16') return bf16ToNumber;
  return (v) => v;
}

/** A float64 array written out in the given dtype's storage (Float32Array or raw-bit Uint16Array). */
export function fromFloat64(values: Float64Array, type: 'float32' | 'float16' | 'bfloat16'): Float32Array | Uint16Array {
  if (type === 'float32') return Float32Array.from(values);
  const out = new Uint16Array(values.length);
  const conv = type === 'float16' ? numberToF16 : numberToBf16;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
  return out;
}

/** Any dtype's storage read out as float64. */
export function toFloat64(data: Float32Array | Uint16Array, type: 'float32' | 'float16' | 'bfloat16'): Float64Array {
  if (type === 'float32') return Float64Array.from(data);
  const out = new Float64Array(data.length);
  const conv = elementToNumber(type);
  for (let i = 0; i < data.length; i++) out[i] = conv(data[i]);
  return out;
}
