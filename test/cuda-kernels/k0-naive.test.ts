// Backend 'cuda-naive' (k0 naive) with host data in chunks of 1 MiB: the family suite of ../cuda-family.ts, batch
// invariance and the plan's cache. Each file runs in a process of its own: the backend reads PAPO_CUDA_* once per
// process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k0 naive', version: 'k0', backend: 'cuda-naive', env: { PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
