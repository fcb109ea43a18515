/**
 * policies/feedback.yaml: complaint feedback loops (ARF, RFC 5965). Which
 * address the gateway accepts reports at and on which listeners, which
 * mailbox providers' reports count (their reporting domains: the header
 * From and a passing DKIM signature must both be inside them), which
 * feedback types are complaints, where reports that do not count are kept,
 * and the key of the sender token (X-Smarthost-Sender) that maps a report
 * back to the account or intercept address that sent the original.
 * Validated like the other policy files (file, key, reason); absent file:
 * no feedback address, no sender token.
 *
 * Relative paths (keep.dir, senderToken.keyFile) resolve against the
 * gateway config's directory, like every path of smarthost.yaml.
 *
 * Talks to: the filesystem (reads). Trusts: nothing.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { At, bool, duration, hostPort, int, isObj, list, obj, str, strList } from '../config/validate';
import { canonicalIp } from '../policy/ip';
import { readYaml } from '../policy/yaml';

export interface FeedbackProvider {
  /** Short name for logs and the metric label ("yahoo"). */
  readonly name: string;
  /** Reporting domains: the report's From and its DKIM d= must be one of these or below. */
  readonly domains: readonly string[];
  /** Accept a report without a message/feedback-report part (the original attached alone, JMRP's old shape) as "abuse". */
  readonly bareOriginal: boolean;
}

export interface FeedbackConfig {
  readonly enabled: boolean;
  /** Lower-case addresses the gateway takes reports at (never relayed). */
  readonly addresses: ReadonlySet<string>;
  /** Listener names or roles on which those addresses are accepted. */
  readonly listeners: ReadonlySet<string>;
  readonly providers: readonly FeedbackProvider[];
  /** Feedback types that are complaints (RFC 5965 §7.3 registry: abuse, fraud, virus, other, not-spam). */
  readonly complaintTypes: ReadonlySet<string>;
  /** Resolver for the reports' DKIM keys and DMARC records (empty: the system's). */
  readonly dns: { readonly servers: readonly string[]; readonly timeoutMs: number };
  readonly keep: { readonly dir: string; readonly max: number };
  readonly token: { readonly enabled: boolean; readonly keyFile: string; readonly maxAgeMs: number; readonly header: string };
  /** A mailbox the providers' reports are delivered to, polled over IMAP (besides the SMTP address). */
  readonly imap?: ImapMailbox;
}

export interface ImapMailbox {
  readonly host: string;
  readonly port: number;
  /** implicit (993), starttls (143), none (loopback only): certificates verified against the system's CAs. */
  readonly tls: 'implicit' | 'starttls' | 'none';
  readonly user: string;
  /** The password is read from this file (never written in the policy file or logged). */
  readonly passwordFile: string;
  readonly mailbox: string;
  readonly intervalMs: number;
}

export const FEEDBACK_FILE = 'feedback.yaml';

function domainList(v: unknown, at: At): string[] {
  const out = strList(v, at).map((d, i) => {
    const n = d.trim().toLowerCase().replace(/\.$/, '');
    if (!/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(n)) at.child(i).fail(`not a domain name: "${d}"`);
    return n;
  });
  if (out.length === 0) at.fail('at least one reporting domain is required');
  return out;
}

export function parseFeedback(raw: unknown, file: string, opts: { hostname: string; baseDir: string; listeners: readonly { name: string; role: string }[] }): FeedbackConfig {
  const at = new At(file);
  const o = obj(raw ?? {}, at, ['enabled', 'address', 'addresses', 'listeners', 'providers', 'complaintTypes', 'dns', 'keep', 'senderToken', 'imap']);
  const given = [...(o.address !== undefined ? [str(o.address, at.child('address'))] : []), ...strList(o.addresses, at.child('addresses'))];
  const addresses = (given.length ? given : [`fbl@${opts.hostname}`]).map((a, i) => {
    const n = a.trim().toLowerCase();
    if (!/^[^@\s]+@[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(n) || /[%!]/.test(n)) at.child(o.address !== undefined && i === 0 ? 'address' : 'addresses').fail(`not a plain mailbox address: "${a}"`);
    return n;
  });
  const names = opts.listeners.map((l) => l.name);
  const listeners = strList(o.listeners, at.child('listeners'), ['mx']);
  listeners.forEach((l, i) => {
    if (!names.includes(l) && !['mx', 'intercept', 'submission'].includes(l)) at.child('listeners').child(i).fail(`not a listener name or role: "${l}" (listeners: ${names.join(', ')})`);
  });
  const seen = new Set<string>();
  const providers = list(o.providers, at.child('providers')).map((item, i) => {
    const a = at.child('providers').child(i);
    const p = obj(item, a, ['name', 'domains', 'bareOriginal', 'comment']);
    const name = str(p.name, a.child('name'));
    if (!/^[a-z0-9_-]{1,32}$/i.test(name)) a.child('name').fail(`not a provider name: "${name}" (letters, digits, "_", "-")`);
    if (seen.has(name)) a.child('name').fail(`duplicate provider "${name}"`);
    seen.add(name);
    return { name, domains: domainList(p.domains, a.child('domains')), bareOriginal: bool(p.bareOriginal, a.child('bareOriginal'), false) };
  });
  const types = strList(o.complaintTypes, at.child('complaintTypes'), ['abuse', 'fraud', 'virus']).map((t) => t.toLowerCase());
  const d = obj(o.dns, at.child('dns'), ['servers', 'timeout']);
  const servers = list(d.servers, at.child('dns').child('servers')).map((s, i) => {
    const a = at.child('dns').child('servers').child(i);
    const hp = hostPort(s, a, 53);
    if (canonicalIp(hp.host) === undefined) a.fail(`a resolver must be an IP address (optionally with :port), got "${String(s)}"`);
    return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
  });
  const k = obj(o.keep, at.child('keep'), ['dir', 'max']);
  const t = obj(o.senderToken, at.child('senderToken'), ['enabled', 'keyFile', 'maxAge', 'header']);
  const header = str(t.header, at.child('senderToken').child('header'), 'X-Smarthost-Sender');
  if (!/^X-[A-Za-z0-9-]+$/.test(header)) at.child('senderToken').child('header').fail(`not an X- header field name: "${header}"`);
  const resolve = (p: string) => path.resolve(opts.baseDir, p);
  const imap = o.imap === undefined ? undefined : imapMailbox(o.imap, at.child('imap'), resolve);
  return {
    enabled: bool(o.enabled, at.child('enabled'), true),
    addresses: new Set(addresses),
    listeners: new Set(listeners),
    providers,
    complaintTypes: new Set(types),
    dns: { servers, timeoutMs: duration(d.timeout, at.child('dns').child('timeout'), '5s') },
    keep: { dir: resolve(str(k.dir, at.child('keep').child('dir'), 'var/feedback')), max: int(k.max, at.child('keep').child('max'), 1000, 0, 1_000_000) },
    token: {
      enabled: bool(t.enabled, at.child('senderToken').child('enabled'), true),
      keyFile: resolve(str(t.keyFile, at.child('senderToken').child('keyFile'), 'var/sender-token.key')),
      maxAgeMs: duration(t.maxAge, at.child('senderToken').child('maxAge'), '30d'),
      header,
    },
    ...(imap ? { imap } : {}),
  };
}

function imapMailbox(raw: unknown, at: At, resolve: (p: string) => string): ImapMailbox {
  const m = obj(raw, at, ['host', 'port', 'tls', 'user', 'passwordFile', 'mailbox', 'interval']);
  const host = str(m.host, at.child('host'));
  const tls = str(m.tls, at.child('tls'), 'implicit');
  if (tls !== 'implicit' && tls !== 'starttls' && tls !== 'none') return at.child('tls').fail(`expected implicit, starttls or none, got "${tls}"`);
  const ip = canonicalIp(host);
  if (tls === 'none' && !(ip && (ip.startsWith('127.') || ip === '::1'))) at.child('tls').fail('none (a password in clear) is only for a mailbox on loopback');
  return {
    host,
    port: int(m.port, at.child('port'), tls === 'implicit' ? 993 : 143, 1, 65535),
    tls,
    user: str(m.user, at.child('user')),
    passwordFile: resolve(str(m.passwordFile, at.child('passwordFile'))),
    mailbox: str(m.mailbox, at.child('mailbox'), 'INBOX'),
    intervalMs: duration(m.interval, at.child('interval'), '1m'),
  };
}

/** The policy directory's feedback.yaml (absent: off). */
export function loadFeedback(dir: string, opts: Parameters<typeof parseFeedback>[2]): FeedbackConfig | undefined {
  const file = path.join(dir, FEEDBACK_FILE);
  if (!existsSync(file)) return undefined;
  const raw = readYaml(file);
  if (raw !== undefined && !isObj(raw)) new At(file).fail('expected a mapping');
  const cfg = parseFeedback(raw, file, opts);
  return cfg.enabled ? cfg : undefined;
}

/** Is `domain` one of `domains` or below one of them? */
export function within(domain: string, domains: readonly string[]): boolean {
  const d = domain.toLowerCase().replace(/\.$/, '');
  return domains.some((x) => d === x || d.endsWith(`.${x}`));
}
