/**
 * `smarthost start` keeps V8's new space at two SEMI_SPACE_MB semi-spaces
 * (src/process/heap.ts): under allocation with survivors (sessions in
 * flight) V8 would grow it to 32 MB. Read in fresh processes, one with the
 * sizing and one without (the control shows the load makes new space grow).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { it } from 'node:test';
import { SEMI_SPACE_MB } from '../../src/process/heap';

const HEAP = path.resolve(__dirname, '../../src/process/heap.js');

/** Largest new space (MB) seen while short-lived objects, some surviving a while, are made between turns of the event loop. */
function peakNewSpace(sized: boolean): number {
  const script = `
    const v8 = require('node:v8');
    if (${sized}) require(${JSON.stringify(HEAP)}).sizeHeapForServer();
    (async () => {
      const ring = new Array(30000);
      let max = 0;
      for (let round = 0; round < 200; round++) {
        for (let i = 0; i < 5000; i++) ring[(round * 5000 + i) % ring.length] = { i, s: 'y' + i, b: [i, round] };
        await new Promise((r) => setImmediate(r));
        max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
      }
      console.log(max / 1048576);
    })();`;
  return Number(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }));
}

it('new space stays at its cap under load, where it would grow without it', () => {
  const without = peakNewSpace(false);
  assert.ok(without > 2 * SEMI_SPACE_MB, `the load did not grow new space without the cap (${without} MB): the test proves nothing`);
  assert.ok(peakNewSpace(true) <= 2 * SEMI_SPACE_MB, 'new space grew past its cap');
});
