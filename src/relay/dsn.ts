/**
 * Delivery status notifications (RFC 3464): the bounce message sent back to
 * the original sender when recipients fail (or, with action 'delayed', a
 * delay warning).
 *
 * Shape: multipart/report; report-type=delivery-status with
 *   1. text/plain — a human-readable explanation;
 *   2. message/delivery-status — Reporting-MTA, Arrival-Date, then one block
 *      per recipient: Final-Recipient, Action, Status, Remote-MTA,
 *      Diagnostic-Code (`smtp;` for a remote reply, `X-Smarthost;` for a
 *      locally generated reason);
 *   3. text/rfc822-headers — the original message's header block only (no
 *      body: smaller, and no content is reflected back to a forged sender).
 * Headers: From MAILER-DAEMON@<hostname>, Auto-Submitted: auto-replied
 * (RFC 3834), Date, Message-ID. CRLF line endings throughout.
 *
 * The envelope sender of the DSN is the null sender; the caller (the queue
 * manager) sets it, and never sends a DSN about a DSN.
 */
import { randomBytes } from 'node:crypto';

export interface DsnRecipient {
  readonly address: string;
  /** Enhanced status, e.g. 5.1.1. */
  readonly status: string;
  /** The remote reply ("550 5.1.1 No such user") or a local reason. */
  readonly diagnostic: string;
  /** Host name of the MTA that gave the answer, when one did. */
  readonly remoteMta?: string;
}

export interface DsnInput {
  /** Our host name: Reporting-MTA and the From domain. */
  readonly hostname: string;
  readonly originalSender: string;
  readonly queueId: string;
  readonly arrivalDate: Date;
  readonly failed: readonly DsnRecipient[];
  /** The original header block (anything after the first empty line is ignored). */
  readonly originalHeaders: Buffer;
  readonly action?: 'failed' | 'delayed';
  /** For tests: the DSN's own date. */
  readonly now?: Date;
}

const CRLF = '\r\n';

export function buildDsn(input: DsnInput): Buffer {
  const action = input.action ?? 'failed';
  const now = input.now ?? new Date();
  const host = oneLine(input.hostname);
  const boundary = `${oneLine(input.queueId).replace(/[^A-Za-z0-9]/g, '')}.${randomBytes(8).toString('hex')}/${host}`;
  const subject = action === 'failed' ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)';

  const headers = [
    `From: Mail Delivery System <MAILER-DAEMON@${host}>`,
    `To: <${oneLine(input.originalSender)}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${Date.now().toString(36)}.${randomBytes(6).toString('hex')}.${oneLine(input.queueId)}@${host}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF}\tboundary="${boundary}"`,
    'Content-Transfer-Encoding: 8bit',
  ];

  const human = [
    `This is the mail system at host ${host}.`,
    '',
    action === 'failed'
      ? "I'm sorry to have to inform you that your message could not be delivered to one or more recipients. It's attached below."
      : 'Your message could not be delivered to one or more recipients yet. The mail system will keep trying; you do not need to resend it.',
    '',
    'For further assistance, please send mail to postmaster.',
    '',
    ...input.failed.map((r) => `<${oneLine(r.address)}>: ${r.remoteMta ? `host ${oneLine(r.remoteMta)} said: ` : ''}${truncate(oneLine(r.diagnostic), 900)}`),
  ];

  const report = [`Reporting-MTA: dns; ${host}`, `X-Smarthost-Queue-ID: ${oneLine(input.queueId)}`, `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`];
  for (const r of input.failed) {
    report.push('');
    report.push(`Final-Recipient: rfc822; ${oneLine(r.address)}`);
    report.push(`Action: ${action}`);
    report.push(`Status: ${statusFor(r.status, action)}`);
    if (r.remoteMta) report.push(`Remote-MTA: dns; ${oneLine(r.remoteMta)}`);
    const diag = truncate(oneLine(r.diagnostic), 900);
    if (diag) report.push(`Diagnostic-Code: ${/^[2-5]\d\d(?:[ -]|$)/.test(diag) ? 'smtp' : 'X-Smarthost'}; ${diag}`);
  }

  const original = headerBlock(input.originalHeaders);
  const originalIs8bit = original.some((b) => b > 0x7f);

  const text = (lines: string[]): string => lines.join(CRLF) + CRLF;
  const head = Buffer.from(
    text(headers) +
      CRLF +
      text(['This is a MIME-encapsulated message.', '']) +
      text([
        `--${boundary}`,
        'Content-Description: Notification',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: 8bit',
        '',
        ...human,
        '',
        `--${boundary}`,
        'Content-Description: Delivery report',
        'Content-Type: message/delivery-status',
        '',
        ...report,
        '',
        `--${boundary}`,
        'Content-Description: Undelivered Message Headers',
        'Content-Type: text/rfc822-headers',
        `Content-Transfer-Encoding: ${originalIs8bit ? '8bit' : '7bit'}`,
        '',
      ]),
    'utf8',
  );
  const tail = Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'utf8');
  return Buffer.concat([head, original, tail]);
}

/** RFC 5322 date-time in UTC with a numeric zone: "Tue, 1 Jul 2025 10:52:37 +0000". */
export function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** The header block up to (not including) the first empty line, with CRLF line ends, no trailing CRLF. */
function headerBlock(raw: Buffer): Buffer {
  const s = raw.toString('latin1').replace(/\r?\n|\r/g, '\n');
  const end = s.indexOf('\n\n');
  const block = (end >= 0 ? s.slice(0, end) : s).replace(/\n+$/, '');
  return Buffer.from(block.replace(/\n/g, CRLF), 'latin1');
}

/** A status of the right class for the action: failed → 5.x.x, delayed → 4.x.x. */
function statusFor(status: string, action: 'failed' | 'delayed'): string {
  const m = /^([245])\.(\d{1,3})\.(\d{1,3})$/.exec(status.trim());
  const cls = action === 'failed' ? '5' : '4';
  return m ? `${cls}.${m[2]}.${m[3]}` : `${cls}.0.0`;
}

/**
 * One line of printable text. A receiving server's reply (the diagnostic) is hostile input:
 * line breaks would start header fields or report lines of its choosing, and other control
 * characters (NUL, ESC, form feed, DEL) have no place in a message (RFC 5322 §2.3): a NUL
 * gets the DSN itself refused on its way back to the sender.
 */
function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\r\n\t]+/g, ' ').replace(/[\x00-\x1f\x7f]/g, '?').trim();
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}
