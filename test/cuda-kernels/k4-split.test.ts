// k4 split rows (PAPO_CUDA_KERNEL=4) with its default slices (16 KB of each path, so the tests' rows have one or
// two) and host data in chunks of 1 MiB: the family suite of ../cuda-family.ts, batch invariance and the plan. Each
// file runs in a process of its own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k4 split rows', version: 'k4', backend: 'cuda',
  env: { PAPO_CUDA_KERNEL: '4', PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
