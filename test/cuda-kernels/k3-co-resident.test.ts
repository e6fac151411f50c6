// k3 with two clusters per SM (PAPO_CUDA_K3_CO_RESIDENT=2: blocks of 256 threads, one buffer each, so that one
// cluster's serial part overlaps the other's rows), clusters of 4 blocks, 8 blocks in all, host data in chunks of
// 1 MiB: the family suite of ../cuda-family.ts, batch invariance and the plan. Each file runs in a process of its
// own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k3 cluster, two per SM', version: 'k3', backend: 'cuda',
  env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '4', PAPO_CUDA_BLOCKS: '8', PAPO_CUDA_K3_CO_RESIDENT: '2', PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
