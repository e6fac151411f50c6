// k2 fused, the default version, with host data in chunks of 1 MiB: the family suite of ../cuda-family.ts and batch
// invariance. Each file runs in a process of its own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k2 fused, staging chunks of 1 MiB', version: 'k2', backend: 'cuda', env: { PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
