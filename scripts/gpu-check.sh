#!/usr/bin/env bash
# One command for a GPU lease: the CUDA backend built for the lent GPU only, its tests against the hardware (the
# same assertions as on the emulated device), the kernels timed side by side, a few kernels under ncu, the
# sanitizers and the peers, everything written under $OUT.
#
#   bash scripts/gpu-check.sh pack                           here, before the lease: .gpu/ gets Node and node_modules
#   bash scripts/gpu-check.sh run [--budget S] [--quick]     on the lent machine (carry .gpu)
#   bash scripts/gpu-check.sh run --emulate [--budget S]     the rehearsal: the same steps on the emulated device
#
# A lease is minutes long and its start, idle time and retries all count, so the steps run in order of value, each
# under its own time limit, and a step starts only while the budget (default 420 s) still holds its limit: the
# script always ends inside the budget and keeps what the finished steps wrote. Every step runs even when an
# earlier one failed; the script's status is the first failure's.
#
# $OUT gets at most 8 files (what a lease brings back): summary.txt (the machine, each step's status and time),
# figures.jsonl (every timed row, kernels and peers), build.log, tests.log, bench.log, ncu.txt, sanitizer.txt and
# peers.log.
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

usage() {
  echo "usage: bash scripts/gpu-check.sh pack | run [--emulate] [--quick] [--budget SECONDS]" >&2
  exit 2
}

MODE=${1:-}
shift || true
EMULATE=0
QUICK=0
BUDGET=420
while [ $# -gt 0 ]; do
  case "$1" in
    --emulate) EMULATE=1 ;;
    --quick) QUICK=1 ;;
    --budget) shift; BUDGET=${1:-}; [[ "$BUDGET" =~ ^[0-9]+$ ]] || usage ;;
    *) echo "gpu-check: unknown option $1" >&2; usage ;;
  esac
  shift
done
case "$MODE" in
  pack) pack; exit $? ;;
  run) ;;
  *) usage ;;
esac

OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
FIGURES="$OUT/figures.jsonl"
: > "$SUMMARY"
: > "$FIGURES"
for f in build tests bench peers; do : > "$OUT/$f.log"; done
: > "$OUT/ncu.txt"
: > "$OUT/sanitizer.txt"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
STATUS=0
START=$SECONDS

say() { echo "$*" | tee -a "$SUMMARY"; }

# step LOG LIMIT NAME COMMAND...: runs COMMAND under `timeout LIMIT`, its output appended to $OUT/LOG, if the budget
# still holds LIMIT seconds; records the status and the time either way, never stops the script.
step() {
  local log=$1 limit=$2 name=$3
  shift 3
  local used=$((SECONDS - START))
  if [ $((used + limit)) -gt "$BUDGET" ]; then
    say "== $name: not started (at ${used} s of ${BUDGET}, it may take ${limit} s)"
    return 125
  fi
  local t0=$SECONDS
  say "== $name (limit ${limit} s): $*"
  echo "===== $name: $*" >> "$OUT/$log"
  timeout --kill-after=5 "$limit" "$@" >> "$OUT/$log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "   TIMED OUT after $((SECONDS - t0)) s"; else say "   exit $rc after $((SECONDS - t0)) s"; fi
  tail -n 4 "$OUT/$log" | sed 's/^/   | /'
  if [ $rc -ne 0 ] && [ $STATUS -eq 0 ]; then STATUS=$rc; fi
  return $rc
}

# The JSON lines a step printed ("JSON {...}"), into figures.jsonl as they are.
figures() { grep -h '^JSON ' "$@" 2> /dev/null | sed 's/^JSON //' >> "$FIGURES" || true; }

# ---- Node and node_modules ----------------------------------------------------------------------------------
if ! command -v node > /dev/null; then
  if [ -f .gpu/node.xz ]; then
    xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  else
    say "gpu-check: no node and no .gpu/node.xz (run 'bash scripts/gpu-check.sh pack' here first)"
    exit 1
  fi
fi
if [ ! -d node_modules ] && [ -f .gpu/node_modules.tar.xz ]; then
  xz -dc .gpu/node_modules.tar.xz | tar -C "$ROOT" -xf -
fi

# ---- the machine --------------------------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "budget: ${BUDGET} s"
  echo "cpus: $(nproc)"
  echo "node: $(node --version)"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.sm,clocks.mem --format=csv 2>/dev/null || echo "no nvidia-smi"
} | tee -a "$SUMMARY"

if [ $EMULATE -eq 1 ]; then
  export PAPO_CUDA_TARGET=emulated
  export PAPO_EMULATED_BUILD=1
  CUDA_TEST=build/Emulated/papo_cuda_test
else
  export PAPO_CUDA_TARGET=hardware
  export PAPO_EMULATED_BUILD=0
  export PAPO_TEST_PROGRAMS=1
  CUDA_TEST=build/Release/papo_cuda_test
  # build-addon.js builds for this machine's GPUs only (nvidia-smi), on every core, not the ten architectures of
  # the default list that would spend the lease compiling; the build's summary line says which.
fi

# ---- 1. build -----------------------------------------------------------------------------------------------
rm -rf build
step build.log 240 build node scripts/build-addon.js
# --noCheck: emit only (the types were checked where the package was packed, and tfjs, which lib/tfjs.ts, the
# example and the bench's tfjs peer import, is not carried).
step build.log 60 typescript node node_modules/typescript/bin/tsc -p tsconfig.json --noCheck

# ---- 2. correctness on the hardware -------------------------------------------------------------------------
step tests.log 60 papo_cuda_test "$CUDA_TEST"
# Each kernel version's suite in a process of its own (test/cuda-kernels/: PAPO_CUDA_* are read once per process).
step tests.log 150 vitest-cuda node node_modules/vitest/vitest.mjs run test/cuda*.test.ts test/cuda-kernels/ --reporter=dot

# ---- 3. every kernel timed side by side ---------------------------------------------------------------------
if [ $EMULATE -eq 1 ]; then
  # The emulator says nothing about speed: the benchmark's code paths on tiny shapes prove they run and report.
  BENCH_N=8; VOCABS="1000"
elif [ $QUICK -eq 1 ]; then
  BENCH_N=2048; VOCABS="151936"
else
  BENCH_N=8192; VOCABS="151936 32000"
fi
for V in $VOCABS; do
  step bench.log 120 "bench-kernels-$V" "$CUDA_TEST" --bench "$BENCH_N" "$V"
done
figures "$OUT/bench.log"

# ---- 4. ncu on the default, the best predicted, k3 and a same-bytes copy -----------------------------------
# --clock-control none: the lease leaves the card's clocks alone. One call of each after a warm-up one
# (papo_cuda_test --profile brackets it with cudaProfilerStart/Stop).
if [ $EMULATE -eq 0 ] && command -v ncu > /dev/null; then
  NCU_METRICS=dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum,\
sm__inst_issued.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,\
dram__throughput.avg.pct_of_peak_sustained_elapsed
  # k2 the default, k4 with 32 KB slices the best predicted for bf16 on an H200, k3 the other one-pass version.
  for what in k2 k4 k3 copy; do
    step ncu.txt 45 "ncu-$what" env PAPO_CUDA_K4_SLICE=2048 ncu --clock-control none --profile-from-start off \
      --metrics "$NCU_METRICS" "$CUDA_TEST" --profile "$what" "$BENCH_N" 151936 bfloat16
  done
elif [ $EMULATE -eq 1 ]; then
  step ncu.txt 60 "profile-mode" "$CUDA_TEST" --profile k2 8 1000 bfloat16
else
  say "== ncu: not on this machine (skipped)"
fi

# ---- 5. the sanitizers, on the parity run (small shapes: seconds) -------------------------------------------
if [ $EMULATE -eq 0 ] && command -v compute-sanitizer > /dev/null; then
  step sanitizer.txt 90 memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$CUDA_TEST"
  step sanitizer.txt 90 racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$CUDA_TEST"
elif [ $EMULATE -eq 0 ]; then
  say "== sanitizers: compute-sanitizer not on this machine (skipped)"
fi

# ---- 6. the package from Node, then the peers ---------------------------------------------------------------
if [ $EMULATE -eq 1 ]; then
  step bench.log 120 bench-node-tiny node dist/bench/run.js --tiny --no-save
elif [ $QUICK -eq 0 ]; then
  step bench.log 90 bench-node node dist/bench/run.js --no-save --json-lines
  figures "$OUT/bench.log"
fi
if python3 -c 'import torch; assert torch.cuda.is_available()' 2> /dev/null; then
  # The peer is a fair baseline only if it computes the package's objective: checked on the reference's values.
  if step peers.log 60 torch-peer-check bash -c "node dist/bench/torch-fixture.js > '$SCRATCH/fixture.json' &&
      python3 bench/torch_peer.py --check '$SCRATCH/fixture.json'"; then
    export PYTHONUNBUFFERED=1
    step peers.log 60 torch-eager python3 bench/torch_peer.py --no-save --json-lines --impl eager --n "$BENCH_N"
    # torch.compile compiles each shape first (tens of seconds): its own limit, and the rows it finished stay.
    step peers.log 150 torch-compile python3 bench/torch_peer.py --no-save --json-lines --impl compile --n "$BENCH_N"
    figures "$OUT/peers.log"
  fi
else
  say "== peers: no PyTorch with CUDA here (skipped)"
fi

say "== figures.jsonl: $(wc -l < "$FIGURES") rows"
say "gpu-check: status $STATUS after $((SECONDS - START)) s of ${BUDGET}; everything in $OUT"
exit $STATUS
