/**
 * Mailbox providers for traffic shaping (relay.shaping): destinations are
 * grouped by the names of their MX hosts — every domain whose MX ends in
 * `google.com` is Google, whatever the recipient domain — so the limits a
 * provider sets (connections, messages per connection, messages per second)
 * are kept across all the domains it hosts. A destination no provider
 * matches is a group of its own (its routes.ts key) under the `other`
 * settings.
 *
 * Settings are data: built-in defaults for the big providers (below),
 * replaced field by field or extended by relay.shaping.providers, removed
 * with `null`. Numbers here are deliberately conservative starting points,
 * not any provider's published figures; the adaptive part (shaping.ts)
 * slows further when a provider says so.
 */
import { At, bool, duration, int, isObj, mapOf, obj, optStr, positiveDuration, strList } from '../config/validate';

/** Limits of one provider (or of `other`), optionally per egress pool. */
export interface ShapingLimits {
  /** Sessions open at once to the provider from one egress pool. */
  readonly maxConnections?: number;
  /** Transactions on one session before it is closed. */
  readonly messagesPerConnection?: number;
  /** Messages per second from one egress pool; undefined: no rate limit. */
  readonly ratePerSecond?: number;
}

export interface ProviderRules extends ShapingLimits {
  readonly name: string;
  /** MX host name suffixes (`google.com` matches `aspmx.l.google.com` and `google.com`). */
  readonly mx: readonly string[];
  /** Replies (421 / 4.7.x) that mean "slow down": each suspends the provider for the pool. */
  readonly throttleReplies: readonly RegExp[];
  /** First suspension; doubled for each throttle reply soon after the last suspension, up to maxSuspend. */
  readonly suspendMs: number;
  readonly maxSuspendMs: number;
  /** After a suspension the limits start at half and regain a tenth every recoverMs (additive increase). */
  readonly recoverMs: number;
  /** Limits per egress pool name, replacing the provider's for that pool. */
  readonly pools: ReadonlyMap<string, ShapingLimits>;
}

export interface ShapingConfig {
  readonly enabled: boolean;
  /** Longest wait inside the delivery agent for a rate token or a connection; longer: defer to a set time. */
  readonly maxWaitMs: number;
  /** Providers' rates and suspensions kept in the state store: one for every process and gateway sharing it (shaping.ts). */
  readonly shared: boolean;
  /** Matched in order; the first whose suffix matches an MX host wins. */
  readonly providers: readonly ProviderRules[];
  /** Destinations no provider matches, each its own group. */
  readonly other: ProviderRules;
}

/** Replies that say "too fast" at the big providers (case-insensitive; only 4xx replies are matched). */
export const DEFAULT_THROTTLE_REPLIES: readonly string[] = [
  'too many (connections|concurrent|sessions|messages)',
  'rate[- ]?limit',
  'try (again )?later',
  'temporarily (deferred|rate limited|throttled)',
  'unusual rate',
  '\\b4\\.7\\.(0|28|500|650)\\b',
  '\\[TS[S]?0[1-4]\\]',
];

interface DefaultProvider {
  readonly mx: string[];
  readonly maxConnections: number;
  readonly messagesPerConnection: number;
  readonly rate: string;
}

/** The built-in table (relay.shaping.providers adds to or overrides it). */
export const DEFAULT_PROVIDERS: Readonly<Record<string, DefaultProvider>> = {
  google: { mx: ['google.com', 'googlemail.com'], maxConnections: 10, messagesPerConnection: 50, rate: '20/s' },
  microsoft: { mx: ['outlook.com', 'protection.outlook.com', 'hotmail.com'], maxConnections: 5, messagesPerConnection: 20, rate: '10/s' },
  yahoo: { mx: ['yahoodns.net', 'yahoo.com', 'aol.com'], maxConnections: 5, messagesPerConnection: 20, rate: '10/s' },
  apple: { mx: ['icloud.com', 'me.com'], maxConnections: 5, messagesPerConnection: 20, rate: '5/s' },
  gmx: { mx: ['gmx.net', 'web.de', 'kundenserver.de'], maxConnections: 5, messagesPerConnection: 20, rate: '5/s' },
  comcast: { mx: ['comcast.net'], maxConnections: 3, messagesPerConnection: 10, rate: '5/s' },
};

const RATE_UNITS: Record<string, number> = { s: 1, sec: 1, second: 1, m: 60, min: 60, minute: 60, h: 3600, hour: 3600 };

/** "20/s", "600/min", "1000/h" → messages per second. */
export function parseRate(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*([a-z]+)\s*$/i.exec(text);
  const per = m ? RATE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || per === undefined || Number(m[1]) <= 0) return undefined;
  return Number(m[1]) / per;
}

const LIMIT_KEYS = ['maxConnections', 'messagesPerConnection', 'rate'] as const;
const PROVIDER_KEYS = ['mx', ...LIMIT_KEYS, 'throttleReplies', 'suspend', 'maxSuspend', 'recover', 'pools'] as const;

function parseLimits(o: Record<string, unknown>, at: At, dflt: ShapingLimits, dfltText: string): ShapingLimits {
  const rateAt = at.child('rate', { doc: 'messages per egress pool and time, e.g. 20/s, 600/min (smooth: one every 1/rate)', default: dfltText });
  let ratePerSecond = dflt.ratePerSecond;
  const text = optStr(o.rate, rateAt);
  if (text !== undefined) {
    ratePerSecond = parseRate(text);
    if (ratePerSecond === undefined) rateAt.fail(`not a rate: "${text}" (examples: 20/s, 600/min, 1000/h)`);
  }
  const maxConnections = int(o.maxConnections, at.child('maxConnections', { doc: 'sessions open at once per egress pool (0: relay.concurrencyPerDestination per domain)', default: dfltText }), dflt.maxConnections ?? 0, 0);
  const messagesPerConnection = int(o.messagesPerConnection, at.child('messagesPerConnection', { doc: 'transactions per session before it is closed (0: relay.maxMessagesPerConnection)', default: dfltText }), dflt.messagesPerConnection ?? 0, 0);
  return {
    ...(maxConnections > 0 ? { maxConnections } : {}),
    ...(messagesPerConnection > 0 ? { messagesPerConnection } : {}),
    ...(ratePerSecond !== undefined ? { ratePerSecond } : {}),
  };
}

function compile(patterns: readonly string[], at: At): RegExp[] {
  return patterns.map((p, i) => regex(p, at.child(i)));
}

function regex(p: string, at: At): RegExp {
  try {
    return new RegExp(p, 'i');
  } catch (err) {
    return at.fail(`not a regular expression: ${(err as Error).message}`);
  }
}

function parseProvider(name: string, v: unknown, at: At, base: DefaultProvider | undefined, isOther: boolean): ProviderRules {
  const o = obj(v, at, isOther ? PROVIDER_KEYS.filter((k) => k !== 'mx') : PROVIDER_KEYS);
  const mx = isOther ? [] : parseMx(o.mx, at, base);
  const builtIn = isOther ? 'none' : 'built-in providers: their row of the built-in table (docs/shaping.md); others: none';
  const limits = parseLimits(o, at, base ? { maxConnections: base.maxConnections, messagesPerConnection: base.messagesPerConnection, ratePerSecond: parseRate(base.rate) } : {}, builtIn);
  const trAt = at.child('throttleReplies', { doc: 'regular expressions (case-insensitive) for 4xx replies that mean "slow down"; each match suspends the provider for the egress pool', default: isOther ? 'none' : 'the built-in list (docs/shaping.md)' });
  const throttleReplies = compile(strList(o.throttleReplies, trAt, isOther ? [] : [...DEFAULT_THROTTLE_REPLIES]), trAt);
  const suspendMs = duration(o.suspend, at.child('suspend', { doc: 'first suspension after a throttle reply' }), '1m');
  const maxSuspendMs = duration(o.maxSuspend, at.child('maxSuspend', { doc: 'longest suspension (repeated throttle replies double it)' }), '30m');
  if (maxSuspendMs < suspendMs) at.child('maxSuspend').fail(`must not be shorter than suspend (${suspendMs} ms)`);
  const recoverMs = positiveDuration(o.recover, at.child('recover', { doc: 'after a suspension the limits restart at half and regain a tenth per this interval' }), '1m');
  const pools = new Map<string, ShapingLimits>();
  const pAt = at.child('pools', { doc: 'limits per egress pool name, replacing this provider\'s limits for that pool' });
  for (const [pool, pv] of Object.entries(mapOf(o.pools, pAt, 'pool name → limits'))) {
    const eAt = pAt.entry(pool, 'pool', { doc: 'limits of this provider for one egress pool', default: '—' });
    pools.set(pool, parseLimits(obj(pv, eAt, LIMIT_KEYS), eAt, limits, "the provider's"));
  }
  return { name, mx, ...limits, throttleReplies, suspendMs, maxSuspendMs, recoverMs, pools };
}

function parseMx(v: unknown, at: At, base: DefaultProvider | undefined): string[] {
  const mxAt = at.child('mx', { doc: 'MX host name suffixes of this provider (aspmx.l.google.com matches google.com)', default: 'built-in providers: the built-in table; others: required' });
  const mx = strList(v, mxAt, base?.mx ?? []).map((s) => s.toLowerCase().replace(/^\*?\./, '').replace(/\.$/, ''));
  if (mx.length === 0) mxAt.fail('needs at least one MX host name suffix');
  return mx;
}

/** relay.shaping; absent: on, with the built-in providers. `poolNames` checks the per-pool entries. */
export function parseShaping(v: unknown, at: At, poolNames: readonly string[]): ShapingConfig {
  const o = obj(v, at, ['enabled', 'maxWait', 'shared', 'providers', 'other']);
  const enabled = bool(o.enabled, at.child('enabled', { doc: 'provider-aware shaping and throttle-reply suspension (docs/shaping.md)' }), true);
  const maxWaitMs = duration(o.maxWait, at.child('maxWait', { doc: 'longest wait in the delivery agent for a rate token; longer waits defer the message to the time its turn comes' }), '2s');
  const shared = bool(o.shared, at.child('shared', { doc: "each provider's rate and suspensions kept in the state store (state.backend), so every process of this gateway and every gateway sharing its Redis send to it as one; connection limits stay per process (docs/shaping.md)" }), true);
  const pAt = at.child('providers', { doc: 'mailbox providers by MX host name, merged over the built-in table by name (null removes one)' });
  const raw = mapOf(o.providers, pAt, 'provider name → rules');
  const providers: ProviderRules[] = [];
  const names = new Set([...Object.keys(DEFAULT_PROVIDERS), ...Object.keys(raw)]);
  for (const name of names) {
    if (name === 'other') pAt.child(name).fail('"other" is the name of the group for every other destination; set relay.shaping.other');
    const eAt = pAt.entry(name, 'provider', { doc: 'one provider: MX suffixes, limits, throttle replies', default: '—' });
    if (name in raw && raw[name] === null) continue;
    if (name in raw && !isObj(raw[name])) eAt.fail('expected a mapping (or null to remove a built-in provider)');
    providers.push(parseProvider(name, raw[name], eAt, DEFAULT_PROVIDERS[name], false));
  }
  const other = parseProvider('other', o.other, at.child('other', { doc: 'destinations no provider matches: each domain (or relay host) its own group with these limits' }), undefined, true);
  for (const p of [...providers, other]) {
    for (const pool of p.pools.keys()) {
      if (!poolNames.includes(pool)) at.fail(`provider ${p.name}: unknown egress pool ${JSON.stringify(pool)} in pools (relay.pools has: ${poolNames.join(', ') || 'none'})`);
    }
  }
  return { enabled, maxWaitMs, shared, providers, other };
}

/** The provider whose suffix matches one of the host names (MX hosts or a relay host), else undefined. */
/** `n` is `suffix` or a host under it (aspmx.l.google.com under google.com), without building `.suffix` per try. */
function isSuffixHost(n: string, suffix: string): boolean {
  if (n.length === suffix.length) return n === suffix;
  return n.length > suffix.length && n.charCodeAt(n.length - suffix.length - 1) === 46 /* . */ && n.endsWith(suffix);
}

export function providerOf(cfg: ShapingConfig, hosts: readonly string[]): ProviderRules | undefined {
  const names = hosts.map((h) => h.toLowerCase().replace(/\.$/, ''));
  for (const p of cfg.providers) {
    if (p.mx.some((s) => names.some((n) => isSuffixHost(n, s)))) return p;
  }
  return undefined;
}
