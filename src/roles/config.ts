/**
 * The `roles:` section of the config: the classic smart-host roles beyond
 * subscriber submission (docs/roles.md).
 *   backupMx       recipient validation for the relay domains an `mx`
 *                  listener takes (static list and/or RCPT callout to the
 *                  primary); the primary itself is a relay.routes entry
 *   rewrite        sender canonical map and recipient alias map (files,
 *                  re-read when they change)
 *   popBeforeSmtp  relay without AUTH after a POP/IMAP login (off by default)
 * Relative paths resolve against the config file's directory.
 */
import { At, bool, duration, isObj, list, obj, oneOf, optStr, strList } from '../config/validate';
import type { DovecotLogFormat } from './dovecot-log';

export type VerifyStep = 'list' | 'callout';

export interface BackupMxConfig {
  /** Domains this gateway is backup MX for; each needs a relay.routes entry (its primary). */
  domains: string[];
  /** How RCPT is validated, in order: `list`, then `callout` for what the list does not know. Empty: no validation. */
  verify: VerifyStep[];
  /** Valid recipients, one a line: an address, or @domain for a catch-all domain. */
  recipientsFile?: string;
  callout: {
    timeoutMs: number;
    /** How long a "recipient exists" answer is trusted (covers primary outages). */
    positiveTtlMs: number;
    negativeTtlMs: number;
    /** No cached answer and the primary unreachable: 451 (tempfail) or take it (accept). */
    onFailure: 'tempfail' | 'accept';
  };
  /** Names that mean "this gateway" as a next hop (loop detection), besides `hostname`. */
  localNames: string[];
}

export interface RewriteConfig {
  /** Sender canonical map: `old@host  new@domain` or `@old.host  @domain`. */
  senderCanonicalFile?: string;
  /** Recipient aliases: `alias@domain  a@x, b@y`. */
  recipientAliasesFile?: string;
  /** Listeners (names or roles) rewriting applies on; default every non-mx listener. */
  listeners?: string[];
  /** Header fields rewritten with the sender map. */
  headers: string[];
}

export interface PopBeforeSmtpConfig {
  enabled: boolean;
  /** Listeners (names or roles) on which a grant stands in for AUTH. */
  listeners: string[];
  ttlMs: number;
  /** Mailbox server log to follow (absent: grants come from the admin API only). */
  logFile?: string;
  /** How the log is written: through syslog (tag `dovecot`) or Dovecot's own log_path file (src/roles/dovecot-log.ts). */
  logFormat: DovecotLogFormat;
  /** Appended to a log user name without `@` to find the account. */
  userDomain?: string;
  /** How often the log is polled for new lines. */
  pollMs: number;
}

export interface RolesConfig {
  backupMx?: BackupMxConfig;
  rewrite?: RewriteConfig;
  popBeforeSmtp: PopBeforeSmtpConfig;
}

export function parseRolesConfig(v: unknown, at: At, resolve: (p: string) => string): RolesConfig {
  const o = obj(v, at, ['backupMx', 'rewrite', 'popBeforeSmtp']);
  const out: RolesConfig = { popBeforeSmtp: parsePop(o.popBeforeSmtp, at.child('popBeforeSmtp'), resolve) };
  if (o.backupMx !== undefined && o.backupMx !== null) out.backupMx = parseBackupMx(o.backupMx, at.child('backupMx'), resolve);
  if (o.rewrite !== undefined && o.rewrite !== null) out.rewrite = parseRewrite(o.rewrite, at.child('rewrite'), resolve);
  return out;
}

function parseBackupMx(v: unknown, at: At, resolve: (p: string) => string): BackupMxConfig {
  const o = obj(v, at, ['domains', 'verify', 'recipients', 'callout', 'localNames']);
  const domains = strList(o.domains, at.child('domains', { default: '**required** (at least one)' })).map((d) => d.toLowerCase());
  if (domains.length === 0) at.child('domains').fail('name at least one domain');
  const verify = list(o.verify, at.child('verify'), ['list']).map((s, i) => oneOf(s, at.child('verify').child(i), ['list', 'callout'] as const));
  const file = optStr(o.recipients, at.child('recipients'));
  if (verify.includes('list') && !file) at.child('recipients').fail('verify: list needs a recipients file');
  const c = obj(o.callout, at.child('callout'), ['timeout', 'positiveTtl', 'negativeTtl', 'onFailure']);
  return {
    domains,
    verify,
    ...(file ? { recipientsFile: resolve(file) } : {}),
    callout: {
      timeoutMs: duration(c.timeout, at.child('callout').child('timeout'), '10s'),
      positiveTtlMs: duration(c.positiveTtl, at.child('callout').child('positiveTtl'), '7d'),
      negativeTtlMs: duration(c.negativeTtl, at.child('callout').child('negativeTtl'), '1h'),
      onFailure: oneOf(c.onFailure, at.child('callout').child('onFailure'), ['tempfail', 'accept'] as const, 'tempfail'),
    },
    localNames: strList(o.localNames, at.child('localNames')).map((n) => n.toLowerCase()),
  };
}

function parseRewrite(v: unknown, at: At, resolve: (p: string) => string): RewriteConfig {
  const o = obj(v, at, ['senderCanonical', 'recipientAliases', 'listeners', 'headers']);
  const s = optStr(o.senderCanonical, at.child('senderCanonical'));
  const r = optStr(o.recipientAliases, at.child('recipientAliases'));
  return {
    ...(s ? { senderCanonicalFile: resolve(s) } : {}),
    ...(r ? { recipientAliasesFile: resolve(r) } : {}),
    ...(o.listeners !== undefined ? { listeners: strList(o.listeners, at.child('listeners', { default: 'every listener but mx ones' })) } : {}),
    headers: strList(o.headers, at.child('headers'), ['from', 'sender', 'reply-to']).map((h) => h.toLowerCase()),
  };
}

function parsePop(v: unknown, at: At, resolve: (p: string) => string): PopBeforeSmtpConfig {
  // logPattern (a free regex) is gone: a pattern not anchored to Dovecot's own line lets anyone who can write to the log grant relay.
  if (isObj(v) && v.logPattern !== undefined) at.child('logPattern').fail("no longer supported: only Dovecot's own login lines grant; set logFormat: syslog or dovecot (docs/roles.md)");
  const o = obj(v, at, ['enabled', 'listeners', 'ttl', 'logFile', 'logFormat', 'userDomain', 'poll']);
  const logFile = optStr(o.logFile, at.child('logFile'));
  const userDomain = optStr(o.userDomain, at.child('userDomain'));
  return {
    enabled: bool(o.enabled, at.child('enabled'), false),
    listeners: strList(o.listeners, at.child('listeners'), ['intercept']),
    ttlMs: duration(o.ttl, at.child('ttl'), '10m'),
    ...(logFile ? { logFile: resolve(logFile) } : {}),
    logFormat: oneOf(o.logFormat, at.child('logFormat'), ['syslog', 'dovecot'] as const, 'syslog'),
    ...(userDomain ? { userDomain: userDomain.toLowerCase() } : {}),
    pollMs: duration(o.poll, at.child('poll'), '1s'),
  };
}
