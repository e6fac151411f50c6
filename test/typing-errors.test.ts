// What TypeScript says about a wrong tensor: the compile error must name the real problem (a Float64Array where
// `data` must be a Float32Array or Uint16Array), not a property of another member of the TensorLike union.
import * as path from 'node:path';
import * as ts from 'typescript';
import { describe, expect, it } from 'vitest';

/** Each source compiled as its own module in one program (strict), with its error messages. */
function diagnostics(sources: string[]): string[][] {
  const files = sources.map((_, i) => path.join(__dirname, 'types', `__typing-errors-${i}__.ts`));
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10,
    strict: true, noEmit: true, types: ['node'], skipLibCheck: true,
  };
  const host = ts.createCompilerHost(options);
  const [read, exists] = [host.readFile, host.fileExists];
  host.readFile = (f) => (files.includes(path.resolve(f)) ? sources[files.indexOf(path.resolve(f))] : read(f));
  host.fileExists = (f) => files.includes(path.resolve(f)) || exists(f);
  const program = ts.createProgram(files, options, host);
  return files.map((f) => ts.getPreEmitDiagnostics(program, program.getSourceFile(f))
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')));
}

const head = "import { papoLossSync } from '../../lib';\nconst [N, V] = [2, 3];\nconst tokens = [0, 1];\nconst advantages = [1, -1];\n";

describe('compile errors of a tensor literal', () => {
  it('accepts the literal written first (its type widens to string) and names data for a Float64Array', () => {
    const [good, first, inline] = diagnostics([
      "const logits = { data: new Float32Array(N * V), dims: [N, V], type: 'float32' };\n" +
        'papoLossSync({ logits, tokens, advantages }).gradLogits.data;\n',
      "const logits = { data: new Float64Array(N * V), dims: [N, V], type: 'float32' };\npapoLossSync({ logits, tokens, advantages });\n",
      "papoLossSync({ logits: { data: new Float64Array(N * V), dims: [N, V], type: 'float32' }, tokens, advantages });\n",
    ].map((s) => head + s));
    expect(good).toEqual([]);
    for (const errors of [first, inline]) {
      expect(errors.length).toBe(1);
      expect(errors[0]).toMatch(/Float64Array.*is not assignable to type 'TensorData'/s);
      expect(errors[0]).not.toMatch(/location/);
    }
  }, 60_000);
});
