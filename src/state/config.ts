/**
 * The `state:` config section and the state store built from it.
 *
 *   state:
 *     backend: memory | redis       memory (default): this gateway alone;
 *                                   redis: shared by a fleet of gateways
 *     failMode: open | closed       when Redis is unavailable (src/state/resilient.ts)
 *     keyPrefix: "fleet-a:"         before every key and channel (fleets sharing a Redis)
 *     redis:                        exactly one of url, sentinels, cluster
 *       url: redis://10.0.0.5:6379/0      (rediss:// for TLS; user:password@ allowed)
 *       sentinels: ["10.0.0.11:26379", ...]   with sentinelName (default mymaster)
 *       cluster: ["10.0.0.21:6379", ...]      seed nodes of a Redis Cluster
 *       username, password | passwordFile, sentinelPassword, tls: true|false
 *       commandTimeout: 250ms       no SMTP command ever waits longer on Redis
 *       connectTimeout: 2s          also how long start waits before running degraded
 *       maxReconnectDelay: 2s       reconnection backoff cap (it never gives up)
 *     probeInterval: 500ms          how often a degraded gateway tries Redis again
 *     journalMax: 100000            operations kept for replay after an outage
 *
 * ioredis is the client: the one maintained Node client that speaks to a
 * single Redis, Sentinel and Cluster through one API, with Lua scripts as
 * named commands (EVALSHA with EVAL fallback: scripts survive a Redis
 * restart), per-command timeouts, automatic reconnection and pub/sub.
 *
 * Talks to: Redis (through the store it builds). Trusts: the config file.
 */
import { readFileSync } from 'node:fs';
import type { ClusterOptions, RedisOptions } from 'ioredis';
import { At, bool, duration, hostPort, int, obj, oneOf, optStr, str, strList } from '../config/validate';
import type { Logger } from '../log';
import { MemoryStore } from './memory';
import { RedisStore, type RedisClient } from './redis';
import { ResilientStore, type FailMode, type StateStatus } from './resilient';
import type { StateStore } from './store';

export interface RedisConfig {
  readonly url?: string;
  readonly sentinels?: ReadonlyArray<{ host: string; port: number }>;
  readonly sentinelName: string;
  readonly cluster?: ReadonlyArray<{ host: string; port: number }>;
  readonly username?: string;
  readonly password?: string;
  readonly sentinelPassword?: string;
  readonly tls: boolean;
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxReconnectDelayMs: number;
}

export interface StateConfig {
  readonly backend: 'memory' | 'redis';
  readonly failMode: FailMode;
  readonly keyPrefix: string;
  readonly redis?: RedisConfig;
  readonly probeIntervalMs: number;
  readonly journalMax: number;
}

export const DEFAULT_STATE: StateConfig = { backend: 'memory', failMode: 'open', keyPrefix: '', probeIntervalMs: 500, journalMax: 100_000 };

export function parseStateConfig(v: unknown, at: At, resolve: (p: string) => string): StateConfig {
  const o = obj(v, at, ['backend', 'failMode', 'keyPrefix', 'redis', 'probeInterval', 'journalMax']);
  const backend = oneOf(o.backend, at.child('backend'), ['memory', 'redis'] as const, 'memory');
  const keyPrefix = str(o.keyPrefix, at.child('keyPrefix'), '');
  if (/[{}\s]/.test(keyPrefix)) at.child('keyPrefix').fail('must not contain braces or spaces (braces would change the Redis Cluster hash slot)');
  const cfg: StateConfig = {
    backend,
    failMode: oneOf(o.failMode, at.child('failMode'), ['open', 'closed'] as const, 'open'),
    keyPrefix,
    probeIntervalMs: Math.max(50, duration(o.probeInterval, at.child('probeInterval'), '500ms')),
    journalMax: int(o.journalMax, at.child('journalMax'), 100_000, 0, 10_000_000),
  };
  if (backend === 'memory') {
    if (o.redis !== undefined) at.child('redis').fail('set backend: redis to use a Redis (the default backend is memory)');
    return cfg;
  }
  return { ...cfg, redis: parseRedis(o.redis, at.child('redis'), resolve) };
}

function parseRedis(v: unknown, at: At, resolve: (p: string) => string): RedisConfig {
  const o = obj(v, at, ['url', 'sentinels', 'sentinelName', 'cluster', 'username', 'password', 'passwordFile', 'sentinelPassword', 'tls', 'commandTimeout', 'connectTimeout', 'maxReconnectDelay']);
  const url = optStr(o.url, at.child('url'));
  const sentinels = o.sentinels === undefined ? undefined : strList(o.sentinels, at.child('sentinels', { default: '—' })).map((s, i) => hostPort(s, at.child('sentinels').child(i), 26379));
  const cluster = o.cluster === undefined ? undefined : strList(o.cluster, at.child('cluster', { default: '—' })).map((s, i) => hostPort(s, at.child('cluster').child(i), 6379));
  const given = [url, sentinels, cluster].filter((x) => x !== undefined).length;
  if (given !== 1) at.fail('give exactly one of url (one Redis), sentinels (Redis Sentinel) or cluster (Redis Cluster)');
  if (url !== undefined && !/^rediss?:\/\//.test(url)) at.child('url').fail(`expected redis://host:port[/db] or rediss://…, got "${url}"`);
  if (sentinels?.length === 0) at.child('sentinels').fail('list at least one sentinel');
  if (cluster?.length === 0) at.child('cluster').fail('list at least one cluster node');
  let password = optStr(o.password, at.child('password'));
  const passwordFile = optStr(o.passwordFile, at.child('passwordFile'));
  if (password !== undefined && passwordFile !== undefined) at.fail('give password or passwordFile, not both');
  if (passwordFile !== undefined) {
    try {
      password = readFileSync(resolve(passwordFile), 'utf8').trim();
    } catch (err) {
      at.child('passwordFile').fail(`cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return {
    url,
    sentinels,
    sentinelName: str(o.sentinelName, at.child('sentinelName'), 'mymaster'),
    cluster,
    username: optStr(o.username, at.child('username')),
    password,
    sentinelPassword: optStr(o.sentinelPassword, at.child('sentinelPassword')),
    tls: bool(o.tls, at.child('tls', { default: '`true` for a rediss:// url, else `false`' }), url?.startsWith('rediss://') ?? false),
    commandTimeoutMs: Math.max(10, duration(o.commandTimeout, at.child('commandTimeout'), '250ms')),
    connectTimeoutMs: Math.max(100, duration(o.connectTimeout, at.child('connectTimeout'), '2s')),
    maxReconnectDelayMs: Math.max(50, duration(o.maxReconnectDelay, at.child('maxReconnectDelay'), '2s')),
  };
}

/** The state store of one gateway and what the rest of the app asks of it. */
export interface StateRuntime {
  readonly store: StateStore;
  readonly backend: 'memory' | 'redis';
  readonly keyPrefix: string;
  /** The Redis client (redis backend): the fleet's own keys and pub/sub use it. */
  readonly redis?: RedisClient;
  /** True while Redis is unavailable (metrics gauge smarthost_state_degraded). */
  degraded(): boolean;
  status(): StateStatus;
  /** /readyz: a reason this node must not get traffic (fail closed, Redis down). */
  readinessFailure(): string | undefined;
  /** /readyz: degraded but serving (fail open, Redis down). */
  readinessWarning(): string | undefined;
  /** Wait (bounded by connectTimeout) for Redis; continue degraded without it. */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** ioredis options shared by every connection (standalone, sentinel, cluster nodes). */
export function redisOptions(r: RedisConfig): RedisOptions {
  return {
    username: r.username,
    password: r.password,
    ...(r.tls ? { tls: {} } : {}),
    // A dead Redis must never hang an SMTP session: every command has a deadline...
    commandTimeout: r.commandTimeoutMs,
    connectTimeout: r.connectTimeoutMs,
    // ...commands are not parked across reconnections (the resilient store decides instead)...
    maxRetriesPerRequest: 1,
    // ...and never re-sent after a reconnection: a hit that may have run must not count twice.
    autoResendUnfulfilledCommands: false,
    // Reconnect forever, backing off to maxReconnectDelay.
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), r.maxReconnectDelayMs),
    reconnectOnError: (err: Error) => (/^READONLY\b/.test(err.message) ? 2 : false),
    lazyConnect: false,
    enableReadyCheck: true,
    connectionName: 'smarthost',
  };
}

/** A new connection to the configured Redis (the store's, or a subscriber's). */
export function connectRedis(r: RedisConfig, logger: Logger): RedisClient {
  // Loaded only here: ioredis costs each process ~17 MB of RSS, and a gateway
  // on the memory backend (most single nodes) never needs it.
  const { Cluster, Redis } = require('ioredis') as typeof import('ioredis');
  const common = redisOptions(r);
  let client: RedisClient;
  if (r.cluster) {
    const opts: ClusterOptions = {
      redisOptions: common,
      clusterRetryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), r.maxReconnectDelayMs),
      enableOfflineQueue: true,
      slotsRefreshTimeout: r.connectTimeoutMs,
    };
    client = new Cluster(r.cluster.map((n) => ({ host: n.host, port: n.port })), opts);
  } else if (r.sentinels) {
    client = new Redis({ ...common, sentinels: r.sentinels.map((s) => ({ host: s.host, port: s.port })), name: r.sentinelName, sentinelPassword: r.sentinelPassword });
  } else {
    client = new Redis(r.url!, common);
  }
  // ioredis reports every failed reconnection as an 'error' event; the
  // resilient store logs the transitions, this only keeps a trace.
  let lastLog = 0;
  client.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLog < 10_000) return;
    lastLog = now;
    logger.debug({ evt: 'state', err: err.message }, 'redis connection error');
  });
  return client;
}

export function createState(cfg: StateConfig, logger: Logger, opts: { memory?: StateStore; onChange?: (degraded: boolean) => void } = {}): StateRuntime {
  if (cfg.backend === 'memory' || !cfg.redis) {
    const store = opts.memory ?? new MemoryStore();
    return {
      store,
      backend: 'memory',
      keyPrefix: cfg.keyPrefix,
      degraded: () => false,
      status: () => ({ backend: store.kind, failMode: cfg.failMode, degraded: false, journal: 0, dropped: 0, outages: 0 }),
      readinessFailure: () => undefined,
      readinessWarning: () => undefined,
      start: async () => undefined,
      close: () => store.close(),
    };
  }
  const redisCfg = cfg.redis;
  const client = connectRedis(redisCfg, logger);
  const primary = new RedisStore(client, { keyPrefix: cfg.keyPrefix });
  const store = new ResilientStore(primary, { failMode: cfg.failMode, logger, probeIntervalMs: cfg.probeIntervalMs, journalMax: cfg.journalMax, onChange: opts.onChange });
  return {
    store,
    backend: 'redis',
    keyPrefix: cfg.keyPrefix,
    redis: client,
    degraded: () => store.degraded(),
    status: () => store.status(),
    readinessFailure: () => store.readinessFailure(),
    readinessWarning: () => store.readinessWarning(),
    async start() {
      const ok = await store.waitReady(redisCfg.connectTimeoutMs);
      if (ok) logger.info({ evt: 'state', backend: 'redis', failMode: cfg.failMode, keyPrefix: cfg.keyPrefix || undefined }, 'state store connected to Redis');
    },
    close: () => store.close(),
  };
}
