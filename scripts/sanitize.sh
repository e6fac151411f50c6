#!/usr/bin/env bash
# The suite under AddressSanitizer and UndefinedBehaviorSanitizer: both addons (the real one, CPU only to keep
# the build short, and the emulated CUDA device's, which compiles the CUDA backend as C++) and the kernels' test
# programs built with -fsanitize=address,undefined into build-sanitize/, then `vitest run` on them with the ASan
# runtime preloaded into Node (which is not instrumented). A finding fails the run (halt_on_error, and UBSan
# made fatal); leaks are not checked (Node itself keeps memory to the end).
#
#   bash scripts/sanitize.sh                 (CI runs it after npm test)
#   bash scripts/sanitize.sh test/cpu.test.ts    (some test files only)
#
# cmake-js overwrites CMAKE_CXX_FLAGS, so the flags go in through CMAKE_CXX_FLAGS_RELEASE and the linker flags.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build-sanitize
START=$SECONDS
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
ASAN_LIB=$(g++ -print-file-name=libasan.so)
[ -f "$ASAN_LIB" ] || { echo "sanitize: no libasan.so from g++ ($ASAN_LIB)" >&2; exit 1; }

# The build is cmake-js's, as npm install runs it, pointed at another folder.
PAPO_CPU_ONLY=1 node node_modules/cmake-js/bin/cmake-js build --out "$OUT" --parallel "$(nproc)" --log-level warn \
  --CDPAPO_EMULATED=ON --CDPAPO_TEST_PROGRAMS=ON \
  "--CDCMAKE_CXX_FLAGS_RELEASE=-O1 -g $SAN" \
  "--CDCMAKE_SHARED_LINKER_FLAGS=$SAN" "--CDCMAKE_EXE_LINKER_FLAGS=$SAN"
BUILT=$((SECONDS - START))

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The native checks first: the emulator's own, and the kernels' test program on it.
LD_PRELOAD="$ASAN_LIB" "$OUT/Emulated/emulator_test" | tail -1
LD_PRELOAD="$ASAN_LIB" "$OUT/Emulated/papo_cuda_test" | tail -1
# Then the suite against the instrumented emulated addon (the CPU backend and the emulated CUDA one), and the
# CPU files again against the instrumented real addon. Child processes inherit both variables. The plain
# builds in build/ must exist too (npm run build): some tests run them directly.
export LD_PRELOAD="$ASAN_LIB"
PAPO_ADDON_PATH="$OUT/Emulated/papo_kernels.node" node node_modules/vitest/vitest.mjs run "$@"
PAPO_ADDON_PATH="$OUT/Release/papo_kernels.node" node node_modules/vitest/vitest.mjs run test/cpu.test.ts test/api.test.ts
echo "sanitize: built in ${BUILT} s, all in $((SECONDS - START)) s, no finding"
