// Which CUDA architectures the install builds for. Each one costs minutes of nvcc time, so a machine with GPUs
// builds for its own GPUs only; CUDAARCHS (CMake's standard variable) overrides, and without nvidia-smi (a
// container build, a CI runner) CMakeLists.txt's default list applies, which runs on every GPU from sm_75 on.
'use strict';
const { spawnSync } = require('node:child_process');

/** Compute capabilities from `nvidia-smi --query-gpu=compute_cap --format=csv,noheader` ("9.0" -> 90), once each. */
function parseComputeCaps(stdout) {
  const caps = [];
  for (const line of String(stdout).split('\n')) {
    const m = /^\s*(\d+)\.(\d+)\s*$/.exec(line);
    if (m && !caps.includes(Number(m[1] + m[2]))) caps.push(Number(m[1] + m[2]));
  }
  return caps.sort((a, b) => a - b);
}

/** Real architectures from `nvcc --list-gpu-arch` (compute_90 -> 90). */
function parseNvccArchs(stdout) {
  return [...String(stdout).matchAll(/compute_(\d+)\b/g)].map((m) => Number(m[1])).filter((v, i, a) => a.indexOf(v) === i);
}

/**
 * { archs, why }: archs is the CUDAARCHS value to build with (null: leave it to CUDAARCHS as given or to
 * CMakeLists.txt's default list), why says where the list came from, for the install summary.
 * gpuCaps: the GPUs' compute capabilities, or null without nvidia-smi; nvccArchs: what the toolkit compiles
 * for, or null when unknown.
 */
function chooseCudaArchs({ cudaarchs, gpuCaps, nvccArchs }) {
  if (cudaarchs) return { archs: null, why: 'from CUDAARCHS' };
  const hint = 'CUDAARCHS overrides';
  // No GPU in sight: still every architecture, since such a machine is often a container build whose image runs
  // on GPUs later, and a CPU-only build there would fail only then. The cost (a minute or more of nvcc, some
  // 40 MB) is said in the summary line, with the two ways to avoid it.
  const noGpu = 'so every GPU from sm_75 on, for an image built here that runs on GPUs later; ' +
    'PAPO_CPU_ONLY=1 skips CUDA, CUDAARCHS=90 builds one architecture';
  if (!gpuCaps) return { archs: null, why: `the default list: no nvidia-smi to name this machine's GPUs, ${noGpu}` };
  if (gpuCaps.length === 0) return { archs: null, why: `the default list: nvidia-smi lists no GPU, ${noGpu}` };
  const archs = [];
  const notes = [];
  const newest = nvccArchs && nvccArchs.length ? Math.max(...nvccArchs) : null;
  for (const cap of gpuCaps) {
    let arch = cap;
    if (nvccArchs && !nvccArchs.includes(cap)) {
      if (newest !== null && cap > newest) {
        // The newest architecture's PTX is embedded too, and the driver compiles it for the newer GPU.
        arch = newest;
        notes.push(`sm_${cap} is newer than this nvcc knows: built for ${newest} (the driver JIT-compiles its PTX)`);
      } else {
        notes.push(`sm_${cap} is not supported by this nvcc`);
        continue;
      }
    }
    if (!archs.includes(arch)) archs.push(arch);
  }
  if (archs.length === 0) return { archs: null, why: `the default list: ${notes.join('; ')}; ${hint}` };
  return { archs: archs.join(';'), why: `the GPUs of this machine (nvidia-smi)${notes.length ? ': ' + notes.join('; ') : ''}; ${hint}` };
}

function stdoutOf(cmd, args, env) {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000 });
  return r.status === 0 ? r.stdout : null;
}

/** chooseCudaArchs for this machine and environment. */
function cudaArchsHere(env = process.env) {
  if (env.CUDAARCHS) return chooseCudaArchs({ cudaarchs: env.CUDAARCHS });
  const smi = stdoutOf('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], env);
  const gpuCaps = smi === null ? null : parseComputeCaps(smi);
  // The nvcc that CMake's check_language(CUDA) finds first: CUDACXX, else the one on PATH.
  const nvcc = gpuCaps && gpuCaps.length ? stdoutOf(env.CUDACXX || 'nvcc', ['--list-gpu-arch'], env) : null;
  return chooseCudaArchs({ gpuCaps, nvccArchs: nvcc === null ? null : parseNvccArchs(nvcc) });
}

module.exports = { parseComputeCaps, parseNvccArchs, chooseCudaArchs, cudaArchsHere };
