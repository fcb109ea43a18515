/**
 * RFC 5321 §4.2 reply parsing for the outbound client: bytes from the server
 * in, complete replies out, whatever way the server split them into packets.
 * A reply is one or more lines "ddd-text" ending with a line "ddd text" (or a
 * bare "ddd"); the lines of a multi-line reply are kept, joined by "\n", as
 * the reply text classify.ts reads.
 *
 * What it trusts: nothing. A line is at most MAX_LINE bytes, and a reply at
 * most MAX_REPLY bytes and MAX_REPLY_LINES lines, counted as the bytes
 * arrive, so a server that never ends a line or a reply cannot make us
 * buffer, or read, without bound; a line that does not start with a reply
 * code is a protocol error, not a guess, and so is a multi-line reply whose
 * lines do not all carry the same code (RFC 5321 §4.2.1): classify.ts reads
 * the code from the text's first line, the client from the reply's code, and
 * "250-ok" then "550 no" must not be both. Empty lines are skipped (some
 * servers send a stray CRLF) but count, bytes and lines, against the reply
 * they come before: a flood of them is cut off like an endless reply, not
 * read until the reply's deadline.
 */

/** One complete server reply. */
export interface Reply {
  readonly code: number;
  /** The reply's lines joined by "\n" (UTF-8 when the bytes are valid UTF-8, else Latin-1). */
  readonly text: string;
}

/** Longest reply line we read (RFC 5321 §4.5.3.1.5 says 512 octets; Postfix reads up to 2048). */
export const MAX_LINE = 4096;
/** Largest multi-line reply, in bytes on the wire (an EHLO reply is a few hundred). */
export const MAX_REPLY = 64 * 1024;
/**
 * Most lines in one reply. An EHLO reply has a line a keyword, a dozen or so from the
 * large providers; a 5xx with an explanation a handful. 512 leaves twenty times
 * that, and cuts a flood of short "250-" lines (or blank lines) after a few
 * kilobytes instead of 64 KiB of tiny strings.
 */
export const MAX_REPLY_LINES = 512;

const LF = 0x0a;
const CR = 0x0d;

/** What the sink says after each reply: keep reading this chunk, or stop and drop the rest. */
export type ReplySink = (reply: Reply) => boolean;

export class ReplyReader {
  /** Bytes of a line whose end has not arrived yet. */
  private partial: Buffer | undefined;
  /** Lines of the current multi-line reply so far. */
  private lines: string[] = [];
  /** The code of the current multi-line reply's first line (0 between replies). */
  private code = 0;
  /** Bytes and lines (blank ones too) read since the last complete reply. */
  private replyBytes = 0;
  private replyLines = 0;

  /**
   * Parse one chunk, handing each complete reply to `sink` in order.
   * Returns an error text when the server broke the protocol (the reader is
   * then unusable), undefined otherwise. When `sink` returns false the rest
   * of the chunk, and anything buffered, is discarded.
   */
  push(chunk: Buffer, sink: ReplySink): string | undefined {
    let buf = chunk;
    if (this.partial) {
      buf = Buffer.concat([this.partial, chunk]);
      this.partial = undefined;
    }
    let pos = 0;
    for (;;) {
      const nl = buf.indexOf(LF, pos);
      if (nl < 0) {
        if (buf.length - pos > MAX_LINE) return 'Server reply line too long';
        if (pos < buf.length) this.partial = buf.subarray(pos);
        return undefined;
      }
      const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
      if (end - pos > MAX_LINE) return 'Server reply line too long';
      this.replyBytes += nl + 1 - pos;
      if (this.replyBytes > MAX_REPLY) return `Server reply too long: more than ${MAX_REPLY} bytes`;
      if (++this.replyLines > MAX_REPLY_LINES) return `Server reply too long: more than ${MAX_REPLY_LINES} lines`;
      if (end === pos) {
        pos = nl + 1;
        continue;
      }
      const line = buf.toString('latin1', pos, end);
      pos = nl + 1;
      const code = replyLineCode(line);
      if (code === 0) return `Malformed server reply: ${JSON.stringify(line.slice(0, 80))}`;
      if (this.code !== 0 && code !== this.code) return `Server reply lines disagree on the code: ${this.code} then ${code}`;
      if (line.length > 3 && line.charCodeAt(3) === 0x2d /* - */) {
        this.lines.push(line);
        this.code = code;
        continue;
      }
      let text = line;
      if (this.lines.length) {
        this.lines.push(line);
        text = this.lines.join('\n');
        this.lines = [];
        this.code = 0;
      }
      this.replyBytes = 0;
      this.replyLines = 0;
      if (!sink({ code, text: decode(text) })) {
        this.reset();
        return undefined;
      }
    }
  }

  /** Forget everything buffered (STARTTLS: nothing read before the handshake counts after it). */
  reset(): number {
    const dropped = (this.partial?.length ?? 0) + this.replyBytes;
    this.partial = undefined;
    this.lines = [];
    this.code = 0;
    this.replyBytes = 0;
    this.replyLines = 0;
    return dropped;
  }

  /** The unterminated rest, for the error when the server closes mid-reply. */
  remainder(): string {
    return [...this.lines, this.partial ? this.partial.toString('latin1') : ''].join('\n').trim();
  }
}

/** The code of a reply line ("250 ok", "250-x", "354"), 0 when it is not a reply line. */
function replyLineCode(line: string): number {
  if (line.length < 3) return 0;
  const a = line.charCodeAt(0) - 48;
  const b = line.charCodeAt(1) - 48;
  const c = line.charCodeAt(2) - 48;
  if (a < 2 || a > 5 || b < 0 || b > 9 || c < 0 || c > 9) return 0;
  if (line.length > 3) {
    const sep = line.charCodeAt(3);
    if (sep !== 0x20 && sep !== 0x2d && sep !== 0x09) return 0;
  }
  return a * 100 + b * 10 + c;
}

/** Reply text has no declared charset: UTF-8 when the bytes are valid UTF-8, else the bytes as Latin-1. */
function decode(latin1: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\x80-\xff]/.test(latin1)) return latin1;
  const utf8 = Buffer.from(latin1, 'latin1').toString('utf8');
  return utf8.includes('\uFFFD') ? latin1 : utf8;
}
