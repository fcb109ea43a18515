/**
 * The behaviour profiles and the world they make from a seed: a background
 * population living ordinary lives (the fleet every signal is measured
 * against), plus `instances` of every attacker and legitimate profile.
 * Deterministic: one seeded PRNG, everything generated up front.
 *
 * Never imports the detector or its configuration (see world.ts).
 */
import { ATTACKERS, type Profile } from './attackers';
import { LEGITIMATE } from './legitimate';
import { ordinaryLife } from './ordinary';
import { DAY, rng, World } from './world';

export { ATTACKERS, LEGITIMATE, type Profile };
export * from './world';

export const PROFILES: readonly Profile[] = [...ATTACKERS, ...LEGITIMATE];

export interface WorldOptions {
  readonly seed: number;
  readonly start: number;
  /** Days of history the detector learns from before measuring. */
  readonly warmupDays: number;
  readonly measureDays: number;
  /** Background accounts and intercept hosts (ordinary lives). */
  readonly background: number;
  readonly hosts: number;
  /** Instances of each profile (legitimate ones: `legitimateInstances` when given; they are cheap). */
  readonly instances: number;
  readonly legitimateInstances?: number;
  /** Only these profiles (default all). */
  readonly profiles?: readonly string[];
}

export function makeWorld(o: WorldOptions): World {
  const measureStart = o.start + o.warmupDays * DAY;
  const w = new World(rng(o.seed), { start: o.start, measureStart, end: measureStart + o.measureDays * DAY });
  const bg = w.newInstance();
  for (let i = 0; i < o.background; i++) {
    const x = w.r();
    const business = x >= 0.8;
    const a = w.account({ profile: 'background', instance: bg, plan: business ? 'business' : 'residential', contacts: w.addrs(business ? w.int(100, 700) : w.int(5, 40)) });
    ordinaryLife(w, a, business ? { perDay: 10 + w.r() * 30, pNew: 0.3, business: true } : { perDay: 0.5 + w.r() * 5, pNew: 0.08 });
  }
  for (let h = 0; h < o.hosts; h++) {
    const a = w.host({ profile: 'background', instance: bg, contacts: w.addrs(w.int(5, 25)) });
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 5, pNew: 0.08, mobile: 0 });
  }
  for (const p of PROFILES) {
    if (o.profiles && !o.profiles.includes(p.name)) continue;
    const n = p.side === 'legitimate' ? (o.legitimateInstances ?? o.instances) : o.instances;
    for (let i = 0; i < n; i++) p.build(w);
  }
  w.mail.sort((a, b) => a.t - b.t);
  w.listings.sort((a, b) => a.t - b.t);
  return w;
}
