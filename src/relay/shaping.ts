/**
 * Adaptive traffic shaping per (egress pool, provider): the delivery agent
 * asks before each transaction whether it may go now, and tells the shaper
 * what the provider answered.
 *
 * - Rate: a smooth token schedule (GCRA: one message every 1/rate, no
 *   burst). A message whose turn is within relay.shaping.maxWait waits in
 *   the agent; a later turn defers it to that time instead of holding a
 *   place in the queue manager's active window, so a throttled provider's
 *   mail waits while other providers' mail proceeds.
 * - Connections: the provider's maxConnections (per pool) is a lease limit
 *   in pool.ts across all its domains; at most twice that many of its
 *   messages are in the agent at once, the rest are deferred a little.
 * - Adaptive: a 4xx reply matching the provider's throttleReplies suspends
 *   the group: every message for it is deferred, without connecting, to the
 *   end of the suspension (doubled for a throttle reply before the limits
 *   have recovered, up to maxSuspend). Afterwards rate and connections
 *   restart at half of what was in force and regain a tenth of the
 *   configured limits per `recover` interval (additive increase,
 *   multiplicative decrease). A group without a configured rate gets one:
 *   the rate it was sending at over the last 10 s when the throttle reply
 *   came, halved, until the limits have fully recovered.
 *
 * Deferrals made here carry `retryAt` (src/envelope.ts): the queue manager
 * schedules them for that time and does not count them as attempts.
 * Deferred retry times are spread one rate interval apart so the suspended
 * mail does not all come back in the same instant.
 *
 * Shared (relay.shaping.shared, default on; docs/shaping.md): a provider's
 * rate and its suspensions are kept in the state store (src/state/store.ts:
 * `turn`, `setUntil`/`getUntil`), so the processes of a gateway (the IPC
 * store) and the gateways of a fleet (Redis) send to it as one: one rate,
 * and a throttle reply seen anywhere suspends the group everywhere until
 * the same end, with the same factor. Each process reads the group's
 * suspension at most once per SHARED_READ_MS (a suspension reaches the
 * others up to that late). Connections, messages per connection and the
 * in-agent bound stay per process, and so do `other` destinations (one
 * group per domain: unbounded keys). A store that fails (Redis down, fail
 * closed; the primary not answering) never stops delivery: the group is
 * shaped in this process alone, as before, logged once.
 */
import type { Logger } from '../log';
import { keys } from '../state/keys';
import type { StateStore, UntilRecord } from '../state/store';
import { replyCode } from './classify';
import { providerOf, type ProviderRules, type ShapingConfig, type ShapingLimits } from './providers';

/** Metric label for the pool of a job without an egress pool. */
export const NO_POOL = 'none';

export type ShapedOutcome = 'delivered' | 'deferred' | 'throttled' | 'shaped' | 'bounced';
export const SHAPED_OUTCOMES: readonly ShapedOutcome[] = ['delivered', 'deferred', 'throttled', 'shaped', 'bounced'];

export interface ShapingObserver {
  /** Per recipient: delivered/bounced/deferred as the provider answered, throttled (a throttle reply), shaped (deferred here, not sent). */
  onShapedOutcome?(provider: string, pool: string, outcome: ShapedOutcome): void;
  onSuspension?(provider: string, pool: string, ms: number): void;
}

/** One shaping group: a provider (or one `other` destination) seen from one egress pool. */
export interface ShapingGroup {
  readonly key: string;
  /** Provider name, or 'other'. */
  readonly provider: string;
  readonly pool: string;
  readonly rules: ProviderRules;
  readonly limits: ShapingLimits;
}

export interface GroupSnapshot {
  readonly provider: string;
  readonly pool: string;
  readonly suspended: boolean;
  /** Fraction of the configured limits in force (1 = all). */
  readonly factor: number;
  /** Messages per second in force, when the provider has a rate. */
  readonly ratePerSecond?: number;
}

export type Admission =
  | { readonly ok: true; readonly waitMs: number }
  | { readonly ok: false; readonly retryAt: number; readonly reason: string };

const MIN_FACTOR = 0.1;
const RECOVER_STEP = 0.1;
/** Spacing of deferred retry times for a group without a rate. */
const SPREAD_MS = 20;
/** Groups remembered before those at rest are forgotten. */
const MAX_GROUPS = 10_000;
/** How long a process trusts the shared suspension it last read (a suspension elsewhere reaches it up to this late). */
export const SHARED_READ_MS = 1000;

/** Where shared shaping state lives (relay.shaping.shared): the gateway's state store. */
export interface ShapingShare {
  readonly store: StateStore;
  readonly logger: Logger;
}

/** A suspension as stored for the other processes: the factor it restarts at, the streak, a learned rate. */
interface SharedSuspension {
  readonly base: number;
  readonly streak: number;
  readonly learned?: number;
}

interface GroupState {
  /** GCRA: the earliest start of the next message. */
  nextStart: number;
  /** The latest retry time handed out (deferred messages are spread from here). */
  promised: number;
  suspendedUntil: number;
  /** Suspensions in a row (reset once the limits have fully recovered). */
  streak: number;
  /** Factor the recovery started from, at suspendedUntil. */
  base: number;
  inFlight: number;
  /** Send times within the last LEARN_WINDOW_MS (oldest first), to learn a rate where none is configured. */
  sent: number[];
  /** Messages/s the group was sending when a throttle reply came, for a group without a configured rate; cleared on full recovery. */
  learned?: number;
  /** When the shared suspension was last read (0: never). */
  sharedReadAt: number;
  /** A read of the shared suspension under way (concurrent admissions wait for the same one). */
  reading?: Promise<void>;
}

/** Sends remembered to learn a rate: the last 10 s, at most 10,000. */
const LEARN_WINDOW_MS = 10_000;
const LEARN_MAX_SENDS = 10_000;

/** Messages per second over the remembered sends (at least over one second); undefined with fewer than two. */
function observedRate(s: GroupState, now: number): number | undefined {
  const recent = s.sent.filter((at) => at >= now - LEARN_WINDOW_MS);
  if (recent.length < 2) return undefined;
  return recent.length / (Math.max(1000, now - recent[0]!) / 1000);
}

function freshState(): GroupState {
  return { nextStart: 0, promised: 0, suspendedUntil: 0, streak: 0, base: 1, inFlight: 0, sent: [], sharedReadAt: 0 };
}

export class Shaper {
  private readonly groups = new Map<string, { group: ShapingGroup; state: GroupState }>();

  /** The shared store failed and this process shapes alone (logged once per outage). */
  private alone = false;

  constructor(
    private readonly cfg: ShapingConfig,
    private readonly observer: ShapingObserver = {},
    private readonly now: () => number = Date.now,
    private readonly share?: ShapingShare,
  ) {}

  get enabled(): boolean {
    return this.cfg.enabled;
  }

  get maxWaitMs(): number {
    return this.cfg.maxWaitMs;
  }

  /** The group of a destination, from the host names it will be delivered to (MX hosts or a relay host). */
  groupFor(hosts: readonly string[], destKey: string, pool: string | undefined): ShapingGroup {
    const rules = providerOf(this.cfg, hosts);
    const poolName = pool ?? NO_POOL;
    const key = `${poolName}|${rules ? `provider:${rules.name}` : destKey}`;
    const known = this.groups.get(key);
    if (known) return known.group;
    if (this.groups.size >= MAX_GROUPS) this.forgetResting();
    const r = rules ?? this.cfg.other;
    const group: ShapingGroup = { key, provider: r.name, pool: poolName, rules: r, limits: (pool !== undefined ? r.pools.get(pool) : undefined) ?? r };
    this.groups.set(key, { group, state: freshState() });
    return group;
  }

  /** Fraction of the configured limits in force now. */
  factor(g: ShapingGroup): number {
    const s = this.state(g);
    const t = this.now();
    if (s.base >= 1) return 1;
    if (t < s.suspendedUntil) return s.base;
    const steps = Math.floor((t - s.suspendedUntil) / g.rules.recoverMs);
    const f = Math.min(1, s.base + steps * RECOVER_STEP);
    if (f >= 1) {
      s.base = 1;
      s.streak = 0;
      s.learned = undefined;
    }
    return f;
  }

  /** Sessions to the group at once now; undefined: the pool's own per-destination limit. */
  connectionLimit(g: ShapingGroup): number | undefined {
    const max = g.limits.maxConnections;
    return max === undefined ? undefined : Math.max(1, Math.floor(max * this.factor(g)));
  }

  messagesPerConnection(g: ShapingGroup): number | undefined {
    return g.limits.messagesPerConnection;
  }

  /**
   * May one message for the group enter the agent (wait for a session)?
   * Suspended, or twice its connections' worth already in the agent →
   * deferred to a set time. On ok, call done() when its transaction is over.
   */
  async admit(g: ShapingGroup): Promise<Admission> {
    await this.readShared(g);
    const s = this.state(g);
    const t = this.now();
    if (t < s.suspendedUntil) return this.suspendedAdmission(g, s);
    const conns = this.connectionLimit(g);
    if (conns !== undefined && s.inFlight >= 2 * conns) {
      return { ok: false, retryAt: this.spread(g, t + this.cfg.maxWaitMs), reason: `${s.inFlight} messages already waiting for ${conns} connections` };
    }
    s.inFlight++;
    return { ok: true, waitMs: 0 };
  }

  /**
   * With a session in hand, just before the transaction: still not
   * suspended (a throttle reply may have come meanwhile), and the rate's
   * next turn — waited for when within maxWait (already taken), else
   * deferred to that turn.
   */
  async beforeSend(g: ShapingGroup): Promise<Admission> {
    await this.readShared(g);
    const s = this.state(g);
    const t = this.now();
    if (t < s.suspendedUntil) return this.suspendedAdmission(g, s);
    const interval = this.interval(g);
    if (interval === undefined) {
      this.recordSend(s, t);
      return { ok: true, waitMs: 0 };
    }
    const store = this.sharedStore(g);
    if (store) {
      try {
        const turn = await store.turn(keys.shaping(g.pool, g.provider, 'rate'), interval, this.cfg.maxWaitMs, t);
        this.sharedOk();
        if (!turn.ok) return { ok: false, retryAt: this.spread(g, turn.at), reason: `rate limit ${this.rate(g)!.toFixed(2)}/s reached (shared)` };
        this.recordSend(s, turn.at);
        // The wait counts from now: the store answered after a round trip.
        return { ok: true, waitMs: Math.max(0, turn.at - this.now()) };
      } catch (err) {
        this.sharedFailed(err);
      }
    }
    const start = Math.max(t, s.nextStart);
    if (start - t > this.cfg.maxWaitMs) return { ok: false, retryAt: this.spread(g, start), reason: `rate limit ${this.rate(g)!.toFixed(2)}/s reached` };
    s.nextStart = start + interval;
    this.recordSend(s, start);
    return { ok: true, waitMs: start - t };
  }

  /** The deferral when the group is suspended now, else undefined. */
  suspension(g: ShapingGroup): { retryAt: number; reason: string } | undefined {
    const s = this.state(g);
    if (this.now() >= s.suspendedUntil) return undefined;
    const a = this.suspendedAdmission(g, s);
    return a.ok ? undefined : a;
  }

  private suspendedAdmission(g: ShapingGroup, s: GroupState): Admission {
    return { ok: false, retryAt: this.spread(g, s.suspendedUntil), reason: `suspended until ${new Date(s.suspendedUntil).toISOString()} after a throttle reply` };
  }

  /** The admitted message's transaction is over. */
  done(g: ShapingGroup): void {
    const s = this.state(g);
    s.inFlight = Math.max(0, s.inFlight - 1);
  }

  /** Whether a 4xx reply (text as received, code first) is one of the group's throttle replies. */
  isThrottle(g: ShapingGroup, reply: string): boolean {
    const code = replyCode(reply);
    return code >= 400 && code < 500 && g.rules.throttleReplies.some((re) => re.test(reply));
  }

  /**
   * The provider said "slow down": suspend the group (unless suspend is 0)
   * and halve its limits; returns the time its messages are retried and the
   * end of the suspension (fresh: this reply started it). Several
   * throttle replies of one suspension (transactions in flight) count once.
   */
  async throttled(g: ShapingGroup): Promise<{ retryAt: number; until: number; fresh: boolean }> {
    const s = this.state(g);
    const t = this.now();
    if (t < s.suspendedUntil) return { retryAt: this.spread(g, s.suspendedUntil), until: s.suspendedUntil, fresh: false };
    const ms = Math.min(g.rules.maxSuspendMs, g.rules.suspendMs * 2 ** Math.min(s.streak, 20));
    // No configured rate: the rate it was sending at becomes the one to halve (until full recovery).
    if (g.limits.ratePerSecond === undefined && s.learned === undefined) s.learned = observedRate(s, t);
    const mine: SharedSuspension = { base: Math.max(MIN_FACTOR, this.factor(g) / 2), streak: s.streak + 1, ...(s.learned !== undefined ? { learned: s.learned } : {}) };
    this.apply(s, t + ms, mine);
    let fresh = true;
    const store = this.sharedStore(g);
    if (store) {
      // Full recovery takes (1 - base) / RECOVER_STEP intervals after the end: kept that long for the others to recover alike.
      const ttlMs = Math.ceil(ms + (Math.ceil((1 - mine.base) / RECOVER_STEP) + 1) * g.rules.recoverMs);
      try {
        const rec = await store.setUntil(keys.shaping(g.pool, g.provider, 'suspension'), t + ms, JSON.stringify(mine), ttlMs, t);
        this.sharedOk();
        s.sharedReadAt = this.now();
        // Another process's suspension was already running: this reply is one of it.
        if (!rec.set) {
          fresh = false;
          this.adopt(g, s, rec, true);
        }
      } catch (err) {
        this.sharedFailed(err);
      }
    }
    if (fresh) this.observer.onSuspension?.(g.provider, g.pool, ms);
    return { retryAt: this.spread(g, Math.max(s.suspendedUntil, t + 1)), until: s.suspendedUntil, fresh };
  }

  /** Start (or take over) a suspension ending at `until`. */
  private apply(s: GroupState, until: number, v: SharedSuspension): void {
    s.base = v.base;
    s.streak = v.streak;
    if (v.learned !== undefined) s.learned = v.learned;
    s.suspendedUntil = until;
    // The rate schedule restarts from the end of the suspension at the reduced rate.
    s.nextStart = Math.max(s.nextStart, until);
  }

  /** The store to share a group's rate and suspensions through, if shared (never `other`: one group per destination). */
  private sharedStore(g: ShapingGroup): StateStore | undefined {
    return this.share && this.cfg.shared && g.provider !== 'other' ? this.share.store : undefined;
  }

  /** Read the group's shared suspension unless read within SHARED_READ_MS; a newer one than this process knows is taken over. */
  private readShared(g: ShapingGroup): Promise<void> {
    const store = this.sharedStore(g);
    if (!store) return Promise.resolve();
    const s = this.state(g);
    if (s.reading) return s.reading;
    if (this.now() - s.sharedReadAt < SHARED_READ_MS) return Promise.resolve();
    s.reading = (async () => {
      try {
        const rec = await store.getUntil(keys.shaping(g.pool, g.provider, 'suspension'), this.now());
        this.sharedOk();
        if (rec) this.adopt(g, s, rec, false);
      } catch (err) {
        this.sharedFailed(err);
      } finally {
        // Read or failed: not asked again for SHARED_READ_MS (a dead store is not asked per message).
        s.sharedReadAt = this.now();
        s.reading = undefined;
      }
    })();
    return s.reading;
  }

  /** Take over a suspension another process started (only a later one than this process knows). */
  private adopt(g: ShapingGroup, s: GroupState, rec: UntilRecord, overrule: boolean): void {
    if (!overrule && rec.until <= s.suspendedUntil) return;
    let v: SharedSuspension;
    try {
      v = JSON.parse(rec.value) as SharedSuspension;
    } catch {
      return;
    }
    if (typeof v?.base !== 'number' || typeof v.streak !== 'number') return;
    const news = rec.until > s.suspendedUntil;
    this.apply(s, rec.until, { base: Math.min(1, Math.max(MIN_FACTOR, v.base)), streak: v.streak, ...(typeof v.learned === 'number' ? { learned: v.learned } : {}) });
    if (news && rec.until > this.now()) {
      this.share?.logger.info({ evt: 'shaping', provider: g.provider, pool: g.pool, until: new Date(rec.until).toISOString(), shared: true }, 'provider suspended by another gateway process: deferring its queue for this pool');
    }
  }

  private sharedOk(): void {
    if (!this.alone) return;
    this.alone = false;
    this.share?.logger.info({ evt: 'shaping', shared: true }, 'shared shaping state available again');
  }

  private sharedFailed(err: unknown): void {
    if (this.alone) return;
    this.alone = true;
    this.share?.logger.warn({ evt: 'shaping', shared: false, err: (err as Error)?.message ?? String(err) }, 'shared shaping state unavailable: shaping providers in this process alone until the state store answers');
  }

  outcome(g: ShapingGroup, outcome: ShapedOutcome): void {
    this.observer.onShapedOutcome?.(g.provider, g.pool, outcome);
  }

  snapshotOf(g: ShapingGroup): GroupSnapshot {
    const rate = this.rate(g);
    return { provider: g.provider, pool: g.pool, suspended: this.now() < this.state(g).suspendedUntil, factor: this.factor(g), ...(rate === undefined ? {} : { ratePerSecond: rate }) };
  }

  /** Every group seen, for the gauges (suspended, factor, rate in force). */
  snapshot(): GroupSnapshot[] {
    return [...this.groups.values()].map(({ group }) => this.snapshotOf(group));
  }

  private state(g: ShapingGroup): GroupState {
    let e = this.groups.get(g.key);
    if (!e) {
      // Forgotten while at rest and asked about again: starts afresh, as it was.
      e = { group: g, state: freshState() };
      this.groups.set(g.key, e);
    }
    return e.state;
  }

  /** Groups with nothing to remember (every `other` domain is one) are dropped so the map stays bounded. */
  private forgetResting(): void {
    const t = this.now();
    for (const [key, { group, state: s }] of this.groups) {
      if (s.inFlight === 0 && t >= s.suspendedUntil && t >= s.nextStart && t >= s.promised && this.factor(group) >= 1) this.groups.delete(key);
    }
  }

  private rate(g: ShapingGroup): number | undefined {
    const factor = this.factor(g); // first: full recovery forgets a learned rate
    const base = g.limits.ratePerSecond ?? this.state(g).learned;
    return base === undefined ? undefined : base * factor;
  }

  private interval(g: ShapingGroup): number | undefined {
    const rate = this.rate(g);
    return rate === undefined ? undefined : 1000 / rate;
  }

  private recordSend(s: GroupState, at: number): void {
    s.sent.push(at);
    const from = at - LEARN_WINDOW_MS;
    let drop = 0;
    while (drop < s.sent.length && (s.sent[drop]! < from || s.sent.length - drop > LEARN_MAX_SENDS)) drop++;
    if (drop > 0) s.sent.splice(0, drop);
  }

  /** A retry time at or after `at`, one interval after the last one handed out. */
  private spread(g: ShapingGroup, at: number): number {
    const s = this.state(g);
    const retryAt = Math.max(at, s.promised);
    s.promised = retryAt + (this.interval(g) ?? SPREAD_MS);
    return Math.ceil(retryAt);
  }
}
