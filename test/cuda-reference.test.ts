// The CUDA backend against the float64 reference, on everything the CPU backend is tested on (the suite is
// test/backend-suite.ts): on a GPU when the machine has one, else on the emulated device.
import './cuda-target';
import { backendSuite } from './backend-suite';

backendSuite('cuda');
