/**
 * DNS blocklists (policies/dnsbl.yaml): zones, what each return code means,
 * and the lookups themselves.
 *
 * Lookups go through node:dns's Resolver with our own servers (an ISP's
 * local rbldnsd mirror, or Spamhaus DQS), never the `dnsbl` package, which
 * reads any answer as "listed" and a timeout as "not listed". Here:
 *   - IPv4 clients are queried as reversed octets, IPv6 as reversed nibbles;
 *     IPv4-mapped IPv6 is queried as IPv4;
 *   - all zones are queried in parallel; each query has a hard deadline;
 *   - 127.0.0.x answers are listings, read through the zone's code table;
 *     127.255.255.x answers are the zone refusing us (public resolver, over
 *     quota) and any answer outside 127/8 is a broken or hijacking resolver:
 *     both are lookup ERRORS, never listings;
 *   - answers are cached for their TTL (clamped to min/max), NXDOMAIN and
 *     NODATA for the configured negative TTL; errors and timeouts are not
 *     cached; concurrent lookups of one name share one query. The cache
 *     holds raw answers, so it survives policy reloads;
 *   - loopback/private/reserved clients are not queried unless told to
 *     (`queryPrivate`: tests on 127.0.0.x).
 *
 * Talks to: DNS servers (UDP/TCP via c-ares). Trusts: nothing in answers.
 */
import { Resolver } from 'node:dns/promises';
import { performance } from 'node:perf_hooks';
import ipaddr from 'ipaddr.js';
import { At, bool, duration, hostPort, int, isObj, list, obj, str } from '../config/validate';
import { parsePerListener, PerListener, type ActionSpec } from './action';
import { canonicalIp, parseIp, reverseName } from './ip';

export interface DnsblCode {
  readonly from: number;
  readonly to: number;
  readonly meaning: string;
}

export interface DnsblZone {
  /** Short name used in rule ids and logs ("zen"). */
  readonly name: string;
  /** The DNS zone queried ("zen.spamhaus.org"). */
  readonly zone: string;
  readonly ipv4: boolean;
  readonly ipv6: boolean;
  readonly codes: readonly DnsblCode[];
  /** Meaning of a 127.0.0.x code not in the table. */
  readonly otherCode: string;
  /** Meaning → action per listener (absent meaning: the zone's "*" entry, else accept). */
  readonly actions: ReadonlyMap<string, PerListener<ActionSpec>>;
  /** What a failed lookup means per listener: accept (fail-open) or tempfail (fail-closed). */
  readonly onError: PerListener<ActionSpec>;
}

/**
 * Re-checking the intercept addresses that sent mail recently
 * (src/containment/dnsbl-poll.ts): an address that becomes listed is a
 * containment signal (dnsblListed) even while its connection stays open.
 */
export interface DnsblPoll {
  readonly enabled: boolean;
  /** How often each active address is looked up again (answers still come through the cache: TTLs hold). */
  readonly everyMs: number;
  /** An address stays active this long after its last message. */
  readonly activeForMs: number;
  /** At most this many active addresses are tracked (the least recently seen go first). */
  readonly maxAddresses: number;
  /** At most this many addresses are looked up per second. */
  readonly perSecond: number;
}

export interface DnsblConfig {
  readonly resolver: { readonly servers: readonly string[]; readonly timeoutMs: number; readonly tries: number };
  readonly poll: DnsblPoll;
  readonly cache: { readonly maxEntries: number; readonly negativeTtlMs: number; readonly minTtlMs: number; readonly maxTtlMs: number };
  readonly queryPrivate: boolean;
  readonly zones: readonly DnsblZone[];
}

export const NO_DNSBL: DnsblConfig = {
  resolver: { servers: [], timeoutMs: 2000, tries: 2 },
  poll: { enabled: false, everyMs: 600_000, activeForMs: 86_400_000, maxAddresses: 10_000, perSecond: 20 },
  cache: { maxEntries: 100_000, negativeTtlMs: 300_000, minTtlMs: 30_000, maxTtlMs: 3_600_000 },
  queryPrivate: false,
  zones: [],
};

const FAIL_OPEN: ActionSpec = { action: 'accept' };

function ipv4Number(s: string): number | undefined {
  const w = new Uint32Array(4);
  return parseIp(s, w) === 4 && !s.includes(':') ? w[0] : undefined;
}

export function parseDnsblConfig(raw: unknown, file: string, listeners: readonly string[]): DnsblConfig {
  const at = new At(file);
  const top = obj(raw ?? {}, at, ['resolver', 'cache', 'queryPrivate', 'zones', 'poll']);
  const p = obj(top.poll, at.child('poll'), ['enabled', 'every', 'activeFor', 'maxAddresses', 'perSecond']);
  const poll: DnsblPoll = {
    enabled: bool(p.enabled, at.child('poll').child('enabled'), top.poll !== undefined),
    everyMs: duration(p.every, at.child('poll').child('every'), '10m'),
    activeForMs: duration(p.activeFor, at.child('poll').child('activeFor'), '24h'),
    maxAddresses: int(p.maxAddresses, at.child('poll').child('maxAddresses'), 10_000, 1, 1_000_000),
    perSecond: int(p.perSecond, at.child('poll').child('perSecond'), 20, 1, 10_000),
  };
  if (poll.everyMs < 1000) at.child('poll').child('every').fail('must be at least 1s');
  const r = obj(top.resolver, at.child('resolver'), ['servers', 'timeout', 'tries']);
  const servers = list(r.servers, at.child('resolver').child('servers')).map((s, i) => {
    const a = at.child('resolver').child('servers').child(i);
    const hp = hostPort(s, a, 53);
    const kind = canonicalIp(hp.host) === undefined ? 0 : hp.host.includes(':') ? 6 : 4;
    if (kind === 0) a.fail(`a resolver must be an IP address (optionally with :port), got "${String(s)}"`);
    return kind === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
  });
  const c = obj(top.cache, at.child('cache'), ['maxEntries', 'negativeTtl', 'minTtl', 'maxTtl']);
  const cache = {
    maxEntries: int(c.maxEntries, at.child('cache').child('maxEntries'), NO_DNSBL.cache.maxEntries, 0),
    negativeTtlMs: duration(c.negativeTtl, at.child('cache').child('negativeTtl'), '5m'),
    minTtlMs: duration(c.minTtl, at.child('cache').child('minTtl'), '30s'),
    maxTtlMs: duration(c.maxTtl, at.child('cache').child('maxTtl'), '1h'),
  };
  if (cache.minTtlMs > cache.maxTtlMs) at.child('cache').child('minTtl').fail('must not be larger than maxTtl');
  const timeoutMs = duration(r.timeout, at.child('resolver').child('timeout'), '2s');
  if (timeoutMs < 1) at.child('resolver').child('timeout').fail('must be at least 1ms');
  const names = new Set<string>();
  const zones = list(top.zones, at.child('zones')).map((item, i) => {
    const a = at.child('zones').child(i);
    const o = obj(item, a, ['name', 'zone', 'ipv4', 'ipv6', 'codes', 'otherCode', 'actions', 'onError', 'comment']);
    const zone = str(o.zone, a.child('zone')).toLowerCase().replace(/\.$/, '');
    if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)+$/.test(zone)) a.child('zone').fail(`not a DNS zone: "${zone}"`);
    const name = str(o.name, a.child('name'), zone.split('.')[0]);
    if (!/^[a-z0-9_-]+$/i.test(name)) a.child('name').fail(`not a name: "${name}" (letters, digits, "_", "-")`);
    if (names.has(name)) a.child('name').fail(`duplicate zone name "${name}"`);
    names.add(name);
    const codes: DnsblCode[] = [];
    const rawCodes = o.codes ?? {};
    if (!isObj(rawCodes)) a.child('codes').fail('expected a mapping of "127.0.0.N" or "127.0.0.N-127.0.0.M" → meaning');
    for (const [k, m] of Object.entries(rawCodes)) {
      const ca = a.child('codes').child(k);
      const [lo, hi = lo] = k.split('-').map((x) => x.trim());
      const from = ipv4Number(lo!);
      const to = ipv4Number(hi!);
      if (from === undefined || to === undefined || from > to) return ca.fail(`not a return code or range: "${k}"`);
      if (from >>> 24 !== 127 || to >>> 24 !== 127) ca.fail('return codes are in 127.0.0.0/8');
      if (from >= 0x7fffff00) ca.fail('127.255.255.x answers are errors of the zone, never listings');
      const meaning = str(m, ca);
      if (!/^[a-z0-9_-]+$/i.test(meaning)) ca.fail(`not a meaning name: "${meaning}"`);
      codes.push({ from, to, meaning });
    }
    const otherCode = str(o.otherCode, a.child('otherCode'), 'listed');
    const meanings = new Set([...codes.map((x) => x.meaning), otherCode]);
    const actions = new Map<string, PerListener<ActionSpec>>();
    const rawActions = o.actions ?? {};
    if (!isObj(rawActions)) a.child('actions').fail('expected a mapping of meaning → action');
    for (const [meaning, v] of Object.entries(rawActions)) {
      if (meaning !== '*' && !meanings.has(meaning)) {
        a.child('actions').child(meaning).fail(`no return code means "${meaning}" (meanings: ${[...meanings].join(', ')})`);
      }
      actions.set(meaning, parsePerListener(v, a.child('actions').child(meaning), listeners, undefined));
    }
    return {
      name,
      zone,
      ipv4: bool(o.ipv4, a.child('ipv4'), true),
      ipv6: bool(o.ipv6, a.child('ipv6'), true),
      codes,
      otherCode,
      actions,
      onError: parsePerListener(o.onError, a.child('onError'), listeners, FAIL_OPEN),
    };
  });
  return {
    resolver: { servers, timeoutMs, tries: int(r.tries, at.child('resolver').child('tries'), 2, 1, 5) },
    poll,
    cache,
    queryPrivate: bool(top.queryPrivate, at.child('queryPrivate'), false),
    zones,
  };
}

// ---- lookups ----

export type LookupResult = 'listed' | 'clean' | 'error' | 'timeout';

interface Raw {
  result: LookupResult;
  codes: string[];
  ttlMs?: number;
  error?: string;
}

export interface ZoneAnswer {
  readonly zone: string;
  readonly query: string;
  readonly result: LookupResult | 'skipped';
  /** Answer addresses (127.0.0.x). */
  readonly codes: readonly string[];
  /** Meaning of each listed code, from the zone's table. */
  readonly meanings: readonly string[];
  readonly cached: boolean;
  readonly ms: number;
  readonly ttlMs?: number;
  readonly error?: string;
}

/** Raw answers by query name, shared by successive policy versions. */
export class DnsblCache {
  readonly entries = new Map<string, { raw: Raw; expiresAt: number }>();
  readonly inflight = new Map<string, Promise<Raw>>();
  constructor(public maxEntries = 100_000) {}

  get(name: string, now: number): Raw | undefined {
    const e = this.entries.get(name);
    if (!e) return undefined;
    if (e.expiresAt <= now) {
      this.entries.delete(name);
      return undefined;
    }
    return e.raw;
  }

  set(name: string, raw: Raw, ttlMs: number, now: number): void {
    if (this.maxEntries <= 0 || ttlMs <= 0) return;
    this.entries.delete(name);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    this.entries.set(name, { raw, expiresAt: now + ttlMs });
  }
}

export interface DnsblClientOptions {
  clock: () => number;
  observer?: (zone: string, result: LookupResult, ms: number) => void;
}

class DeadlineError extends Error {}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new DeadlineError(`no answer in ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

const NEGATIVE = new Set(['ENOTFOUND', 'ENODATA']);
const TIMEOUTS = new Set(['ETIMEOUT', 'ETIMEDOUT']);

export class DnsblClient {
  private readonly resolver: Resolver;

  constructor(
    readonly cfg: DnsblConfig,
    private readonly cache: DnsblCache,
    private readonly opts: DnsblClientOptions,
  ) {
    cache.maxEntries = cfg.cache.maxEntries;
    // c-ares retries within our deadline: each try gets its share.
    const tries = cfg.resolver.tries;
    this.resolver = new Resolver({ timeout: Math.max(1, Math.floor(cfg.resolver.timeoutMs / tries)), tries });
    if (cfg.resolver.servers.length > 0) this.resolver.setServers([...cfg.resolver.servers]);
  }

  /** Should this client be queried at all? (returns the reason it is not) */
  skipReason(ip: string, zone: DnsblZone): string | undefined {
    const canon = canonicalIp(ip);
    if (!canon) return 'not an IP address';
    const v6 = canon.includes(':');
    if (v6 && !zone.ipv6) return 'zone not queried for IPv6';
    if (!v6 && !zone.ipv4) return 'zone not queried for IPv4';
    if (!this.cfg.queryPrivate) {
      const range = ipaddr.parse(canon).range();
      if (range !== 'unicast') return `${range} address not queried (queryPrivate: false)`;
    }
    return undefined;
  }

  /** Query `zones` for `ip` in parallel. */
  check(ip: string, zones: readonly DnsblZone[]): Promise<ZoneAnswer[]> {
    return Promise.all(zones.map((z) => this.checkZone(ip, z)));
  }

  async checkZone(ip: string, zone: DnsblZone): Promise<ZoneAnswer> {
    const rev = reverseName(ip);
    const query = rev ? `${rev}.${zone.zone}` : zone.zone;
    const skip = this.skipReason(ip, zone);
    if (skip) return { zone: zone.name, query, result: 'skipped', codes: [], meanings: [], cached: false, ms: 0, error: skip };
    const now = this.opts.clock();
    const hit = this.cache.get(query, now);
    let raw: Raw;
    let cached = false;
    let ms = 0;
    if (hit) {
      raw = hit;
      cached = true;
    } else {
      const t0 = performance.now();
      let p = this.cache.inflight.get(query);
      if (!p) {
        p = this.query(query).finally(() => this.cache.inflight.delete(query));
        this.cache.inflight.set(query, p);
        raw = await p;
        ms = Math.round((performance.now() - t0) * 10) / 10;
        this.opts.observer?.(zone.name, raw.result, ms);
        if (raw.result === 'listed') this.cache.set(query, raw, this.clampTtl(raw.ttlMs), this.opts.clock());
        else if (raw.result === 'clean') this.cache.set(query, raw, this.cfg.cache.negativeTtlMs, this.opts.clock());
      } else {
        raw = await p;
        ms = Math.round((performance.now() - t0) * 10) / 10;
        cached = true;
      }
    }
    const codes = raw.result === 'listed' ? inTableOrder(zone, raw.codes) : raw.codes;
    const meanings = [...new Set(raw.result === 'listed' ? codes.map((c) => meaningOf(zone, c)) : [])];
    return { zone: zone.name, query, result: raw.result, codes, meanings, cached, ms, ttlMs: raw.ttlMs, error: raw.error };
  }

  private clampTtl(ttlMs: number | undefined): number {
    const c = this.cfg.cache;
    return Math.min(c.maxTtlMs, Math.max(c.minTtlMs, ttlMs ?? c.minTtlMs));
  }

  private async query(name: string): Promise<Raw> {
    try {
      const recs = await withDeadline(this.resolver.resolve4(name, { ttl: true }), this.cfg.resolver.timeoutMs);
      const codes = recs.map((r) => r.address);
      const ttlMs = recs.length ? Math.min(...recs.map((r) => r.ttl)) * 1000 : undefined;
      if (codes.length === 0) return { result: 'clean', codes: [] };
      const refused = codes.find((a) => a.startsWith('127.255.255.'));
      if (refused) return { result: 'error', codes, ttlMs, error: `the zone refused the query (${refused}): use a non-public resolver / check the subscription` };
      const foreign = codes.find((a) => !a.startsWith('127.'));
      if (foreign) return { result: 'error', codes, ttlMs, error: `answer outside 127.0.0.0/8 (${foreign}): not a DNSBL answer` };
      return { result: 'listed', codes, ttlMs };
    } catch (err) {
      if (err instanceof DeadlineError) return { result: 'timeout', codes: [], error: err.message };
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (NEGATIVE.has(code)) return { result: 'clean', codes: [] };
      if (TIMEOUTS.has(code)) return { result: 'timeout', codes: [], error: code };
      return { result: 'error', codes: [], error: code || (err as Error).message };
    }
  }
}

/**
 * Listed codes in the order of the zone's table (then numerically; unknown
 * codes last), so that equal-severity meanings are chosen by configuration,
 * not by the order the DNS server happened to return the A records in.
 */
function inTableOrder(zone: DnsblZone, codes: readonly string[]): string[] {
  const rank = (code: string): [number, number] => {
    const n = ipv4Number(code) ?? Number.MAX_SAFE_INTEGER;
    const i = zone.codes.findIndex((c) => n >= c.from && n <= c.to);
    return [i < 0 ? zone.codes.length : i, n];
  };
  return [...codes].sort((a, b) => {
    const [ia, na] = rank(a);
    const [ib, nb] = rank(b);
    return ia - ib || na - nb;
  });
}

export function meaningOf(zone: DnsblZone, code: string): string {
  const n = ipv4Number(code);
  if (n !== undefined) for (const c of zone.codes) if (n >= c.from && n <= c.to) return c.meaning;
  return zone.otherCode;
}

/** The action for a meaning on a listener: the zone's entry for it, else its "*" entry, else accept. */
export function actionFor(zone: DnsblZone, meaning: string, listener: string, role: Parameters<PerListener<ActionSpec>['get']>[1]): ActionSpec {
  return zone.actions.get(meaning)?.get(listener, role) ?? zone.actions.get('*')?.get(listener, role) ?? { action: 'accept' };
}

