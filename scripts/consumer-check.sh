#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, the tarball installed into a scratch project in a temporary folder,
# then TypeScript under `strict` (no skipLibCheck, so the package's .d.ts files are checked too) from an ES module
# (.mts), a CommonJS module (.cts) and an old-style `module: commonjs` project, each compiled and run: a small
# papoLoss whose loss is finite and whose gradient is read without a cast; and the `papo-kernels/tfjs` subpath
# with tfjs-core as the application installs it (the optional peer), its gradient taken by tf.grads.
#
# The install builds CPU-only (PAPO_CPU_ONLY=1) to stay within a couple of minutes on a 2-core machine; the CUDA
# side of a consumer's build differs only in what CMake compiles. Offline: the npm registry is the only source.
#
#   bash scripts/consumer-check.sh          (CI runs it after npm test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TSC=(node "$ROOT/node_modules/typescript/bin/tsc")
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/papo-consumer.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
START=$SECONDS
PASSED=0
FAILED=0

# check NAME COMMAND...: runs it quietly; on failure prints its output.
check() {
  local name=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    printf '%s\n' "$out" | tail -n 40 | sed 's/^/     | /'
  fi
}

# ---- the tarball ------------------------------------------------------------------------------------------------
# npm pack runs `prepare` (tsc) first, whose errors would otherwise go unseen.
if ! npm pack --pack-destination "$SCRATCH" > "$SCRATCH/pack.log" 2>&1; then
  tail -n 40 "$SCRATCH/pack.log"
  echo "consumer-check: npm pack failed"
  exit 1
fi
TARBALL=$(ls "$SCRATCH"/papo-kernels-*.tgz)
tar -tzf "$TARBALL" | sed 's#^package/##' | sort > "$SCRATCH/contents.txt"
echo "packed $(basename "$TARBALL"): $(wc -l < "$SCRATCH/contents.txt") files, $(du -k "$TARBALL" | cut -f1) KB"

contents_ok() {
  local missing=0 f
  for f in package.json README.md LICENSE CMakeLists.txt binding.gyp docs/objective.md dist/lib/index.js \
           dist/lib/index.d.ts scripts/build-addon.js scripts/cuda-archs.js native/core/token_math.h native/napi/addon.cpp; do
    grep -qx "$f" "$SCRATCH/contents.txt" || { echo "missing: $f"; missing=1; }
  done
  # Built or generated things, and what only this repository uses, stay out.
  if grep -E '^(build|bench|test|tools|examples|\.ci|\.gpu|dist/(bench|test))/|\.(node|o|a|so|tgz|jsonl)$|(^|/)(papo_cuda_test|emulator_test)$|(^|/)node_modules/' \
       "$SCRATCH/contents.txt"; then
    echo "^ should not be in the package"
    missing=1
  fi
  return $missing
}
check "the tarball holds the sources, dist/lib and docs, and no build output, tests or benchmarks" contents_ok

# The registry shows the packed README: a relative link or image there must lead to a file of the tarball (the rest
# link absolutely to the repository).
readme_links_ok() {
  local bad=0 target
  tar -xzf "$TARBALL" -C "$SCRATCH" package/README.md
  while read -r target; do
    target=${target%%#*}
    [ -z "$target" ] && continue
    grep -qx "$target" "$SCRATCH/contents.txt" || { echo "README links to $target, which is not in the package"; bad=1; }
  done < <(grep -oE '\]\([^)]+\)' "$SCRATCH/package/README.md" | sed -E 's/^\]\(//; s/\)$//' | grep -vE '^(https?:|mailto:|#)')
  return $bad
}
check "every relative link of the packed README leads to a file in the package" readme_links_ok

# ---- the install ------------------------------------------------------------------------------------------------
APP="$SCRATCH/app"
mkdir -p "$APP"
cat > "$APP/package.json" <<'EOF'
{ "name": "papo-consumer-check", "version": "1.0.0", "private": true }
EOF
INSTALL_START=$SECONDS
if ! (cd "$APP" && PAPO_CPU_ONLY=1 npm install --no-audit --no-fund --foreground-scripts "$TARBALL" '@types/node@^20' \
      '@tensorflow/tfjs-core@^4' '@tensorflow/tfjs-backend-cpu@^4' \
      > "$SCRATCH/install.log" 2>&1); then
  tail -n 60 "$SCRATCH/install.log"
  echo "consumer-check: the install failed"
  exit 1
fi
PKG="$APP/node_modules/papo-kernels"
echo "installed in $((SECONDS - INSTALL_START)) s: $(grep -o 'papo-kernels [0-9.]*: built .*' "$SCRATCH/install.log" || echo 'no summary line')"

build_is_addon_only() {
  local files
  files=$(cd "$PKG" && find build -mindepth 1 | sort | tr '\n' ' ')
  echo "build/: $files($(du -sk "$PKG/build" | cut -f1) KB)"
  [ "$files" = "build/Release build/Release/papo_kernels.node " ]
}
check "the install leaves build/Release/papo_kernels.node alone (no objects, test programs or emulated build)" build_is_addon_only
check "the install summary says what was built and pruned" \
  grep -Eq 'papo-kernels [0-9.]+: built with cmake-js in [0-9]+ s: cpu .*CUDA skipped: PAPO_CPU_ONLY is set; build/ pruned to build/Release/papo_kernels.node' \
  "$SCRATCH/install.log"
no_install_noise() {
  ! grep -E 'Not searching for unused variables|Unable to find cublas' "$SCRATCH/install.log"
}
check "the install prints no cmake noise" no_install_noise

# ---- the README's quick start, as written -------------------------------------------------------------------------
# The first ts block after "## Quick start", unchanged, as an ES module of a strict nodenext project of its own.
QUICK="$SCRATCH/app/quick"
mkdir -p "$QUICK"
awk '/^## Quick start/ { on = 1 } on && /^```ts$/ { inblock = 1; next } inblock && /^```$/ { exit } inblock { print }' \
  "$ROOT/README.md" > "$QUICK/quick-start.mts"
quick_start_extracted() {
  [ "$(wc -l < "$QUICK/quick-start.mts")" -ge 10 ] && grep -q "from 'papo-kernels'" "$QUICK/quick-start.mts"
}
check "the README has a TypeScript quick start ($(wc -l < "$QUICK/quick-start.mts") lines)" quick_start_extracted
cat > "$QUICK/tsconfig.json" <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022", "module": "nodenext", "moduleResolution": "nodenext", "strict": true,
    "skipLibCheck": false, "types": ["node"], "outDir": "out"
  },
  "include": ["quick-start.mts"]
}
EOF
check "tsc --strict: the README's quick start, unchanged (module nodenext)" "${TSC[@]}" -p "$QUICK/tsconfig.json"
quick_start_runs() {
  local out
  out=$(node "$QUICK/out/quick-start.mjs") || return 1
  echo "$out"
  grep -Eq '^loss -?[0-9.]+, perception KL [0-9.]+ \(cpu\)$' <<< "$out" &&
    grep -Fq "dL/dlogits [ 4, 32000 ] dL/dmaskedLogits [ 4, 32000 ]" <<< "$out"
}
check "the README's quick start runs: a finite loss and both gradients" quick_start_runs

# ---- TypeScript under strict, from ESM and CommonJS -------------------------------------------------------------
# The same small call from each: host logits, so r.gradLogits is a Tensor and .data needs no cast.
body() {
  cat <<'EOF'
const N = 3;
const V = 8;
const values = (shift: number) => Float32Array.from({ length: N * V }, (_, i) => Math.sin(i * 0.7 + shift));
const inputs = {
  logits: { data: values(0), dims: [N, V], type: 'float32' as const },
  maskedLogits: { data: values(0.3), dims: [N, V], type: 'float32' as const },
  tokens: Int32Array.of(1, 5, 2),
  advantages: [1, -0.5, 0.25],
  refLogProbs: Float32Array.of(-2, -2.5, -1.5),
};
function checkResult(where: string, loss: number, grad: Float32Array | Uint16Array | undefined): void {
  if (!Number.isFinite(loss)) throw new Error(`${where}: loss ${loss} is not finite`);
  if (!grad || grad.length !== N * V || !grad.some((g) => g !== 0)) throw new Error(`${where}: no gradient`);
  console.log(`${where}: loss ${loss.toFixed(6)}, gradient of ${grad.length} elements`);
}
EOF
}
mkdir -p "$APP/src" "$APP/legacy"
{
  echo "import { info, isDeviceTensor, papoLoss, papoLossSync, type Tensor } from 'papo-kernels';"
  body
  cat <<'EOF'
const r = await papoLoss(inputs, { preset: 'papo-g' });
checkResult('esm papoLoss', r.loss, r.gradLogits?.data);
const s = papoLossSync(inputs, { preset: 'papo-g' });
const g: Tensor | undefined = s.gradMaskedLogits;
checkResult('esm papoLossSync', s.loss, g?.data);
if (isDeviceTensor(s.gradLogits) || s.backend !== 'cpu' || info().cpuIsa === 'none') throw new Error('esm: not the cpu backend');
EOF
} > "$APP/src/esm.mts"
{
  echo "import papo = require('papo-kernels');"
  body
  cat <<'EOF'
const s = papo.papoLossSync(inputs, { preset: 'papo-g' });
checkResult('cjs papoLossSync', s.loss, s.gradLogits?.data);
papo.papoLoss(inputs).then((r) => checkResult('cjs papoLoss', r.loss, r.gradMaskedLogits?.data)).catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
EOF
} > "$APP/src/cjs.cts"
{
  echo "import { papoLossSync } from 'papo-kernels';"
  body
  echo "const s = papoLossSync(inputs);"
  echo "checkResult('commonjs/node10 papoLossSync', s.loss, s.gradLogits?.data);"
} > "$APP/legacy/main.ts"
# tsconfig DIR MODULE RESOLUTION INCLUDE: strict, and skipLibCheck off so the package's .d.ts files count.
# "long": tfjs-core's own .d.ts files name the global Long of @types/long (its dependency).
tsconfig() {
  cat > "$1/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "target": "ES2022", "module": "$2", "moduleResolution": "$3", "strict": true,
    "skipLibCheck": false, "types": ["node", "long"], "outDir": "out"
  },
  "include": ["$4"]
}
EOF
}
# The tfjs subpath: resolved through "exports" (nodenext) and "typesVersions" (node10), types checked under strict.
{
  echo "import * as tf from '@tensorflow/tfjs-core';"
  echo "import '@tensorflow/tfjs-backend-cpu';"
  echo "import { logProbs, papoLossOp } from 'papo-kernels/tfjs';"
  cat <<'EOF'
const z = tf.randomNormal([4, 16], 0, 2, 'float32', 1);
const zm = tf.randomNormal([4, 16], 0, 2, 'float32', 2);
const op = papoLossOp({ tokens: Int32Array.of(1, 2, 3, 4), advantages: [1, -1, 0.5, -0.5], refLogProbs: new Float32Array(4).fill(-3) });
const [g, gm] = tf.grads((a: tf.Tensor, b: tf.Tensor) => op(a, b))([z, zm]);
const loss = op.lastResult?.loss ?? NaN;
if (!Number.isFinite(loss) || g.shape.join() !== '4,16' || gm.shape.join() !== '4,16') throw new Error('tfjs: bad result');
const lp = logProbs(z, Int32Array.of(1, 2, 3, 4)).logProbs.dataSync();
if (lp.length !== 4 || !lp.every((x) => x < 0)) throw new Error('tfjs: bad logProbs');
console.log(`tfjs papoLossOp: loss ${loss.toFixed(6)}, gradients ${g.shape} and ${gm.shape}`);
EOF
} > "$APP/src/tfjs.mts"
echo "import { papoLossOp } from 'papo-kernels/tfjs';" >> "$APP/legacy/main.ts"
echo "if (typeof papoLossOp !== 'function') throw new Error('papo-kernels/tfjs');" >> "$APP/legacy/main.ts"
tsconfig "$APP" nodenext nodenext src
tsconfig "$APP/legacy" commonjs node main.ts
check "tsc --strict: an ES module (.mts) and a CommonJS module (.cts), module nodenext" "${TSC[@]}" -p "$APP/tsconfig.json"
check "tsc --strict: a module commonjs / moduleResolution node project" "${TSC[@]}" -p "$APP/legacy/tsconfig.json"
check "the ES module runs" node "$APP/out/esm.mjs"
check "the CommonJS module runs" node "$APP/out/cjs.cjs"
check "papo-kernels/tfjs runs with tfjs-core and its CPU backend (tf.grads through papoLossOp)" node "$APP/out/tfjs.mjs"
check "the commonjs/node10 project runs" node "$APP/legacy/out/main.js"

echo "consumer check took $((SECONDS - START)) s"
echo "consumer-check: ${PASSED} passed, ${FAILED} failed"
[ "$FAILED" -eq 0 ]
