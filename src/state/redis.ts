/**
 * The Redis state store (fleet mode): the same StateStore semantics as
 * src/state/memory.ts, shared by every gateway of a fleet, so a quota is one
 * quota however many gateways accept mail. Every operation is ONE Lua
 * script (ioredis defineCommand: EVALSHA, EVAL on NOSCRIPT), so each
 * check-and-increment is atomic and costs one round trip.
 *
 * Layout (P = the configured keyPrefix, K = a key from keys.ts):
 *   sliding-window log  P+K      hash  slot stamp → cost, and "t" → total
 *                       P+K#z    sorted set of the slot stamps (score = stamp),
 *                                so expired slots are found in order
 *   counter             P+K      hash  "v" → value, "e" → expiry (caller's clock)
 *   sliding set         P+K      sorted set member → last seen (caller's clock)
 *   ranking             P+K      sorted set member → score
 *                       P+K#z    sorted set member → last seen (caller's clock)
 * Slots are exactly those of store.ts (slotStamp: the END of a slot of
 * W/SLOT_DIVISOR), computed here in TypeScript and passed to the scripts,
 * so this store and the memory store agree slot for slot.
 *
 * Time: windows and counter expiry follow the caller's `now` (an injected
 * clock in tests, Date.now() in a fleet whose clocks NTP keeps together);
 * Redis' own TTL (PEXPIRE, relative) only collects garbage: each key
 * expires when its newest slot has left the window (log), with its TTL
 * (counter) or when its newest member has (set).
 *
 * Redis Cluster: every key of one operation carries the same {hash tag}
 * (keys.ts puts the subject in it; the companion K#z shares K's tag, or
 * gets K itself as its tag when K has none), so every script runs on one
 * node. The prefix is applied here, not by ioredis' keyPrefix, so the
 * companion rule also holds for untagged keys (tests, benchmarks).
 *
 * Talks to: Redis (standalone, Sentinel or Cluster, through one ioredis
 * client). Trusts: Redis' answers; the caller's keys (keys.ts escapes them).
 */
import type { Cluster, Redis } from 'ioredis';
import { checkInterval, rankingCap, slotStamp, type HitManyResult, type HitResult, type RankEntry, type RateLimit, type StateStore, type Turn, type UntilRecord } from './store';

/** The ioredis client kinds this store accepts (one connection or a cluster). */
export type RedisClient = Redis | Cluster;

// ---- the scripts ----

// Shared Lua: prune a log's expired slots, and add to a log.
const LOG_LIB = `
local function fmt(n) return string.format('%.0f', n) end
local function prune(z, h, now, w)
  local total = tonumber(redis.call('HGET', h, 't') or '0')
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now - w))
  if #old > 0 then
    for i = 1, #old, 500 do
      local chunk = {}
      for j = i, math.min(i + 499, #old) do chunk[#chunk + 1] = old[j] end
      local costs = redis.call('HMGET', h, unpack(chunk))
      for j = 1, #costs do total = total - (tonumber(costs[j]) or 0) end
      redis.call('HDEL', h, unpack(chunk))
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', fmt(now - w))
    if total <= 0 then
      redis.call('DEL', z, h)
      total = 0
    else
      redis.call('HSET', h, 't', total)
    end
  elseif total <= 0 and redis.call('EXISTS', h) == 1 then
    redis.call('DEL', z, h)
    total = 0
  end
  return total
end
-- A slot already present needs no new expiry: the key already lives until its
-- newest slot leaves the window. Only a new slot adds to the sorted set and
-- pushes the expiry (4 calls for a hit in an existing slot, 8 for a new one).
local function add(z, h, stamp, cost, now, w)
  local c = redis.call('HINCRBY', h, stamp, cost)
  local total = redis.call('HINCRBY', h, 't', cost)
  if c == cost then
    redis.call('ZADD', z, stamp, stamp)
    local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    local ttl = math.max(1, math.ceil(tonumber(top[2]) + w - now))
    redis.call('PEXPIRE', h, ttl)
    redis.call('PEXPIRE', z, ttl)
  end
  return total
end
-- How long until "need" of the window's cost has left it (memory.ts retryAfter).
local function retry_after(z, h, need, impossible, w, now, count)
  if impossible or count <= 0 then return w end
  local slots = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #slots, 2 do
    freed = freed + (tonumber(redis.call('HGET', h, slots[i]) or '0'))
    if freed >= need then return math.max(0, tonumber(slots[i + 1]) + w - now) end
  end
  return w
end
`;

/**
 * hitMany / peekMany / hit. KEYS: per limit its log hash and stamp zset,
 * then optionally a once-marker (see Once). ARGV: now, cost, mode, then per
 * limit: limit, windowMs, slot stamp, then the marker's TTL. Mode 0 peeks,
 * 1 adds if every limit allows (and then sets the marker), 2 adds
 * regardless unless the marker exists (a replay of a hit served locally).
 * Returns per limit: count, allowed (1|0), retryAfterMs.
 */
const HIT = `${LOG_LIB}
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local mode = ARGV[3]
local n = math.floor(#KEYS / 2)
local once = KEYS[2 * n + 1]
local onceTtl = ARGV[4 + 3 * n]
if once and mode == '2' and not redis.call('SET', once, '1', 'NX', 'PX', onceTtl) then return {} end
local out = {}
local denied = false
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[4 + 3 * (i - 1)])
  local w = tonumber(ARGV[5 + 3 * (i - 1)])
  local count = prune(z, h, now, w)
  local allowed = count + cost <= limit
  local retry = 0
  if allowed then
    out[#out + 1] = count + cost
    out[#out + 1] = 1
  else
    denied = true
    retry = retry_after(z, h, count + cost - limit, cost > limit, w, now, count)
    out[#out + 1] = count
    out[#out + 1] = 0
  end
  out[#out + 1] = retry
end
if mode == '2' or (mode == '1' and not denied) then
  for i = 1, n do
    add(KEYS[2 * i], KEYS[2 * i - 1], ARGV[6 + 3 * (i - 1)], cost, now, tonumber(ARGV[5 + 3 * (i - 1)]))
  end
  if once and mode == '1' then redis.call('SET', once, '1', 'PX', onceTtl) end
end
return out
`;

/** undo. KEYS: per limit hash, zset, then optionally a once-marker. ARGV: cost, then per limit its slot stamp, then the marker's TTL. */
const UNDO = `
local cost = tonumber(ARGV[1])
local n = math.floor(#KEYS / 2)
if KEYS[2 * n + 1] and not redis.call('SET', KEYS[2 * n + 1], '1', 'NX', 'PX', ARGV[2 + n]) then return 0 end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local stamp = ARGV[1 + i]
  local c = tonumber(redis.call('HGET', h, stamp) or false)
  if c then
    local take = math.min(cost, c)
    if c - take <= 0 then
      redis.call('HDEL', h, stamp)
      redis.call('ZREM', z, stamp)
    else
      redis.call('HSET', h, stamp, c - take)
    end
    local total = tonumber(redis.call('HINCRBY', h, 't', -take))
    if total <= 0 then redis.call('DEL', h, z) end
  elseif redis.call('EXISTS', h) == 1 and tonumber(redis.call('HGET', h, 't') or '0') <= 0 then
    redis.call('DEL', h, z)
  end
end
return 1
`;

/**
 * record (ARGV: windowMs, cost, now, slot stamp[, marker TTL]) and count
 * (ARGV: windowMs, 0, now: no stamp). KEYS: hash, zset[, once-marker].
 */
const RECORD = `${LOG_LIB}
local w, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local total = prune(KEYS[2], KEYS[1], now, w)
if ARGV[4] == nil then return total end
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return total end
return add(KEYS[2], KEYS[1], ARGV[4], cost, now, w)
`;

/** incr. KEYS: counter[, once-marker]. ARGV: by, ttlMs, now[, marker TTL]. */
const INCR = `
local by, ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'v', 'e')
local v = 0
if cur[1] and tonumber(cur[2]) > now then v = tonumber(cur[1]) end
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then return tostring(v) end
v = v + by
if v <= 0 then
  redis.call('DEL', KEYS[1])
  return '0'
end
redis.call('HSET', KEYS[1], 'v', v, 'e', string.format('%.0f', now + ttl))
if ttl >= 1 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl)) else redis.call('DEL', KEYS[1]) end
return tostring(v)
`;

/** get (ARGV: now, 'get') and ttl (ARGV: now, 'ttl'). KEYS: counter. */
const COUNTER_READ = `
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'e')
if not cur[1] then return '0' end
local e = tonumber(cur[2])
if e <= now then
  if ARGV[2] == 'get' then redis.call('DEL', KEYS[1]) end
  return '0'
end
if ARGV[2] == 'ttl' then return string.format('%.0f', e - now) end
return cur[1]
`;

/** addToSet (ARGV: windowMs, now, member) and setSize (ARGV: windowMs, now). KEYS: set. */
const SET = `
local w, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if ARGV[3] then redis.call('ZADD', KEYS[1], now, ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - w))
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] then
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(tonumber(top[2]) + w - now)))
end
return n
`;

// Shared Lua: drop a ranking's members not seen within the window. KEYS[1] scores, KEYS[2] seen.
const RANK_LIB = `
local function prune_ranking(w, now)
  local cut = string.format('%.0f', now - w)
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cut)
  for i = 1, #old, 500 do
    redis.call('ZREM', KEYS[1], unpack(old, i, math.min(i + 499, #old)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cut)
  return redis.call('ZCARD', KEYS[1])
end
`;

/** rank. KEYS: scores, seen. ARGV: windowMs, max, cap, now, then member, score pairs. */
const RANK = `${RANK_LIB}
local w, max, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[i])
end
local n = prune_ranking(w, now)
if n > cap then
  local low = redis.call('ZRANGE', KEYS[1], 0, n - max - 1)
  for i = 1, #low, 500 do
    local chunk = { unpack(low, i, math.min(i + 499, #low)) }
    redis.call('ZREM', KEYS[1], unpack(chunk))
    redis.call('ZREM', KEYS[2], unpack(chunk))
  end
  n = max
end
if n == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
elseif #ARGV > 4 then
  local ttl = math.max(1, math.ceil(w))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return n
`;

/** top. KEYS: scores, seen. ARGV: windowMs, now, n. Returns member, score, member, score... */
const TOP = `${RANK_LIB}
local w, now, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if prune_ranking(w, now) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {}
end
if n <= 0 then return {} end
return redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
`;

/**
 * turn (GCRA). KEYS: the rate's key (a string: its TAT, ms with a fraction).
 * ARGV: intervalMs, maxWaitMs, now. Returns ok (1|0) and the start, as strings.
 */
const TURN = `
local interval, maxWait, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local start = math.max(now, tat)
if start - now > maxWait then return {'0', string.format('%.3f', start)} end
local nxt = start + interval
redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - now)))
return {'1', string.format('%.3f', start)}
`;

/**
 * setUntil (ARGV: until, value, ttlMs, now) and getUntil (ARGV: now).
 * KEYS: a hash "u" → until, "v" → value, "e" → kept until (caller's clock).
 * Returns until, value[, set 1|0], or nothing when there is no record.
 */
const UNTIL = `
local now = tonumber(ARGV[#ARGV])
local cur = redis.call('HMGET', KEYS[1], 'u', 'v', 'e')
local live = cur[1] and tonumber(cur[3]) > now
if #ARGV == 1 then
  if not cur[1] then return {} end
  if not live then
    redis.call('DEL', KEYS[1])
    return {}
  end
  return {cur[1], cur[2]}
end
if live and tonumber(cur[1]) > now then return {cur[1], cur[2], '0'} end
local e = math.max(now + tonumber(ARGV[3]), tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'v', ARGV[2], 'e', string.format('%.0f', e))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(e - now)))
return {ARGV[1], ARGV[2], '1'}
`;

interface ScriptClient {
  shHit(...args: Array<string | number>): Promise<number[]>;
  shUndo(...args: Array<string | number>): Promise<number>;
  shRecord(...args: Array<string | number>): Promise<number>;
  shIncr(...args: Array<string | number>): Promise<string>;
  shCounterRead(...args: Array<string | number>): Promise<string>;
  shSet(...args: Array<string | number>): Promise<number>;
  shRank(...args: Array<string | number>): Promise<number>;
  shTop(...args: Array<string | number>): Promise<string[]>;
  shTurn(...args: Array<string | number>): Promise<string[]>;
  shUntil(...args: Array<string | number>): Promise<string[]>;
}

const SCRIPTS: Record<keyof ScriptClient, string> = {
  shHit: HIT,
  shUndo: UNDO,
  shRecord: RECORD,
  shIncr: INCR,
  shCounterRead: COUNTER_READ,
  shSet: SET,
  shRank: RANK,
  shTop: TOP,
  shTurn: TURN,
  shUntil: UNTIL,
};

/** Does `k` carry a Redis Cluster hash tag (a non-empty {...})? */
export function hasHashTag(k: string): boolean {
  const open = k.indexOf('{');
  if (open < 0) return false;
  const close = k.indexOf('}', open + 1);
  return close > open + 1;
}

/** Costs and clocks are whole numbers (HINCRBY): refuse anything else loudly. */
function whole(n: number, what: string): number {
  if (!Number.isSafeInteger(n)) throw new TypeError(`state store: ${what} must be a whole number, got ${n}`);
  return n;
}

/**
 * Makes one write idempotent across a timeout and its replay: the script
 * applies it only if the marker key for `id` is not there yet (SET NX, kept
 * `ttlMs`), so a command Redis executed although its reply came too late is
 * not applied again when the wrapper's journal replays it (resilient.ts).
 */
export interface Once {
  /** Random, made by the caller before the first attempt; the replay sends the same. */
  readonly id: string;
  /** How long the marker lives: at least as long as a replay could still change a count. */
  readonly ttlMs: number;
}

export interface RedisStoreOptions {
  /** Prefixed to every key (several fleets or test runs in one Redis). No braces. */
  readonly keyPrefix?: string;
  /** Close the client on close() (default true: the store owns it). */
  readonly ownsClient?: boolean;
}

export class RedisStore implements StateStore {
  readonly kind = 'redis';
  readonly prefix: string;
  private readonly r: ScriptClient;

  constructor(
    readonly client: RedisClient,
    private readonly opts: RedisStoreOptions = {},
  ) {
    this.prefix = opts.keyPrefix ?? '';
    if (/[{}]/.test(this.prefix)) throw new Error(`state store: keyPrefix must not contain braces (it would change the Redis Cluster hash slot): "${this.prefix}"`);
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      if (!(name in client)) client.defineCommand(name, { lua });
    }
    this.r = client as unknown as ScriptClient;
  }

  /** The Redis key of a log's, counter's or set's main structure. */
  key(k: string): string {
    return this.prefix + k;
  }

  /** The sorted set of a log's slot stamps: in the same hash slot as key(k). */
  stampsKey(k: string): string {
    const full = this.prefix + k;
    return hasHashTag(full) ? `${full}#z` : `{${full}}#z`;
  }

  /** The marker of a Once, in the hash slot of `k` (all keys of one operation share it). */
  private onceKey(k: string, id: string): string {
    const full = this.prefix + k;
    return hasHashTag(full) ? `${full}#once:${id}` : `{${full}}#once:${id}`;
  }

  /** Is the connection up (commands would be sent now, not queued)? */
  ready(): boolean {
    return this.client.status === 'ready';
  }

  private async evaluate(limits: readonly RateLimit[], cost: number, now: number, mode: 0 | 1 | 2, once?: Once): Promise<HitManyResult> {
    whole(cost, 'cost');
    whole(now, 'now');
    if (limits.length === 0) return { allowed: true, results: [], stamp: now };
    const keys: string[] = [];
    const argv: Array<string | number> = [now, cost, mode];
    for (const l of limits) {
      keys.push(this.key(l.key), this.stampsKey(l.key));
      argv.push(l.limit, whole(l.windowMs, 'windowMs'), slotStamp(l.windowMs, now));
    }
    if (once) {
      keys.push(this.onceKey(limits[0]!.key, once.id));
      argv.push(Math.max(1, Math.ceil(once.ttlMs)));
    }
    const raw = await this.r.shHit(keys.length, ...keys, ...argv);
    const results: HitResult[] = [];
    let denied: HitResult | undefined;
    limits.forEach((l, i) => {
      const r: HitResult = { key: l.key, limit: l.limit, count: Number(raw[3 * i]), allowed: Number(raw[3 * i + 1]) === 1, retryAfterMs: Number(raw[3 * i + 2]) };
      results.push(r);
      if (!r.allowed && !denied) denied = r;
    });
    return { allowed: !denied, results, denied, stamp: now };
  }

  async hit(key: string, limit: number, windowMs: number, cost: number, now: number): Promise<HitResult> {
    return (await this.evaluate([{ key, limit, windowMs }], cost, now, 1)).results[0]!;
  }

  /** With `once`, a hit that is applied leaves its marker, so replayHit with the same id does nothing. */
  hitMany(limits: readonly RateLimit[], cost: number, now: number, once?: Once): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, 1, once);
  }

  /** Add a hit served elsewhere (limits not checked) unless `once.id` was applied already. */
  async replayHit(limits: readonly RateLimit[], cost: number, now: number, once: Once): Promise<void> {
    await this.evaluate(limits, cost, now, 2, once);
  }

  peekMany(limits: readonly RateLimit[], cost: number, now: number): Promise<HitManyResult> {
    return this.evaluate(limits, cost, now, 0);
  }

  async undo(limits: readonly RateLimit[], cost: number, stamp: number, once?: Once): Promise<void> {
    if (limits.length === 0) return;
    const keys: string[] = [];
    const argv: Array<string | number> = [whole(cost, 'cost')];
    for (const l of limits) {
      keys.push(this.key(l.key), this.stampsKey(l.key));
      argv.push(slotStamp(l.windowMs, stamp));
    }
    if (once) {
      keys.push(this.onceKey(limits[0]!.key, once.id));
      argv.push(Math.max(1, Math.ceil(once.ttlMs)));
    }
    await this.r.shUndo(keys.length, ...keys, ...argv);
  }

  async record(key: string, windowMs: number, cost: number, now: number, once?: Once): Promise<number> {
    const args = [this.key(key), this.stampsKey(key), ...(once ? [this.onceKey(key, once.id)] : []), whole(windowMs, 'windowMs'), whole(cost, 'cost'), whole(now, 'now'), slotStamp(windowMs, now)];
    if (once) args.push(Math.max(1, Math.ceil(once.ttlMs)));
    return Number(await this.r.shRecord(once ? 3 : 2, ...args));
  }

  async count(key: string, windowMs: number, now: number): Promise<number> {
    return Number(await this.r.shRecord(2, this.key(key), this.stampsKey(key), whole(windowMs, 'windowMs'), 0, whole(now, 'now')));
  }

  async incr(key: string, by: number, ttlMs: number, now: number, once?: Once): Promise<number> {
    if (!once) return Number(await this.r.shIncr(1, this.key(key), by, whole(ttlMs, 'ttlMs'), whole(now, 'now')));
    return Number(await this.r.shIncr(2, this.key(key), this.onceKey(key, once.id), by, whole(ttlMs, 'ttlMs'), whole(now, 'now'), Math.max(1, Math.ceil(once.ttlMs))));
  }

  async get(key: string, now: number): Promise<number> {
    return Number(await this.r.shCounterRead(1, this.key(key), whole(now, 'now'), 'get'));
  }

  async ttl(key: string, now: number): Promise<number> {
    return Number(await this.r.shCounterRead(1, this.key(key), whole(now, 'now'), 'ttl'));
  }

  async del(key: string): Promise<void> {
    // Two keys of one hash slot (see stampsKey): one DEL, also on a cluster.
    await this.client.del(this.key(key), this.stampsKey(key));
  }

  async addToSet(key: string, member: string, windowMs: number, now: number): Promise<number> {
    return Number(await this.r.shSet(1, this.key(key), whole(windowMs, 'windowMs'), whole(now, 'now'), member));
  }

  async setSize(key: string, windowMs: number, now: number): Promise<number> {
    return Number(await this.r.shSet(1, this.key(key), whole(windowMs, 'windowMs'), whole(now, 'now')));
  }

  async rank(key: string, entries: readonly RankEntry[], windowMs: number, max: number, now: number): Promise<number> {
    const argv: Array<string | number> = [whole(windowMs, 'windowMs'), whole(max, 'max'), rankingCap(max), whole(now, 'now')];
    for (const [member, score] of entries) {
      if (!Number.isFinite(score)) throw new TypeError(`state store: a ranking's score must be a finite number, got ${score}`);
      argv.push(member, score);
    }
    return Number(await this.r.shRank(2, this.key(key), this.stampsKey(key), ...argv));
  }

  async top(key: string, n: number, windowMs: number, now: number): Promise<RankEntry[]> {
    const raw = await this.r.shTop(2, this.key(key), this.stampsKey(key), whole(windowMs, 'windowMs'), whole(now, 'now'), whole(n, 'n'));
    const out: RankEntry[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, Number(raw[i + 1])]);
    return out;
  }

  async turn(key: string, intervalMs: number, maxWaitMs: number, now: number): Promise<Turn> {
    checkInterval(intervalMs);
    const [ok, at] = await this.r.shTurn(1, this.key(key), intervalMs, Math.max(0, maxWaitMs), whole(now, 'now'));
    return { ok: ok === '1', at: Number(at) };
  }

  async setUntil(key: string, until: number, value: string, ttlMs: number, now: number): Promise<UntilRecord & { set: boolean }> {
    const raw = await this.r.shUntil(1, this.key(key), whole(until, 'until'), value, whole(ttlMs, 'ttlMs'), whole(now, 'now'));
    return { until: Number(raw[0]), value: String(raw[1]), set: raw[2] === '1' };
  }

  async getUntil(key: string, now: number): Promise<UntilRecord | undefined> {
    const raw = await this.r.shUntil(1, this.key(key), whole(now, 'now'));
    return raw.length < 2 ? undefined : { until: Number(raw[0]), value: String(raw[1]) };
  }

  /** Round-trip check (readiness, recovery probes). */
  async ping(): Promise<void> {
    await this.client.ping();
  }

  async close(): Promise<void> {
    if (this.opts.ownsClient === false) return;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}
