/**
 * The `dkim:` section of the config. Keys live as files under keysDir (see
 * keys.ts); this section only says where, which domain signs when the
 * client is not authorised for the header From's domain or it has no key
 * (the ISP's own), what to do with mail no key can sign, and which hosts are
 * authorised for every domain (internalHosts). Who else may sign as what is
 * policy: src/policy/signing.ts. Composed into src/config/schema.ts.
 */
import { domainToASCII } from 'node:url';
import ipaddr from 'ipaddr.js';
import { At, bool, obj, oneOf, optStr, str, strList } from '../config/validate';

export type UnsignedPolicy = 'pass' | 'refuse';

export interface DkimConfig {
  enabled: boolean;
  /** Absolute (resolved) directory holding <domain>/<selector>.<rsa|ed25519>.pem. */
  keysDir: string;
  /** Fallback signing domain (A-label, lower case): the ISP's own, for mail no authorised key signs. */
  signingDomain?: string;
  /** Nothing signs the message (no authorised key, no fallback): pass it unsigned, or refuse (550 5.7.1). */
  unsignedPolicy: UnsignedPolicy;
  /**
   * Clients identified by their address (no account) that are authorised
   * for every domain with a key: the gateway's own host by default, like
   * OpenDKIM's InternalHosts (local scripts, a webmail relaying without AUTH).
   */
  internalHosts: readonly HostRange[];
  /** Header names to sign (lower case; `list-*` style prefixes allowed). From is always signed and over-signed. */
  headers: string[];
}

/** The recommended set (RFC 6376 §5.4.1), From first. */
export const DEFAULT_SIGNED_HEADERS: readonly string[] = [
  'from', 'reply-to', 'sender', 'subject', 'date', 'message-id', 'to', 'cc',
  'mime-version', 'content-type', 'content-transfer-encoding', 'content-id', 'content-description',
  'in-reply-to', 'references',
  'resent-date', 'resent-from', 'resent-sender', 'resent-to', 'resent-cc', 'resent-message-id',
  'list-*', 'feedback-id', 'autocrypt', 'openpgp',
  // The sender token complaint reports are mapped by (src/feedback/token.ts).
  'x-smarthost-sender',
];

/** Header names that must never be in h=: they are changed or added in transit. */
const NEVER_SIGN = new Set(['dkim-signature', 'received', 'return-path', 'authentication-results', 'arc-seal', 'arc-message-signature', 'arc-authentication-results']);

const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+\*?$/;

export const DKIM_KEYS = ['enabled', 'keysDir', 'signingDomain', 'unsignedPolicy', 'headers', 'internalHosts'] as const;

/** An address or CIDR as written, parsed with ipaddr.js. */
export interface HostRange {
  readonly text: string;
  readonly range: [ipaddr.IPv4 | ipaddr.IPv6, number];
}

/** The gateway's own host only: 127.0.0.1 and ::1, not the whole of 127/8 (tests and containers use the rest). */
export const DEFAULT_INTERNAL_HOSTS: readonly string[] = ['127.0.0.1', '::1'];

function parseHostRange(text: string, at: At): HostRange {
  const t = text.trim();
  let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    if (t.includes('/')) range = ipaddr.parseCIDR(t);
    else {
      const a = ipaddr.parse(t);
      if (a.kind() === 'ipv4' && !ipaddr.IPv4.isValidFourPartDecimal(t)) throw new Error('not dotted quad');
      range = [a, a.kind() === 'ipv4' ? 32 : 128];
    }
  } catch {
    return at.fail(`not an IP address or CIDR: "${text}"`);
  }
  if (range[1] === 0) at.fail(`"${text}" would let every client sign as every domain with a key`);
  return { text: t, range };
}

/** The internalHosts entry `ip` falls in (IPv4-mapped IPv6 read as IPv4), if any. */
export function internalHost(hosts: readonly HostRange[], ip: string): HostRange | undefined {
  if (hosts.length === 0 || !ipaddr.isValid(ip)) return undefined;
  const addr = ipaddr.process(ip);
  return hosts.find((h) => h.range[0].kind() === addr.kind() && addr.match(h.range));
}

/**
 * @param resolvePath makes keysDir absolute (the config's baseDir); identity by default.
 */
export function parseDkimConfig(v: unknown, at: At, resolvePath: (p: string) => string = (p) => p): DkimConfig {
  const o = obj(v, at, DKIM_KEYS);
  const rawDomain = optStr(o.signingDomain, at.child('signingDomain'));
  let signingDomain: string | undefined;
  if (rawDomain !== undefined) {
    signingDomain = normalizeDomain(rawDomain);
    if (!signingDomain) at.child('signingDomain').fail(`not a domain name: "${rawDomain}"`);
  }
  let headers = [...DEFAULT_SIGNED_HEADERS];
  if (o.headers !== undefined && o.headers !== null) {
    const hAt = at.child('headers', { default: 'the RFC 6376 §5.4.1 set (DEFAULT_SIGNED_HEADERS in src/dkim/config.ts)' });
    const list = strList(o.headers, hAt).map((h, i) => {
      const name = h.trim().toLowerCase();
      if (!FIELD_NAME.test(name)) hAt.child(i).fail(`not a header field name: "${h}"`);
      if (NEVER_SIGN.has(name)) hAt.child(i).fail(`"${name}" must not be signed (it changes in transit)`);
      return name;
    });
    if (list.length === 0) hAt.fail('must list at least from');
    headers = list.includes('from') ? list : ['from', ...list];
  }
  return {
    enabled: bool(o.enabled, at.child('enabled', { doc: 'false: sign nothing' }), true),
    keysDir: resolvePath(str(o.keysDir, at.child('keysDir'), 'var/dkim')),
    signingDomain,
    unsignedPolicy: oneOf(o.unsignedPolicy, at.child('unsignedPolicy'), ['pass', 'refuse'] as const, 'pass'),
    headers,
    internalHosts: strList(o.internalHosts, at.child('internalHosts'), [...DEFAULT_INTERNAL_HOSTS]).map((h, i) => parseHostRange(h, at.child('internalHosts').child(i))),
  };
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

// normalizeDomain is pure and its inputs repeat (every message's From and recipient
// domains; url.domainToASCII was ~1 % of the DKIM jobs' CPU): remembered, bounded.
const NORMALIZED = new Map<string, string>();
const NORMALIZED_MAX = 4096;

/** Lower-case A-label form of a domain name, or '' when it is not one. */
export function normalizeDomain(d: string): string {
  let out = NORMALIZED.get(d);
  if (out === undefined) {
    if (NORMALIZED.size >= NORMALIZED_MAX) NORMALIZED.clear();
    out = toALabels(d);
    NORMALIZED.set(d, out);
  }
  return out;
}

function toALabels(d: string): string {
  const trimmed = d.trim().replace(/\.$/, '');
  if (!trimmed) return '';
  const ascii = domainToASCII(trimmed.toLowerCase());
  if (!ascii || ascii.length > 253) return '';
  const labels = ascii.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l))) return '';
  return ascii;
}

const SELECTOR = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

export function isSelector(s: string): boolean {
  return s.length <= 253 && SELECTOR.test(s);
}
