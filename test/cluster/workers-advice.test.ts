/**
 * How many workers: `process.workers: auto` leaves one core to the primary
 * and the rest of the machine, and a primary told to run as many workers as
 * there are cores says that it may be slower than one process
 * (docs/performance.md, "Two processes on two cores").
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { workersWarning } from '../../src/cluster/supervisor';
import { autoWorkers } from '../../src/config/schema';

describe('process.workers advice', () => {
  it('auto is one worker per core but one, and at least one process', () => {
    assert.deepEqual([1, 2, 4, 16].map(autoWorkers), [1, 1, 3, 15]);
  });

  it('warns when the workers are as many as the cores, or more', () => {
    assert.match(workersWarning(2, 2) ?? '', /process\.workers is 2 on 2 cores.*slower than one process.*`auto`: 1/);
    assert.match(workersWarning(8, 4) ?? '', /8 on 4 cores/);
    assert.equal(workersWarning(3, 4), undefined);
    assert.equal(workersWarning(1, 1), undefined, 'one process has no workers to warn about');
  });
});
