#!/usr/bin/env node
// npm install's build step: cmake-js (CPU + CUDA when nvcc is found) or, without cmake, node-gyp (CPU only).
// Offline either way: cmake-js takes the Node-API headers from the node-api-headers package and node-gyp uses
// the local Node headers. Ends with one line saying what was built. In a consumer's install it then removes
// the intermediate files, keeping the addon alone.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cudaArchsHere } = require('./cuda-archs');

const root = path.resolve(__dirname, '..');
const addonPath = path.join(root, 'build', 'Release', 'papo_kernels.node');
const emulatedPath = path.join(root, 'build', 'Emulated', 'papo_kernels.node');

// The emulated CUDA device (tools/cuda-emulator) is for this repository's own tests: built by `npm install`
// in a checkout (which has test/), not in a consumer's install, which lacks its sources. PAPO_EMULATED_BUILD=1|0 overrides.
const ownCheckout = fs.existsSync(path.join(root, 'test')) && !root.split(path.sep).includes('node_modules');
const emulated = process.env.PAPO_EMULATED_BUILD ? process.env.PAPO_EMULATED_BUILD !== '0' : ownCheckout;
// The kernels' test program against the real CUDA build (build/Release/papo_cuda_test): likewise, and
// PAPO_TEST_PROGRAMS=1|0 overrides (scripts/gpu-check.sh asks for it on a GPU machine).
const testPrograms = process.env.PAPO_TEST_PROGRAMS ? process.env.PAPO_TEST_PROGRAMS !== '0' : emulated;
// As CMakeLists.txt reads it: set, non-empty and not 0.
const cpuOnly = !!process.env.PAPO_CPU_ONLY && process.env.PAPO_CPU_ONLY !== '0';

function onPath(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

// Lines that say nothing to the person installing: cmake-js always passes --no-warn-unused-cli, and cmake
// acknowledges it on every configure.
const noise = [/^Not searching for unused variables given on the command line\.$/];

/** Runs a build step, its output passed through line by line as it comes, less the noise lines. */
function run(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['inherit', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const pass = (from, to) => {
      let pending = '';
      from.setEncoding('utf8');
      from.on('data', (chunk) => {
        const lines = (pending + chunk).split('\n');
        pending = lines.pop();
        for (const line of lines) if (!noise.some((re) => re.test(line))) to.write(line + '\n');
      });
      from.on('end', () => { if (pending && !noise.some((re) => re.test(pending))) to.write(pending); });
    };
    pass(child.stdout, process.stdout);
    pass(child.stderr, process.stderr);
    child.on('error', reject);
    child.on('close', (status) => resolve(status === 0));
  });
}

function nodeGypScript() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;  // set by npm for lifecycle scripts
  const npmDir = path.dirname(path.dirname(require.resolve('npm/package.json', { paths: [path.dirname(process.execPath), '/usr/lib/node_modules', '/usr/local/lib/node_modules'] })));
  return path.join(npmDir, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
}

/** Bytes under a file or folder. */
function sizeOf(p) {
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((sum, e) => sum + sizeOf(path.join(p, e)), 0);
}

const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;

/** A consumer's install keeps only what is loaded: object files, static libraries and the build system stay
 * behind otherwise (about 100 MB with CUDA for every default architecture). A checkout keeps them for
 * incremental builds. */
function pruneBuild() {
  const build = path.join(root, 'build');
  const before = sizeOf(build);
  for (const e of fs.readdirSync(build)) if (e !== 'Release') fs.rmSync(path.join(build, e), { recursive: true, force: true });
  const release = path.dirname(addonPath);
  for (const e of fs.readdirSync(release))
    if (e !== path.basename(addonPath)) fs.rmSync(path.join(release, e), { recursive: true, force: true });
  const after = sizeOf(build);
  return `build/ pruned to build/Release/papo_kernels.node (${mb(after)}; ${mb(before - after)} of intermediate files removed)`;
}

async function main() {
  const started = Date.now();
  const jobs = String(Math.max(1, os.availableParallelism ? os.availableParallelism() : os.cpus().length));
  const wanted = (process.env.PAPO_BUILD || '').toLowerCase();  // '', 'cmake' or 'gyp'
  let how;
  let ok;
  let archs = null;  // cmake-js: the CUDA architectures chosen, and why
  if (wanted === 'gyp' || (wanted !== 'cmake' && !onPath('cmake'))) {
    how = wanted === 'gyp' ? 'node-gyp (PAPO_BUILD=gyp)' : 'node-gyp (cmake not found)';
    ok = await run(process.execPath, [nodeGypScript(), 'rebuild', '-j', jobs]);
  } else {
    how = 'cmake-js';
    archs = cpuOnly ? null : cudaArchsHere();
    const env = archs && archs.archs ? { CUDAARCHS: archs.archs } : {};
    const defs = [`--CDPAPO_EMULATED=${emulated ? 'ON' : 'OFF'}`, `--CDPAPO_TEST_PROGRAMS=${testPrograms ? 'ON' : 'OFF'}`];
    // cmake-js build reuses a configured tree as it is: configure again when one of these options must change.
    const cache = path.join(root, 'build', 'CMakeCache.txt');
    const text = fs.existsSync(cache) ? fs.readFileSync(cache, 'utf8') : null;
    const differs = (name, on) => {
      const m = text && new RegExp(`^${name}:BOOL=(\\w+)`, 'm').exec(text);
      return text !== null && (!m || (m[1] === 'ON') !== on);
    };
    if (differs('PAPO_EMULATED', emulated) || differs('PAPO_TEST_PROGRAMS', testPrograms))
      await run(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'configure', '--log-level', 'warn', ...defs], env);
    ok = await run(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'build', '--parallel', jobs, '--log-level', 'warn',
      ...defs], env);
  }
  if (!ok || !fs.existsSync(addonPath)) {
    console.error(`papo-kernels: the native build with ${how} failed (see above).` +
      (how === 'cmake-js' ? ' PAPO_CPU_ONLY=1 skips CUDA; PAPO_BUILD=gyp builds the CPU backend with node-gyp.' : ''));
    process.exit(1);
  }

  const info = require(addonPath).info();
  const cuda = info.cudaBuilt
    ? `CUDA ${Math.floor(info.cudaRuntimeVersion / 1000)}.${(info.cudaRuntimeVersion % 1000) / 10} for sm ${info.cudaArchitectures}` +
      (archs ? ` (${archs.why})` : '') +
      (info.cudaDevices.length ? ` (${info.cudaDevices.length} device(s))` : ` (no device here: ${info.cudaStatus})`)
    : `CUDA skipped: ${info.cudaStatus}`;
  const emu = how !== 'cmake-js' || !emulated ? '' : fs.existsSync(emulatedPath)
    ? '; emulated CUDA device for the tests (PAPO_CUDA_EMULATE=1)' : '; the emulated CUDA device did not build';
  // On stderr, the diagnostic stream (kept out of stdout that tools may parse). npm shows a dependency's script
  // output only with --foreground-scripts or when the script fails.
  const seconds = Math.round((Date.now() - started) / 1000);
  // A consumer who asked for the test builds (PAPO_EMULATED_BUILD=1, PAPO_TEST_PROGRAMS=1) keeps them and the tree.
  const pruned = ownCheckout ? '' : how === 'cmake-js' && (emulated || testPrograms)
    ? '; build/ kept whole: PAPO_EMULATED_BUILD or PAPO_TEST_PROGRAMS asked for the test builds' : `; ${pruneBuild()}`;
  console.error(`papo-kernels ${info.version}: built with ${how} in ${seconds} s: cpu (${info.cpuIsa}, ${info.threads} threads); ${cuda}${emu}${pruned}`);
  if (how === 'cmake-js' && emulated && !fs.existsSync(emulatedPath)) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
