/**
 * build(config) → the gateway, not yet listening; start() binds, stop()
 * drains. The order of the stages lives here and nowhere else:
 *   smtp (listeners) → policy → dkim → spool (commit) → qmgr → relay.
 * Every process builds the same shared parts; its role (single, primary,
 * worker) adds the acceptor and/or the queue owner (src/process/roles.ts),
 * each of which takes its turn at bind, start and stop.
 * Tests build the app on port 0 and drive it over real sockets.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { AccountStore } from './accounts/store';
import { AdminServer } from './admin/server';
import { registerQueueRoutes } from './admin/queue-routes';
import type { Config } from './config/schema';
import { ConfigError } from './config/validate';
import { createSigner, type DkimSigner } from './dkim/sign';
import { dkimKeygen } from './dkim/cli';
import { createLogger, type Logger } from './log';
import { explainQuery, registerPolicyRoutes } from './admin/policy-routes';
import { apiAuditEntry, AuditLog } from './admin/audit';
import { recordActivity, SenderActivity, type ActivityDeps } from './console/activity';
import { prefixOf } from './policy/ip';
import { mountConsole } from './console/web';
import { registerContainmentRoutes } from './containment/admin-routes';
import { wireContainment } from './containment/wire';
import { PolicyRuntime, type ReloadResult } from './policy/runtime';
import { loadUserHash } from './user-hash';
import type { PolicyObserver } from './policy/types';
import { createGatewayMetrics, type GatewayMetrics } from './metrics/index';
import { watchSpoolStorage } from './metrics/health';
import { createState, type StateRuntime } from './state/config';
import type { StateStore } from './state/store';
import type { Subject } from './state/keys';
import { Fleet } from './fleet/fleet';
import { registerFleetRoutes } from './admin/fleet-routes';
import { createDeliveryAgent, SmtpDeliveryAgent } from './relay/deliver';
import { Roles } from './roles/index';
import { PostfixServices } from './postfix/index';
import { ruleListeners } from './postfix/config';
import type { DeliveryAgent } from './relay/types';
import type { Listener, TlsMaterial } from './smtp/listener';
import type { BoundSocket } from './net/bound-socket';
import { loadTlsMaterial } from './smtp/tls-material';
import { QueueManager } from './spool/qmgr';
import { TlsReportCollector, TlsReporter } from './relay/tls-report';
import { Journal } from './spool/journal';
import { acceptIntoJournal, committedToQueue } from './spool/journal-accept';
import { queueLocalMessage } from './spool/local-mail';
import { processIdSuffix } from './spool/queue-id';
import { Spool } from './spool/store';
import { acceptor } from './process/acceptor';
import { queueOwner } from './process/queue-owner';
import { PROCESS_ROLES, type ProcessPart, type ProcessRoleName } from './process/roles';

export interface App {
  readonly cfg: Config;
  readonly logger: Logger;
  readonly spool: Spool;
  readonly qmgr: QueueManager;
  readonly accounts: AccountStore;
  readonly listeners: Listener[];
  readonly admin: AdminServer;
  /** The DKIM signer, when signing is enabled. */
  dkim(): DkimSigner | undefined;
  /** The policy in force (policies/*.yaml) and its reload. */
  readonly policy: PolicyRuntime;
  /** The state store (memory or Redis) and its health: degraded() for metrics. */
  readonly state: StateRuntime;
  /** Fleet-wide actions (suspensions, quota clears, reload) over the shared state. */
  readonly fleet: Fleet;
  /** The metric catalogue of this process (src/metrics) and the /metrics provider. */
  readonly metrics: GatewayMetrics;
  /** Re-read what can change at run time (SIGHUP, `smarthost reload`): the policy files. */
  reload(): Promise<{ ok: boolean; policy: ReloadResult }>;
  /** The Postfix policy service and milter, when configured. */
  readonly postfix: PostfixServices | undefined;
  /** Bound port of a listener by name (useful with port 0 in tests). */
  port(name: string): number;
  /** The certificate in use (a primary hands it to the workers it forks, which start unprivileged). */
  tlsMaterial(): TlsMaterial;
  /** Record a worker's accepted message in this process's state store (a primary serving its workers). */
  recordActivity(s: Subject, recipients: readonly string[], now: number): Promise<void>;
  /**
   * Reserve every address this process serves (listeners, admin API) without
   * accepting: the part that needs root. start() does everything else and
   * binds first if bind() was not called; `smarthost start` drops privileges
   * in between (src/cli/start.ts).
   */
  bind(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface BuildOptions {
  logger?: Logger;
  /** Replace the delivery agent (benchmarks of the accept path only). */
  agent?: DeliveryAgent;
  scanIntervalMs?: number;
  /** Policy metrics hooks (verdicts, DNSBL lookups, quota hits, reloads). */
  policyObserver?: PolicyObserver;
  /** Injectable clock for the policy engine's windows (tests, simulations). */
  clock?: () => number;
  /**
   * Multi-process gateway (src/cluster/supervisor.ts): the 'primary' runs the
   * queue manager and admin API without listeners; a 'worker' runs the
   * listeners, its store is the primary's (IPC), and its queue manager only
   * makes the first attempt of what it accepted. Default: 'single'.
   */
  role?: ProcessRoleName;
  /** The state store to use instead of a new in-memory one (a worker's IPC store). */
  state?: StateStore;
  /** Worker on the memory backend: the console's activity recorded by the primary (src/cluster/ipc-store.ts). */
  activityForward?: ActivityDeps['forward'];
  /** Worker: a message it deferred, for the primary's queue manager. */
  onDeferred?: (id: string, nextAttemptAt: number) => void;
  /** Primary: whether the workers' listeners are bound (readiness). */
  listenersReady?: () => boolean;
  /** Called after every reload (the primary tells its workers). */
  afterReload?: () => void;
  /** Worker: the certificate the primary read (a worker starts unprivileged and may not read the key). */
  tls?: TlsMaterial;
  /** Worker: the listeners' sockets, bound by the primary, by listener name. */
  sockets?: ReadonlyMap<string, BoundSocket>;
}

export async function build(cfg: Config, opts: BuildOptions = {}): Promise<App> {
  const logger = opts.logger ?? createLogger(cfg.log);
  const spool = new Spool(cfg.spool.dir, { fsync: cfg.spool.fsync });
  await spool.init();

  const accounts = new AccountStore(cfg.accounts.file, cfg.accounts.authCacheTtlMs);
  if (cfg.embedded && !existsSync(cfg.accounts.file)) await createDemoAccount(accounts, logger);
  accounts.load();

  const role = opts.role ?? 'single';
  const { accepts, ownsQueue } = PROCESS_ROLES[role];
  // Small messages tried at once are made durable in the acceptance journal (src/spool/journal.ts);
  // the primary accepts nothing, but recovers its dead workers' segments from the same directory.
  const journalDir = path.join(cfg.spool.dir, 'journal');
  const journal = cfg.spool.journal && accepts ? new Journal(journalDir, processIdSuffix(), { fsync: cfg.spool.fsync, logger }) : undefined;
  await journal?.init();
  // Counters outlive policy reloads. `state.backend: memory`: this gateway's own (a
  // worker's is the primary's, over IPC); `redis`: the fleet's, every process connects.
  const stateRt = createState(cfg.state, logger, { memory: opts.state });
  const state: StateStore = stateRt.store;
  const metrics = createGatewayMetrics(cfg, role);
  metrics.catalogue.watchDegraded(() => stateRt.degraded());
  metrics.catalogue.watchSuspended(() => accounts.all().filter((a) => accounts.get(a.name)?.suspended).length);
  const dnsblZones = (): string[] => policy.current().policy.dnsbl.zones.map((z) => z.name);
  // User names that failed AUTH are logged as a keyed hash, never as text (src/user-hash.ts).
  const userHash = await loadUserHash(cfg.spool.dir);
  // Postfix's clients appear as listener "postfix" in rules (src/postfix), beside the native listeners.
  const policy: PolicyRuntime = new PolicyRuntime({ dir: cfg.policy.dir, listeners: ruleListeners(cfg), store: state, logger, accounts, userHash, observer: opts.policyObserver ?? metrics.policyObserver(dnsblZones), clock: opts.clock });
  metrics.catalogue.knownZones(dnsblZones());
  // Containment (src/containment): behaviour signals after each policy decision (policies/containment.yaml).
  // Its feeds too: complaint reports (feedback.yaml), rspamd at end of DATA (content.yaml), DNSBL polling.
  const containment = wireContainment({ runtime: policy, store: state, logger, accounts, hostname: cfg.hostname, baseDir: cfg.baseDir, listeners: cfg.listeners, clock: opts.clock, observer: metrics.catalogue.feeds });
  metrics.catalogue.watchPolled(() => containment.poller.size);
  // The console's picture of senders (volume, recipient domains) from accepted mail, in the shared state.
  const activity = new SenderActivity({ store: state, logger, clock: opts.clock, forward: opts.activityForward, ipSubject: (ip) => prefixOf(ip, policy.current().policy.quotas.ipv6Prefix) ?? ip });
  const containedHooks = containment.wrap(() => policy.current());
  const policyHooks = cfg.admin.console ? activity.wrap(containedHooks) : containedHooks;
  if (cfg.embedded && cfg.dkim.enabled && !existsSync(cfg.dkim.keysDir)) await createDemoKeys(cfg, logger);
  // Signing is the last change to a message (after Received:), once, before the spool write.
  let signer: DkimSigner | undefined = cfg.dkim.enabled ? await createSigner(cfg.dkim, logger) : undefined;
  if (signer) signer.onSigned = metrics.catalogue.onSigned;

  let tls = opts.tls ?? (await loadTlsMaterial(cfg));
  // Smart-host roles (src/roles): backup MX checks, POP-before-SMTP grants, rewriting maps.
  const roles = new Roles(cfg, { store: state, accounts, logger });
  // The complaint address is consumed here, never relayed (so it sits outside the loop guard).
  // TLS-RPT (RFC 8460): MTA-STS/DANE outcomes counted per policy domain and day, reported below.
  const tlsCollector = cfg.relay.tlsRpt?.enabled ? new TlsReportCollector() : undefined;
  const tlsObserver = { onTlsPolicy: (e: Parameters<typeof metrics.catalogue.outboundTls.onTlsPolicy>[0]) => (metrics.catalogue.outboundTls.onTlsPolicy(e), tlsCollector?.onTlsPolicy(e)) };
  const delivery = opts.agent ?? createDeliveryAgent(cfg.relay, { hostname: cfg.hostname, logger, tlsObserver, shapingObserver: metrics.catalogue.shaping, state });
  const shaper = delivery instanceof SmtpDeliveryAgent ? delivery.shaper : undefined;
  if (shaper) metrics.catalogue.watchShaping(() => shaper.snapshot());
  const agent = containment.agent(roles.guard(delivery, logger));
  const qmgr = new QueueManager(spool, agent, cfg.relay, {
    hostname: cfg.hostname,
    logger,
    scanIntervalMs: opts.scanIntervalMs,
    mode: ownsQueue ? 'full' : 'first-attempt',
    onDeferred: opts.onDeferred,
    journal,
    journalDir,
  });
  qmgr.observe(metrics.catalogue.queue);
  qmgr.observe(containment.queueObserver);
  // Finished days' TLS reports are queued like DSNs: null sender, retried, never bounced back.
  const tlsReporter = tlsCollector && cfg.relay.tlsRpt
    ? new TlsReporter({
        cfg: cfg.relay.tlsRpt,
        dns: cfg.relay.dns,
        hostname: cfg.hostname,
        collector: tlsCollector,
        logger,
        ca: cfg.relay.mtaSts?.ca,
        submit: async (to, message) => {
          await queueLocalMessage(spool, (id) => qmgr.notify(id), { to, message, smtpUtf8: false, receivedAt: Date.now() });
        },
      })
    : undefined;
  const tlsReportTimer = tlsReporter ? setInterval(() => void tlsReporter.run().catch((err) => logger.error({ evt: 'error', err }, 'TLS report run failed')), 3_600_000) : undefined;
  tlsReportTimer?.unref();
  // Queue gauges from the process that owns the queue (a worker's first attempts are its own).
  if (ownsQueue) metrics.catalogue.bindQueue(qmgr, spool);

  const accepting = accepts
    ? acceptor({
        listeners: cfg.listeners,
        session: {
          cfg,
          accounts,
          policy: policyHooks,
          signer: () => signer,
          spool,
          onCommitted: committedToQueue(qmgr),
          journal: journal ? acceptIntoJournal(journal, qmgr) : undefined,
          logger,
          userHash,
          bareNewline: cfg.smtp.bareNewline,
          roles,
          endOfData: containment.endOfData,
          observer: metrics.catalogue.session,
        },
        tls: () => tls,
        sockets: opts.sockets,
        logger,
      })
    : undefined;
  const listeners: Listener[] = accepting?.listeners ?? [];

  // The policy service and milter for an existing Postfix: the same hooks, signer and state store.
  const postfix =
    cfg.postfix && ownsQueue
      ? new PostfixServices({
          cfg: cfg.postfix,
          hooks: policyHooks,
          accounts,
          classOf: (ip) => policy.current().policy.netblocks.match(ip)?.cls,
          signer: () => signer,
          endOfData: containment.endOfData,
          hostname: cfg.hostname,
          logger,
        })
      : undefined;

  const admin = new AdminServer({
    address: cfg.admin.address,
    port: cfg.admin.port,
    token: cfg.admin.token ?? (await tokenFrom(cfg.admin.tokenFile)),
    readToken: cfg.admin.readTokenFile ? await tokenFrom(cfg.admin.readTokenFile) : undefined,
    // Read before the privilege drop: the key may be root's alone.
    tls: cfg.admin.tls ? readAdminTls(cfg) : undefined,
    logger,
  });
  registerQueueRoutes(admin, qmgr);
  admin.metrics(() => metrics.render());
  roles.registerRoutes(admin);
  const reload = async () => {
    const p = policy.reload();
    roles.reload();
    // DKIM keys are re-read too (rotation); a failure keeps the keys in use and is logged.
    await signer?.reload().catch(() => undefined);
    // So are the TLS certificate and key (renewal without restart): new connections get
    // the new pair; an unreadable or broken pair keeps the one in use and is logged.
    try {
      const next = await loadTlsMaterial(cfg);
      for (const l of listeners) l.updateTls(next);
      tls = next;
      if (cfg.admin.tls) admin.updateTls(readAdminTls(cfg));
    } catch (err) {
      logger.error({ evt: 'error', err: (err as Error).message }, 'TLS reload failed; keeping the certificate in use');
    }
    opts.afterReload?.();
    return { ok: p.ok, policy: p };
  };
  const policyDeps = { runtime: policy, listeners: ruleListeners(cfg), accounts, reload, signer: () => signer };
  registerPolicyRoutes(admin, policyDeps);
  registerContainmentRoutes(admin, () => containment.containment, () => containment.recent());
  const fleet = new Fleet({ role, logger, accounts, store: state, storeStatus: () => stateRt.status(), redis: stateRt.redis, keyPrefix: stateRt.keyPrefix, reload, policy: () => policy.current() });
  registerFleetRoutes(admin, fleet, stateRt);
  const audit = new AuditLog(path.join(cfg.spool.dir, 'admin-audit.log'), metrics.catalogue.adminActions);
  admin.audit((call) => audit.record(apiAuditEntry(call)));
  if (cfg.admin.console) {
    mountConsole({ admin, spool, qmgr, accounts, fleet, containment: () => containment.containment, activity, policy, explain: (q) => explainQuery(policyDeps, q), audit, stateStatus: () => stateRt.status(), logger });
  }
  // Fail closed without Redis: not ready (the balancer prefers other gateways). Fail open: a warning.
  admin.readiness('state', async () => stateRt.readinessFailure());
  admin.readiness('state', async () => stateRt.readinessWarning(), { warnOnly: true });
  let listening = false;
  admin.readiness('listeners', async () => ((opts.listenersReady ? opts.listenersReady() : listening) ? undefined : 'not bound'));
  // A real write in spool/tmp (access(2) says yes to root, and nothing about a broken tmp/); after a failed
  // write or sync, not ready until one succeeds (src/metrics/health.ts).
  const storage = watchSpoolStorage(spool.dir, metrics.catalogue, logger);
  admin.readiness('spool', storage.probe);

  // This process's role: the queue owner's part first (the admin API binds before the listeners).
  const parts: ProcessPart[] = [];
  if (ownsQueue) parts.push(queueOwner({ admin, spool, journalDir, roles, postfix, logger }));
  if (accepting) parts.push(accepting);
  const closeParts = async () => {
    for (const p of [...parts].reverse()) await p.close().catch(() => undefined);
  };

  let bound = false;
  const bind = async () => {
    if (bound) return;
    try {
      for (const p of parts) await p.bind();
    } catch (err) {
      await closeParts();
      await admin.close();
      throw err;
    }
    bound = true;
  };

  return {
    cfg,
    logger,
    spool,
    qmgr,
    accounts,
    listeners,
    admin,
    dkim: () => signer,
    policy,
    state: stateRt,
    fleet,
    metrics,
    reload,
    postfix,
    port(name) {
      const l = listeners.find((x) => x.cfg.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.port;
    },
    tlsMaterial: () => tls,
    recordActivity: (s, recipients, now) => recordActivity(state, s, recipients, now),
    bind,
    async start() {
      await bind();
      // Everything from here runs as the service user when `smarthost start` drops privileges (uid: the evidence).
      logger.info({ evt: 'starting', role, uid: process.geteuid?.() }, 'starting: recovery, delivery, admin API, listeners');
      // Bounded by state.redis.connectTimeout: without Redis the gateway starts degraded.
      await stateRt.start();
      await fleet.start();
      // Recovery (the queue owner's) before any delivery.
      for (const p of parts) await p.prepare();
      await qmgr.start();
      containment.start();
      try {
        for (const p of parts) await p.open();
      } catch (err) {
        await closeParts();
        await admin.close();
        await qmgr.stop();
        throw err;
      }
      listening = true;
    },
    async stop() {
      listening = false;
      await closeParts();
      await containment.stop();
      await qmgr.stop();
      journal?.close();
      clearInterval(tlsReportTimer);
      tlsReporter?.cancel();
      storage.stop();
      await agent.close();
      await admin.close();
      await signer?.close();
      signer = undefined;
      await fleet.stop();
      await stateRt.close();
    },
  };
}

/** A token file's token, created (0600) on first start when missing. */
async function tokenFrom(file: string): Promise<string> {
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const token = randomBytes(24).toString('base64url');
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await fsp.writeFile(file, `${token}\n`, { mode: 0o600 });
  return token;
}

function readAdminTls(cfg: Config): { cert: Buffer; key: Buffer } {
  const t = cfg.admin.tls!;
  try {
    return { cert: readFileSync(t.cert), key: readFileSync(t.key) };
  } catch (err) {
    throw new ConfigError(cfg.file, 'admin.tls', `cannot read certificate or key: ${(err as Error).message}`);
  }
}

/** Quick start: a dual-algorithm key for the demo domain, so mail leaves signed. */
async function createDemoKeys(cfg: Config, logger: Logger): Promise<void> {
  for (const algo of ['rsa', 'ed25519'] as const) {
    const r = await dkimKeygen({ keysDir: cfg.dkim.keysDir, domain: 'example.net', selector: `demo-${algo}`, algo });
    logger.info({ evt: 'dkim', domain: 'example.net', dnsName: r.dnsName }, 'created demo DKIM key (publish the TXT record shown by `smarthost dkim check`)');
  }
}

async function createDemoAccount(accounts: AccountStore, logger: Logger): Promise<void> {
  const password = randomBytes(9).toString('base64url');
  const account = await AccountStore.newAccount('demo@example.net', password, { senders: ['demo@example.net'], plan: 'residential' });
  await accounts.upsert(account.name, () => account);
  const note = path.join(path.dirname(accounts.file), 'demo-account.txt');
  await fsp.writeFile(note, `user: demo@example.net\npassword: ${password}\n`, { mode: 0o600 });
  // Printed to the console, deliberately not through the logger: secrets never go to logs.
  process.stderr.write(`\nsmarthost: created demo account demo@example.net (password in ${note})\n\n`);
}
