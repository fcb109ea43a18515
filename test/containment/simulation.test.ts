/**
 * A small version of the containment simulation (300 accounts, fixed seed):
 * deterministic traffic, and containment beating the static limits on the
 * same traffic through the real policy engine.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { DEFAULT_OPTIONS, generate, simulate } from '../../src/sim/simulate';

describe('containment simulation (small)', () => {
  it('generates the same traffic from the same seed', () => {
    const o = { ...DEFAULT_OPTIONS, accounts: 100, interceptHosts: 10, warmupDays: 2, measureDays: 3 };
    const h = (seed: number) => createHash('sha256').update(JSON.stringify(generate({ ...o, seed }).msgs)).digest('hex');
    assert.equal(h(7), h(7));
    assert.notEqual(h(7), h(8));
  });

  it('contains more spam than the static limits, sooner, with almost no legitimate mail delayed', async () => {
    const r = await simulate({ seed: 42, accounts: 300, interceptHosts: 30, measureDays: 5, runScale: 0.5 });
    assert.ok(r.spamMessages > 1000, `spam messages ${r.spamMessages}`);
    assert.ok(r.dynamic.spamLeft < r.static.spamLeft / 5, `dynamic ${r.dynamic.spamLeft} vs static ${r.static.spamLeft}`);
    assert.ok(r.dynamic.spamContainedRate > 0.98, `contained ${r.dynamic.spamContainedRate}`);
    assert.ok(r.dynamic.detection.median <= 20, `median detection ${r.dynamic.detection.median}`);
    assert.equal(r.dynamic.detection.undetected, 0);
    assert.ok(r.dynamic.legitDelayedRate < 0.005, `legit delayed ${r.dynamic.legitDelayedRate}`);
  });
});
