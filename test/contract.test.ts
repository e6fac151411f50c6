// The one contract between TypeScript and C++: every enum code lib/ sends is the one the addon's C++ enums give
// that name, and every name the options accept has a code.
import { describe, expect, it } from 'vitest';
import { CODES } from '../lib/codes';
import { native } from '../lib/native';
import { entropyModes, klEstimators, lossAggs, lossTypes, rolloutModes } from '../lib/options';
import { dtypes } from '../lib/tensor';

describe('the TypeScript-C++ contract', () => {
  it('the addon exports the same enum tables as lib/codes.ts', () => {
    expect(native().enums).toEqual(CODES);
  });

  it('every name the options accept has a code, and no code lacks a name', () => {
    expect(Object.keys(CODES.klEstimator).sort()).toEqual([...klEstimators].sort());
    expect(Object.keys(CODES.entropyMode).sort()).toEqual([...entropyModes].sort());
    expect(Object.keys(CODES.lossAgg).sort()).toEqual([...lossAggs].sort());
    expect(Object.keys(CODES.lossType).sort()).toEqual([...lossTypes].sort());
    expect(Object.keys(CODES.rolloutCorrection).sort()).toEqual([...rolloutModes].sort());
    expect(Object.keys(CODES.dtype).sort()).toEqual([...dtypes].sort());
  });
});
