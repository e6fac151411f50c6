// How the package finds its native addon (lib/native.ts, through the bindings package), seen from a copy of the
// built package in a temporary folder whose build/ each case lays out: a missing binary (install scripts
// skipped), a broken one, and the emulated build that PAPO_CUDA_EMULATE=1 asks for. Each case runs in a child
// process because the addon is loaded once per process.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = path.join(__dirname, '..');
const release = path.join(repo, 'build', 'Release', 'papo_kernels.node');

// Runs in the child: one cpu call and one reference call, and which .node file got loaded.
const probe = `
const p = require(process.argv[1]);
const { makeInputsJs } = require(${JSON.stringify(path.join(__dirname, 'fixtures', 'inputs.js'))});
const inputs = makeInputsJs('float32', 3, 20);
const out = { backends: p.info().backends, reference: Number.isFinite(p.papoLossSync(inputs, { backend: 'reference' }).loss) };
try { out.cpuLoss = p.papoLossSync(inputs, { backend: 'cpu' }).loss; } catch (e) { out.error = { code: e.code, message: e.message }; }
out.loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'));
process.stdout.write(JSON.stringify(out));
`;

interface Probe {
  backends: string[];
  reference: boolean;
  cpuLoss?: number;
  error?: { code: string; message: string };
  loaded: string[];
  autoBackend?: string;
  cudaError?: { code: string; message: string };
  cudaStatus?: string;
}

let pkg: string;

/** The package as installed, with build/ holding exactly `files` (relative path to contents or a file to copy). */
function layout(files: Record<string, { copy: string } | { text: string }>) {
  fs.rmSync(path.join(pkg, 'build'), { recursive: true, force: true });
  for (const [rel, what] of Object.entries(files)) {
    const dest = path.join(pkg, rel);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    if ('copy' in what) fs.copyFileSync(what.copy, dest);
    else fs.writeFileSync(dest, what.text);
  }
}

// The same, plus what 'auto' and 'cuda' do and what info() says about CUDA.
const cudaProbe = probe.replace('out.loaded =', `out.autoBackend = p.papoLossSync(inputs, { backend: 'auto' }).backend;
try { p.papoLossSync(inputs, { backend: 'cuda' }); } catch (e) { out.cudaError = { code: e.code, message: e.message }; }
out.cudaStatus = p.info().cudaStatus;
out.loaded =`);

function run(env: Record<string, string> = {}, script = probe): Probe {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('PAPO_CUDA_EMULATE' in env)) delete childEnv.PAPO_CUDA_EMULATE;
  delete childEnv.PAPO_ADDON_PATH;
  const out = execFileSync(process.execPath, ['-e', script, path.join(pkg, 'dist', 'lib', 'index.js')],
    { env: childEnv, encoding: 'utf8' });
  return JSON.parse(out) as Probe;
}

beforeAll(() => {
  pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'papo-loading-'));
  fs.copyFileSync(path.join(repo, 'package.json'), path.join(pkg, 'package.json'));
  fs.cpSync(path.join(repo, 'dist', 'lib'), path.join(pkg, 'dist', 'lib'), { recursive: true });
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(pkg, 'node_modules'), 'dir');
});
afterAll(() => fs.rmSync(pkg, { recursive: true, force: true }));

describe('loading the native addon', () => {
  it('loads build/Release/papo_kernels.node', () => {
    layout({ 'build/Release/papo_kernels.node': { copy: release } });
    const r = run();
    expect(r.error).toBeUndefined();
    expect(r.cpuLoss).toBeTypeOf('number');
    expect(r.loaded).toEqual([path.join(pkg, 'build', 'Release', 'papo_kernels.node')]);
  });

  it('a missing binary (install scripts skipped) says to run npm rebuild, with PAPO_UNSUPPORTED', () => {
    layout({});
    const r = run();
    expect(r.error?.code).toBe('PAPO_UNSUPPORTED');
    expect(r.error?.message).toContain("the native addon is not built (no papo_kernels.node in " + path.join(pkg, 'build', 'Release'));
    expect(r.error?.message).toContain("run 'npm rebuild papo-kernels'");
    expect(r.error?.message).not.toMatch(/'npm install'/);
    // the float64 reference needs no addon
    expect(r.backends).toEqual(['reference']);
    expect(r.reference).toBe(true);
  });

  it('a binary that does not load says so and to rebuild', () => {
    layout({ 'build/Release/papo_kernels.node': { text: 'not an ELF file' } });
    const r = run();
    expect(r.error?.code).toBe('PAPO_UNSUPPORTED');
    expect(r.error?.message).toMatch(/the native addon could not be loaded \(.*papo_kernels\.node.*\).*run 'npm rebuild papo-kernels'/s);
  });

  it('PAPO_CUDA_EMULATE=1 loads build/Emulated, and only it', () => {
    layout({ 'build/Release/papo_kernels.node': { copy: release }, 'build/Emulated/papo_kernels.node': { copy: release } });
    expect(run({ PAPO_CUDA_EMULATE: '1' }).loaded).toEqual([path.join(pkg, 'build', 'Emulated', 'papo_kernels.node')]);
    expect(run().loaded).toEqual([path.join(pkg, 'build', 'Release', 'papo_kernels.node')]);

    layout({});
    const r = run({ PAPO_CUDA_EMULATE: '1' });
    expect(r.loaded).toEqual([]);
    expect(r.error?.code).toBe('PAPO_UNSUPPORTED');
    expect(r.error?.message).toContain(`PAPO_CUDA_EMULATE=1 asks for the emulated build, but it is missing (${path.join(pkg, 'build', 'Emulated', 'papo_kernels.node')}), and so is the release build: it is a test tool of the papo-kernels repository, not part of the package: 'npm install' in a checkout of papo-kernels builds it`);
  });

  it('PAPO_CUDA_EMULATE=1 in a consumer install (no build/Emulated): cpu and auto work, cuda says how to build the emulated device', () => {
    layout({ 'build/Release/papo_kernels.node': { copy: release } });
    const r = run({ PAPO_CUDA_EMULATE: '1' }, cudaProbe);
    expect(r.error).toBeUndefined();
    expect(r.cpuLoss).toBeTypeOf('number');
    expect(r.autoBackend).toBe('cpu');
    expect(r.backends).toEqual(['reference', 'cpu']);
    expect(r.loaded).toEqual([path.join(pkg, 'build', 'Release', 'papo_kernels.node')]);
    const missing = `PAPO_CUDA_EMULATE=1 asks for the emulated CUDA device, but this install has none (${path.join(pkg, 'build', 'Emulated', 'papo_kernels.node')}): ` +
      "it is a test tool of the papo-kernels repository, not part of the package: 'npm install' in a checkout of papo-kernels builds it";
    expect(r.cudaError?.code).toBe('PAPO_UNSUPPORTED');
    expect(r.cudaError?.message).toContain(`backend 'cuda' is not available: ${missing}`);
    expect(r.cudaStatus).toContain(missing);
  });
});
