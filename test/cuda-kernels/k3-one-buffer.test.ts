// k3 cluster with one buffer (PAPO_CUDA_K3_BUFFERS=1: each row pair's copy waited for in full), clusters of 2
// blocks, 4 blocks in all, host data in chunks of 1 MiB: the family suite of ../cuda-family.ts and the plan. Each
// file runs in a process of its own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';

const f = useFamily({ name: 'k3 cluster, one buffer', version: 'k3', backend: 'cuda',
  env: { PAPO_CUDA_KERNEL: '3', PAPO_CUDA_CLUSTER: '2', PAPO_CUDA_BLOCKS: '4', PAPO_CUDA_K3_BUFFERS: '1', PAPO_CUDA_STAGING_MB: '1' } });
paritySuite(f);
planSuite(f);
