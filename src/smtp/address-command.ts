/**
 * "MAIL FROM:<path> PARAMS" and "RCPT TO:<path> PARAMS" (RFC 5321 §4.1.2):
 * the path between angle brackets, then ESMTP parameters (KEY or KEY=value,
 * xtext-decoded, RFC 3461 §4). Nothing from the client is trusted:
 * - the path must be bracketed and free of control and invisible characters;
 *   a mailbox needs one "@" with a local part and a domain; dots may not lead,
 *   trail or repeat; a domain is a host name (A- or U-labels, converted to
 *   Unicode as the policies compare them) or an address literal; the whole
 *   path is at most 253 octets (§4.5.3.1.3);
 * - a source route "@relay:" (appendix C) is taken off and flagged, so the
 *   RCPT stage refuses it rather than ignore it (test/security/open-relay);
 * - a parameter value with a control character (also xtext-encoded, such as
 *   "+0D+0A") makes the command invalid: it would reach logs and headers;
 * - a parameter given twice is reported, for a 501.
 * "<>" (null sender) and, for RCPT, "<postmaster>" stand as they are.
 */
import net from 'node:net';
import { domainToUnicode } from 'node:url';

export interface SmtpAddress {
  address: string;
  /** Upper-case keys; `true` for a parameter without a value. */
  args: Record<string, string | true>;
  /** The client wrote a source route ("<@relay:user@domain>"). */
  sourceRoute?: boolean;
}

export type ParsedAddress = SmtpAddress | { error: 'syntax' } | { error: 'duplicate'; key: string };

const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff]/;
const SOURCE_ROUTE = /^@[^\s,:@]+(?:,@[^\s,:@]+)*:/;
const HOST_CHARS = /^[a-zA-Z0-9\u0080-\uffff.-]+$/;

/** `prefix` is "MAIL FROM" or "RCPT TO"; `line` the whole command line. */
export function parseAddressCommand(prefix: 'MAIL FROM' | 'RCPT TO', line: string): ParsedAddress {
  const colon = line.indexOf(':');
  if (colon < 0 || line.slice(0, colon).trim().toUpperCase().replace(/\s+/g, ' ') !== prefix) return { error: 'syntax' };
  const words = line.slice(colon + 1).trim().split(/\s+/);
  const path = words[0] ?? '';
  if (path.length < 2 || path[0] !== '<' || path[path.length - 1] !== '>' || /[<>]/.test(path.slice(1, -1))) return { error: 'syntax' };
  let address = path.slice(1, -1);
  let sourceRoute = false;
  const route = SOURCE_ROUTE.exec(address);
  if (route) {
    address = address.slice(route[0].length);
    sourceRoute = true;
  }
  const args: Record<string, string | true> = {};
  for (let i = 1; i < words.length; i++) {
    const word = words[i]!;
    if (!word) continue;
    const eq = word.indexOf('=');
    const key = (eq < 0 ? word : word.slice(0, eq)).toUpperCase();
    if (!key) continue;
    let value: string | true = true;
    if (eq >= 0) {
      value = decodeXtext(word.slice(eq + 1));
      if (CONTROL.test(value)) return { error: 'syntax' };
    }
    if (key in args) return { error: 'duplicate', key };
    args[key] = value;
  }
  if (address === '') return sourceRoute ? { error: 'syntax' } : { address, args };
  const checked = checkMailbox(address, prefix === 'RCPT TO');
  if (checked === undefined) return { error: 'syntax' };
  return sourceRoute ? { address: checked, args, sourceRoute } : { address: checked, args };
}

/** The mailbox as the gateway keeps it, or undefined when it is not one. */
function checkMailbox(address: string, isRcpt: boolean): string | undefined {
  if (UNSAFE.test(address)) return undefined;
  if (isRcpt && address.toLowerCase() === 'postmaster') return address;
  const at = address.indexOf('@');
  if (at <= 0 || at !== address.lastIndexOf('@') || at === address.length - 1) return undefined;
  const local = address.slice(0, at);
  let domain = address.slice(at + 1);
  if (address.length > 253) return undefined;
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return undefined;
  if (domain.startsWith('[') && domain.endsWith(']')) {
    const inner = domain.slice(1, -1);
    if (/^ipv6:/i.test(inner)) {
      const v6 = inner.slice(5);
      if (!net.isIPv6(v6)) return undefined;
      return `${local}@[IPv6:${v6.toLowerCase()}]`;
    }
    return net.isIPv4(inner) ? address : undefined;
  }
  if (domain.startsWith('.') || domain.endsWith('.') || domain.includes('..') || domain.includes('.-') || domain.includes('-.') || !HOST_CHARS.test(domain)) return undefined;
  if (/(^|\.)xn--/i.test(domain)) {
    const unicode = domainToUnicode(domain);
    if (!unicode) return undefined;
    domain = unicode;
  }
  return `${local}@${domain}`;
}

/** RFC 3461 §4: "+XX" is the byte XX in hex. */
function decodeXtext(s: string): string {
  return s.includes('+') ? s.replace(/\+([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : s;
}
