// fp16 / bf16 <-> number conversions for the float64 reference and the tests. Native code has its own
// (vectorised) copies; both round to nearest even.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToNumber(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

export function numberToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
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
