/**
 * The message body as it goes on the wire after DATA (RFC 5321 §4.5.2):
 * every line ends in CRLF — a bare LF becomes CRLF, and so does a bare CR,
 * because a receiver that takes a lone CR as a line end would otherwise read
 * "\r.\r" as the end of the data (SMTP smuggling) — and a line that starts
 * with "." gets a second one. The same rules, byte for byte, as the DataStream
 * the gateway used before (nodemailer's); test/relay/smtp-client checks them
 * against each other on random input split at random points.
 *
 * A chunk is scanned with indexOf for CR and LF only (dots matter only right
 * after a line end), and returned as it is when nothing needs inserting —
 * the common case for mail that passed our own SMTP server.
 */
const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
/** Start of the message: a dot there is at the start of a line. */
const START = -1;

const INSERT_LF = Buffer.from('\n');
const INSERT_LF_DOT = Buffer.from('\n.');
const INSERT_CR = Buffer.from('\r');
const INSERT_DOT = Buffer.from('.');

export class DotStuffer {
  /** The last byte of the previous chunk (START before the first). */
  private prev = START;

  /** The wire form of the next chunk of the message. */
  stuff(chunk: Buffer): Buffer {
    const len = chunk.length;
    if (len === 0) return chunk;
    const parts: Buffer[] = [];
    let last = 0;
    const insert = (at: number, bytes: Buffer): void => {
      if (at > last) parts.push(chunk.subarray(last, at));
      parts.push(bytes);
      last = at;
    };
    // The first byte, against the last byte of the previous chunk.
    const first = chunk[0];
    const prev = this.prev;
    if (prev === CR && first !== LF) insert(0, first === DOT ? INSERT_LF_DOT : INSERT_LF);
    else if (first === LF && prev !== CR) insert(0, INSERT_CR);
    else if (first === DOT && (prev === LF || prev === START)) insert(0, INSERT_DOT);
    // Every later byte, against the byte before it: only CR and LF change what follows.
    let pos = 0;
    let nextCr = chunk.indexOf(CR, pos);
    let nextLf = chunk.indexOf(LF, pos);
    while (nextCr >= 0 || nextLf >= 0) {
      const j = nextCr >= 0 && (nextLf < 0 || nextCr < nextLf) ? nextCr : nextLf;
      const after = j + 1;
      if (chunk[j] === LF) {
        if (j > 0 && chunk[j - 1] !== CR) insert(j, INSERT_CR);
        if (after < len && chunk[after] === DOT) insert(after, INSERT_DOT);
      } else if (after < len && chunk[after] !== LF) {
        insert(after, chunk[after] === DOT ? INSERT_LF_DOT : INSERT_LF);
      }
      pos = after;
      if (nextCr >= 0 && nextCr < pos) nextCr = chunk.indexOf(CR, pos);
      if (nextLf >= 0 && nextLf < pos) nextLf = chunk.indexOf(LF, pos);
    }
    this.prev = chunk[len - 1];
    if (parts.length === 0) return chunk;
    if (last < len) parts.push(chunk.subarray(last));
    return Buffer.concat(parts);
  }

  /** The end of the data: a CRLF unless the message ended with one, then ".CRLF". */
  end(): Buffer {
    if (this.prev === LF) return Buffer.from('.\r\n');
    if (this.prev === CR) return Buffer.from('\n.\r\n');
    return Buffer.from('\r\n.\r\n');
  }
}
