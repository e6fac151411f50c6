// Errors thrown by papo-kernels carry a stable `code` (documented in the README), whether TypeScript
// validation or native code raised them.

export type PapoErrorCode =
  | 'PAPO_INVALID_ARGUMENT'
  | 'PAPO_CUDA_ERROR'
  | 'PAPO_OUT_OF_MEMORY'
  | 'PAPO_UNSUPPORTED'
  | 'PAPO_INTERNAL';

function withCode<E extends Error>(e: E, code: PapoErrorCode): E & { code: PapoErrorCode } {
  return Object.assign(e, { code });
}

/** A value of the wrong kind: `${name}: expected ${expected}, got ${what}`. */
export function typeError(name: string, expected: string, got?: unknown): TypeError & { code: PapoErrorCode } {
  const suffix = arguments.length > 2 ? `, got ${describe(got)}` : '';
  return withCode(new TypeError(`${name}: expected ${expected}${suffix}`), 'PAPO_INVALID_ARGUMENT');
}

/** A value of the right kind but outside what is allowed. */
export function rangeError(name: string, message: string): RangeError & { code: PapoErrorCode } {
  return withCode(new RangeError(`${name}: ${message}`), 'PAPO_INVALID_ARGUMENT');
}

export function unsupported(message: string): Error & { code: PapoErrorCode } {
  return withCode(new Error(message), 'PAPO_UNSUPPORTED');
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') return `an object with keys {${Object.keys(v as object).slice(0, 6).join(', ')}}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  return `${typeof v} ${String(v)}`;
}
