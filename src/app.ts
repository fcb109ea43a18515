/**
 * build(config) → the gateway, not yet listening; start() binds, stop()
 * drains. The order of the stages lives here and nowhere else:
 *   smtp (listeners) → policy → dkim → spool (commit) → qmgr → relay.
 * Tests build the app on port 0 and drive it over real sockets.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { AccountStore } from './accounts/store';
import { AdminServer } from './admin/server';
import { registerQueueRoutes } from './admin/queue-routes';
import type { Config } from './config/schema';
import { createSigner, type DkimSigner } from './dkim/sign';
import { dkimKeygen } from './dkim/cli';
import { createLogger, type Logger } from './log';
import { registerPolicyRoutes } from './admin/policy-routes';
import { PolicyRuntime, type ReloadResult } from './policy/runtime';
import type { PolicyObserver } from './policy/types';
import { MemoryStore } from './state/memory';
import type { StateStore } from './state/store';
import { createDeliveryAgent } from './relay/deliver';
import type { DeliveryAgent } from './relay/types';
import { Listener } from './smtp/listener';
import { loadTlsMaterial } from './smtp/tls-material';
import { QueueManager } from './spool/qmgr';
import { recoverSpool } from './spool/recover';
import { Spool } from './spool/store';

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
  /** Re-read what can change at run time (SIGHUP, `smarthost reload`): the policy files. */
  reload(): Promise<{ ok: boolean; policy: ReloadResult }>;
  /** Bound port of a listener by name (useful with port 0 in tests). */
  port(name: string): number;
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
  role?: 'single' | 'primary' | 'worker';
  /** The state store to use instead of a new in-memory one (a worker's IPC store). */
  state?: StateStore;
  /** Worker: a message it deferred, for the primary's queue manager. */
  onDeferred?: (id: string, nextAttemptAt: number) => void;
  /** Primary: whether the workers' listeners are bound (readiness). */
  listenersReady?: () => boolean;
  /** Called after every reload (the primary tells its workers). */
  afterReload?: () => void;
}

export async function build(cfg: Config, opts: BuildOptions = {}): Promise<App> {
  const logger = opts.logger ?? createLogger(cfg.log);
  const spool = new Spool(cfg.spool.dir, { fsync: cfg.spool.fsync });
  await spool.init();

  const accounts = new AccountStore(cfg.accounts.file, cfg.accounts.authCacheTtlMs);
  if (cfg.embedded && !existsSync(cfg.accounts.file)) await createDemoAccount(accounts, logger);
  accounts.load();

  const role = opts.role ?? 'single';
  // Counters outlive policy reloads; in-memory until a shared store is configured.
  const state: StateStore = opts.state ?? new MemoryStore();
  const policy = new PolicyRuntime({ dir: cfg.policy.dir, listeners: cfg.listeners, store: state, logger, accounts, observer: opts.policyObserver, clock: opts.clock });
  if (cfg.embedded && cfg.dkim.enabled && !existsSync(cfg.dkim.keysDir)) await createDemoKeys(cfg, logger);
  // Signing is the last change to a message (after Received:), once, before the spool write.
  let signer: DkimSigner | undefined = cfg.dkim.enabled ? await createSigner(cfg.dkim, logger) : undefined;

  const tls = await loadTlsMaterial(cfg);
  const agent = opts.agent ?? createDeliveryAgent(cfg.relay, { hostname: cfg.hostname, logger });
  const qmgr = new QueueManager(spool, agent, cfg.relay, {
    hostname: cfg.hostname,
    logger,
    scanIntervalMs: opts.scanIntervalMs,
    mode: role === 'worker' ? 'first-attempt' : 'full',
    onDeferred: opts.onDeferred,
  });

  const listeners = (role === 'primary' ? [] : cfg.listeners).map(
    (l) =>
      new Listener(
        l,
        {
          cfg,
          accounts,
          policy: () => policy.current(),
          signer: () => signer,
          spool,
          onCommitted: (id, held, handoff) => {
            if (!held) qmgr.notify(id, handoff);
          },
          logger,
          bareNewline: 'normalise',
        },
        () => tls,
        logger,
      ),
  );

  const admin = new AdminServer({ address: cfg.admin.address, port: cfg.admin.port, token: await adminToken(cfg), logger });
  registerQueueRoutes(admin, qmgr);
  const reload = async () => {
    const p = policy.reload();
    // DKIM keys are re-read too (rotation); a failure keeps the keys in use and is logged.
    await signer?.reload().catch(() => undefined);
    opts.afterReload?.();
    return { ok: p.ok, policy: p };
  };
  registerPolicyRoutes(admin, { runtime: policy, listeners: cfg.listeners, accounts, reload });
  let listening = false;
  admin.readiness('listeners', async () => ((opts.listenersReady ? opts.listenersReady() : listening) ? undefined : 'not bound'));
  admin.readiness('spool', async () => ((await spool.writable()) ? undefined : `${spool.dir} not writable`));

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
    reload,
    port(name) {
      const l = listeners.find((x) => x.cfg.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.port;
    },
    async start() {
      // Recovery and the admin API belong to the one process that owns the queue.
      if (role !== 'worker') await recoverSpool(spool, logger);
      await qmgr.start();
      if (role !== 'worker') await admin.listen();
      try {
        for (const l of listeners) await l.listen();
      } catch (err) {
        for (const l of listeners) await l.close().catch(() => undefined);
        await admin.close();
        await qmgr.stop();
        throw err;
      }
      listening = true;
    },
    async stop() {
      listening = false;
      await Promise.all(listeners.map((l) => l.close()));
      await qmgr.stop();
      await agent.close();
      await admin.close();
      await signer?.close();
      signer = undefined;
      await state.close();
    },
  };
}

async function adminToken(cfg: Config): Promise<string> {
  if (cfg.admin.token) return cfg.admin.token;
  if (existsSync(cfg.admin.tokenFile)) return readFileSync(cfg.admin.tokenFile, 'utf8').trim();
  const token = randomBytes(24).toString('base64url');
  await fsp.mkdir(path.dirname(cfg.admin.tokenFile), { recursive: true, mode: 0o700 });
  await fsp.writeFile(cfg.admin.tokenFile, `${token}\n`, { mode: 0o600 });
  return token;
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
