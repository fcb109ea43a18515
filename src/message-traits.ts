/**
 * What containment needs to know about a message beyond its envelope,
 * taken once at end of DATA (the session) or from a simulated message (the
 * simulation) by the same code:
 *   bodyFingerprint  the body with the cheap personalisation tricks undone
 *                    (case, digits, URL query strings, whitespace runs)
 *   linkDomains      the registrable domains of the body's http(s) links
 *                    (at most MAX_LINKS, sorted, deduplicated)
 *   linkUrls         per link domain, short hashes of its distinct URLs
 *                    (one event page, or a tracking id per recipient)
 *   replyTo          the Reply-To address, when there is one
 *   fromName         the From display name (lower case, spaces collapsed)
 * Shared vocabulary (ground floor): the session computes it, the policy
 * layer (containment) reads it.
 */
import { createHash } from 'node:crypto';
import { getDomain } from 'tldts';

export interface MessageTraits {
  readonly bodyFingerprint: string;
  /** Length of the normalised text the fingerprint was taken of (short bodies are common to many). */
  readonly bodyChars: number;
  readonly linkDomains: readonly string[];
  /** Link domain → short hashes of the distinct URLs to it (absent from older callers). */
  readonly linkUrls?: Readonly<Record<string, readonly string[]>>;
  readonly replyTo?: string;
  readonly fromName?: string;
}

/** How much of the body is looked at (a fingerprint of the start is enough to see a campaign). */
export const TRAITS_BODY_BYTES = 64 * 1024;
const MAX_LINKS = 20;

/**
 * A body fingerprint that survives the cheap personalisation tricks: lower
 * case, digits and URLs' query strings dropped, whitespace collapsed.
 */
export function bodyFingerprint(body: string | Buffer): string {
  return fingerprintOf(normalise(body));
}

function fingerprintOf(normalised: string): string {
  return createHash('sha256').update(normalised).digest('hex').slice(0, 16);
}

const BOUNDARY = /boundary\s*=\s*"?([^";\r\n]+)"?/gi;

function normalise(body: string | Buffer, contentType = ''): string {
  let text = typeof body === 'string' ? body : body.toString('latin1');
  // MIME boundaries are random per message: the same photo must fingerprint the same.
  for (const m of [...contentType.matchAll(BOUNDARY), ...text.matchAll(BOUNDARY)]) if (m[1]!.length >= 6) text = text.split(m[1]!).join('');
  return text
    .toLowerCase()
    .replace(/(https?:\/\/[^\s?#"'<>]+)[?#][^\s"'<>]*/g, '$1')
    .replace(/[0-9]+/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Registrable domains of the http(s) links in a text (quoted-printable soft breaks and =3D undone first). */
export function linkDomains(text: string): string[] {
  return Object.keys(links(text)).sort();
}

/** Link domain → short hashes of its distinct URLs (host lower-cased, path and query as written). */
export function links(text: string): Record<string, string[]> {
  const plain = text.replace(/=\r?\n/g, '').replace(/=3D/gi, '=');
  const out: Record<string, string[]> = {};
  let domains = 0;
  for (const m of plain.matchAll(/https?:\/\/([a-z0-9.-]+)([^\s"'<>]*)/gi)) {
    const host = m[1]!.toLowerCase().replace(/\.$/, '');
    const domain = getDomain(host, { allowPrivateDomains: false }) ?? host;
    let urls = out[domain];
    if (!urls) {
      if (domains >= MAX_LINKS) continue;
      domains++;
      urls = out[domain] = [];
    }
    const url = fingerprintOf(`${host}${m[2]!.replace(/[.,;:!?)\]]+$/, '')}`).slice(0, 12);
    if (!urls.includes(url) && urls.length < MAX_LINKS) urls.push(url);
  }
  return out;
}

/** The display name of a From value: `"Bob Smith" <bob@x>` → `bob smith`. */
export function displayName(from: string): string | undefined {
  const lt = from.indexOf('<');
  if (lt <= 0) return undefined;
  const name = from.slice(0, lt).trim().replace(/^"(.*)"$/, '$1').replace(/\s+/g, ' ').toLowerCase();
  return name || undefined;
}

/** The first address in a header value (lower case). */
function firstAddress(value: string): string | undefined {
  const angle = /<([^<>@\s]+@[^<>\s]+)>/.exec(value);
  const bare = /([^\s<>,;:"]+@[^\s<>,;:"]+)/.exec(value);
  return (angle?.[1] ?? bare?.[1])?.toLowerCase();
}

export function messageTraits(headers: readonly { name: string; value: string }[], body: string | Buffer): MessageTraits {
  const text = (typeof body === 'string' ? body : body.toString('latin1')).slice(0, TRAITS_BODY_BYTES);
  const from = headers.find((h) => h.name === 'from')?.value;
  const replyToValue = headers.find((h) => h.name === 'reply-to')?.value;
  const replyTo = replyToValue ? firstAddress(replyToValue) : undefined;
  const fromName = from ? displayName(from) : undefined;
  const norm = normalise(text, headers.find((h) => h.name === 'content-type')?.value);
  const linkUrls = links(text);
  return { bodyFingerprint: fingerprintOf(norm), bodyChars: norm.length, linkDomains: Object.keys(linkUrls).sort(), linkUrls, ...(replyTo ? { replyTo } : {}), ...(fromName ? { fromName } : {}) };
}

/** The traits of a collected message: its parsed header fields and the first chunks (header block, then body). */
export function traitsOfMessage(headers: readonly { name: string; value: string }[], chunks: readonly Buffer[]): MessageTraits {
  const head: Buffer[] = [];
  let bytes = 0;
  for (const c of chunks) {
    head.push(c);
    bytes += c.length;
    if (bytes > TRAITS_BODY_BYTES * 2) break;
  }
  const buf = Buffer.concat(head);
  const end = buf.indexOf('\r\n\r\n');
  return messageTraits(headers, end < 0 ? '' : buf.subarray(end + 4, end + 4 + TRAITS_BODY_BYTES));
}
