// k4 split rows with slices of 16 vectors on a grid of 5 blocks and the default staging: every row has many
// slices (47 to 64 at V = 3000-4099 in fp32: more than the 32 lanes of the row's merge), each block takes many
// items in turn, holds gradients back while their rows complete, and waits. The family suite of ../cuda-family.ts,
// batch invariance and the plan. Each file runs in a process of its own: the backend reads PAPO_CUDA_* once per
// process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k4 split rows, short slices, 5 blocks', version: 'k4', backend: 'cuda',
  env: { PAPO_CUDA_KERNEL: '4', PAPO_CUDA_BLOCKS: '5', PAPO_CUDA_K4_SLICE: '16' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
