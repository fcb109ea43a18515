/**
 * The hold queue as the console shows it: a filtered, paginated list read
 * from the spool's hold directory, and one message opened for review (its
 * envelope, header block and verdict trail, and its text as plain text: the
 * HTML part is never shown, attachments are only named).
 */
import type { Envelope, Verdict } from '../envelope';
import type { Spool } from '../spool/store';

export interface HeldFilter {
  /** Substring of the hold reason (a rule id such as quota.recipients:…, dnsbl:…, containment). */
  reason?: string;
  /** Substring of the account or the envelope sender. */
  sender?: string;
  /** Only messages held at least this many minutes. */
  minAgeMinutes?: number;
}

export interface HeldRow {
  id: string;
  receivedAt: number;
  ageMinutes: number;
  mailFrom: string;
  account?: string;
  clientIp: string;
  recipients: number;
  holdReason: string;
  subject?: string;
}

export interface HeldPage {
  rows: HeldRow[];
  total: number;
  page: number;
  pages: number;
}

export const PAGE_SIZE = 50;
/** How much of a message is read to show it (headers and the start of the text). */
const VIEW_BYTES = 512 * 1024;
const TEXT_CHARS = 100_000;
const READ_CONCURRENCY = 8;

function matches(env: Envelope, f: HeldFilter, now: number): boolean {
  const reason = f.reason?.trim().toLowerCase();
  if (reason && !(env.holdReason ?? 'operator').toLowerCase().includes(reason)) return false;
  const sender = f.sender?.trim().toLowerCase();
  if (sender && !env.mailFrom.toLowerCase().includes(sender) && !(env.client.user ?? '').toLowerCase().includes(sender)) return false;
  if (f.minAgeMinutes && now - env.receivedAt < f.minAgeMinutes * 60_000) return false;
  return true;
}

/**
 * The held envelopes, cached by queue id: an envelope never changes once
 * written, so a page view lists the hold directory and reads only the
 * messages held since the last view (10,000 held: one directory listing, not
 * 10,000 file reads). Bounded by the hold directory itself: ids no longer
 * there are dropped.
 */
export class HeldIndex {
  private readonly envelopes = new Map<string, Envelope>();

  constructor(private readonly spool: Spool) {}

  async all(): Promise<Envelope[]> {
    const ids = await this.spool.list('hold');
    const present = new Set(ids);
    for (const id of this.envelopes.keys()) if (!present.has(id)) this.envelopes.delete(id);
    const missing = ids.filter((id) => !this.envelopes.has(id));
    // A few reads at a time: the first view after a start reads them all.
    let next = 0;
    const reader = async () => {
      while (next < missing.length) {
        const id = missing[next++]!;
        try {
          this.envelopes.set(id, (await this.spool.read(id, 'hold')).envelope);
        } catch {
          // released or deleted while we looked
        }
      }
    };
    await Promise.all(Array.from({ length: READ_CONCURRENCY }, reader));
    return [...this.envelopes.values()];
  }

  /** Every held message matching the filter, oldest first (the bulk actions act on these). */
  async matching(f: HeldFilter, now: number): Promise<Envelope[]> {
    return (await this.all()).filter((e) => matches(e, f, now)).sort((a, b) => a.receivedAt - b.receivedAt || a.id.localeCompare(b.id));
  }

  /** One page of the filtered list, with the Subject header read for that page only. */
  async page(f: HeldFilter, page: number, now: number): Promise<HeldPage> {
    const all = await this.matching(f, now);
    const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
    const p = Math.min(Math.max(1, page), pages);
    const rows: HeldRow[] = [];
    for (const env of all.slice((p - 1) * PAGE_SIZE, p * PAGE_SIZE)) {
      const headers = (await readStart(this.spool, env.id, 64 * 1024))?.headers;
      rows.push({
        id: env.id,
        receivedAt: env.receivedAt,
        ageMinutes: Math.floor((now - env.receivedAt) / 60_000),
        mailFrom: env.mailFrom,
        account: env.client.user,
        clientIp: env.client.ip,
        recipients: env.recipients.length,
        holdReason: env.holdReason ?? 'operator',
        subject: headers === undefined ? undefined : headerValue(headers, 'subject'),
      });
    }
    return { rows, total: all.length, page: p, pages };
  }
}

export interface HeldMessage {
  envelope: Envelope;
  verdicts: readonly Verdict[];
  /** The raw header block, as text. */
  headers: string;
  /** The text/plain part (or a note that there is none); never the HTML. */
  text: string;
  attachments: Array<{ filename: string; mimeType: string }>;
  truncated: boolean;
}

export async function heldMessage(spool: Spool, id: string): Promise<HeldMessage | undefined> {
  const start = await readStart(spool, id, VIEW_BYTES);
  if (!start) return undefined;
  let text: string;
  let attachments: HeldMessage['attachments'] = [];
  try {
    // Loaded when a held message is first viewed, not at start: most gateways never show one.
    const { default: PostalMime } = await import('postal-mime');
    const parsed = await PostalMime.parse(start.raw, { attachmentEncoding: 'arraybuffer' });
    text = parsed.text ?? (parsed.html ? '(this message has only an HTML part, which the console does not show)' : '(no text)');
    attachments = parsed.attachments.map((a) => ({ filename: a.filename ?? '(unnamed)', mimeType: a.mimeType }));
  } catch {
    text = start.raw.toString('utf8').slice(start.headers.length);
  }
  return {
    envelope: start.envelope,
    verdicts: start.envelope.verdicts ?? [],
    headers: start.headers,
    text: text.length > TEXT_CHARS ? `${text.slice(0, TEXT_CHARS)}\n…` : text,
    attachments,
    truncated: start.truncated,
  };
}

async function readStart(spool: Spool, id: string, bytes: number): Promise<{ envelope: Envelope; raw: Buffer; headers: string; truncated: boolean } | undefined> {
  let msg;
  try {
    msg = await spool.read(id, 'hold');
  } catch {
    return undefined;
  }
  const chunks: Buffer[] = [];
  const end = Math.min(msg.fileSize, msg.dataOffset + bytes) - 1;
  if (end >= msg.dataOffset) for await (const c of spool.openData(msg, end)) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  const text = raw.toString('utf8');
  const sep = /\r?\n\r?\n/.exec(text);
  return { envelope: msg.envelope, raw, headers: sep ? text.slice(0, sep.index) : text, truncated: msg.fileSize - msg.dataOffset > bytes };
}

/** An unfolded header's value (first occurrence), for the list's Subject column. */
function headerValue(headers: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:[ \\t]*((?:.*)(?:\\r?\\n[ \\t].*)*)`, 'im').exec(headers);
  return m ? m[1]!.replace(/\r?\n[ \t]+/g, ' ').trim() : undefined;
}
