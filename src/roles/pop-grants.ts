/**
 * POP-before-SMTP grants: after an account logs in to the mailbox server,
 * its client address may relay without AUTH, as that account, for `ttl`.
 *
 * A grant is a counter with a TTL in the state store,
 *   sh:pg:{ip:<address>}:<account>
 * so with a shared store every gateway of a fleet sees it. The store holds
 * counters only (no string values), so "which account is this address
 * granted for" is answered from candidates: the account named by the MAIL
 * FROM address (account names are addresses), and the accounts this process
 * granted for the address itself (its log follower and admin calls). Each
 * candidate is confirmed against the store, which alone decides.
 *
 * Where a grant counts: on the listeners in popBeforeSmtp.listeners
 * (default: intercept), decided at MAIL FROM; the client is then evaluated
 * as an authenticated submission client of that account (its plan's quotas,
 * its sender identity, its suspension), see SessionHandlers.onMailFrom.
 * Talks to: the state store, the account store. Trusts: its grant sources.
 */
import type { Account } from '../accounts/store';
import type { Logger } from '../log';
import { canonicalIp } from '../policy/ip';
import { escapeId } from '../state/keys';
import type { StateStore } from '../state/store';
import type { PopBeforeSmtpConfig } from './config';

export function grantKey(ip: string, account: string): string {
  return `sh:pg:{ip:${escapeId(ip)}}:${escapeId(account)}`;
}

export class PopGrants {
  /** ip → account → expiry: this process's own grants (candidates only; the store decides). */
  private readonly local = new Map<string, Map<string, number>>();

  constructor(
    readonly cfg: PopBeforeSmtpConfig,
    private readonly deps: { store: StateStore; accounts: { get(name: string): Account | undefined }; logger: Logger; clock?: () => number },
  ) {}

  private now(): number {
    return this.deps.clock ? this.deps.clock() : Date.now();
  }

  appliesTo(listener: { name: string; role: string }): boolean {
    return this.cfg.enabled && (this.cfg.listeners.includes(listener.name) || this.cfg.listeners.includes(listener.role));
  }

  /** The account name a mailbox-server user name stands for. */
  accountName(user: string): string {
    const u = user.trim().toLowerCase();
    return !u.includes('@') && this.cfg.userDomain ? `${u}@${this.cfg.userDomain}` : u;
  }

  /** Record a login. Returns the account granted, or why not. */
  async grant(user: string, rawIp: string, source: string, ttlMs = this.cfg.ttlMs): Promise<{ ok: true; account: string; ip: string; expiresAt: number } | { ok: false; error: string }> {
    const ip = canonicalIp(rawIp);
    if (!ip) return { ok: false, error: `not an IP address: "${rawIp}"` };
    const name = this.accountName(user);
    const account = this.deps.accounts.get(name);
    if (!account) {
      this.deps.logger.info({ evt: 'pop_grant', user, ip, source, result: 'no-account' }, 'POP login of an unknown account ignored');
      return { ok: false, error: `no account "${name}"` };
    }
    const now = this.now();
    await this.deps.store.del(grantKey(ip, account.name));
    await this.deps.store.incr(grantKey(ip, account.name), 1, ttlMs, now);
    let m = this.local.get(ip);
    if (!m) this.local.set(ip, (m = new Map()));
    m.set(account.name, now + ttlMs);
    this.deps.logger.info({ evt: 'pop_grant', user: account.name, ip, source, ttlMs }, 'POP-before-SMTP grant');
    return { ok: true, account: account.name, ip, expiresAt: now + ttlMs };
  }

  async revoke(rawIp: string, account: string): Promise<void> {
    const ip = canonicalIp(rawIp) ?? rawIp;
    await this.deps.store.del(grantKey(ip, account));
    this.local.get(ip)?.delete(account);
  }

  /** The account a client address is granted for now (MAIL FROM names the likely one), if any. */
  async lookup(rawIp: string, mailFrom: string): Promise<Account | undefined> {
    const ip = canonicalIp(rawIp);
    if (!ip) return undefined;
    const now = this.now();
    const candidates = new Set<string>();
    if (mailFrom) candidates.add(mailFrom.toLowerCase());
    const m = this.local.get(ip);
    if (m) {
      for (const [name, until] of m) {
        if (until <= now) m.delete(name);
        else candidates.add(name);
      }
      if (m.size === 0) this.local.delete(ip);
    }
    for (const name of candidates) {
      const account = this.deps.accounts.get(name);
      if (!account || account.suspended) continue;
      if ((await this.deps.store.get(grantKey(ip, account.name), now)) > 0) return account;
    }
    return undefined;
  }

  /**
   * The grants of one address that this process made (log follower, admin
   * API), each confirmed against the store, with its remaining time. A
   * grant made by another gateway of a fleet is not known here by address
   * (the store holds counters, not lists): ask for it by account (ttl).
   */
  async grantsFor(rawIp: string): Promise<Array<{ user: string; ttlMs: number }>> {
    const ip = canonicalIp(rawIp);
    const m = ip ? this.local.get(ip) : undefined;
    if (!ip || !m) return [];
    const out: Array<{ user: string; ttlMs: number }> = [];
    for (const name of [...m.keys()].sort()) {
      const ttlMs = await this.deps.store.ttl(grantKey(ip, name), this.now());
      if (ttlMs > 0) out.push({ user: name, ttlMs });
      else m.delete(name);
    }
    if (m.size === 0) this.local.delete(ip);
    return out;
  }

  /** Remaining time of a grant (admin API). */
  async ttl(rawIp: string, account: string): Promise<number> {
    const ip = canonicalIp(rawIp) ?? rawIp;
    return this.deps.store.ttl(grantKey(ip, account), this.now());
  }
}
