#!/usr/bin/env bash
# One command for a GPU lease: the CUDA backend built for the lent GPU only, its tests against the hardware (the
# same assertions as on the emulated device), the sanitizers, and the benchmarks, everything written under $OUT.
#
#   bash scripts/gpu-check.sh pack                 here, before the lease: .gpu/ gets Node and node_modules
#   bash scripts/gpu-check.sh run [--quick]        on the lent machine (carry .gpu; DEVELOPERS.md)
#   bash scripts/gpu-check.sh run --emulate [--quick]   the rehearsal: the same steps on the emulated device
#
# The lent machine has no Node and no internet, so Node and node_modules travel compressed in .gpu/ (git ignores
# it). Every step runs even when an earlier one failed; $OUT/summary.txt lists each step's exit status, and the
# script's own status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

pack() {
  mkdir -p .gpu
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  xz -T2 -c "$(command -v node)" > .gpu/node.xz
  # Everything the build, the TypeScript compiler and vitest need; build/ and dist/ are made there. Not tfjs
  # (286 MB, past what a lease carries): the GPU steps neither test nor bench it (the bench skips its tfjs peer).
  tar -C "$ROOT" --exclude=node_modules/@tensorflow -cf - node_modules | xz -T2 -6 > .gpu/node_modules.tar.xz
  du -ch .gpu/* | tail -1
}

MODE=${1:-}
shift || true
EMULATE=0
QUICK=0
for a in "$@"; do
  case "$a" in
    --emulate) EMULATE=1 ;;
    --quick) QUICK=1 ;;
    *) echo "gpu-check: unknown option $a" >&2; exit 2 ;;
  esac
done
case "$MODE" in
  pack) pack; exit $? ;;
  run) ;;
  *) echo "usage: bash scripts/gpu-check.sh pack | run [--emulate] [--quick]" >&2; exit 2 ;;
esac

OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0

# step NAME COMMAND...: runs it with its output in $OUT/NAME.log, records the status, never stops the script.
step() {
  local name=$1
  shift
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$SUMMARY"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'
  if [ $rc -ne 0 ] && [ $STATUS -eq 0 ]; then STATUS=$rc; fi
  return $rc
}

# ---- Node and node_modules ----------------------------------------------------------------------------------
if ! command -v node > /dev/null; then
  if [ -f .gpu/node.xz ]; then
    xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  else
    echo "gpu-check: no node and no .gpu/node.xz (run 'bash scripts/gpu-check.sh pack' here first)" | tee -a "$SUMMARY"
    exit 1
  fi
fi
if [ ! -d node_modules ] && [ -f .gpu/node_modules.tar.xz ]; then
  xz -dc .gpu/node_modules.tar.xz | tar -C "$ROOT" -xf -
fi

# ---- the machine --------------------------------------------------------------------------------------------
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $COMMIT"
  echo "node: $(node --version)"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null || echo "no nvidia-smi"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" | tee -a "$SUMMARY"

if [ $EMULATE -eq 1 ]; then
  export PAPO_CUDA_TARGET=emulated
  export PAPO_EMULATED_BUILD=1
  CUDA_TEST=build/Emulated/papo_cuda_test
else
  export PAPO_CUDA_TARGET=hardware
  export PAPO_EMULATED_BUILD=0
  export PAPO_TEST_PROGRAMS=1
  CUDA_TEST=build/Release/papo_cuda_test
  # build-addon.js builds for this machine's GPUs only (nvidia-smi), not the ten architectures of the default
  # list that would spend the lease compiling; the build's summary line says which.
fi

# ---- build --------------------------------------------------------------------------------------------------
rm -rf build
step build node scripts/build-addon.js
# --noCheck: emit only (the types were checked where the package was packed, and tfjs, which lib/tfjs.ts, the
# example and the bench's tfjs peer import, is not carried).
step typescript node node_modules/typescript/bin/tsc -p tsconfig.json --noCheck

# ---- correctness --------------------------------------------------------------------------------------------
step papo_cuda_test "$CUDA_TEST"
# Each kernel version's suite in a process of its own (test/cuda-kernels/: PAPO_CUDA_* are read once per process).
step vitest-cuda node node_modules/vitest/vitest.mjs run test/cuda.test.ts test/cuda-kernels/ test/cuda-emulator.test.ts \
  test/cuda-contexts.test.ts test/cuda-absent.test.ts test/cuda-vocab-split.test.ts --reporter=verbose
if [ $EMULATE -eq 0 ]; then
  if command -v compute-sanitizer > /dev/null; then
    # Once per lease (DEVELOPERS.md): memory errors, then shared-memory races, on the kernels' own tests.
    step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$CUDA_TEST"
    step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$CUDA_TEST"
  else
    echo "== sanitizers: compute-sanitizer not on this machine (skipped)" | tee -a "$SUMMARY"
  fi
fi

# ---- benchmarks ---------------------------------------------------------------------------------------------
if [ $EMULATE -eq 1 ]; then
  # The emulator says nothing about speed: run the benchmark code paths on tiny shapes, to prove they work.
  step bench-kernels "$CUDA_TEST" --bench 8 1000
  step bench-node-tiny node dist/bench/run.js --tiny
else
  if [ $QUICK -eq 1 ]; then BENCH_N=2048; else BENCH_N=8192; fi
  step bench-kernels "$CUDA_TEST" --bench "$BENCH_N" 151936
  step bench-kernels-32k "$CUDA_TEST" --bench "$BENCH_N" 32000
  if [ $QUICK -eq 0 ]; then
    step bench-node node dist/bench/run.js --no-save
    if python3 -c 'import torch; assert torch.cuda.is_available()' 2> /dev/null; then
      # The peer is a fair baseline only if it computes the package's objective: checked on the reference's values.
      step torch-peer-check bash -c "node dist/bench/torch-fixture.js > '$OUT/torch-fixture.json' &&
        python3 bench/torch_peer.py --check '$OUT/torch-fixture.json'"
      step bench-torch python3 bench/torch_peer.py --no-save
    else
      echo "== bench-torch: no PyTorch with CUDA here (skipped)" | tee -a "$SUMMARY"
    fi
  fi
fi

# The kernels' rows as JSON lines, ready for bench/results/gpu.jsonl (add date, driver and commit there).
grep -h '^JSON ' "$OUT"/bench-kernels*.log 2> /dev/null | sed 's/^JSON //' > "$OUT/kernels.jsonl" || true
echo "== kernels.jsonl: $(wc -l < "$OUT/kernels.jsonl") rows" | tee -a "$SUMMARY"

echo "gpu-check: status $STATUS; logs in $OUT" | tee -a "$SUMMARY"
exit $STATUS
