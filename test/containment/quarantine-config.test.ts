/** containment.yaml responses.quarantine: below every response, per plan; a wrong one is a config error naming file and key. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseContainment } from '../../src/containment/config';

describe('containment.yaml responses.quarantine', () => {
  it('is off unless set, and is set per plan', () => {
    const cfg = parseContainment({ plans: { residential: { responses: { quarantine: 0.5 } }, business: {} } }, 'containment.yaml');
    assert.equal(cfg.plans.get('residential')?.quarantine, 0.5);
    assert.equal(cfg.plans.get('business')?.quarantine, 0);
  });

  it('must be below the first response', () => {
    assert.throws(() => parseContainment({ defaults: { responses: { quarantine: 1, throttle: 1 } } }, 'containment.yaml'), /containment\.yaml.*defaults\.responses\.quarantine.*must be below responses\.throttle \(1\)/);
    assert.throws(() => parseContainment({ plans: { p: { responses: { quarantine: 2.5, throttle: 0, hold: 2 } } } }, 'containment.yaml'), /plans\.p\.responses\.quarantine.*must be below responses\.hold \(2\)/);
    assert.throws(() => parseContainment({ defaults: { responses: { quarantine: -1 } } }, 'containment.yaml'), /responses\.quarantine/);
  });
});
