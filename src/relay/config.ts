/**
 * The relay section of the config: how mail leaves. Named concepts:
 * a *next hop* (host:port with its TLS and AUTH), *routes* (domain → next
 * hop), the *relayhost* (next hop for everything without a route; absent
 * means MX delivery), and the *retry schedule*.
 */
import { At, duration, hostPort, int, isObj, list, obj, oneOf, optStr, str, strList } from '../config/validate';

export type OutboundTls = 'none' | 'opportunistic' | 'required';

export interface NextHop {
  host: string;
  port: number;
  tls: OutboundTls;
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
  dns: { servers: string[]; timeoutMs: number; tries: number };
  /** Port used when delivering to an MX (25; tests use a high port). */
  mxPort: number;
  /** TLS towards MX hosts: opportunistic by default. */
  mxTls: OutboundTls;
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
  /** How long an idle pooled connection is kept open. */
  poolIdleMs: number;
  /** Messages sent over one connection before it is closed. */
  maxMessagesPerConnection: number;
}

function parseNextHop(v: unknown, at: At, defaultTls: OutboundTls, schedule = false): NextHop {
  // Shorthand: "host:port"
  if (typeof v === 'string') return { ...hostPort(v, at, 25), tls: defaultTls };
  const o = obj(v, at, schedule ? ['host', 'port', 'tls', 'auth', 'backoff', 'maxLifetime'] : ['host', 'port', 'tls', 'auth']);
  const hp = hostPort(o.port === undefined ? str(o.host, at.child('host')) : `${str(o.host, at.child('host'))}:${o.port}`, at.child('host'), 25);
  let auth: NextHop['auth'];
  if (o.auth !== undefined) {
    const a = obj(o.auth, at.child('auth'), ['user', 'pass']);
    auth = { user: str(a.user, at.child('auth').child('user')), pass: str(a.pass, at.child('auth').child('pass')) };
  }
  const tls = oneOf(o.tls, at.child('tls'), ['none', 'opportunistic', 'required'] as const, defaultTls);
  if (auth && tls === 'none') at.child('tls').fail('sending AUTH credentials needs tls: opportunistic or required');
  const hop: NextHop = { ...hp, tls, auth };
  if (o.backoff !== undefined) {
    hop.backoffMs = list(o.backoff, at.child('backoff')).map((d, i) => duration(d, at.child('backoff').child(i)));
    if (hop.backoffMs.length === 0) at.child('backoff').fail('needs at least one delay');
  }
  if (o.maxLifetime !== undefined) hop.maxLifetimeMs = duration(o.maxLifetime, at.child('maxLifetime'));
  return hop;
}

export function parseRelayConfig(v: unknown, at: At): RelayConfig {
  const o = obj(v, at, [
    'heloName', 'sourceAddress', 'dns', 'mxPort', 'mxTls', 'relayhost', 'routes', 'concurrencyPerDestination',
    'maxConnections', 'activeWindow', 'backoff', 'maxLifetime', 'connectTimeout', 'greetingTimeout', 'socketTimeout',
    'poolIdle', 'maxMessagesPerConnection',
  ]);
  const dns = obj(o.dns, at.child('dns'), ['servers', 'timeout', 'tries']);
  const routes = new Map<string, NextHop>();
  const rawRoutes = o.routes ?? {};
  if (!isObj(rawRoutes)) at.child('routes').fail('expected a mapping of domain → next hop');
  {
    for (const [domain, hop] of Object.entries(rawRoutes)) {
      routes.set(domain.toLowerCase(), parseNextHop(hop, at.child('routes').child(domain), 'opportunistic', true));
    }
  }
  const backoff = list(o.backoff, at.child('backoff'), ['5m', '10m', '20m', '40m', '1h', '2h', '4h']).map((d, i) =>
    duration(d, at.child('backoff').child(i)),
  );
  if (backoff.length === 0) at.child('backoff').fail('needs at least one delay');
  return {
    heloName: optStr(o.heloName, at.child('heloName')),
    sourceAddress: optStr(o.sourceAddress, at.child('sourceAddress')),
    dns: {
      servers: strList(dns.servers, at.child('dns').child('servers')),
      timeoutMs: duration(dns.timeout, at.child('dns').child('timeout'), '5s'),
      tries: int(dns.tries, at.child('dns').child('tries'), 2, 1, 10),
    },
    mxPort: int(o.mxPort, at.child('mxPort'), 25, 1, 65535),
    mxTls: oneOf(o.mxTls, at.child('mxTls'), ['none', 'opportunistic', 'required'] as const, 'opportunistic'),
    relayhost: o.relayhost === undefined || o.relayhost === null ? undefined : parseNextHop(o.relayhost, at.child('relayhost'), 'opportunistic'),
    routes,
    concurrencyPerDestination: int(o.concurrencyPerDestination, at.child('concurrencyPerDestination'), 20, 1),
    maxConnections: int(o.maxConnections, at.child('maxConnections'), 500, 1),
    activeWindow: int(o.activeWindow, at.child('activeWindow'), 2000, 1),
    backoffMs: backoff,
    maxLifetimeMs: duration(o.maxLifetime, at.child('maxLifetime'), '5d'),
    connectTimeoutMs: duration(o.connectTimeout, at.child('connectTimeout'), '30s'),
    greetingTimeoutMs: duration(o.greetingTimeout, at.child('greetingTimeout'), '30s'),
    socketTimeoutMs: duration(o.socketTimeout, at.child('socketTimeout'), '5m'),
    poolIdleMs: duration(o.poolIdle, at.child('poolIdle'), '10s'),
    maxMessagesPerConnection: int(o.maxMessagesPerConnection, at.child('maxMessagesPerConnection'), 100, 1),
  };
}
