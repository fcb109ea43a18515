/**
 * The DATA phase on the wire (RFC 5321 §4.1.1.4, §4.5.2): the message ends
 * only at <CRLF>.<CRLF>, the DATA command's own CRLF counting as the first
 * (so a first line of "." ends an empty message). No other sequence ends
 * it: "\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r" are content (SMTP smuggling;
 * src/smtp/collect.ts then rewrites their bare CR and LF to CRLF).
 *
 * A line that starts with ".." loses its first dot (transparency). A line
 * starts after any LF, bare or not, as collect.ts reads lines; the end of
 * data needs a CR before that LF.
 *
 * Bytes arrive in chunks split anywhere: a line start near a chunk's end is
 * held back (at most two bytes) until the next chunk decides it.
 */

const CR = 13;
const LF = 10;
const DOT = 46;

export interface DataStep {
  /**
   * Message bytes, unstuffed, in order: a subarray of the input on the common path (no
   * copy), one copy when dots were taken out, so at most one part per input and a carry.
   */
  parts: Buffer[];
  /** The end of data was found; `rest` is what followed it (pipelined commands). */
  ended: boolean;
  rest?: Buffer;
}

export class DataReader {
  /** Position 0 of the next input is a line start … */
  private lineStart = true;
  /** … after a CRLF (or the DATA command): a "." line there ends the message. */
  private afterCrlf = true;
  /** The last byte seen was a CR (for an LF that opens the next chunk). */
  private lastCR = false;
  /** Undecided bytes at a line start, carried into the next chunk. */
  private carry: Buffer | undefined;

  feed(input: Buffer): DataStep {
    const chunk = this.carry ? Buffer.concat([this.carry, input]) : input;
    this.carry = undefined;
    const parts: Buffer[] = [];
    const len = chunk.length;
    let from = 0;
    let i = 0;
    for (;;) {
      if (this.lineStart) {
        if (i < len && chunk[i] === DOT) {
          if (i + 2 >= len) {
            // ".", ".\r" or ".." at the end: wait for the bytes that decide it.
            if (i + 1 < len && chunk[i + 1] === DOT) {
              // ".." is stuffing whatever follows.
              if (i > from) parts.push(chunk.subarray(from, i));
              from = i + 1;
              this.lineStart = false;
              i += 2;
              continue;
            }
            if (i > from) parts.push(chunk.subarray(from, i));
            this.carry = chunk.subarray(i);
            return { parts: joined(parts), ended: false };
          }
          const next = chunk[i + 1];
          if (next === CR && chunk[i + 2] === LF && this.afterCrlf) {
            if (i > from) parts.push(chunk.subarray(from, i));
            this.reset();
            return { parts: joined(parts), ended: true, rest: chunk.subarray(i + 3) };
          }
          if (next === DOT) {
            if (i > from) parts.push(chunk.subarray(from, i));
            from = i + 1;
          }
        } else if (i >= len) {
          break;
        }
        this.lineStart = false;
      }
      const lf = chunk.indexOf(LF, i);
      if (lf < 0) break;
      this.afterCrlf = lf > 0 ? chunk[lf - 1] === CR : this.lastCR;
      this.lineStart = true;
      i = lf + 1;
    }
    if (len > from) parts.push(chunk.subarray(from));
    if (len > 0) this.lastCR = chunk[len - 1] === CR;
    return { parts: joined(parts), ended: false };
  }

  private reset(): void {
    this.lineStart = true;
    this.afterCrlf = true;
    this.lastCR = false;
    this.carry = undefined;
  }
}

/**
 * One part for the pieces between stuffed dots. Passed on one by one, a message of short
 * dot-stuffed lines ("..\r\n") became a piece per line downstream: a Buffer each kept in
 * memory (26 times the message's size) or a write each to the spill file (8 MB: 82 s).
 */
function joined(parts: Buffer[]): Buffer[] {
  return parts.length > 1 ? [Buffer.concat(parts)] : parts;
}
