// The codes by which option values and storage types reach native code. The addon exports the same tables,
// built from its C++ enums (native/napi/enums.cpp), and test/contract.test.ts checks that the two agree, so
// nothing depends on the order of a list.
export const CODES = {
  dtype: { float32: 0, float16: 1, bfloat16: 2 },
  backend: { cpu: 0, cuda: 1, 'cuda-naive': 2 },
  klEstimator: { k1: 0, k2: 1, k3: 2, abs: 3 },
  entropyMode: { sampled: 0, full: 1 },
  lossAgg: { 'token-mean': 0, 'seq-mean-token-mean': 1, 'seq-mean-token-sum': 2, 'seq-mean-token-sum-norm': 3 },
  lossType: { ppo: 0, gspo: 1, 'gspo-token': 2, cispo: 3, sapo: 4 },
  rolloutCorrection: { truncate: 1, mask: 2 },
} as const;

export type CodeTables = { readonly [K in keyof typeof CODES]: Readonly<Record<keyof (typeof CODES)[K], number>> };
