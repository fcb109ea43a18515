/**
 * The state store: the counters policy decisions are made from (Postfix's
 * anvil: it only counts, the policy engine decides). One interface, an
 * in-memory implementation now (src/state/memory.ts) and a Redis one later
 * (fleet mode), so every operation is:
 *   - async, even where the memory store could answer synchronously;
 *   - atomic as a whole (check-and-increment in one step: in Redis one Lua
 *     script, one round trip);
 *   - told the time (`now`, ms since the epoch) by the caller, so clocks are
 *     injectable in tests and simulations and a fleet agrees on windows;
 *   - on keys that expire by themselves (no key lives longer than its
 *     window or TTL after its last write);
 *   - on keys built by src/state/keys.ts, whose `{hash tag}` puts all the
 *     keys one operation touches in one Redis Cluster slot.
 *
 * Rate limits are sliding-window logs, not fixed windows: a window of W
 * counts every event of the last W ms, so there is no burst at a window
 * boundary. To bound memory (a limit of 10,000 recipients/day must not mean
 * 10,000 entries per subscriber) events are grouped into slots of W/600
 * (6 s for an hour, 144 s for a day) and a slot counts until its END plus W.
 * That errs on the safe side: an event may be counted up to one slot longer
 * than W, never shorter, so the limit is never exceeded in any window.
 * A Redis implementation stores the same slots (a hash slot→cost plus a
 * sorted set of slot times, or one sorted set of "slot:cost" members) and
 * uses SLOT_DIVISOR from here so both stores agree exactly.
 *
 * Talks to: nothing. Trusts: the caller's keys (built by keys.ts).
 */

/** Slots per window in the sliding-window log. */
export const SLOT_DIVISOR = 600;

/** The slot length for a window (≥ 1 ms). */
export function slotMs(windowMs: number): number {
  return Math.max(1, Math.ceil(windowMs / SLOT_DIVISOR));
}

/** The time an event at `now` is recorded under: the END of its slot. */
export function slotStamp(windowMs: number, now: number): number {
  const s = slotMs(windowMs);
  return (Math.floor(now / s) + 1) * s;
}

/** One rate limit on one key: at most `limit` cost per `windowMs`. */
export interface RateLimit {
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
}

export interface HitResult {
  readonly key: string;
  readonly limit: number;
  /** Allowed: the count including this hit. Refused: the count as it stands. */
  readonly count: number;
  readonly allowed: boolean;
  /** Refused: how long until enough of the window has passed for this cost. 0 when allowed. */
  readonly retryAfterMs: number;
}

export interface HitManyResult {
  /** True when every limit allowed the cost; then all were incremented, else none. */
  readonly allowed: boolean;
  readonly results: readonly HitResult[];
  /** The first limit that refused. */
  readonly denied?: HitResult;
  /** What `undo` needs to take this hit back. */
  readonly stamp: number;
}

/**
 * A rate's turn (GCRA): `at` is the start granted (ok: taken, within
 * maxWaitMs of now) or, refused, the earliest start the rate allows then
 * (nothing taken; ask again at that time).
 */
export interface Turn {
  readonly ok: boolean;
  /** Ms since the epoch, on the caller's clock (the `now` it passed). */
  readonly at: number;
}

/** A record that runs until a time (a provider's suspension): its end and the caller's value. */
export interface UntilRecord {
  readonly until: number;
  readonly value: string;
}

/** A rate's interval (turn): a positive finite number of ms (a fraction allowed); every store refuses others alike. */
export function checkInterval(intervalMs: number): void {
  if (!(Number.isFinite(intervalMs) && intervalMs > 0)) throw new TypeError(`state store: a turn's interval must be a positive number of ms, got ${intervalMs}`);
}

/** A ranking holds at most this many members before it is trimmed back to `max`. */
export function rankingCap(max: number): number {
  return max + Math.floor(max / 10);
}

/** A ranking's member and its score. */
export type RankEntry = readonly [member: string, score: number];

export interface StateStore {
  /** "memory", "redis", "dry-run": for logs and explain output. */
  readonly kind: string;

  /** Check-and-increment one sliding-window limit (all-or-nothing). */
  hit(key: string, limit: number, windowMs: number, cost: number, now: number): Promise<HitResult>;
  /** Check-and-increment several limits atomically: all are incremented or none. */
  hitMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult>;
  /** What hitMany would answer, without incrementing anything. */
  peekMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult>;
  /** Take back a hit (a later rule refused what a quota had counted). */
  undo(limits: readonly RateLimit[], cost: number, stamp: number): Promise<void>;
  /** Add to a sliding-window log unconditionally (e.g. failed logins); returns the new count. */
  record(key: string, windowMs: number, cost: number, now: number): Promise<number>;
  /** The current count of a sliding-window log. */
  count(key: string, windowMs: number, now: number): Promise<number>;

  /**
   * A plain counter with expiry (concurrent connections, lockouts): adds `by`
   * (may be negative), refreshes the TTL, returns the new value. A counter
   * that reaches 0 or less is deleted.
   */
  incr(key: string, by: number, ttlMs: number, now: number): Promise<number>;
  /** A counter's value, 0 when absent or expired. */
  get(key: string, now: number): Promise<number>;
  /** Remaining TTL of a counter in ms, 0 when absent. */
  ttl(key: string, now: number): Promise<number>;
  del(key: string): Promise<void>;

  /**
   * A sliding set (later behaviour signals: distinct recipient domains per
   * hour, distinct networks per account): remembers `member` as seen at
   * `now` and returns how many distinct members were seen within the window.
   */
  addToSet(key: string, member: string, windowMs: number, now: number): Promise<number>;
  setSize(key: string, windowMs: number, now: number): Promise<number>;

  /**
   * A ranking (the console's senders by volume and by containment score, a
   * sender's recipient domains): sets each member's score (the newest write
   * wins) and marks it seen at `now`; members not seen within the window are
   * dropped; past rankingCap(max) members the lowest scores go until `max`
   * remain (ties: the lexically lowest member first; trimming in batches keeps
   * the in-memory store from sorting on every write). Returns how many remain.
   */
  rank(key: string, entries: readonly RankEntry[], windowMs: number, max: number, now: number): Promise<number>;
  /** The ranking's `n` highest scores seen within the window, highest first (ties: lexically highest member first). */
  top(key: string, n: number, windowMs: number, now: number): Promise<RankEntry[]>;

  /**
   * One turn of a smooth rate (GCRA, one every `intervalMs`, no burst;
   * shaping.ts: a provider's rate shared by every process and gateway). The
   * key holds the earliest start of the next turn (TAT); a turn starts at
   * max(now, TAT). Within `maxWaitMs` of now it is taken (TAT moves one
   * interval on) and `at` is its start; later, nothing is taken and `at` is
   * that start. `intervalMs` may have a fraction (a rate of 3/s); the key
   * expires once its TAT has passed.
   */
  turn(key: string, intervalMs: number, maxWaitMs: number, now: number): Promise<Turn>;
  /**
   * Set a record running until `until`, kept `ttlMs` from now (at least to
   * its end), unless the key holds one whose end is still after `now`: that
   * one stays (the first of several concurrent writers wins). Returns the
   * record in force and whether this call set it.
   */
  setUntil(key: string, until: number, value: string, ttlMs: number, now: number): Promise<UntilRecord & { readonly set: boolean }>;
  /** The record (ended or not) while it is kept, else undefined. */
  getUntil(key: string, now: number): Promise<UntilRecord | undefined>;

  close(): Promise<void>;
}
