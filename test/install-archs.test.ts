// The install's choice of CUDA architectures (scripts/cuda-archs.js): CUDAARCHS, else this machine's GPUs as
// nvidia-smi lists them, clamped to what nvcc compiles, else CMakeLists.txt's default list. No GPU or nvcc is
// needed: the last case puts stand-ins for both on PATH.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const archs = require('../scripts/cuda-archs.js') as {
  parseComputeCaps(s: string): number[];
  parseNvccArchs(s: string): number[];
  chooseCudaArchs(o: { cudaarchs?: string; gpuCaps?: number[] | null; nvccArchs?: number[] | null }): { archs: string | null; why: string };
  cudaArchsHere(env: NodeJS.ProcessEnv): { archs: string | null; why: string };
};

const nvcc13 = [75, 80, 86, 87, 88, 89, 90, 100, 110, 103, 120, 121];

describe('CUDA architectures of the install', () => {
  it('parses nvidia-smi and nvcc', () => {
    expect(archs.parseComputeCaps('9.0\n9.0\n8.6\n')).toEqual([86, 90]);
    expect(archs.parseComputeCaps('12.0\r\n')).toEqual([120]);
    expect(archs.parseComputeCaps('[N/A]\n')).toEqual([]);
    expect(archs.parseNvccArchs('compute_75\ncompute_90\ncompute_90a\ncompute_100\n')).toEqual([75, 90, 100]);
  });
  it('CUDAARCHS wins and is left to CMake as given', () => {
    expect(archs.chooseCudaArchs({ cudaarchs: '80;90', gpuCaps: [86], nvccArchs: nvcc13 })).toEqual({ archs: null, why: 'from CUDAARCHS' });
  });
  it('without nvidia-smi or a GPU: the default list, saying why', () => {
    // the decision made visible: built anyway (an image may run on GPUs later), and how to skip it
    expect(archs.chooseCudaArchs({ gpuCaps: null, nvccArchs: null })).toEqual({ archs: null, why: "the default list: no " +
      "nvidia-smi to name this machine's GPUs, so every GPU from sm_75 on, for an image built here that runs on GPUs " +
      'later; PAPO_CPU_ONLY=1 skips CUDA, CUDAARCHS=90 builds one architecture' });
    expect(archs.chooseCudaArchs({ gpuCaps: [], nvccArchs: null }).why).toMatch(/^the default list: nvidia-smi lists no GPU, so every GPU from sm_75 on.*PAPO_CPU_ONLY=1 skips CUDA/);
  });
  it("this machine's GPUs, each architecture once", () => {
    expect(archs.chooseCudaArchs({ gpuCaps: [86, 90], nvccArchs: nvcc13 })).toEqual(
      { archs: '86;90', why: 'the GPUs of this machine (nvidia-smi); CUDAARCHS overrides' });
    expect(archs.chooseCudaArchs({ gpuCaps: [90], nvccArchs: null }).archs).toBe('90');
  });
  it('a GPU newer than nvcc gets the newest architecture, one older than nvcc supports is named', () => {
    const r = archs.chooseCudaArchs({ gpuCaps: [90, 120], nvccArchs: [75, 80, 86, 89, 90] });
    expect(r.archs).toBe('90');
    expect(r.why).toMatch(/sm_120 is newer than this nvcc knows: built for 90/);
    const old = archs.chooseCudaArchs({ gpuCaps: [61], nvccArchs: nvcc13 });
    expect(old).toEqual({ archs: null, why: 'the default list: sm_61 is not supported by this nvcc; CUDAARCHS overrides' });
  });
  it('asks nvidia-smi and nvcc on PATH', () => {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'papo-archs-'));
    try {
      fs.writeFileSync(path.join(bin, 'nvidia-smi'), '#!/bin/sh\n[ "$1" = --query-gpu=compute_cap ] && printf "8.9\\n9.0\\n"\n', { mode: 0o755 });
      fs.writeFileSync(path.join(bin, 'fake-nvcc'), '#!/bin/sh\nprintf "compute_80\\ncompute_89\\n"\n', { mode: 0o755 });
      const env = { PATH: `${bin}:${process.env.PATH}`, CUDACXX: path.join(bin, 'fake-nvcc') };
      expect(archs.cudaArchsHere(env)).toEqual({
        archs: '89',
        why: 'the GPUs of this machine (nvidia-smi): sm_90 is newer than this nvcc knows: built for 89 (the driver JIT-compiles its PTX); CUDAARCHS overrides',
      });
      expect(archs.cudaArchsHere({ ...env, CUDAARCHS: '75' }).why).toBe('from CUDAARCHS');
      expect(archs.cudaArchsHere({ PATH: bin }).why).toMatch(/^the GPUs of this machine/);  // nvcc not found: no clamp
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
});
