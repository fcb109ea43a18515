/**
 * The pipeline reads one way, down: src/smtp → src/policy → src/dkim →
 * src/spool → src/relay. A stage may import from the stages after it and
 * from the ground floor (envelope.ts, replies.ts, log.ts, …), never from a
 * stage before it. Read from the TypeScript sources' relative imports.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';

const SRC = path.resolve(__dirname, '../../../src');
const PIPELINE = ['smtp', 'policy', 'dkim', 'spool', 'relay'];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

function stageOf(file: string): number {
  return PIPELINE.indexOf(path.relative(SRC, file).split(path.sep)[0]!);
}

it('no import runs back up the pipeline', () => {
  const back: string[] = [];
  let seen = 0;
  for (const file of sources(SRC)) {
    const from = stageOf(file);
    if (from < 0) continue;
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
      seen++;
      const to = stageOf(path.resolve(path.dirname(file), m[1]!));
      if (to >= 0 && to < from) back.push(`${path.relative(SRC, file)} imports ${m[1]} (${PIPELINE[to]} comes before ${PIPELINE[from]})`);
    }
  }
  assert.ok(seen > 50, `read ${seen} imports: the sources were not found`);
  assert.deepEqual(back, []);
});
