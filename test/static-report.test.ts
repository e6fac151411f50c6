// The static report's checks (bench/kernel-resources.ts, bench/static-report.ts): its parsers on fixed text, and
// the one rule it enforces, that no hot kernel (k1/k2's papo_rows, k3's papo_rows_k3, k4's papo_rows_k4, a vocabulary
// shard's) spills on sm_90, by compiling those files for sm_90 (10-30 s on 2 cores). Skipped where there is no nvcc.
import { describe, expect, it } from 'vitest';
import { compileKernels, findNvcc, parsePtxasLog, rowLoops, workLoops } from '../bench/kernel-resources';
import { serialSection } from '../bench/serial-section';
import { blocksPerSm, predictionTable } from '../bench/static-report';
import type { KernelResources } from '../bench/kernel-resources';

const nvcc = findNvcc();

describe('static report: parsers', () => {
  it('reads registers, spills, stack and shared memory per entry from ptxas -v', () => {
    const log = [
      "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'",
      'ptxas info    : Function properties for _Z1kv',
      '    64 bytes stack frame, 172 bytes spill stores, 160 bytes spill loads',
      'ptxas info    : Used 64 registers, used 1 barriers, 64 bytes cumulative stack size, 488 bytes smem',
      "ptxas info    : Compiling entry function '_Z1jv' for 'sm_90'",
      'ptxas info    : Function properties for _Z1jv',
      '    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads',
      'ptxas info    : Used 85 registers, used 1 barriers',
      'ptxas info    : Function properties for _Z6calleev',  // a device function the entry calls, out of line
      '    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads',
    ].join('\n');
    const r = parsePtxasLog(log, 90);
    expect(r.map(({ kernel, registers, spillStores, spillLoads, stack, smem }) => ({ kernel, registers, spillStores, spillLoads, stack, smem })))
      .toEqual([{ kernel: 'k', registers: 64, spillStores: 172, spillLoads: 160, stack: 64, smem: 488 },
        { kernel: 'j', registers: 85, spillStores: 12, spillLoads: 8, stack: 16, smem: 0 }]);
  });

  it('occupancy from registers, shared memory and threads (sm_80 / sm_90 limits)', () => {
    expect(blocksPerSm(90, 64, 488)).toBe(2);       // 64 x 512 = half the register file
    expect(blocksPerSm(90, 65, 488)).toBe(1);       // rounded up to 72 per thread
    expect(blocksPerSm(90, 32, 488)).toBe(4);       // the 64-warp limit
    expect(blocksPerSm(90, 32, 152448)).toBe(1);    // k3's slices at V = 151936
    expect(blocksPerSm(90, 32, 200000)).toBe(1);
    expect(blocksPerSm(80, 32, 200000)).toBe(0);    // more than sm_80's 163 KB a block
    expect(blocksPerSm(90, 40, 0, 256)).toBe(6);    // 40 x 32 = 1280 per warp, 8 warps a block
  });

  it('finds a row loop\'s common path, skipping the misaligned path, and counts its vectors and exps', () => {
    const ptx = `.visible .entry _Z1kv(
	.param .u64 p
)
{
	mov.u32 	%r1, 0;
$L__BB0_1:
	and.b64 	%rd2, %rd1, 15;
	setp.eq.s64 	%p1, %rd2, 0;
	@%p1 bra 	$L__BB0_3;
	ld.global.u16 	%rs1, [%rd1];
	ld.global.u16 	%rs2, [%rd1+2];
	bra.uni 	$L__BB0_4;
$L__BB0_3:
	ld.global.v4.u32 	{%r2, %r3, %r4, %r5}, [%rd1];
$L__BB0_4:
	ex2.approx.ftz.f32 	%f1, %f2;
	ex2.approx.f32 	%f3, %f4;
	add.s64 	%rd1, %rd1, 16;
	setp.lt.s64 	%p2, %rd1, %rd3;
	@%p2 bra 	$L__BB0_1;
	ret;
}
`;
    expect(rowLoops(ptx).get('_Z1kv')).toEqual([{ kind: 'stats', instructions: 9, vectors: 1, exps: 2, expsFtz: 1 }]);
  });

  it('finds k3\'s serial section between two cluster barriers, not the stretch with block barriers, and its loops apart', () => {
    const body = `_Z1kv(
)
{
$L__BB0_1:
	barrier.cluster.arrive.release.aligned;
	barrier.cluster.wait.acquire.aligned;
	ld.shared.f32 	%f1, [%r1];
	@%p1 bra 	$L__BB0_3;
	ld.global.f32 	%f2, [%rd1];
	ld.f32 	%f3, [%rd2];
$L__BB0_2:
	ld.global.u16 	%rs1, [%rd3];
	add.s64 	%rd3, %rd3, 2;
	@%p2 bra 	$L__BB0_2;
	div.rn.f64 	%fd1, %fd2, %fd3;
$L__BB0_3:
	st.u32 	[%rd4], %r2;
	barrier.cluster.arrive.release.aligned;
	barrier.cluster.wait.acquire.aligned;
	ld.shared.v4.u32 	{%r3, %r4, %r5, %r6}, [%r7];
	bar.sync 	0;
	@%p3 bra 	$L__BB0_1;
	ret;
}
`;
    const s = serialSection(body)!;
    expect({ ...s, inLoops: undefined }).toEqual({ instructions: 6, f64: 1, globalLoads: 1, genericLoads: 1, sharedLoads: 1,
      globalStores: 0, genericStores: 1, f64Divisions: 1, inLoops: undefined });
    expect(s.inLoops).toMatchObject({ instructions: 3, globalLoads: 1 });
    expect(serialSection(body.replace(/barrier\.cluster\.\w+\.\w+\.aligned;/g, 'nop;'))).toBeNull();
  });

  it('prices an iteration of the work loop outside its row loops: the shortest way through them, rare paths left out', () => {
    // Head (3), the statistics loop (free), 3 after it, then either the gradients (2 before their loop, the loop
    // free) or straight to the latch (2); a rare path of 6 back into the statistics loop, laid out after the end.
    const ptx = `.visible .entry _Z1wv(
	.param .u64 p
)
{
	mov.u32 	%r1, 0;
$L__BB0_1:
	add.s32 	%r1, %r1, 1;
	setp.eq.s32 	%p1, %r1, 7;
	@%p1 bra 	$L__BB0_9;
$L__BB0_2:
	ld.global.v4.u32 	{%r2, %r3, %r4, %r5}, [%rd1];
	ex2.approx.ftz.f32 	%f1, %f2;
	setp.lt.s64 	%p2, %rd1, %rd3;
	@%p2 bra 	$L__BB0_2;
	bar.sync 	0;
	setp.eq.s32 	%p5, %r1, 3;
	@%p5 bra 	$L__BB0_5;
	mul.lo.s32 	%r6, %r1, 3;
	add.s32 	%r7, %r6, 1;
$L__BB0_4:
	ld.global.v4.u32 	{%r2, %r3, %r4, %r5}, [%rd1];
	ex2.approx.ftz.f32 	%f1, %f2;
	st.global.v4.u32 	[%rd2], {%r2, %r3, %r4, %r5};
	setp.lt.s64 	%p3, %rd1, %rd3;
	@%p3 bra 	$L__BB0_4;
$L__BB0_5:
	setp.lt.s32 	%p4, %r1, 100;
	@%p4 bra 	$L__BB0_1;
	ret;
$L__BB0_9:
	mul.lo.s32 	%r8, %r1, 5;
	mul.lo.s32 	%r8, %r8, 5;
	mul.lo.s32 	%r8, %r8, 5;
	mul.lo.s32 	%r8, %r8, 5;
	mul.lo.s32 	%r8, %r8, 5;
	bra.uni 	$L__BB0_2;
}
`;
    expect(workLoops(ptx).get('_Z1wv')).toEqual({ stats: 8, grad: 10, both: 10 });
  });
});

describe('static report: the predictions papo_cuda_test --bench prints', () => {
  // Two kernels' resources as ptxas and the PTX would give them: 10 instructions and one exp per element in the
  // statistics loop, 8 and one in the gradient loop, no spills.
  const kernel = (name: string, t: 'BF16' | 'F32'): KernelResources => ({ kernel: `${name}<${t}, ${t}>`, arch: 90,
    registers: 64, spillStores: 0, spillLoads: 0, stack: 0, smem: 424, loops: [
      { kind: 'stats', instructions: 80, vectors: 1, exps: 8, expsFtz: 8, elements: 8, perElement: 10 },
      { kind: 'grad', instructions: 64, vectors: 1, exps: 8, expsFtz: 8, elements: 8, perElement: 8 }] });
  const rows = predictionTable([kernel('papo_rows', 'BF16'), kernel('papo_rows', 'F32'), kernel('papo_rows_k3', 'BF16')], 'abc1234')
    .trim().split('\n');
  const find = (gpu: string, kase: string, version: string, dtype: string, N: number, V: number) =>
    rows.map((l) => l.split('\t')).find((f) => f[0] === gpu && f[1] === kase && f[2] === version && f[3] === dtype &&
      f[4] === String(N) && f[5] === String(V));

  it('says where it comes from, then one tab-separated row of 9 fields per GPU, case, version, dtype and shape', () => {
    expect(rows[0]).toMatch(/^# napkin prediction by bench\/static-report.ts at commit abc1234/);
    expect(rows[1]).toBe('gpu\tcase\tversion\tdtype\tN\tV\tms\tratio\tbound');
    for (const r of rows.slice(2)) expect(r.split('\t')).toHaveLength(9);
  });

  it('models each case\'s own bytes: k3 both paths at the copy rate, k1 reading each row twice, the forward alone once', () => {
    // bf16, N = 8192, V = 151936: the minimal bytes are 4 x N x V x 2 (both rows read, both gradients written)
    const E = 8192 * 151936, h200 = 4.8e12;
    const k3 = find('H200', 'fwd+bwd both paths', 'k3', 'bfloat16', 8192, 151936)!;
    expect(Number(k3[6])).toBeCloseTo((4 * E * 2) / h200 * 1e3, 3);
    expect([k3[7], k3[8]]).toEqual(['1.0000', 'bytes']);
    const k1 = find('H200', 'fwd+bwd both paths', 'k1', 'bfloat16', 8192, 151936)!;
    expect(Number(k1[7])).toBeCloseTo(1.5, 4);
    const fwd = find('H200', 'forward only (1 path)', 'k1', 'bfloat16', 8192, 151936)!;
    expect(Number(fwd[6])).toBeCloseTo((E * 2) / h200 * 1e3, 3);
    // detached: both rows read, one gradient read again and written: (2 + 2) / (2 + 1)
    expect(Number(find('H200', 'fwd+bwd detachMasked', 'k1', 'bfloat16', 8192, 151936)![7])).toBeCloseTo(4 / 3, 4);
    // every shape scripts/gpu-check.sh benchmarks
    for (const [N, V] of [[8192, 151936], [8192, 32000], [2048, 151936], [2048, 32000]])
      expect(find('H100 SXM', 'fwd+bwd in place', 'k1', 'float32', N, V), `${N} x ${V}`).toBeDefined();
    expect(find('H200', 'fwd+bwd both paths', 'k3', 'float32', 8192, 151936)).toBeUndefined();  // no such kernel given
  });
});

describe.skipIf(!nvcc)('static report: the hot kernels on sm_90', () => {
  it('no hot kernel spills, the report finds their row loops, and k3\'s serial section reads nothing from global memory or other blocks', () => {
    const ks = [...compileKernels(nvcc!, 'native/cuda/kernels/k1_k2_rows.cu', 90),
      ...compileKernels(nvcc!, 'native/cuda/kernels/k3_cluster.cu', 90),
      ...compileKernels(nvcc!, 'native/cuda/kernels/k4_split.cu', 90)];
    const hot = ks.filter((k) => /^papo_rows(_k3|_k4)?</.test(k.kernel));
    expect(hot.map((k) => k.kernel).sort()).toHaveLength(15);  // five type instances each
    for (const k of hot) {
      expect({ kernel: k.kernel, spills: k.spillStores + k.spillLoads }).toEqual({ kernel: k.kernel, spills: 0 });
      expect(k.loops.some((l) => l.kind === 'stats') && k.loops.some((l) => l.kind === 'grad')).toBe(true);
      if (!k.kernel.startsWith('papo_rows_k3')) continue;
      // What bench/static-report.ts's K3_SERIAL assumes: outside the bad-row scan, no global load, no load
      // through a generic pointer (another block's shared memory), and the row's results stored after it.
      const x = k.serial;
      expect(x, `${k.kernel}: a serial section`).not.toBeNull();
      expect({ kernel: k.kernel, globalLoads: x!.globalLoads, genericLoads: x!.genericLoads, globalStores: x!.globalStores })
        .toEqual({ kernel: k.kernel, globalLoads: 0, genericLoads: 0, globalStores: 0 });
    }
  }, 300_000);

  it("a vocabulary shard's kernels do not spill either, and the report finds their row loops", () => {
    const ks = compileKernels(nvcc!, 'native/cuda/kernels/vocab_shard.cu', 90);
    // three input types of the statistics, five type pairs of the gradient, and the forward from statistics
    expect(ks.map((k) => k.kernel.replace(/<.*/, ''))).toEqual([...Array(3).fill('vocab_shard_stats_rows'),
      ...Array(5).fill('vocab_shard_grad'), 'vocab_shard_rows']);
    for (const k of ks) {
      expect({ kernel: k.kernel, spills: k.spillStores + k.spillLoads }).toEqual({ kernel: k.kernel, spills: 0 });
      const kind = k.kernel.startsWith('vocab_shard_stats') ? 'stats' : k.kernel.startsWith('vocab_shard_grad') ? 'grad' : null;
      if (kind) expect(k.loops.some((l) => l.kind === kind), k.kernel).toBe(true);
    }
  }, 300_000);
});
