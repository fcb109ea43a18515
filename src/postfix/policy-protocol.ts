/**
 * Postfix's SMTPD access policy delegation protocol, the wire part
 * (https://www.postfix.org/SMTPD_POLICY_README.html): a request is
 * `name=value` lines ended by an empty line; the answer is
 * `action=...` and an empty line. Postfix keeps the connection and sends
 * the next request on it.
 *
 * Bounded whatever the peer sends: a line longer than MAX_LINE is not kept
 * (its bytes are dropped up to its newline) and makes the request malformed;
 * so do more than MAX_ATTRIBUTES attributes, a line without "=", a bad name
 * or an empty request. A malformed request still ends at its empty line and
 * gets an answer, so the connection stays in step.
 *
 * Talks to: nothing. Trusts: nothing.
 */

export const MAX_LINE = 4096;
export const MAX_ATTRIBUTES = 100;

export type PolicyRequest =
  | { readonly ok: true; readonly attrs: ReadonlyMap<string, string> }
  | { readonly ok: false; readonly reason: string };

const NAME = /^[a-z0-9_.-]{1,64}$/i;
const LF = 10;

export class RequestReader {
  private partial: Buffer[] = [];
  private partialLen = 0;
  /** Dropping the rest of an over-long line. */
  private dropping = false;
  private attrs = new Map<string, string>();
  private lines = 0;
  private bad: string | undefined;

  /** Feed bytes; returns the requests they complete, in order. */
  push(chunk: Buffer): PolicyRequest[] {
    const out: PolicyRequest[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(LF, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!this.dropping) {
        const len = end - start;
        if (this.partialLen + len > MAX_LINE) {
          this.partial = [];
          this.partialLen = 0;
          this.dropping = true;
          this.bad ??= `line longer than ${MAX_LINE} bytes`;
        } else if (len > 0) {
          this.partial.push(chunk.subarray(start, end));
          this.partialLen += len;
        }
      }
      if (nl < 0) break;
      const wasDropping = this.dropping;
      this.dropping = false;
      const line = Buffer.concat(this.partial, this.partialLen).toString('utf8');
      this.partial = [];
      this.partialLen = 0;
      start = nl + 1;
      if (wasDropping) {
        this.lines++;
        continue;
      }
      const r = this.line(line.endsWith('\r') ? line.slice(0, -1) : line);
      if (r) out.push(r);
    }
    return out;
  }

  private line(line: string): PolicyRequest | undefined {
    if (line === '') {
      const r: PolicyRequest = this.bad ? { ok: false, reason: this.bad } : this.lines === 0 ? { ok: false, reason: 'empty request' } : { ok: true, attrs: this.attrs };
      this.attrs = new Map();
      this.lines = 0;
      this.bad = undefined;
      return r;
    }
    this.lines++;
    if (this.bad) return undefined;
    if (this.lines > MAX_ATTRIBUTES) {
      this.bad = `more than ${MAX_ATTRIBUTES} attributes`;
      this.attrs = new Map();
      return undefined;
    }
    const eq = line.indexOf('=');
    const name = eq < 0 ? '' : line.slice(0, eq);
    if (!NAME.test(name)) {
      this.bad = eq < 0 ? 'a line without name=value' : 'a bad attribute name';
      return undefined;
    }
    this.attrs.set(name.toLowerCase(), line.slice(eq + 1));
    return undefined;
  }
}

/** The answer to one request. `action` is one line (no CR/LF: the caller's texts are one line). */
export function encodeAction(action: string): Buffer {
  return Buffer.from(`action=${action.replace(/[\r\n]+/g, ' ')}\n\n`);
}
