// options.out: gradient buffers the caller owns and reuses from call to call, so that a training loop's steady
// state allocates (and page-faults) nothing. Checked here, in two steps: the option's shape with the other
// options (resolveOut), then each buffer against the call's logits and inputs (prepareOut). Every rule is checked
// before any backend runs, so a rejected call leaves the buffers as they were.
import { rangeError, typeError } from './errors';
import { sameMemory, storageName, toTensor, type NormTensor } from './tensor';
import type { DType, PapoInputs } from './types';

export const outNames = ['gradLogits', 'gradMaskedLogits'] as const;
export type OutName = (typeof outNames)[number];

/** options.out as resolveOptions keeps it: the given buffers, not yet checked against the call. */
export type OutOption = Partial<Record<OutName, unknown>> | null;

/** The checked buffers: null where the call allocates that gradient itself. */
export interface PreparedOut {
  gradLogits: NormTensor | null;
  gradMaskedLogits: NormTensor | null;
}

/** options.out's shape and how it combines with inPlace and computeGrad. */
export function resolveOut(out: unknown, inPlace: boolean, computeGrad: boolean): OutOption {
  if (out === undefined || out === null) return null;
  if (typeof out !== 'object' || Array.isArray(out) || ArrayBuffer.isView(out))
    throw typeError('options.out', '{ gradLogits?, gradMaskedLogits? }', out);
  for (const key of Object.keys(out))
    if (!(outNames as readonly string[]).includes(key))
      throw rangeError('options.out', `unknown field '${key}' (expected gradLogits, gradMaskedLogits)`);
  const o = out as Record<string, unknown>;
  const given = outNames.filter((k) => o[k] !== undefined && o[k] !== null);
  for (const k of given) {
    if (inPlace) throw rangeError(`out.${k}`, 'cannot be given with inPlace: true (in place, the gradient overwrites the logits)');
    if (!computeGrad) throw rangeError(`out.${k}`, 'given with computeGrad: false, which computes no gradient to write into it');
  }
  return given.length ? Object.fromEntries(given.map((k) => [k, o[k]])) : null;
}

function check(name: string, value: unknown, like: NormTensor, type: DType, gradType: string): NormTensor {
  // tfjs's dataSync() may return a copy: what the call wrote would never reach the tensor
  if (value !== null && typeof value === 'object' && typeof (value as { dataSync?: unknown }).dataSync === 'function')
    throw typeError(name, 'a tensor whose memory the call writes ({ data, dims, type } or a DeviceTensor), not a tfjs tensor', value);
  const t = toTensor(name, value);
  if (t.dims.join() !== like.dims.join())
    throw rangeError(`${name}.dims`, `expected [${like.dims.join(', ')}] like the logits, got [${t.dims.join(', ')}]`);
  if (t.type !== type)
    throw rangeError(`${name}.type`, `expected '${type}' (gradType '${gradType}' with ${like.type} logits: a ${storageName(type)}), got '${t.type}'`);
  if (!t.device !== !like.device)
    throw rangeError(name, like.device
      ? `expected a DeviceTensor on device ${like.device.device} like the logits, got host data`
      : 'expected host data like the logits, got a DeviceTensor');
  if (t.device && t.device.device !== like.device!.device)
    throw rangeError(`${name}.device`, `expected device ${like.device!.device} like the logits, got ${t.device.device}`);
  return t;
}

/**
 * The buffers of options.out checked against the call: the logits' dims, the gradient's dtype (gradType), the
 * logits' placement and device, and no byte shared with any input or with the other buffer. The masked path has
 * a gradient when maskedGrad (maskedLogits given and not detached).
 */
export function prepareOut(opts: { out: OutOption; gradType: 'input' | 'float32' }, inputs: PapoInputs,
  logits: NormTensor, masked: NormTensor | null, maskedGrad: boolean): PreparedOut {
  const r: PreparedOut = { gradLogits: null, gradMaskedLogits: null };
  if (!opts.out) return r;
  const type = (t: NormTensor): DType => (opts.gradType === 'float32' ? 'float32' : t.type);
  if (opts.out.gradLogits !== undefined)
    r.gradLogits = check('out.gradLogits', opts.out.gradLogits, logits, type(logits), opts.gradType);
  if (opts.out.gradMaskedLogits !== undefined) {
    if (!masked || !maskedGrad)
      throw rangeError('out.gradMaskedLogits', masked
        ? 'the masked path is detached (detachMasked, or precomputed maskedLogProbs): it has no gradient'
        : 'there are no maskedLogits, so there is no masked gradient');
    r.gradMaskedLogits = check('out.gradMaskedLogits', opts.out.gradMaskedLogits, masked, type(masked), opts.gradType);
  }
  // Any typed array among the inputs (tokens, advantages, masks, log-probs) as well as the logits: a gradient
  // written over an input would change what the rest of the call reads.
  const others: [string, NormTensor][] = [['logits', logits]];
  if (masked) others.push(['maskedLogits', masked]);
  for (const [k, v] of Object.entries(inputs))
    if (ArrayBuffer.isView(v)) others.push([k, { data: v as unknown as Float32Array, device: null, dims: [], type: 'float32' }]);
  for (const k of outNames) {
    const t = r[k];
    if (!t) continue;
    for (const [name, o] of others)
      if (sameMemory(t, o)) throw rangeError(`out.${k}`, `shares memory with input ${name} (use inPlace to write over the logits)`);
  }
  if (r.gradLogits && r.gradMaskedLogits && sameMemory(r.gradLogits, r.gradMaskedLogits))
    throw rangeError('out.gradMaskedLogits', 'shares memory with out.gradLogits');
  return r;
}
