/**
 * Reading an Abuse Reporting Format report (RFC 5965) with a real MIME
 * parser (postal-mime): a multipart/report; report-type=feedback-report
 * whose parts are a human-readable text, the machine-readable
 * message/feedback-report (header-like fields: Feedback-Type, User-Agent,
 * Version, Original-Mail-From, Source-IP, Arrival-Date, ...) and the
 * original message (message/rfc822, or text/rfc822-headers when the
 * provider sends its header section only). The feedback fields and the
 * original's header section are parsed by the same MIME parser, never by
 * hand.
 *
 * Talks to: nothing. Trusts: nothing (the caller authenticates the report).
 */

export interface ArfReport {
  /** Lower-case feedback type ("abuse"); undefined when the report has no feedback-report part. */
  readonly feedbackType?: string;
  /** The feedback-report fields, lower-case names (first occurrence). */
  readonly fields: ReadonlyMap<string, string>;
  /** Header fields of the original message in order (lower-case names), when it is attached. */
  readonly originalHeaders?: ReadonlyArray<{ readonly key: string; readonly value: string }>;
  /** The report's own header From address (lower case). */
  readonly from?: string;
  readonly subject?: string;
}

/** postal-mime, loaded on the first report: most gateways never receive one (its parser stays out of their memory). */
const postalMime = async () => (await import('postal-mime')).default;

const LIMITS = { maxNestingDepth: 20, maxPartCount: 200, maxHeadersSize: 512 * 1024, maxRfc822NestingDepth: 0 } as const;

const text = (c: ArrayBuffer | Uint8Array | string): string => (typeof c === 'string' ? c : Buffer.from(c as Uint8Array).toString('utf8'));

/** A header section (fields, then a blank line or the end) parsed as a message. */
async function headerSection(raw: string): Promise<Array<{ key: string; value: string }>> {
  const end = raw.search(/\r?\n\r?\n/);
  const head = end >= 0 ? raw.slice(0, end) : raw;
  const parsed = await (await postalMime()).parse(`${head}\r\n\r\n`, LIMITS);
  return parsed.headers.map((h) => ({ key: h.key, value: h.value.trim() }));
}

/**
 * Parse a report. Throws (a MIME parser error) only on input the parser
 * refuses; a well-formed message that is not a report comes back with no
 * feedbackType and no original.
 */
export async function parseArf(message: Buffer | string): Promise<ArfReport> {
  const email = await (await postalMime()).parse(message, { ...LIMITS, forceRfc822Attachments: true, attachmentEncoding: 'arraybuffer' });
  const fromAddr = email.from && 'address' in email.from ? email.from.address?.toLowerCase() : undefined;
  const fields = new Map<string, string>();
  let originalHeaders: Array<{ key: string; value: string }> | undefined;
  let feedbackType: string | undefined;
  for (const a of email.attachments) {
    const type = a.mimeType.toLowerCase();
    if (type === 'message/feedback-report' && fields.size === 0) {
      for (const f of await headerSection(text(a.content))) if (!fields.has(f.key)) fields.set(f.key, f.value);
      feedbackType = fields.get('feedback-type')?.toLowerCase();
    } else if ((type === 'message/rfc822' || type === 'text/rfc822-headers' || type === 'message/rfc822-headers') && !originalHeaders) {
      originalHeaders = await headerSection(text(a.content));
    }
  }
  return {
    ...(feedbackType ? { feedbackType } : {}),
    fields,
    ...(originalHeaders ? { originalHeaders } : {}),
    ...(fromAddr ? { from: fromAddr } : {}),
    ...(email.subject ? { subject: email.subject } : {}),
  };
}
