/**
 * The relay section of the config: how mail leaves. Named concepts:
 * a *next hop* (host:port with its TLS and AUTH), *routes* (domain → next
 * hop), the *relayhost* (next hop for everything without a route; absent
 * means MX delivery), and the *retry schedule*.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import { At, bool, duration, hostPort, int, isObj, list, mapOf, obj, oneOf, optStr, positiveDuration, renamed, size, str, strList } from '../config/validate';
import type { MtaStsConfig } from './mta-sts';
import type { DaneConfig } from './dane';
import type { DnsConfig } from './mx';
import type { TlsRptConfig } from './tls-report';
import { parseEgressPools, parsePoolSelection, type EgressPool, type PoolSelection } from './egress';
import { parseShaping, type ShapingConfig } from './providers';

/**
 * Outbound TLS levels (Postfix smtp_tls_security_level in brackets):
 *  - none: never STARTTLS;
 *  - opportunistic [may]: STARTTLS when offered, plaintext otherwise (and
 *    after a failed handshake); certificate not checked;
 *  - required [encrypt]: STARTTLS or defer; certificate not checked;
 *  - verify [verify/secure]: STARTTLS or defer, and the certificate must
 *    chain to a trusted CA (the system's, or `ca`) and be valid for the host
 *    name we connected to; a failure defers, never falls back to plaintext.
 */
export type OutboundTls = 'none' | 'opportunistic' | 'required' | 'verify';

const TLS_LEVELS = ['none', 'opportunistic', 'required', 'verify'] as const;

export interface NextHop {
  host: string;
  port: number;
  /** The config key `tlsLevel`. */
  tls: OutboundTls;
  /** tls: verify only — trusted CA certificates (PEM) instead of the system's; read at config load. */
  ca?: string;
  /** Where `ca` was read from (for the pool key and messages). */
  caFile?: string;
  /** Credentials for an upstream smart host; never logged. */
  auth?: { user: string; pass: string };
  /**
   * A retry schedule of this next hop's own (routes only; e.g. a backup MX
   * probing its primary often and holding mail long): replaces relay.backoff
   * and relay.maxLifetime for recipients routed here.
   */
  backoffMs?: number[];
  maxLifetimeMs?: number;
}

export interface RelayConfig {
  /** Outbound EHLO name; defaults to the gateway hostname. */
  heloName?: string;
  /** Local address outbound connections bind to. */
  sourceAddress?: string;
  /** Named egress pools (src/relay/egress.ts); empty: every message leaves from sourceAddress. */
  pools: Map<string, EgressPool>;
  /** Which pool a message leaves from, decided at acceptance; absent: no pools used. */
  poolSelection?: PoolSelection;
  /** Provider-aware shaping (src/relay/providers.ts, shaping.ts); absent: off. */
  shaping?: ShapingConfig;
  dns: DnsConfig;
  /** Port used when delivering to an MX (25; tests use a high port). */
  mxPort: number;
  /** TLS towards MX hosts: opportunistic by default. */
  mxTls: OutboundTls;
  /** mxTls: verify only — trusted CA certificates (PEM) instead of the system's. */
  mxCa?: string;
  mxCaFile?: string;
  /** MTA-STS (RFC 8461) for MX delivery: off unless enabled (src/relay/mta-sts.ts). */
  mtaSts?: MtaStsConfig;
  /** DANE (RFC 7672) for MX delivery, trusting a local validating resolver (src/relay/dane.ts). */
  dane?: DaneConfig;
  /** TLS-RPT (RFC 8460) daily reports of MTA-STS/DANE outcomes (src/relay/tls-report.ts). */
  tlsRpt?: TlsRptConfig;
  relayhost?: NextHop;
  routes: Map<string, NextHop>;
  concurrencyPerDestination: number;
  maxConnections: number;
  /** Messages in the active queue at once (Postfix's active window). */
  activeWindow: number;
  /** Delays before retries: attempt n waits backoff[min(n-1, len-1)]. */
  backoffMs: number[];
  maxLifetimeMs: number;
  connectTimeoutMs: number;
  greetingTimeoutMs: number;
  socketTimeoutMs: number;
  /**
   * The message body (smtp-client/data-deadline.ts): never longer than this
   * without a write, and at most this plus size / minDataRate in all.
   */
  dataTimeoutMs: number;
  /** Bytes per second the body must average beyond dataTimeout (0: progress only). */
  minDataRate: number;
  /** The wait for the reply to the message's end (RFC 5321 §4.5.3.2.6: 10 minutes). */
  dataDoneTimeoutMs: number;
  /** How long an idle pooled connection is kept open. */
  poolIdleMs: number;
  /** Messages sent over one connection before it is closed. */
  maxMessagesPerConnection: number;
}

/**
 * A CA bundle for tls: verify, read now so a missing or unreadable file is a
 * config error (naming file and key) rather than deferrals at delivery time.
 * Relative paths are relative to the config file's directory.
 */
function readCa(v: unknown, at: At, baseDir: string): { ca: string; caFile: string } {
  const file = path.resolve(baseDir, str(v, at));
  let ca: string;
  try {
    ca = readFileSync(file, 'utf8');
  } catch (err) {
    at.fail(`cannot read CA bundle ${file}: ${(err as Error).message}`);
  }
  if (!/-----BEGIN CERTIFICATE-----/.test(ca)) at.fail(`no PEM certificate (-----BEGIN CERTIFICATE-----) in ${file}`);
  try {
    createSecureContext({ ca });
  } catch (err) {
    at.fail(`unusable CA bundle ${file}: ${(err as Error).message}`);
  }
  return { ca, caFile: file };
}

function parseNextHop(v: unknown, at: At, defaultTls: OutboundTls, baseDir: string, schedule = false): NextHop {
  // Shorthand: "host:port"
  if (typeof v === 'string') return { ...hostPort(v, at, 25), tls: defaultTls };
  const keys = ['host', 'port', 'tlsLevel', 'ca', 'auth'];
  // `tlsLevel` was `tls` until this release (the word also named the listeners' mode and the certificate).
  const o = obj(renamed(v, at, 'tls', 'tlsLevel'), at, schedule ? [...keys, 'backoff', 'maxLifetime'] : keys);
  const hostAt = at.child('host', { doc: 'host name or address of the next hop ("host:port" allowed)', type: 'host or host:port' });
  const host = hostPort(str(o.host, hostAt), hostAt, 25);
  const hp = o.port === undefined ? host : { host: host.host, port: int(o.port, at.child('port', { doc: 'its port' }), 25, 1, 65535) };
  let auth: NextHop['auth'];
  if (o.auth !== undefined) {
    const a = obj(o.auth, at.child('auth'), ['user', 'pass']);
    auth = {
      user: str(a.user, at.child('auth').child('user', { doc: 'AUTH user name at the next hop' })),
      pass: str(a.pass, at.child('auth').child('pass', { doc: 'its password (never logged)' })),
    };
  }
  const tls = oneOf(o.tlsLevel, at.child('tlsLevel', { doc: 'TLS towards this next hop, as relay.mxTls. Named `tls` until this release' }), TLS_LEVELS, defaultTls);
  if (auth && tls === 'none') at.child('tlsLevel').fail('sending AUTH credentials needs tlsLevel: opportunistic, required or verify');
  const hop: NextHop = { ...hp, tls, auth };
  if (o.ca !== undefined && o.ca !== null) {
    if (tls !== 'verify') at.child('ca').fail(`a CA bundle is only used with tlsLevel: verify (tlsLevel is ${tls})`);
    Object.assign(hop, readCa(o.ca, at.child('ca', { doc: "tlsLevel: verify only: trust these CA certificates (PEM) instead of the system's", default: 'the system CAs' }), baseDir));
  }
  if (o.backoff !== undefined) {
    hop.backoffMs = list(o.backoff, at.child('backoff', { doc: "this route's own retry schedule", default: 'relay.backoff' })).map((d, i) => duration(d, at.child('backoff').child(i)));
    if (hop.backoffMs.length === 0) at.child('backoff').fail('needs at least one delay');
  }
  if (o.maxLifetime !== undefined) hop.maxLifetimeMs = duration(o.maxLifetime, at.child('maxLifetime', { doc: "this route's own lifetime before a bounce", default: 'relay.maxLifetime' }));
  return hop;
}

/** `baseDir`: where relative paths (`ca`, `mxCa`) resolve, the config file's directory as for every other path. */
export function parseRelayConfig(v: unknown, at: At, baseDir: string): RelayConfig {
  const o = obj(v, at, [
    'heloName', 'sourceAddress', 'dns', 'mxPort', 'mxTls', 'mxCa', 'relayhost', 'routes', 'concurrencyPerDestination',
    'maxConnections', 'activeWindow', 'backoff', 'maxLifetime', 'connectTimeout', 'greetingTimeout', 'socketTimeout',
    'dataTimeout', 'minDataRate', 'dataDoneTimeout', 'poolIdle', 'maxMessagesPerConnection', 'mtaSts', 'dane', 'tlsRpt', 'pools', 'poolSelection', 'shaping',
  ]);
  const pools = parseEgressPools(o.pools, at.child('pools', { doc: 'named egress pools: source addresses with their own EHLO name (docs/egress-pools.md)' }));
  const dns = obj(o.dns, at.child('dns'), ['servers', 'timeout', 'tries']);
  const routes = new Map<string, NextHop>();
  for (const [domain, hop] of Object.entries(mapOf(o.routes, at.child('routes', { doc: 'next hops by recipient domain, instead of relayhost or MX delivery' }), 'domain → next hop'))) {
    const routeAt = at.child('routes').entry(domain, 'domain', { doc: 'next hop for one recipient domain (exact match): "host:port" or a mapping', default: '—' });
    // A route for [192.0.2.1] would never be used: RCPT refuses every address-literal recipient.
    if (domain.startsWith('[')) routeAt.fail('an address literal is not a route: address-literal recipients are refused at RCPT (relay.address-literal, docs/policy.md)');
    routes.set(domain.toLowerCase(), parseNextHop(hop, routeAt, 'opportunistic', baseDir, true));
  }
  const backoff = list(o.backoff, at.child('backoff'), ['5m', '10m', '20m', '40m', '1h', '2h', '4h']).map((d, i) =>
    duration(d, at.child('backoff').child(i)),
  );
  if (backoff.length === 0) at.child('backoff').fail('needs at least one delay');
  const mxTls = oneOf(o.mxTls, at.child('mxTls'), TLS_LEVELS, 'opportunistic');
  let mxCa: { ca: string; caFile: string } | undefined;
  if (o.mxCa !== undefined && o.mxCa !== null) {
    if (mxTls !== 'verify') at.child('mxCa').fail(`a CA bundle is only used with mxTls: verify (mxTls is ${mxTls})`);
    mxCa = readCa(o.mxCa, at.child('mxCa', { default: 'the system CAs' }), baseDir);
  }
  return {
    heloName: optStr(o.heloName, at.child('heloName')),
    sourceAddress: optStr(o.sourceAddress, at.child('sourceAddress')),
    pools,
    poolSelection: parsePoolSelection(o.poolSelection, at.child('poolSelection', { doc: 'which egress pool a message leaves from: by account plan, netblock class, default; quarantine for released holds', default: '— (no pools)' }), pools),
    shaping: parseShaping(o.shaping, at.child('shaping', { doc: 'provider-aware traffic shaping: limits per mailbox provider and egress pool, suspension on throttle replies (docs/shaping.md)' }), [...pools.keys()]),
    dns: {
      servers: strList(dns.servers, at.child('dns').child('servers')),
      timeoutMs: duration(dns.timeout, at.child('dns').child('timeout'), '5s'),
      tries: int(dns.tries, at.child('dns').child('tries'), 2, 1, 10),
    },
    mxPort: int(o.mxPort, at.child('mxPort'), 25, 1, 65535),
    mxTls,
    mxCa: mxCa?.ca,
    mxCaFile: mxCa?.caFile,
    mtaSts: parseMtaSts(o.mtaSts, at.child('mtaSts'), baseDir),
    dane: parseDane(o.dane, at.child('dane')),
    tlsRpt: parseTlsRpt(o.tlsRpt, at.child('tlsRpt')),
    relayhost:
      o.relayhost === undefined || o.relayhost === null ? undefined : parseNextHop(o.relayhost, at.child('relayhost', { default: '— (MX delivery)' }), 'opportunistic', baseDir),
    routes,
    concurrencyPerDestination: int(o.concurrencyPerDestination, at.child('concurrencyPerDestination'), 20, 1),
    maxConnections: int(o.maxConnections, at.child('maxConnections'), 500, 1),
    activeWindow: int(o.activeWindow, at.child('activeWindow'), 2000, 1),
    backoffMs: backoff,
    maxLifetimeMs: duration(o.maxLifetime, at.child('maxLifetime'), '5d'),
    connectTimeoutMs: duration(o.connectTimeout, at.child('connectTimeout'), '30s'),
    greetingTimeoutMs: duration(o.greetingTimeout, at.child('greetingTimeout'), '30s'),
    socketTimeoutMs: duration(o.socketTimeout, at.child('socketTimeout'), '5m'),
    ...parseDataDeadline(o.dataTimeout, o.minDataRate, at),
    // RFC 5321 §4.5.3.2.6 asks for 10 minutes (Postfix smtp_data_done_timeout, 600s): the server may
    // be filtering, and a client that gives up sooner sends again a message it has very likely delivered.
    dataDoneTimeoutMs: positiveDuration(o.dataDoneTimeout, at.child('dataDoneTimeout', { doc: "the wait for the server's reply to the message's end: RFC 5321 asks for 10 minutes; giving up sooner risks a duplicate (Postfix smtp_data_done_timeout)" }), '10m'),
    poolIdleMs: duration(o.poolIdle, at.child('poolIdle'), '10s'),
    maxMessagesPerConnection: int(o.maxMessagesPerConnection, at.child('maxMessagesPerConnection'), 100, 1),
  };
}

/**
 * relay.dataTimeout and relay.minDataRate: the message body's deadline
 * (smtp-client/data-deadline.ts). Defaults: 3m, Postfix's
 * smtp_data_xfer_timeout; 16 KiB/s (128 kbit/s, slower than any mail
 * server's link should be), which gives the largest message
 * limits.maxMessageSize lets in (25 MB) about half an hour at most, where the
 * inactivity timeout alone gave it as long as the server kept reading a few
 * bytes at a time. Postfix's smtp_min_data_rate is 500 B/s (14 h for 25 MB,
 * and off unless smtp_per_request_deadline); KumoMTA writes the whole body
 * under one fixed 60 s limit, whatever its size.
 */
function parseDataDeadline(timeout: unknown, rate: unknown, at: At): { dataTimeoutMs: number; minDataRate: number } {
  const timeoutAt = at.child('dataTimeout', {
    doc: 'sending the message body: the longest it may go without the server taking any of it, and its head start before relay.minDataRate counts (Postfix smtp_data_xfer_timeout)',
  });
  const dataTimeoutMs = positiveDuration(timeout, timeoutAt, '3m', 'the message body needs a bound (a generous one is e.g. 30m)');
  const rateAt = at.child('minDataRate', {
    doc: 'bytes per second the body must average beyond relay.dataTimeout: a message of S bytes gets at most dataTimeout + S / minDataRate; 0: progress only (Postfix smtp_min_data_rate)',
    type: 'size per second',
  });
  // "16KB/s" reads as what it means; the "/s" is optional.
  const perSecond = typeof rate === 'string' ? rate.replace(/\s*\/\s*s(ec(ond)?)?\s*$/i, '') : rate;
  return { dataTimeoutMs, minDataRate: size(perSecond, rateAt, '16KB') };
}

/** relay.mtaSts: { enabled, ca, httpsPort, fetchTimeout }; absent = off. */
function parseMtaSts(v: unknown, at: At, baseDir: string): MtaStsConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, ['enabled', 'ca', 'httpsPort', 'fetchTimeout']);
  const ca = o.ca === undefined || o.ca === null ? undefined : readCa(o.ca, at.child('ca', { default: 'the system CAs' }), baseDir);
  return {
    enabled: bool(o.enabled, at.child('enabled'), true),
    httpsPort: int(o.httpsPort, at.child('httpsPort'), 443, 1, 65535),
    ca: ca?.ca,
    caFile: ca?.caFile,
    fetchTimeoutMs: duration(o.fetchTimeout, at.child('fetchTimeout'), '10s'),
  };
}

/**
 * relay.dane: { enabled, resolver, timeout }; absent = off. The resolver's AD
 * bit is trusted, so it must be on loopback (a validating resolver on this
 * host): an AD bit that crossed a network proves nothing.
 */
function parseDane(v: unknown, at: At): DaneConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, ['enabled', 'resolver', 'timeout']);
  const resolver = hostPort(str(o.resolver, at.child('resolver'), '127.0.0.1:53'), at.child('resolver'), 53);
  const host = resolver.host.replace(/^\[|\]$/g, '');
  if (!/^127\.\d+\.\d+\.\d+$/.test(host) && host !== '::1') {
    at.child('resolver').fail(`must be a DNSSEC-validating resolver on loopback (127.0.0.0/8 or ::1), got ${resolver.host}`);
  }
  return {
    enabled: bool(o.enabled, at.child('enabled'), true),
    resolver: `${host.includes(':') ? `[${host}]` : host}:${resolver.port}`,
    timeoutMs: duration(o.timeout, at.child('timeout'), '5s'),
  };
}

/** relay.tlsRpt: { enabled, orgName, contact }; absent = off. */
function parseTlsRpt(v: unknown, at: At): TlsRptConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, ['enabled', 'orgName', 'contact']);
  return {
    enabled: bool(o.enabled, at.child('enabled'), true),
    orgName: str(o.orgName, at.child('orgName')),
    contact: str(o.contact, at.child('contact')),
  };
}
