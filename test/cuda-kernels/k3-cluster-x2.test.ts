// k3 cluster (PAPO_CUDA_KERNEL=3) in clusters of 2 blocks, 8 blocks in all, so that each cluster takes several row
// pairs in turn (double buffering), host data in chunks of 1 MiB: the family suite of ../cuda-family.ts, batch
// invariance and the plan's cache. Each file runs in a process of its
// own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k3 cluster of 2 blocks', version: 'k3', backend: 'cuda',
  env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '2', PAPO_CUDA_BLOCKS: '8', PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
