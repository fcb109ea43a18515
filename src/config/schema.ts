/**
 * The gateway's config: one YAML file, parsed section by section into typed
 * objects. Sections owned by a stage live beside that stage
 * (src/relay/config.ts, ...) and are composed here; everything else is here.
 * Unknown keys are errors so typos do not pass silently.
 */
import os from 'node:os';
import path from 'node:path';
import { parseProxyFrom } from '../fleet/proxy-from';
import type { ListenerConfig } from './listener';
import { parseAdminConfig, type AdminConfig } from '../admin/config';
import { parseDkimConfig, type DkimConfig } from '../dkim/config';
import { parseRelayConfig, type RelayConfig } from '../relay/config';
import { parseRolesConfig, type RolesConfig } from '../roles/config';
import { parseStateConfig, type StateConfig } from '../state/config';
import { parseMetricsConfig, type MetricsConfig } from '../metrics/config';
import { parsePostfixConfig, type PostfixConfig } from '../postfix/config';
import { At, bool, duration, int, list, obj, oneOf, optStr, renamed, size, str, type ConfigWarning, type KeyRecorder, type Obj } from './validate';

export interface LimitsConfig {
  maxMessageSize: number;
  maxRecipients: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  idleTimeoutMs: number;
  /** Longest a DATA transfer may take before the session is dropped. */
  dataTimeoutMs: number;
  maxReceivedHeaders: number;
}

export interface Config {
  /** The file the config came from (for messages), or '(defaults)'. */
  file: string;
  /** Directory that relative paths in the config are resolved against. */
  baseDir: string;
  /** Running on the embedded defaults (quick start): create demo state. */
  embedded?: boolean;
  hostname: string;
  log: { level: string; pretty: boolean };
  spool: { dir: string; fsync: boolean; journal: boolean };
  /**
   * The server side's TLS: the listeners' certificate (the admin API's too,
   * unless admin.tls) and the lowest protocol version they accept. Without
   * cert/key a TLS listener is a config error unless `selfSigned: true`
   * (the embedded quick start sets it): a self-signed certificate made
   * silently would make subscribers' clients warn, or teach them to click
   * through warnings. (Until this release the key was `tls`.)
   */
  serverTls: { cert?: string; key?: string; selfSigned: boolean; minVersion: 'TLSv1.2' | 'TLSv1.3' };
  accounts: { file: string; authCacheTtlMs: number };
  policy: { dir: string };
  listeners: ListenerConfig[];
  limits: LimitsConfig;
  relay: RelayConfig;
  dkim: DkimConfig;
  /** The admin API: address, operator and read-only tokens, TLS off loopback (src/admin/config.ts). */
  admin: AdminConfig;
  /**
   * Processes accepting mail (1: everything in one process), and the
   * unprivileged user/group to run as once the ports are bound (least
   * privilege; src/cli/start.ts). Unset: stay as started.
   */
  process: { workers: number; user?: string; group?: string };
  /** Smart-host roles: backup MX, address rewriting, POP-before-SMTP (docs/roles.md). */
  roles: RolesConfig;
  /** Where counters live: memory (one gateway) or Redis (a fleet); docs/fleet.md. */
  state: StateConfig;
  /** Metric label limits: the domains that may appear as a `domain` label (docs/observability.md). */
  metrics: MetricsConfig;
  /**
   * SMTP protocol strictness. `bareNewline`: a bare CR or LF in DATA is
   * rewritten to CRLF (`normalise`, the default) or the message is refused
   * with 554 5.6.0 (`reject`, Postfix's smtpd_forbid_bare_newline). Either
   * way no next hop can read a second end-of-data into it (SMTP smuggling,
   * test/security/smuggling.test.ts).
   */
  smtp: { bareNewline: 'normalise' | 'reject' };
  /** Policy service and milter for an existing Postfix (docs/postfix.md); unset: none. */
  postfix?: PostfixConfig;
  /** Keys read under a name that is going away, each with its file, key and new name (printed by the CLI at load). */
  warnings: ConfigWarning[];
}

const TOP_KEYS = ['hostname', 'log', 'spool', 'serverTls', 'accounts', 'policy', 'listeners', 'limits', 'relay', 'dkim', 'admin', 'process', 'roles', 'state', 'metrics', 'smtp', 'postfix'] as const;

export interface ParseOptions {
  /**
   * Whether the config is read to serve mail (`start`, `check-config`: the
   * default) or only for its paths and addresses (`dkim keygen`, `account`,
   * `queue`, …): a command that opens no listener does not need their certificate.
   */
  serving?: boolean;
  /** Notes every key read, for the configuration reference (src/config/reference.ts). */
  recorder?: KeyRecorder;
}

export function parseConfig(raw: unknown, file: string, baseDir: string, opts: ParseOptions = {}): Config {
  const warnings: ConfigWarning[] = [];
  const at = new At(file, '', opts.recorder, '', warnings);
  const top = obj(renamed(raw, at, 'tls', 'serverTls'), at, TOP_KEYS);
  const resolve = (p: string) => path.resolve(baseDir, p);

  const log = obj(top.log, at.child('log'), ['level', 'pretty']);
  const spool = obj(top.spool, at.child('spool'), ['dir', 'fsync', 'journal']);
  const tlsAt = at.child('serverTls', { doc: "The server side's TLS: the listeners' certificate (and the admin API's, unless admin.tls), and the lowest version accepted. Named `tls` until this release." });
  const tls = obj(top.serverTls, tlsAt, ['cert', 'key', 'selfSigned', 'minVersion']);
  const accounts = obj(top.accounts, at.child('accounts'), ['file', 'authCacheTtl']);
  const policy = obj(top.policy, at.child('policy'), ['dir']);

  const proc = obj(top.process, at.child('process'), ['workers', 'user', 'group']);
  const smtp = obj(top.smtp, at.child('smtp'), ['bareNewline']);
  const cert = optStr(tls.cert, tlsAt.child('cert'));
  const key = optStr(tls.key, tlsAt.child('key'));
  if ((cert === undefined) !== (key === undefined)) tlsAt.fail('cert and key must be given together');
  const selfSigned = bool(tls.selfSigned, tlsAt.child('selfSigned'), false);
  if (selfSigned && cert !== undefined) tlsAt.child('selfSigned').fail('true, but serverTls.cert and serverTls.key are given too: remove one');

  const cfg: Config = {
    file,
    baseDir,
    hostname: str(top.hostname, at.child('hostname', { default: 'the host name of the machine' }), os.hostname()),
    log: {
      level: oneOf(log.level, at.child('log').child('level'), ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'info'),
      pretty: bool(log.pretty, at.child('log').child('pretty'), false),
    },
    spool: {
      dir: resolve(str(spool.dir, at.child('spool').child('dir'), 'var/spool')),
      fsync: bool(spool.fsync, at.child('spool').child('fsync'), true),
      journal: bool(spool.journal, at.child('spool').child('journal'), true),
    },
    serverTls: {
      cert: cert === undefined ? undefined : resolve(cert),
      key: key === undefined ? undefined : resolve(key),
      selfSigned,
      minVersion: oneOf(tls.minVersion, tlsAt.child('minVersion'), ['TLSv1.2', 'TLSv1.3'], 'TLSv1.2'),
    },
    accounts: {
      file: resolve(str(accounts.file, at.child('accounts').child('file'), 'var/accounts.yaml')),
      authCacheTtlMs: duration(accounts.authCacheTtl, at.child('accounts').child('authCacheTtl'), '5m'),
    },
    policy: { dir: resolve(str(policy.dir, at.child('policy').child('dir'), 'policies')) },
    listeners: parseListeners(top.listeners, at.child('listeners', { doc: 'The SMTP services: each a role (submission, intercept, mx) on an address and port.' })),
    limits: parseLimits(top.limits, at.child('limits')),
    relay: parseRelayConfig(top.relay, at.child('relay', { doc: 'How mail leaves: MX delivery or a relayhost, routes, outbound TLS, retries and connection limits.' }), baseDir),
    dkim: parseDkimConfig(top.dkim, at.child('dkim', { doc: 'DKIM signing; who may sign as what is policy ([security.md](security.md), "Who may sign as what").' }), resolve),
    admin: parseAdminConfig(top.admin, at.child('admin'), resolve, { cert: cert === undefined ? undefined : resolve(cert), key: key === undefined ? undefined : resolve(key) }),
    process: {
      workers: parseWorkers(proc.workers, at.child('process').child('workers', { type: '`auto` (one per core but one) or int 1–64' })),
      user: optStr(proc.user, at.child('process').child('user')),
      group: optStr(proc.group, at.child('process').child('group')),
    },
    roles: parseRolesConfig(top.roles, at.child('roles', { doc: 'Smart-host roles: backup MX, address rewriting, POP-before-SMTP ([roles.md](roles.md)).' }), resolve),
    state: parseStateConfig(top.state, at.child('state', { doc: 'Where counters live: memory (one gateway) or Redis (a fleet, [fleet.md](fleet.md)).' }), resolve),
    metrics: parseMetricsConfig(top.metrics, at.child('metrics', { doc: 'Metric label limits ([observability.md](observability.md)).' })),
    smtp: { bareNewline: oneOf(smtp.bareNewline, at.child('smtp').child('bareNewline'), ['normalise', 'reject'] as const, 'normalise') },
    postfix: parsePostfixConfig(top.postfix, at.child('postfix', { doc: 'Policy service and milter for an existing Postfix ([postfix.md](postfix.md)); absent: none.' })),
    warnings,
  };
  if (cfg.postfix && cfg.listeners.some((l) => l.name === 'postfix')) at.child('listeners').fail('"postfix" names the Postfix services\' clients (postfix section): give this listener another name');
  const tlsListener = cfg.listeners.find((l) => l.security !== 'none');
  if (tlsListener && cert === undefined && !selfSigned && opts.serving !== false) {
    tlsAt.child('cert').fail(
      `listener "${tlsListener.name}" uses TLS (security: ${tlsListener.security}) but no certificate is configured: set serverTls.cert and serverTls.key, or serverTls.selfSigned: true for a generated self-signed one (clients will warn)`,
    );
  }
  return cfg;
}

const DEFAULT_LISTENERS: Obj[] = [
  { name: 'submission', role: 'submission', port: 587, security: 'starttls', auth: 'required' },
  { name: 'submissions', role: 'submission', port: 465, security: 'implicit', auth: 'required' },
  { name: 'intercept', role: 'intercept', port: 25, security: 'starttls', auth: 'none' },
];

function parseListeners(v: unknown, at: At): ListenerConfig[] {
  const items = list(v, at, DEFAULT_LISTENERS);
  const seen = new Set<string>();
  return items.map((item, i) => {
    const a = at.child(i);
    const o = obj(renamed(item, a, 'tls', 'security'), a, ['name', 'role', 'address', 'port', 'security', 'auth', 'greetDelay', 'proxyFrom']);
    const role = oneOf(o.role, a.child('role'), ['submission', 'intercept', 'mx'] as const);
    const name = str(o.name, a.child('name', { default: 'its role' }), role);
    if (seen.has(name)) a.child('name').fail(`duplicate listener name "${name}"`);
    seen.add(name);
    const security = oneOf(o.security, a.child('security', { doc: 'how clients get TLS: none, starttls, or implicit (TLS from the first byte, port 465). Named `tls` until this release' }), ['none', 'starttls', 'implicit'] as const, 'starttls');
    const auth = oneOf(o.auth, a.child('auth', { default: '`required` on submission, else `none`' }), ['none', 'required'] as const, role === 'submission' ? 'required' : 'none');
    if (role === 'submission' && auth !== 'required') a.child('auth').fail('a submission listener must require AUTH');
    if (role !== 'submission' && auth === 'required') a.child('auth').fail(`AUTH is only for submission listeners, not role ${role}`);
    if (auth === 'required' && security === 'none') a.child('security').fail('AUTH needs TLS: use starttls or implicit');
    return {
      name,
      role,
      security,
      auth,
      address: str(o.address, a.child('address'), '0.0.0.0'),
      port: int(o.port, a.child('port'), undefined, 0, 65535),
      // A public-facing listener keeps the early-talker pause (src/smtp/connection.ts);
      // authenticated submission has nothing to gain from it.
      greetDelayMs: duration(o.greetDelay, a.child('greetDelay', { default: '`0ms` on submission, else `100ms`', doc: 'pause before the banner: a client that talks first is an early talker (spambots do)' }), role === 'submission' ? '0ms' : '100ms'),
      proxyFrom: parseProxyFrom(o.proxyFrom, a.child('proxyFrom', { doc: 'load balancers allowed to send a PROXY protocol header: addresses or CIDRs (docs/fleet.md)' })),
    };
  });
}

function parseLimits(v: unknown, at: At): LimitsConfig {
  const o = obj(v, at, ['maxMessageSize', 'maxRecipients', 'maxConnections', 'maxConnectionsPerIp', 'idleTimeout', 'dataTimeout', 'maxReceivedHeaders']);
  return {
    maxMessageSize: size(o.maxMessageSize, at.child('maxMessageSize'), '25MB'),
    maxRecipients: int(o.maxRecipients, at.child('maxRecipients'), 100, 1),
    maxConnections: int(o.maxConnections, at.child('maxConnections'), 2000, 1),
    maxConnectionsPerIp: int(o.maxConnectionsPerIp, at.child('maxConnectionsPerIp'), 20, 1),
    idleTimeoutMs: duration(o.idleTimeout, at.child('idleTimeout'), '60s'),
    dataTimeoutMs: duration(o.dataTimeout, at.child('dataTimeout'), '10m'),
    maxReceivedHeaders: int(o.maxReceivedHeaders, at.child('maxReceivedHeaders'), 30, 1),
  };
}

/** `auto` = one worker per core; a number; 1 = a single process. */
/**
 * `process.workers: auto`: one worker per core but one, which stays for the
 * primary, the kernel's network work and whatever else shares the machine
 * (on 2 cores: one process; two were slower, docs/performance.md).
 */
export function autoWorkers(cores: number): number {
  return Math.max(1, cores - 1);
}

function parseWorkers(v: unknown, at: At): number {
  if (v === undefined || v === null) return 1;
  if (v === 'auto') return autoWorkers(os.availableParallelism());
  return int(v, at, 1, 1, 64);
}
