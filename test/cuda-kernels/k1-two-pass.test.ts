// k1 two-pass (PAPO_CUDA_KERNEL=1) with host data in chunks of 1 MiB: the family suite of ../cuda-family.ts, batch
// invariance and the plan's cache. Each file runs in a process of its own: the backend reads PAPO_CUDA_* once per
// process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k1 two-pass', version: 'k1', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '1', PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
