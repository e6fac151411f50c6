// The native CPU backend against the float64 reference (the suite is test/backend-suite.ts).
import { backendSuite } from './backend-suite';

backendSuite('cpu');
