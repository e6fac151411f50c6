// The shape of lib/: no module imports itself back through others (value imports only; `import type` is erased),
// and types.ts, the API contract, takes nothing from an implementation but the DeviceTensor class it names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const libDir = path.join(__dirname, '..', 'lib');

function valueImports(file: string): string[] {
  const src = fs.readFileSync(path.join(libDir, file), 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/^(?:import|export)\s+(?!type\b)[^'"]*?from\s+'\.\/([\w-]+)'/gm)) out.push(`${m[1]}.ts`);
  return out;
}

export function findCycle(graph: Map<string, string[]>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const n of graph.keys()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

describe('lib/ layout', () => {
  const files = fs.readdirSync(libDir).filter((f) => f.endsWith('.ts'));
  const graph = new Map(files.map((f) => [f, valueImports(f)]));

  it('the cycle finder finds a planted cycle', () => {
    expect(findCycle(new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']]]))).toEqual(['a.ts', 'b.ts', 'c.ts', 'a.ts']);
  });

  it('has no runtime import cycle', () => {
    expect(graph.size).toBeGreaterThan(10);
    expect(findCycle(graph)).toBeNull();
  });

  it('types.ts imports only types, and only from device-tensor.ts', () => {
    const src = fs.readFileSync(path.join(libDir, 'types.ts'), 'utf8');
    const imports = [...src.matchAll(/^import\b.*$/gm)].map((m) => m[0]);
    expect(imports).toEqual(["import type { DeviceTensor } from './device-tensor';"]);
  });
});
