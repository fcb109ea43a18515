/**
 * The containment evaluation's traffic is deterministic: the same seed
 * makes the same world, another seed another one.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { DEFAULT_OPTIONS, worldFor } from '../../src/sim/simulate';

describe('containment evaluation: the world', () => {
  it('generates the same traffic from the same seed', () => {
    const o = { ...DEFAULT_OPTIONS, background: 50, hosts: 5, instances: 1, warmupDays: 3, measureDays: 3 };
    const h = (seed: number) => createHash('sha256').update(JSON.stringify(worldFor({ ...o, seed }).mail)).digest('hex');
    assert.equal(h(7), h(7));
    assert.notEqual(h(7), h(8));
  });
});
