// Where the CUDA tests run: on a real GPU when this machine has one, else on the emulated device
// (build/Emulated, tools/cuda-emulator), with the same assertions. PAPO_CUDA_TARGET=hardware|emulated forces
// one. Import this module before anything calls into the addon: the choice is made when the addon loads.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

function hardwareDevices(): number {
  const addon = path.join(__dirname, '..', 'build', 'Release', 'papo_kernels.node');
  try {
    const out = execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(addon)}).info().cudaDevices.length))`],
      { encoding: 'utf8', env: { ...process.env, PAPO_CUDA_EMULATE: '' } });
    return Number(out) || 0;
  } catch {
    return 0;
  }
}

export const cudaTarget: 'hardware' | 'emulated' =
  process.env.PAPO_CUDA_TARGET === 'hardware' || process.env.PAPO_CUDA_TARGET === 'emulated'
    ? process.env.PAPO_CUDA_TARGET
    : hardwareDevices() > 0 ? 'hardware' : 'emulated';
export const emulated = cudaTarget === 'emulated';
if (emulated) process.env.PAPO_CUDA_EMULATE = '1';
else delete process.env.PAPO_CUDA_EMULATE;
