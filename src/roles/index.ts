/**
 * The smart-host roles, built from `roles:` (src/roles/config.ts) and
 * handed to the SMTP session as hooks (RoleHooks): recipient validation on
 * mx listeners (backup-mx.ts), POP-before-SMTP identity (pop-grants.ts,
 * dovecot-log.ts), address rewriting (rewrite.ts). The admin routes for
 * grants live here too.
 *   POST /api/pop-grants   {user, ip[, ttl ms]} → grant (as a POP login would)
 *   GET  /api/pop-grants?ip=&user=   → { granted, ttlMs }
 *   GET  /api/pop-grants?ip=         → { grants: [{ user, ttlMs }] } made through this gateway
 * Talks to: the state store, the accounts, the map files, the primary MX.
 */
import type { Account } from '../accounts/store';
import type { AdminServer } from '../admin/server';
import type { Config } from '../config/schema';
import type { Verdict } from '../envelope';
import type { Logger } from '../log';
import { canonicalIp } from '../policy/ip';
import type { DeliveryAgent } from '../relay/types';
import type { StateStore } from '../state/store';
import { BackupMx, localNames, loopGuard } from './backup-mx';
import type { RolesConfig } from './config';
import { LogFollower } from './dovecot-log';
import { PopGrants } from './pop-grants';
import { Rewriter, type Rewritten } from './rewrite';

/** What the SMTP session asks (every hook optional: no roles, no calls). */
export interface RoleHooks {
  /** RCPT on an mx listener after the policy accepted it; a verdict refuses. */
  rcpt?(listener: { name: string; role: string }, rcpt: string): Promise<Verdict | undefined>;
  /** MAIL FROM without AUTH: the account a POP-before-SMTP grant stands in for. */
  popAccount?(listener: { name: string; role: string }, ip: string, mailFrom: string): Promise<Account | undefined>;
  /** End of DATA: rewritten envelope and header bytes, or undefined when rewriting does not apply. */
  rewrite?(listener: { name: string; role: string }, mailFrom: string, rcpts: readonly string[], chunks: Buffer[]): Rewritten | undefined;
}

export class Roles implements RoleHooks {
  readonly backupMx?: BackupMx;
  readonly rewriter?: Rewriter;
  readonly grants?: PopGrants;
  private readonly follower?: LogFollower;

  constructor(
    private readonly cfg: Config & { roles?: RolesConfig },
    deps: { store: StateStore; accounts: { get(name: string): Account | undefined }; logger: Logger },
  ) {
    const r = cfg.roles;
    const logger = deps.logger.child({ component: 'roles' });
    if (r?.backupMx) this.backupMx = new BackupMx(r.backupMx, cfg.relay, { hostname: cfg.hostname, logger });
    if (r?.rewrite) this.rewriter = new Rewriter(r.rewrite, logger);
    if (r?.popBeforeSmtp.enabled) {
      const grants = new PopGrants(r.popBeforeSmtp, { ...deps, logger });
      this.grants = grants;
      const file = r.popBeforeSmtp.logFile;
      if (file) this.follower = new LogFollower(file, r.popBeforeSmtp.logFormat, r.popBeforeSmtp.pollMs, (l) => grants.grant(l.user, l.ip, 'log'), logger);
    }
  }

  /** The delivery agent with the loop guard in front. */
  guard(agent: DeliveryAgent, logger: Logger): DeliveryAgent {
    const names = localNames(this.cfg.hostname, this.cfg.relay, this.cfg.roles?.backupMx?.localNames);
    return loopGuard(agent, this.cfg.relay, { names, backupDomains: this.backupMx?.domains ?? new Set(), logger });
  }

  async rcpt(listener: { name: string; role: string }, rcpt: string): Promise<Verdict | undefined> {
    if (listener.role !== 'mx' || !this.backupMx) return undefined;
    return this.backupMx.rcpt(rcpt);
  }

  async popAccount(listener: { name: string; role: string }, ip: string, mailFrom: string): Promise<Account | undefined> {
    if (!this.grants?.appliesTo(listener)) return undefined;
    return this.grants.lookup(ip, mailFrom);
  }

  rewrite(listener: { name: string; role: string }, mailFrom: string, rcpts: readonly string[], chunks: Buffer[]): Rewritten | undefined {
    if (!this.rewriter?.appliesTo(listener)) return undefined;
    return this.rewriter.apply(mailFrom, rcpts, chunks);
  }

  /** Re-read the map files now (they are also re-read when they change). */
  reload(): void {
    this.backupMx?.reload();
    this.rewriter?.reload();
  }

  registerRoutes(admin: AdminServer): void {
    admin.route('POST', '/api/pop-grants', async (req) => {
      if (!this.grants) return { status: 409, body: { error: 'popBeforeSmtp is not enabled' } };
      const b = (req.body ?? {}) as { user?: unknown; ip?: unknown; ttl?: unknown };
      if (typeof b.user !== 'string' || typeof b.ip !== 'string') return { status: 400, body: { error: 'need {"user": "...", "ip": "..."}' } };
      const ttl = typeof b.ttl === 'number' && b.ttl > 0 ? b.ttl : undefined;
      const r = await this.grants.grant(b.user, b.ip, 'admin', ttl);
      return { status: r.ok ? 200 : 400, body: r };
    });
    admin.route('GET', '/api/pop-grants', async (req) => {
      if (!this.grants) return { status: 409, body: { error: 'popBeforeSmtp is not enabled' } };
      const ip = canonicalIp(req.query.get('ip') ?? '');
      if (!ip) return { status: 400, body: { error: 'need ?ip=ADDRESS (and optionally &user=NAME)' } };
      const rawUser = req.query.get('user');
      if (rawUser === null) {
        const grants = await this.grants.grantsFor(ip);
        return { status: 200, body: { ip, grants, scope: 'grants made through this gateway; ask with &user= for one made elsewhere in a fleet' } };
      }
      if (!rawUser.trim()) return { status: 400, body: { error: 'user= is empty' } };
      const user = this.grants.accountName(rawUser);
      const ttlMs = await this.grants.ttl(ip, user);
      return { status: 200, body: { ip, user, granted: ttlMs > 0, ttlMs } };
    });
  }

  async start(): Promise<void> {
    await this.follower?.start();
  }

  async stop(): Promise<void> {
    await this.follower?.stop();
  }
}
