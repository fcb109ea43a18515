/**
 * No two source files import each other, however long the way round: a
 * circle means a type or helper lives in the wrong file (the shared part
 * belongs on a floor below both). Type-only imports count too: they tie the
 * files' meaning as much as a value does. Read from the TypeScript sources'
 * relative imports (`import`, `import type`, `export … from`, `import('…')`).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';

const SRC = path.resolve(__dirname, '../../../src');
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)'(\.{1,2}\/[^']+)'/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Each file with the files it imports; an import that names no source file is listed apart. */
function importGraph(files: readonly string[]): { graph: Map<string, Set<string>>; seen: number; unresolved: string[] } {
  const known = new Set(files);
  const graph = new Map<string, Set<string>>();
  const unresolved: string[] = [];
  let seen = 0;
  for (const file of files) {
    const to = new Set<string>();
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      seen++;
      const base = path.resolve(path.dirname(file), m[1]!);
      const target = [`${base}.ts`, path.join(base, 'index.ts')].find((f) => known.has(f));
      if (target) to.add(target);
      else unresolved.push(`${path.relative(SRC, file)} imports ${m[1]}`);
    }
    graph.set(file, to);
  }
  return { graph, seen, unresolved };
}

/** The strongly connected groups of more than one file (Tarjan). */
function circles(graph: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)!) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const group: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
    } while (w !== v);
    if (group.length > 1) found.push(group.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

/** The shortest way from the group's first file back to itself, inside the group: a -> b -> a. */
function chain(graph: ReadonlyMap<string, ReadonlySet<string>>, group: readonly string[]): string[] {
  const inGroup = new Set(group);
  const start = group[0]!;
  const from = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const v = queue[i]!;
    for (const w of graph.get(v)!) {
      if (!inGroup.has(w)) continue;
      if (w === start) {
        const way = [start];
        for (let u: string | undefined = v; u !== undefined && u !== start; u = from.get(u)) way.unshift(u);
        return [start, ...way];
      }
      if (!from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [...group, start];
}

it('no import circle among the sources', () => {
  const { graph, seen, unresolved } = importGraph(sources(SRC));
  assert.ok(seen > 300, `read ${seen} imports: the sources were not found`);
  assert.deepEqual(unresolved, [], 'relative imports this test cannot follow (it would miss their arrows)');
  const rel = (f: string) => path.relative(SRC, f);
  const found = circles(graph).map((group) => {
    const way = chain(graph, group);
    const rest = group.filter((f) => !way.includes(f));
    return `${way.map(rel).join(' -> ')}${rest.length ? ` (the circle also holds ${rest.map(rel).join(', ')})` : ''}`;
  });
  assert.deepEqual(found, []);
});
