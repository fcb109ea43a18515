/**
 * The embedded account store: one YAML file of accounts with scrypt hashes,
 * allowed senders, plan and suspension. The gateway re-reads the file when
 * it changes (checked at most once a second), so `smarthost account …` on a
 * running gateway takes effect without a restart. Writes are atomic
 * (tmp + fsync + rename) and the file is mode 0600.
 */
import { promises as fsp, statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { At, bool, isObj, obj, optStr, str, strList } from '../config/validate';
import { domainOf } from '../envelope';
import { AuthCache, decoyHash, hashPassword, isPasswordHash, verifyPassword } from './password';

export interface Account {
  name: string;
  passwordHash: string;
  /** Addresses ("a@b"), whole domains ("@b") and subdomains ("@*.b") this account may send as (see senderEntry). */
  senders: string[];
  plan: string;
  suspended: boolean;
  /** Optional binding to subscriber netblock classes or CIDRs (policy). */
  netblocks: string[];
}

export type AuthResult =
  | { ok: true; account: Account; cached: boolean }
  | { ok: false; reason: 'unknown' | 'bad_password' | 'suspended' };

export function parseAccounts(raw: unknown, file: string): Map<string, Account> {
  const at = new At(file);
  const top = obj(raw, at, ['accounts']);
  const out = new Map<string, Account>();
  const accounts = top.accounts ?? {};
  if (!isObj(accounts)) at.child('accounts').fail('expected a mapping of account name → settings');
  for (const [name, v] of Object.entries(accounts)) {
    const a = at.child('accounts').child(name);
    const o = obj(v, a, ['password', 'senders', 'plan', 'suspended', 'netblocks']);
    const passwordHash = str(o.password, a.child('password'));
    if (!isPasswordHash(passwordHash)) a.child('password').fail('must be an scrypt hash (set it with `smarthost account passwd`), never a plain password');
    out.set(name.toLowerCase(), {
      name,
      passwordHash,
      senders: strList(o.senders, a.child('senders')).map((s) => s.toLowerCase()),
      plan: optStr(o.plan, a.child('plan')) ?? 'default',
      suspended: bool(o.suspended, a.child('suspended'), false),
      netblocks: strList(o.netblocks, a.child('netblocks')),
    });
  }
  return out;
}

export class AccountStore {
  private accounts = new Map<string, Account>();
  private mtimeMs = -1;
  private checkedAt = 0;
  /** Fleet mode: suspensions decided fleet-wide (src/fleet), on top of the file's. */
  private suspendedElsewhere: ((name: string) => boolean) | undefined;
  readonly cache: AuthCache;

  constructor(
    readonly file: string,
    authCacheTtlMs: number,
  ) {
    this.cache = new AuthCache(authCacheTtlMs);
  }

  /** Load now; throws ConfigError on an invalid file. */
  load(): void {
    let text = '';
    let mtime = 0;
    try {
      mtime = statSync(this.file).mtimeMs;
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.accounts = parseAccounts(YAML.parse(text) ?? {}, this.file);
    this.mtimeMs = mtime;
    this.checkedAt = Date.now();
  }

  /** Re-read the file if it changed; keeps the last good copy if the new one is invalid. */
  private refresh(): void {
    const now = Date.now();
    if (now - this.checkedAt < 1000) return;
    this.checkedAt = now;
    try {
      const m = statSync(this.file).mtimeMs;
      if (m !== this.mtimeMs) this.load();
    } catch {
      // Missing or invalid: keep serving the last good accounts.
    }
  }

  get(name: string): Account | undefined {
    this.refresh();
    const a = this.accounts.get(name.toLowerCase());
    if (a && !a.suspended && this.suspendedElsewhere?.(a.name)) return { ...a, suspended: true };
    return a;
  }

  /**
   * Consult `isSuspended` on every lookup (fleet mode: a suspension in the
   * shared state holds on every gateway), so AUTH and the policy's
   * account-state rule see it. The file's own `suspended` still applies.
   */
  setSuspensionOverlay(isSuspended: ((name: string) => boolean) | undefined): void {
    this.suspendedElsewhere = isSuspended;
  }

  all(): Account[] {
    this.refresh();
    return [...this.accounts.values()];
  }

  async authenticate(name: string, password: string): Promise<AuthResult> {
    const account = this.get(name);
    if (!account) {
      await verifyPassword(password, await decoyHash());
      return { ok: false, reason: 'unknown' };
    }
    let cached = this.cache.has(account.name, password, account.passwordHash);
    if (!cached) {
      if (!(await verifyPassword(password, account.passwordHash))) return { ok: false, reason: 'bad_password' };
      this.cache.add(account.name, password, account.passwordHash);
    }
    // Checked after the password so a wrong password never learns the account is suspended.
    if (account.suspended) return { ok: false, reason: 'suspended' };
    cached = cached || false;
    return { ok: true, account, cached };
  }

  // ---- management (the CLI) ----

  async upsert(name: string, change: (a: Account | undefined) => Account | undefined): Promise<void> {
    this.load();
    const key = name.toLowerCase();
    const next = change(this.accounts.get(key));
    if (next) this.accounts.set(key, next);
    else this.accounts.delete(key);
    await this.save();
  }

  private async save(): Promise<void> {
    const doc: Record<string, unknown> = {};
    for (const a of [...this.accounts.values()].sort((x, y) => x.name.localeCompare(y.name))) {
      doc[a.name] = { password: a.passwordHash, senders: a.senders, plan: a.plan, suspended: a.suspended, ...(a.netblocks.length ? { netblocks: a.netblocks } : {}) };
    }
    const text = `# smarthost accounts: managed with \`smarthost account add|passwd|suspend|list\`.\n# Passwords are scrypt hashes; never put a plain password here.\n${YAML.stringify({ accounts: doc })}`;
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.tmp`;
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.file);
    this.mtimeMs = statSync(this.file).mtimeMs;
  }

  static async newAccount(name: string, password: string, opts: { senders?: string[]; plan?: string }): Promise<Account> {
    return {
      name,
      passwordHash: await hashPassword(password),
      senders: (opts.senders ?? []).map((s) => s.toLowerCase()),
      plan: opts.plan ?? 'default',
      suspended: false,
      netblocks: [],
    };
  }
}

/**
 * What an account's sender entry covers. "a@b": that address (and, for
 * signing, the domain b); "@b": every address at b; "@*.b" (or "*.b"):
 * every address at a subdomain of b, not b itself. A wildcard counts only
 * when written so: "@b" never covers sub.b.
 */
export type SenderEntry =
  | { readonly kind: 'address'; readonly address: string; readonly domain: string }
  | { readonly kind: 'domain'; readonly domain: string }
  | { readonly kind: 'subdomains'; readonly domain: string };

export function senderEntry(s: string): SenderEntry {
  const e = s.toLowerCase();
  if (e.startsWith('@*.')) return { kind: 'subdomains', domain: e.slice(3) };
  if (e.startsWith('*.')) return { kind: 'subdomains', domain: e.slice(2) };
  if (e.startsWith('@')) return { kind: 'domain', domain: e.slice(1) };
  return { kind: 'address', address: e, domain: domainOf(e) };
}

/** The account's sender entries; with none listed, its own name when that is an address. */
export function accountSenders(account: Account): string[] {
  return account.senders.length > 0 ? account.senders : account.name.includes('@') ? [account.name.toLowerCase()] : [];
}

/** May `account` use `address` as its sender? (its sender entries, see senderEntry) */
export function ownsAddress(account: Account, address: string): boolean {
  const a = address.toLowerCase();
  const domain = domainOf(a);
  return accountSenders(account).some((s) => {
    const e = senderEntry(s);
    if (e.kind === 'address') return e.address === a;
    if (e.kind === 'domain') return e.domain === domain;
    return domain.endsWith(`.${e.domain}`);
  });
}
