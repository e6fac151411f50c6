// The static report's checks (bench/kernel-resources.ts, bench/static-report.ts): its parsers on fixed text, and
// the one rule it enforces, that no hot kernel (k1/k2's papo_rows, k3's papo_rows_k3, k4's papo_rows_k4) spills
// on sm_90, by compiling those three files for sm_90 (14-27 s on 2 cores, as measured). Skipped where there is no nvcc.
import { describe, expect, it } from 'vitest';
import { compileKernels, findNvcc, parsePtxasLog, rowLoops, workLoops } from '../bench/kernel-resources';
import { blocksPerSm } from '../bench/static-report';

const nvcc = findNvcc();

describe('static report: parsers', () => {
  it('reads registers, spills, stack and shared memory per entry from ptxas -v', () => {
    const log = [
      "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'",
      'ptxas info    : Function properties for _Z1kv',
      '    64 bytes stack frame, 172 bytes spill stores, 160 bytes spill loads',
      'ptxas info    : Used 64 registers, used 1 barriers, 64 bytes cumulative stack size, 488 bytes smem',
      "ptxas info    : Compiling entry function '_Z1jv' for 'sm_90'",
      '    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads',
      'ptxas info    : Used 85 registers, used 1 barriers',
    ].join('\n');
    const r = parsePtxasLog(log, 90);
    expect(r.map(({ kernel, registers, spillStores, spillLoads, stack, smem }) => ({ kernel, registers, spillStores, spillLoads, stack, smem })))
      .toEqual([{ kernel: 'k', registers: 64, spillStores: 172, spillLoads: 160, stack: 64, smem: 488 },
        { kernel: 'j', registers: 85, spillStores: 0, spillLoads: 0, stack: 0, smem: 0 }]);
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

describe.skipIf(!nvcc)('static report: the hot kernels on sm_90', () => {
  it('no hot kernel spills, and the report finds their row loops', () => {
    const ks = [...compileKernels(nvcc!, 'native/cuda/kernels/k1_k2_rows.cu', 90),
      ...compileKernels(nvcc!, 'native/cuda/kernels/k3_cluster.cu', 90),
      ...compileKernels(nvcc!, 'native/cuda/kernels/k4_split.cu', 90)];
    const hot = ks.filter((k) => /^papo_rows(_k3|_k4)?</.test(k.kernel));
    expect(hot.map((k) => k.kernel).sort()).toHaveLength(15);  // five type instances each
    for (const k of hot) {
      expect({ kernel: k.kernel, spills: k.spillStores + k.spillLoads }).toEqual({ kernel: k.kernel, spills: 0 });
      expect(k.loops.some((l) => l.kind === 'stats') && k.loops.some((l) => l.kind === 'grad')).toBe(true);
    }
  }, 300_000);
});
