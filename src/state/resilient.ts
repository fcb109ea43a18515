/**
 * What the gateway does when the shared state store (Redis) fails: it keeps
 * serving, and `state.failMode` says how.
 *
 *   open    accept mail; count locally in an in-memory store while Redis is
 *           away (each gateway then enforces the limits on its own: at
 *           worst N gateways let N times a limit through during an outage);
 *           log once, report degraded() (metrics) and a /readyz warning.
 *           What was counted locally is replayed into Redis when it
 *           returns (a journal, bounded), so an outage does not hand
 *           anyone a fresh quota.
 *   closed  refuse what needs the state: every check that asks the store
 *           fails with StateUnavailableError, which the policy engine turns
 *           into 451 4.3.0 (reply `state_unavailable`); /readyz fails, so a
 *           load balancer prefers gateways that still have their Redis.
 *
 * In both modes a release is never refused: decrements (a connection
 * closing), undo (a refund) and del (an operator's quota clear) are
 * journalled and replayed when Redis returns, so no counter stays inflated.
 *
 * Replay is idempotent: a command that timed out may still have run in
 * Redis (its reply was late), and a replay batch that timed out may have
 * run in part. So each hit, record, undo and decrement carries a random
 * 96-bit id made here before the first attempt; Redis applies an id at most
 * once (a marker key, SET NX, kept for the operation's window or TTL) and
 * the journal replays the same id. Without it a slow reply counted a hit
 * twice (a 451 on the 100th of 100 allowed messages).
 *
 * A circuit breaker keeps a dead Redis from costing every SMTP command a
 * timeout: the first failure (connection refused, closed, a command
 * timeout) switches to degraded; from then on calls do not touch Redis
 * until a probe (PING, every probeIntervalMs and at once when ioredis
 * reports it reconnected) succeeds and the journal has been replayed. The
 * client's own reconnection (ioredis retryStrategy) never stops.
 *
 * Errors that are not outages (a script error, a wrong type: bugs) are
 * thrown as they are, in both modes.
 *
 * Talks to: the primary store (Redis), a local MemoryStore, the logger.
 * Trusts: the primary's errors to tell outages from bugs (by their type).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log';
import { MemoryStore } from './memory';
import type { Once } from './redis';
import type { HitManyResult, HitResult, RankEntry, RateLimit, StateStore, Turn, UntilRecord } from './store';

export type FailMode = 'open' | 'closed';

/** Thrown (fail closed) instead of an answer the store cannot give. */
export class StateUnavailableError extends Error {
  /** The reply the policy answers with (src/replies.ts: 451 4.3.0). */
  readonly reply = 'state_unavailable' as const;
  constructor(detail?: string) {
    super(`state store unavailable${detail ? ` (${detail})` : ''}`);
    this.name = 'StateUnavailableError';
  }
}

export function isStateUnavailable(err: unknown): err is StateUnavailableError {
  return err instanceof StateUnavailableError || (err as { name?: string } | null)?.name === 'StateUnavailableError';
}

/** The shared store as the wrapper needs it: ready/ping and a reconnection event. */
export interface PrimaryStore extends StateStore {
  hitMany(limits: readonly RateLimit[], cost: number, now: number, once?: Once): Promise<HitManyResult>;
  /** A hit served locally, added without checking the limits unless its id was applied already. */
  replayHit(limits: readonly RateLimit[], cost: number, now: number, once: Once): Promise<void>;
  undo(limits: readonly RateLimit[], cost: number, stamp: number, once?: Once): Promise<void>;
  record(key: string, windowMs: number, cost: number, now: number, once?: Once): Promise<number>;
  incr(key: string, by: number, ttlMs: number, now: number, once?: Once): Promise<number>;
  ready(): boolean;
  ping(): Promise<void>;
  readonly client: { on(event: 'ready', cb: () => void): unknown; removeListener(event: 'ready', cb: () => void): unknown };
}

export interface ResilientOptions {
  readonly failMode: FailMode;
  readonly logger: Logger;
  /** How often to probe while degraded (default 500 ms). */
  readonly probeIntervalMs?: number;
  /** Most journalled operations kept for replay (default 100,000; the oldest go first; 0: none). */
  readonly journalMax?: number;
  readonly clock?: () => number;
  /** Called when degraded() changes (metrics). */
  readonly onChange?: (degraded: boolean) => void;
}

export interface StateStatus {
  readonly backend: string;
  readonly failMode: FailMode;
  readonly degraded: boolean;
  /** Since when (ms since the epoch), while degraded. */
  readonly since?: number;
  readonly lastError?: string;
  /** Operations waiting to be replayed into Redis. */
  readonly journal: number;
  /** Operations dropped from a full journal (since start). */
  readonly dropped: number;
  /** Outages since start. */
  readonly outages: number;
}

type Entry =
  | { op: 'hit'; limits: readonly RateLimit[]; cost: number; now: number; once: Once }
  | { op: 'record'; key: string; windowMs: number; cost: number; now: number; once: Once }
  | { op: 'set'; key: string; member: string; windowMs: number; now: number }
  | { op: 'rank'; key: string; entries: readonly RankEntry[]; windowMs: number; max: number; now: number }
  | { op: 'undo'; limits: readonly RateLimit[]; cost: number; stamp: number; once: Once }
  | { op: 'incr'; key: string; by: number; ttlMs: number; once: Once }
  | { op: 'del'; key: string };

/** Redis replies that mean "not now" rather than "wrong" (failover, loading, cluster resharding). */
const TRANSIENT_REPLY = /^(LOADING|CLUSTERDOWN|MASTERDOWN|READONLY|TRYAGAIN|BUSY|NOREPLICAS|MOVED|ASK)\b/;

/** Is this error an outage (→ degraded) rather than a bug (→ thrown)? */
export function isOutage(err: unknown): boolean {
  if (err instanceof TypeError || err instanceof RangeError) return false;
  const e = err as { name?: string; message?: string };
  if (e?.name === 'ReplyError') return TRANSIENT_REPLY.test(e.message ?? '');
  return true;
}

/**
 * How long a marker is kept at most. Every guarded write leaves one (~120 B in
 * Redis), so keeping it for a day-long window cost ~120 MB per million writes a
 * day; a replay comes seconds after Redis answers again, and only the few
 * commands in flight when an outage began can have run unseen. Past this, such
 * a command replayed after a longer outage is counted twice (the strict side).
 */
const MARKER_TTL_MAX_MS = 15 * 60_000;

/** A fresh id for one operation (random 96 bits), its marker kept as long as `ttlMs`, at most MARKER_TTL_MAX_MS. */
function once(ttlMs: number): Once {
  return { id: randomBytes(12).toString('base64url'), ttlMs: Math.min(ttlMs, MARKER_TTL_MAX_MS) };
}

const longestWindow = (limits: readonly RateLimit[]) => Math.max(1, ...limits.map((l) => l.windowMs));

const hitId = (limits: readonly RateLimit[], stamp: number) => `${limits.map((l) => l.key).join('\n')}@${stamp}`;

export class ResilientStore implements StateStore {
  readonly kind: string;
  private local = new MemoryStore();
  private degradedSince: number | undefined;
  private lastError: string | undefined;
  private journal: Entry[] = [];
  private dropped = 0;
  private outages = 0;
  /** Hits served locally during this outage (so their undo is local too). */
  private localHits = new Set<string>();
  /** Counters incremented locally during this outage (migrated into Redis on recovery). */
  private localCounters = new Set<string>();
  private probeTimer: NodeJS.Timeout | undefined;
  private recovering = false;
  private closed = false;
  private readonly clock: () => number;
  private readonly onReady = () => void this.probe();

  constructor(
    readonly primary: PrimaryStore,
    private readonly opts: ResilientOptions,
  ) {
    this.kind = `${primary.kind} (fail ${opts.failMode})`;
    this.clock = opts.clock ?? Date.now;
    primary.client.on('ready', this.onReady);
  }

  get failMode(): FailMode {
    return this.opts.failMode;
  }

  /** True while the shared store is not in use (metrics: a 0/1 gauge). */
  degraded(): boolean {
    return this.degradedSince !== undefined;
  }

  status(): StateStatus {
    return {
      backend: this.primary.kind,
      failMode: this.opts.failMode,
      degraded: this.degraded(),
      ...(this.degradedSince !== undefined ? { since: this.degradedSince } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      journal: this.journal.length,
      dropped: this.dropped,
      outages: this.outages,
    };
  }

  /** For /readyz: why this node should not get traffic (fail closed), else undefined. */
  readinessFailure(): string | undefined {
    if (!this.degraded() || this.opts.failMode === 'open') return undefined;
    return `${this.primary.kind} unavailable since ${new Date(this.degradedSince!).toISOString()} (${this.lastError ?? 'no connection'}): failing closed, mail gets 451 4.3.0`;
  }

  /** For /readyz warnings: degraded but serving (fail open), else undefined. */
  readinessWarning(): string | undefined {
    if (!this.degraded() || this.opts.failMode === 'closed') return undefined;
    return `${this.primary.kind} unavailable since ${new Date(this.degradedSince!).toISOString()} (${this.lastError ?? 'no connection'}): failing open, counting locally (${this.journal.length} operations to replay)`;
  }

  /** Wait (bounded) for the first connection; start degraded if there is none. */
  async waitReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.primary.ready() && Date.now() < deadline && !this.closed) await new Promise((r) => setTimeout(r, 20));
    if (!this.primary.ready()) this.enterDegraded(new Error(`no connection within ${timeoutMs} ms`));
    return this.primary.ready();
  }

  // ---- the state machine ----

  private usePrimary(): boolean {
    if (this.degradedSince !== undefined) return false;
    if (!this.primary.ready()) {
      this.enterDegraded(new Error('connection not ready'));
      return false;
    }
    return true;
  }

  /** A primary call failed: degrade on an outage, rethrow a bug. */
  private failed(err: unknown): void {
    if (!isOutage(err)) throw err;
    this.enterDegraded(err as Error);
  }

  private enterDegraded(err: Error): void {
    this.lastError = err.message;
    if (this.degradedSince !== undefined || this.closed) return;
    this.degradedSince = this.clock();
    this.outages++;
    const how = this.opts.failMode === 'open' ? 'failing open: accepting and counting locally' : 'failing closed: refusing with 451 4.3.0';
    this.opts.logger.warn({ evt: 'state', degraded: true, failMode: this.opts.failMode, err: err.message }, `state store unavailable; ${how}`);
    this.opts.onChange?.(true);
    this.probeTimer = setInterval(() => void this.probe(), this.opts.probeIntervalMs ?? 500);
    this.probeTimer.unref();
  }

  /** Try to come back: PING, replay the journal, migrate local counters, then use Redis again. */
  private async probe(): Promise<void> {
    if (this.degradedSince === undefined || this.recovering || this.closed || !this.primary.ready()) return;
    this.recovering = true;
    try {
      await this.primary.ping();
      const replayed = await this.reconcile();
      const ms = this.clock() - this.degradedSince;
      this.degradedSince = undefined;
      this.lastError = undefined;
      this.local = new MemoryStore();
      this.localHits.clear();
      if (this.probeTimer) clearInterval(this.probeTimer);
      this.probeTimer = undefined;
      this.opts.logger.info({ evt: 'state', degraded: false, outageMs: ms, replayed }, 'state store available again');
      this.opts.onChange?.(false);
    } catch (err) {
      this.lastError = (err as Error).message;
    } finally {
      this.recovering = false;
    }
  }

  /** Replay until nothing is left (calls arriving meanwhile are still served locally and journalled). */
  private async reconcile(): Promise<number> {
    let replayed = 0;
    while (this.journal.length > 0 || this.localCounters.size > 0) {
      const batch = this.journal.splice(0, 500);
      // One connection executes in order: the batch keeps its order without waiting for each reply.
      const results = await Promise.allSettled(batch.map((e) => this.replay(e)));
      const failed = batch.filter((_, i) => results[i]!.status === 'rejected');
      if (failed.length > 0) {
        this.journal.unshift(...failed);
        throw (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
      }
      replayed += batch.length;
      for (const key of [...this.localCounters]) {
        const now = this.clock();
        const v = await this.local.get(key, now);
        const ttl = await this.local.ttl(key, now);
        if (v > 0 && ttl > 0) await this.primary.incr(key, v, ttl, now);
        await this.local.del(key);
        this.localCounters.delete(key);
        replayed++;
      }
    }
    return replayed;
  }

  private replay(e: Entry): Promise<unknown> {
    switch (e.op) {
      case 'hit':
        return this.primary.replayHit(e.limits, e.cost, e.now, e.once);
      case 'record':
        return this.primary.record(e.key, e.windowMs, e.cost, e.now, e.once);
      case 'set':
        return this.primary.addToSet(e.key, e.member, e.windowMs, e.now);
      case 'rank':
        return this.primary.rank(e.key, e.entries, e.windowMs, e.max, e.now);
      case 'undo':
        return this.primary.undo(e.limits, e.cost, e.stamp, e.once);
      case 'incr':
        return this.primary.incr(e.key, e.by, e.ttlMs, this.clock(), e.once);
      case 'del':
        return this.primary.del(e.key);
    }
  }

  private log(e: Entry): void {
    const max = this.opts.journalMax ?? 100_000;
    if (max === 0) {
      this.dropped++;
      return;
    }
    if (this.journal.length >= max) {
      const drop = Math.max(1, Math.floor(max / 10));
      this.journal.splice(0, drop);
      if (this.dropped === 0) this.opts.logger.warn({ evt: 'state', journalMax: max }, 'state journal full: dropping the oldest operations (they will not reach Redis)');
      this.dropped += drop;
    }
    this.journal.push(e);
  }

  private unavailable(): never {
    throw new StateUnavailableError(this.lastError);
  }

  /**
   * The common path of a call: Redis while it is in use; else (fail closed)
   * refused, or (fail open) the local store, with `replay` journalled first
   * when the call changes what Redis must hold.
   */
  private async either<T>(primary: () => Promise<T>, local: () => Promise<T>, replay?: Entry): Promise<T> {
    if (this.usePrimary()) {
      try {
        return await primary();
      } catch (err) {
        this.failed(err);
      }
    }
    if (this.opts.failMode === 'closed') this.unavailable();
    if (replay) this.log(replay);
    return local();
  }

  // ---- StateStore ----

  async hit(key: string, limit: number, windowMs: number, cost: number, now: number): Promise<HitResult> {
    return (await this.hitMany([{ key, limit, windowMs }], cost, now)).results[0]!;
  }

  async hitMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    const id = once(longestWindow(limits));
    if (this.usePrimary()) {
      try {
        return await this.primary.hitMany(limits, cost, now, id);
      } catch (err) {
        this.failed(err);
      }
    }
    if (this.opts.failMode === 'closed') this.unavailable();
    const r = await this.local.hitMany(limits, cost, now);
    if (r.allowed && limits.length > 0) {
      this.log({ op: 'hit', limits, cost, now, once: id });
      this.localHits.add(hitId(limits, r.stamp));
    }
    return r;
  }

  async peekMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.either(() => this.primary.peekMany(limits, cost, now), () => this.local.peekMany(limits, cost, now));
  }

  /** Never throws: a refund that cannot reach Redis now is replayed later. */
  async undo(limits: readonly RateLimit[], cost: number, stamp: number): Promise<void> {
    const op = once(longestWindow(limits));
    if (this.usePrimary()) {
      try {
        return await this.primary.undo(limits, cost, stamp, op);
      } catch (err) {
        if (!isOutage(err)) {
          this.opts.logger.error({ evt: 'error', err }, 'state store: undo failed');
          return;
        }
        this.enterDegraded(err as Error);
      }
    }
    const id = hitId(limits, stamp);
    if (this.localHits.delete(id)) await this.local.undo(limits, cost, stamp);
    this.log({ op: 'undo', limits, cost, stamp, once: op });
  }

  async record(key: string, windowMs: number, cost: number, now: number): Promise<number> {
    const id = once(windowMs);
    return this.either(() => this.primary.record(key, windowMs, cost, now, id), () => this.local.record(key, windowMs, cost, now), { op: 'record', key, windowMs, cost, now, once: id });
  }

  async count(key: string, windowMs: number, now: number): Promise<number> {
    return this.either(() => this.primary.count(key, windowMs, now), () => this.local.count(key, windowMs, now));
  }

  async incr(key: string, by: number, ttlMs: number, now: number): Promise<number> {
    // Only a release is journalled (an increment is migrated from the local counter).
    const id = by < 0 ? once(ttlMs) : undefined;
    if (this.usePrimary()) {
      try {
        return await this.primary.incr(key, by, ttlMs, now, id);
      } catch (err) {
        this.failed(err);
      }
    }
    if (by < 0) {
      // A release: from what was counted here during the outage first, else owed to Redis.
      if (this.localCounters.has(key) && (await this.local.get(key, now)) > 0) return this.local.incr(key, by, ttlMs, now);
      this.log({ op: 'incr', key, by, ttlMs, once: id! });
      return 0;
    }
    if (this.opts.failMode === 'closed') this.unavailable();
    this.localCounters.add(key);
    return this.local.incr(key, by, ttlMs, now);
  }

  async get(key: string, now: number): Promise<number> {
    return this.either(() => this.primary.get(key, now), () => this.local.get(key, now));
  }

  async ttl(key: string, now: number): Promise<number> {
    return this.either(() => this.primary.ttl(key, now), () => this.local.ttl(key, now));
  }

  /** Never throws: an operator's clear during an outage reaches Redis when it returns. */
  async del(key: string): Promise<void> {
    if (this.usePrimary()) {
      try {
        return await this.primary.del(key);
      } catch (err) {
        this.failed(err);
      }
    }
    await this.local.del(key);
    this.localCounters.delete(key);
    this.log({ op: 'del', key });
  }

  async addToSet(key: string, member: string, windowMs: number, now: number): Promise<number> {
    return this.either(() => this.primary.addToSet(key, member, windowMs, now), () => this.local.addToSet(key, member, windowMs, now), { op: 'set', key, member, windowMs, now });
  }

  async setSize(key: string, windowMs: number, now: number): Promise<number> {
    return this.either(() => this.primary.setSize(key, windowMs, now), () => this.local.setSize(key, windowMs, now));
  }

  async rank(key: string, entries: readonly RankEntry[], windowMs: number, max: number, now: number): Promise<number> {
    return this.either(() => this.primary.rank(key, entries, windowMs, max, now), () => this.local.rank(key, entries, windowMs, max, now), { op: 'rank', key, entries, windowMs, max, now });
  }

  async top(key: string, n: number, windowMs: number, now: number): Promise<RankEntry[]> {
    return this.either(() => this.primary.top(key, n, windowMs, now), () => this.local.top(key, n, windowMs, now));
  }

  /**
   * Rate turns and suspensions (shaping) are not journalled: a turn is a
   * moment's decision and a suspension ends by itself, so replaying either
   * later would be wrong or pointless. While Redis is away (fail open) they
   * are answered by this process's local store; fail closed they throw, and
   * the shaper shapes on its own (shaping never stops delivery).
   */
  async turn(key: string, intervalMs: number, maxWaitMs: number, now: number): Promise<Turn> {
    return this.either(() => this.primary.turn(key, intervalMs, maxWaitMs, now), () => this.local.turn(key, intervalMs, maxWaitMs, now));
  }

  async setUntil(key: string, until: number, value: string, ttlMs: number, now: number): Promise<UntilRecord & { set: boolean }> {
    return this.either(() => this.primary.setUntil(key, until, value, ttlMs, now), () => this.local.setUntil(key, until, value, ttlMs, now));
  }

  async getUntil(key: string, now: number): Promise<UntilRecord | undefined> {
    return this.either(() => this.primary.getUntil(key, now), () => this.local.getUntil(key, now));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.primary.client.removeListener('ready', this.onReady);
    if (this.journal.length > 0) this.opts.logger.warn({ evt: 'state', journal: this.journal.length }, 'stopping with state operations never replayed into Redis');
    await this.local.close();
    await this.primary.close();
  }
}
