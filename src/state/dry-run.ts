/**
 * A store for `policy explain`: reads the real store, writes nowhere but
 * its own overlay. The engine runs exactly the code it runs live; quota
 * checks see the real counts plus what this explanation itself counted
 * (three recipients explained in a row count 1, 2, 3), and nothing reaches
 * the real counters.
 *
 * Talks to: the base store (reads only). Trusts: the base store.
 */
import { MemoryStore } from './memory';
import type { HitManyResult, HitResult, RankEntry, RateLimit, StateStore, Turn, UntilRecord } from './store';

export class DryRunStore implements StateStore {
  readonly kind: string;
  private readonly overlay = new MemoryStore();
  private readonly deltas = new Map<string, number>();

  constructor(private readonly base: StateStore) {
    this.kind = `dry-run over ${base.kind}`;
  }

  private async evaluate(limits: readonly RateLimit[], cost: number, now: number, apply: boolean): Promise<HitManyResult> {
    const local = await Promise.all(limits.map((l) => this.overlay.count(l.key, l.windowMs, now)));
    const seen = await this.base.peekMany(
      limits.map((l, i) => ({ ...l, limit: l.limit - local[i]! })),
      cost,
      now,
    );
    const results: HitResult[] = seen.results.map((r, i) => ({ ...r, limit: limits[i]!.limit, count: r.count + local[i]! }));
    const denied = results.find((r) => !r.allowed);
    if (apply && !denied) for (const l of limits) await this.overlay.record(l.key, l.windowMs, cost, now);
    return { allowed: !denied, results, denied, stamp: now };
  }

  async hit(key: string, limit: number, windowMs: number, cost: number, now: number): Promise<HitResult> {
    return (await this.evaluate([{ key, limit, windowMs }], cost, now, true)).results[0]!;
  }

  hitMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, true);
  }

  peekMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, false);
  }

  undo(limits: readonly RateLimit[], cost: number, stamp: number): Promise<void> {
    return this.overlay.undo(limits, cost, stamp);
  }

  async record(key: string, windowMs: number, cost: number, now: number): Promise<number> {
    return (await this.base.count(key, windowMs, now)) + (await this.overlay.record(key, windowMs, cost, now));
  }

  async count(key: string, windowMs: number, now: number): Promise<number> {
    return (await this.base.count(key, windowMs, now)) + (await this.overlay.count(key, windowMs, now));
  }

  async incr(key: string, by: number, _ttlMs: number, now: number): Promise<number> {
    const d = (this.deltas.get(key) ?? 0) + by;
    this.deltas.set(key, d);
    return Math.max(0, (await this.base.get(key, now)) + d);
  }

  async get(key: string, now: number): Promise<number> {
    return Math.max(0, (await this.base.get(key, now)) + (this.deltas.get(key) ?? 0));
  }

  ttl(key: string, now: number): Promise<number> {
    return this.base.ttl(key, now);
  }

  async del(key: string): Promise<void> {
    this.deltas.set(key, -Number.MAX_SAFE_INTEGER);
  }

  async addToSet(key: string, member: string, windowMs: number, now: number): Promise<number> {
    return (await this.base.setSize(key, windowMs, now)) + (await this.overlay.addToSet(key, member, windowMs, now));
  }

  async setSize(key: string, windowMs: number, now: number): Promise<number> {
    return (await this.base.setSize(key, windowMs, now)) + (await this.overlay.setSize(key, windowMs, now));
  }

  /** Explain ranks nothing (nothing asks it to: rankings are written for accepted mail only). */
  async rank(): Promise<number> {
    return 0;
  }

  top(key: string, n: number, windowMs: number, now: number): Promise<RankEntry[]> {
    return this.base.top(key, n, windowMs, now);
  }

  /** Rate turns (shaping, never explained) are taken in the overlay only: the real rate is not touched. */
  turn(key: string, intervalMs: number, maxWaitMs: number, now: number): Promise<Turn> {
    return this.overlay.turn(key, intervalMs, maxWaitMs, now);
  }

  /** Written to the overlay only; the real store's record still wins while it runs. */
  async setUntil(key: string, until: number, value: string, ttlMs: number, now: number): Promise<UntilRecord & { set: boolean }> {
    const base = await this.base.getUntil(key, now);
    if (base && base.until > now) return { ...base, set: false };
    return this.overlay.setUntil(key, until, value, ttlMs, now);
  }

  async getUntil(key: string, now: number): Promise<UntilRecord | undefined> {
    return (await this.overlay.getUntil(key, now)) ?? this.base.getUntil(key, now);
  }

  async close(): Promise<void> {
    await this.overlay.close();
  }
}
