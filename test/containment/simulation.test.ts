/**
 * The containment evaluation (src/sim/simulate.ts over the behaviour
 * profiles of src/sim/profiles, blind to the detector) at a size that runs
 * in about a minute (30 background accounts, 2 instances per attacker and 4
 * per legitimate profile per seed, 14 days of warm-up, 4 measured): the traffic is deterministic, and the shipped
 * policies/containment.yaml meets per-profile floors over the seed set —
 * every profile on its own, never an average:
 *   attackers   ≥ 95% of the episode's messages contained, median detection
 *               ≤ 20 messages, no instance undetected, and better than the
 *               static limits on both counts;
 *   legitimate  ≤ 0.1% of the episode's messages delayed or refused, and
 *               no more than the static limits delay.
 * `npm run simulate` runs the same at full size.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { DEFAULT_OPTIONS, mergeSeeds, quantile, SEEDS, simulate, table, worldFor, type ProfileResult, type SimReport } from '../../src/sim/simulate';
import { PROFILES } from '../../src/sim/profiles';

describe('containment evaluation: the world', () => {
  it('generates the same traffic from the same seed', () => {
    const o = { ...DEFAULT_OPTIONS, background: 50, hosts: 5, instances: 1, warmupDays: 3, measureDays: 3 };
    const h = (seed: number) => createHash('sha256').update(JSON.stringify(worldFor({ ...o, seed }).mail)).digest('hex');
    assert.equal(h(7), h(7));
    assert.notEqual(h(7), h(8));
  });
});

describe('containment evaluation: per-profile floors over seeds 1, 2, 3', () => {
  let reports: SimReport[];
  let dyn: Map<string, ProfileResult>;
  let stat: Map<string, ProfileResult>;
  before(async () => {
    reports = [];
    for (const seed of SEEDS) reports.push(await simulate({ seed, background: 30, hosts: 3, instances: 2, legitimateInstances: 4, warmupDays: 14, measureDays: 4 }));
    dyn = new Map(mergeSeeds(reports, 'dynamic').map((p) => [p.profile, p]));
    stat = new Map(mergeSeeds(reports, 'static').map((p) => [p.profile, p]));
    if (process.env.SIM_TABLE) console.log(table(reports));
  });

  for (const p of PROFILES.filter((x) => x.side === 'attacker')) {
    it(`${p.name}: ≥ 95% contained, median detection ≤ 20, better than static limits`, () => {
      const d = dyn.get(p.name)!;
      const s = stat.get(p.name)!;
      const median = quantile(d.detections, 0.5);
      assert.ok(d.instances >= 6 && d.messages > 100, `${p.name}: ${d.instances} instances, ${d.messages} messages`);
      assert.ok(d.rate >= 0.95, `${p.name}: ${(d.rate * 100).toFixed(2)}% contained`);
      assert.ok(median <= 20, `${p.name}: median detection ${median}`);
      assert.equal(d.undetected, 0, `${p.name}: undetected instances`);
      assert.ok(d.rate > s.rate, `${p.name}: containment ${d.rate} vs static ${s.rate}`);
      assert.ok(median < quantile(s.detections, 0.5), `${p.name}: detection ${median} vs static ${quantile(s.detections, 0.5)}`);
    });
  }

  for (const p of [...PROFILES.filter((x) => x.side === 'legitimate').map((x) => x.name), 'background']) {
    it(`${p}: ≤ 0.1% of its messages delayed or refused, no more than by the static limits`, () => {
      const d = dyn.get(p)!;
      assert.ok(d.messages > 30, `${p}: ${d.messages} messages`);
      assert.ok(d.rate <= 0.001, `${p}: ${d.stopped} of ${d.messages} delayed or refused`);
      assert.ok(d.stopped <= stat.get(p)!.stopped, `${p}: containment ${d.stopped} vs static ${stat.get(p)!.stopped}`);
    });
  }
});
