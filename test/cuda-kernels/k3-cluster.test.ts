// k3 cluster (PAPO_CUDA_KERNEL=3) at its own plan's shape (the fewest blocks that hold a row pair, double
// buffered where it fits) with the default staging: the family suite of ../cuda-family.ts, batch invariance and the
// plan. Each file runs in a process of its own: the backend reads PAPO_CUDA_* once per process.
import { paritySuite, planSuite, useFamily } from '../cuda-family';
import { batchInvarianceSuite } from '../batch-invariance';

const f = useFamily({ name: 'k3 cluster', version: 'k3', backend: 'cuda', env: { PAPO_CUDA_KERNEL: '3' } });
paritySuite(f);
batchInvarianceSuite(f);
planSuite(f);
