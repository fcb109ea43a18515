/**
 * The in-memory state store: one process, no dependencies, the default.
 * Sliding-window logs are arrays of (slot stamp, cost) in time order (see
 * store.ts for the slotting); counters and sets carry their own expiry.
 * Expired keys are dropped when touched and by a sweep every SWEEP_EVERY
 * operations (no timers: nothing to stop, nothing keeping a test alive).
 *
 * Talks to: nothing. Trusts: its callers' `now` (monotone in practice;
 * out-of-order stamps are inserted in order).
 */
import { checkInterval, rankingCap, slotStamp, type HitManyResult, type HitResult, type RankEntry, type RateLimit, type StateStore, type Turn, type UntilRecord } from './store';

interface Log {
  windowMs: number;
  ts: number[];
  cost: number[];
  head: number;
  total: number;
}

interface Counter {
  value: number;
  expiresAt: number;
}

interface SlidingSet {
  windowMs: number;
  seen: Map<string, number>;
}

interface Ranking {
  windowMs: number;
  members: Map<string, { score: number; seen: number }>;
}

const SWEEP_EVERY = 20_000;

export class MemoryStore implements StateStore {
  readonly kind = 'memory';
  private readonly logs = new Map<string, Log>();
  private readonly counters = new Map<string, Counter>();
  private readonly sets = new Map<string, SlidingSet>();
  private readonly rankings = new Map<string, Ranking>();
  /** GCRA: a rate's earliest next start (TAT); gone once it has passed. */
  private readonly turns = new Map<string, number>();
  private readonly untils = new Map<string, UntilRecord & { expiresAt: number }>();
  private ops = 0;

  // ---- sliding-window logs ----

  private log(key: string, windowMs: number, now: number, create: boolean): Log | undefined {
    let l = this.logs.get(key);
    if (l) {
      // A key is used with one window; if the caller changed it (a policy
      // reload with a new window), the new window applies from now on.
      l.windowMs = windowMs;
      prune(l, now);
      if (l.total <= 0 && !create) {
        this.logs.delete(key);
        return undefined;
      }
    } else if (create) {
      l = { windowMs, ts: [], cost: [], head: 0, total: 0 };
      this.logs.set(key, l);
    }
    return l;
  }

  private tick(now: number): void {
    if (++this.ops % SWEEP_EVERY === 0) this.sweep(now);
  }

  /** Drop everything expired at `now` (also called automatically). */
  sweep(now: number): void {
    for (const [k, l] of this.logs) {
      prune(l, now);
      if (l.total <= 0) this.logs.delete(k);
    }
    for (const [k, c] of this.counters) if (c.expiresAt <= now) this.counters.delete(k);
    for (const [k, s] of this.sets) {
      for (const [m, t] of s.seen) if (t + s.windowMs <= now) s.seen.delete(m);
      if (s.seen.size === 0) this.sets.delete(k);
    }
    for (const [k, r] of this.rankings) if (pruneRanking(r, now) === 0) this.rankings.delete(k);
    for (const [k, tat] of this.turns) if (tat <= now) this.turns.delete(k);
    for (const [k, u] of this.untils) if (u.expiresAt <= now) this.untils.delete(k);
  }

  /** Number of live keys (tests and benchmarks). */
  size(): number {
    return this.logs.size + this.counters.size + this.sets.size + this.rankings.size + this.turns.size + this.untils.size;
  }

  private evaluate(limits: readonly RateLimit[], cost: number, now: number, apply: boolean): HitManyResult {
    this.tick(now);
    const results: HitResult[] = [];
    let denied: HitResult | undefined;
    for (const lim of limits) {
      const l = this.log(lim.key, lim.windowMs, now, false);
      const count = l?.total ?? 0;
      const allowed = count + cost <= lim.limit;
      const r: HitResult = {
        key: lim.key,
        limit: lim.limit,
        count: allowed ? count + cost : count,
        allowed,
        retryAfterMs: allowed ? 0 : retryAfter(l, count + cost - lim.limit, cost > lim.limit, lim.windowMs, now),
      };
      results.push(r);
      if (!allowed && !denied) denied = r;
    }
    if (apply && !denied) {
      for (const lim of limits) add(this.log(lim.key, lim.windowMs, now, true)!, slotStamp(lim.windowMs, now), cost);
    }
    return { allowed: !denied, results, denied, stamp: now };
  }

  async hit(key: string, limit: number, windowMs: number, cost: number, now: number): Promise<HitResult> {
    return this.evaluate([{ key, limit, windowMs }], cost, now, true).results[0]!;
  }

  async hitMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, true);
  }

  async peekMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, false);
  }

  async undo(limits: readonly RateLimit[], cost: number, stamp: number): Promise<void> {
    for (const lim of limits) {
      const l = this.logs.get(lim.key);
      if (!l) continue;
      const at = slotStamp(lim.windowMs, stamp);
      for (let i = l.ts.length - 1; i >= l.head; i--) {
        if (l.ts[i] !== at) continue;
        const take = Math.min(cost, l.cost[i]!);
        l.cost[i]! -= take;
        l.total -= take;
        if (l.cost[i] === 0) {
          l.ts.splice(i, 1);
          l.cost.splice(i, 1);
        }
        break;
      }
      if (l.total <= 0) this.logs.delete(lim.key);
    }
  }

  async record(key: string, windowMs: number, cost: number, now: number): Promise<number> {
    this.tick(now);
    const l = this.log(key, windowMs, now, true)!;
    add(l, slotStamp(windowMs, now), cost);
    return l.total;
  }

  async count(key: string, windowMs: number, now: number): Promise<number> {
    return this.log(key, windowMs, now, false)?.total ?? 0;
  }

  // ---- counters ----

  async incr(key: string, by: number, ttlMs: number, now: number): Promise<number> {
    this.tick(now);
    let c = this.counters.get(key);
    if (c && c.expiresAt <= now) c = undefined;
    const value = (c?.value ?? 0) + by;
    if (value <= 0) {
      this.counters.delete(key);
      return 0;
    }
    this.counters.set(key, { value, expiresAt: now + ttlMs });
    return value;
  }

  async get(key: string, now: number): Promise<number> {
    const c = this.counters.get(key);
    if (!c) return 0;
    if (c.expiresAt <= now) {
      this.counters.delete(key);
      return 0;
    }
    return c.value;
  }

  async ttl(key: string, now: number): Promise<number> {
    const c = this.counters.get(key);
    return c && c.expiresAt > now ? c.expiresAt - now : 0;
  }

  async del(key: string): Promise<void> {
    this.counters.delete(key);
    this.logs.delete(key);
    this.sets.delete(key);
    this.rankings.delete(key);
    this.turns.delete(key);
    this.untils.delete(key);
  }

  // ---- sliding sets ----

  async addToSet(key: string, member: string, windowMs: number, now: number): Promise<number> {
    this.tick(now);
    let s = this.sets.get(key);
    if (!s) {
      s = { windowMs, seen: new Map() };
      this.sets.set(key, s);
    }
    s.windowMs = windowMs;
    s.seen.delete(member); // re-insert: Map order stays oldest-first
    s.seen.set(member, now);
    return pruneSet(s, now);
  }

  async setSize(key: string, windowMs: number, now: number): Promise<number> {
    const s = this.sets.get(key);
    if (!s) return 0;
    s.windowMs = windowMs;
    const n = pruneSet(s, now);
    if (n === 0) this.sets.delete(key);
    return n;
  }

  // ---- rankings ----

  async rank(key: string, entries: readonly RankEntry[], windowMs: number, max: number, now: number): Promise<number> {
    this.tick(now);
    let r = this.rankings.get(key);
    if (!r) {
      r = { windowMs, members: new Map() };
      this.rankings.set(key, r);
    }
    r.windowMs = windowMs;
    for (const [member, score] of entries) {
      r.members.delete(member); // re-insert: Map order stays oldest-seen first
      r.members.set(member, { score, seen: now });
    }
    let n = pruneRanking(r, now);
    if (n > rankingCap(max)) {
      // The lowest scores go (ties: the lexically lowest member), as Redis' ZRANGE orders them.
      const low = [...r.members].sort(([ma, a], [mb, b]) => a.score - b.score || (ma < mb ? -1 : ma > mb ? 1 : 0)).slice(0, n - max);
      for (const [m] of low) r.members.delete(m);
      n = max;
    }
    if (n === 0) this.rankings.delete(key);
    return n;
  }

  async top(key: string, n: number, windowMs: number, now: number): Promise<RankEntry[]> {
    const r = this.rankings.get(key);
    if (!r) return [];
    r.windowMs = windowMs;
    if (pruneRanking(r, now) === 0) {
      this.rankings.delete(key);
      return [];
    }
    return [...r.members]
      .sort(([ma, a], [mb, b]) => b.score - a.score || (ma < mb ? 1 : ma > mb ? -1 : 0))
      .slice(0, Math.max(0, n))
      .map(([m, v]) => [m, v.score] as const);
  }

  // ---- rate turns and records until a time ----

  async turn(key: string, intervalMs: number, maxWaitMs: number, now: number): Promise<Turn> {
    this.tick(now);
    checkInterval(intervalMs);
    const tat = this.turns.get(key) ?? 0;
    const start = Math.max(now, tat);
    if (start - now > maxWaitMs) return { ok: false, at: start };
    this.turns.set(key, start + intervalMs);
    return { ok: true, at: start };
  }

  async setUntil(key: string, until: number, value: string, ttlMs: number, now: number): Promise<UntilRecord & { set: boolean }> {
    this.tick(now);
    const cur = this.untils.get(key);
    if (cur && cur.expiresAt > now && cur.until > now) return { until: cur.until, value: cur.value, set: false };
    this.untils.set(key, { until, value, expiresAt: Math.max(now + ttlMs, until) });
    return { until, value, set: true };
  }

  async getUntil(key: string, now: number): Promise<UntilRecord | undefined> {
    const cur = this.untils.get(key);
    if (!cur) return undefined;
    if (cur.expiresAt <= now) {
      this.untils.delete(key);
      return undefined;
    }
    return { until: cur.until, value: cur.value };
  }

  async close(): Promise<void> {
    this.turns.clear();
    this.untils.clear();
    this.logs.clear();
    this.counters.clear();
    this.sets.clear();
    this.rankings.clear();
  }
}

function prune(l: Log, now: number): void {
  while (l.head < l.ts.length && l.ts[l.head]! + l.windowMs <= now) {
    l.total -= l.cost[l.head]!;
    l.head++;
  }
  if (l.head > 32 && l.head * 2 > l.ts.length) {
    l.ts.splice(0, l.head);
    l.cost.splice(0, l.head);
    l.head = 0;
  }
}

function add(l: Log, stamp: number, cost: number): void {
  l.total += cost;
  let i = l.ts.length - 1;
  if (i >= l.head && l.ts[i] === stamp) {
    l.cost[i]! += cost;
    return;
  }
  // Normally appended; an earlier stamp (a clock stepped back) is inserted in order.
  while (i >= l.head && l.ts[i]! > stamp) i--;
  if (i >= l.head && l.ts[i] === stamp) {
    l.cost[i]! += cost;
    return;
  }
  l.ts.splice(i + 1, 0, stamp);
  l.cost.splice(i + 1, 0, cost);
}

/** How long until `need` of the window's cost has expired. */
function retryAfter(l: Log | undefined, need: number, impossible: boolean, windowMs: number, now: number): number {
  if (impossible || !l) return windowMs;
  let freed = 0;
  for (let i = l.head; i < l.ts.length; i++) {
    freed += l.cost[i]!;
    if (freed >= need) return Math.max(0, l.ts[i]! + l.windowMs - now);
  }
  return windowMs;
}

function pruneSet(s: SlidingSet, now: number): number {
  for (const [m, t] of s.seen) {
    if (t + s.windowMs > now) break; // oldest first: the rest are newer
    s.seen.delete(m);
  }
  return s.seen.size;
}

function pruneRanking(r: Ranking, now: number): number {
  for (const [m, v] of r.members) {
    if (v.seen + r.windowMs > now) break; // oldest seen first: the rest are newer
    r.members.delete(m);
  }
  return r.members.size;
}
