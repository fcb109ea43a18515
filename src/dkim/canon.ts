/**
 * DKIM "relaxed" canonicalization (RFC 6376 §3.4.2, §3.4.4) and the header
 * selection rules of §5.4.2, on raw message bytes. Pure functions over
 * Buffers: no keys, no I/O. Used by sign.ts; trusts nothing about the input
 * beyond it being the message as it will be spooled (CRLF line endings are
 * the session's job; a bare LF is still treated as a line end here).
 *
 * WSP means SP and HTAB only, as the RFC says. Header bytes are handled as
 * latin1 strings (one char per byte) so UTF-8 (SMTPUTF8) passes unchanged.
 */
import { createHash, type Hash } from 'node:crypto';

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;

/** One header field as it appears in the message. */
export interface HeaderField {
  /** Lower-case field name. */
  readonly name: string;
  /** The whole field, folded lines included, without the final line break (latin1). */
  readonly raw: string;
}

export interface SplitMessage {
  /** The header section: every field line, including the last line break. */
  readonly header: Buffer;
  /** The body as slices of the input chunks (no copy). */
  readonly body: Buffer[];
}

/**
 * Split at the first empty line. A message without one is all header
 * (empty body); one starting with an empty line has no header fields.
 */
export function splitMessage(chunks: readonly Buffer[]): SplitMessage {
  // state 1: at the start of a line; 2: start of line then CR; 0: inside a line.
  let state = 1;
  const headerParts: Buffer[] = [];
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c]!;
    let i = 0;
    while (i < chunk.length) {
      if (state === 0) {
        // Inside a line: jump to its end natively.
        const j = chunk.indexOf(LF, i);
        if (j < 0) break;
        i = j;
      }
      const b = chunk[i];
      if (b === LF) {
        if (state !== 0) {
          // The empty line ends here: header is everything before it.
          const emptyLineLen = state === 2 ? 2 : 1;
          headerParts.push(chunk.subarray(0, i + 1));
          const header = trimEnd(Buffer.concat(headerParts), emptyLineLen);
          const body = [chunk.subarray(i + 1), ...chunks.slice(c + 1)].filter((b2) => b2.length > 0);
          return { header, body };
        }
        state = 1;
      } else if (b === CR) {
        state = state === 1 ? 2 : 0;
      } else {
        state = 0;
      }
      i++;
    }
    headerParts.push(chunk);
  }
  return { header: Buffer.concat(headerParts), body: [] };
}

function trimEnd(b: Buffer, n: number): Buffer {
  return b.subarray(0, b.length - n);
}

/** Header section → fields in message order (continuation lines joined). */
export function parseHeaderFields(header: Buffer): HeaderField[] {
  const text = header.toString('latin1');
  const fields: HeaderField[] = [];
  const lines = text.split('\n');
  let current: string | undefined;
  const push = () => {
    if (current === undefined) return;
    const colon = current.indexOf(':');
    const name = (colon < 0 ? current : current.slice(0, colon)).replace(/[ \t]+$/, '').toLowerCase();
    fields.push({ name, raw: current });
  };
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (i === lines.length - 1 && line === '') break; // after the final line break
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if ((line.startsWith(' ') || line.startsWith('\t')) && current !== undefined) {
      current += '\r\n' + line;
    } else {
      push();
      current = line;
    }
  }
  push();
  return fields;
}

/** Relaxed header canonicalization of one field, with a trailing CRLF unless `last`. */
export function relaxedHeader(raw: string, last = false): string {
  const unfolded = raw.replace(/\r?\n/g, '');
  const colon = unfolded.indexOf(':');
  const name = (colon < 0 ? unfolded : unfolded.slice(0, colon)).replace(/[ \t]+$/, '').toLowerCase();
  const value = colon < 0 ? '' : unfolded.slice(colon + 1).replace(/[ \t]+/g, ' ').replace(/^ /, '').replace(/ $/, '');
  return `${name}:${value}${last ? '' : '\r\n'}`;
}

/**
 * The h= list for a message: each configured name once per occurrence
 * (selected bottom-up, RFC 6376 §5.4.2), plus one more `from` so that a
 * From added later breaks the signature (over-signing). Patterns ending in
 * `*` (e.g. `list-*`) match by prefix.
 */
export function selectHeaders(fields: readonly HeaderField[], names: readonly string[]): { h: string[]; canonical: string } {
  const counts = new Map<string, number>();
  for (const f of fields) counts.set(f.name, (counts.get(f.name) ?? 0) + 1);
  const h: string[] = [];
  const seen = new Set<string>();
  const add = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const n = counts.get(name) ?? 0;
    for (let i = 0; i < n; i++) h.push(name);
    if (name === 'from') h.push('from');
  };
  for (const pattern of names) {
    if (pattern.endsWith('*')) {
      const prefix = pattern.slice(0, -1);
      for (const f of fields) if (f.name.startsWith(prefix) && f.name !== 'dkim-signature') add(f.name);
    } else {
      add(pattern);
    }
  }
  if (!seen.has('from')) add('from');
  // Canonical data: instances taken from the bottom, one per h= entry.
  const used = new Map<string, number>();
  let canonical = '';
  for (const name of h) {
    const k = used.get(name) ?? 0;
    used.set(name, k + 1);
    let found = -1;
    for (let i = fields.length - 1, skip = k; i >= 0; i--) {
      if (fields[i]!.name !== name) continue;
      if (skip === 0) {
        found = i;
        break;
      }
      skip--;
    }
    if (found >= 0) canonical += relaxedHeader(fields[found]!.raw);
  }
  return { h, canonical };
}

/**
 * Streaming relaxed body canonicalization feeding a SHA-256 hash:
 * WSP runs become one SP, WSP at line ends goes, empty lines at the end go,
 * a non-empty body ends with CRLF. Bare LF counts as a line end.
 */
const SCRATCH = Buffer.allocUnsafe(64 * 1024);

export class RelaxedBodyHash {
  private readonly hash: Hash = createHash('sha256');
  private pendingWsp = false;
  private pendingCr = false;
  private lineHasContent = false;
  private emptyLines = 0;
  // One scratch buffer for all hashers: update() and digest() are
  // synchronous and leave it empty, so interleaved messages cannot mix.
  private readonly out = SCRATCH;
  private pos = 0;

  update(chunk: Buffer): void {
    // State in locals for the hot loop; every special byte is <= 0x20.
    const out = this.out;
    const limit = out.length - 8;
    let pos = this.pos;
    let wsp = this.pendingWsp;
    let content = this.lineHasContent;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b > SP || (b !== SP && b !== HT && b !== CR && b !== LF)) {
        if (this.pendingCr || this.emptyLines > 0) {
          this.pos = pos;
          this.pendingWsp = wsp;
          if (this.pendingCr) this.flushCr();
          else this.flushEmptyLines();
          pos = this.pos;
          wsp = this.pendingWsp;
        }
        if (wsp) {
          out[pos++] = SP;
          wsp = false;
        }
        out[pos++] = b;
        content = true;
        if (pos >= limit) {
          this.hash.update(out.subarray(0, pos));
          pos = 0;
        }
      } else if (b === LF) {
        this.pendingCr = false;
        wsp = false;
        if (content) {
          out[pos++] = CR;
          out[pos++] = LF;
          content = false;
        } else {
          this.emptyLines++;
        }
      } else {
        // SP, HT, or CR (maybe the start of CRLF; the next byte decides).
        if (this.pendingCr) {
          this.pos = pos;
          this.pendingWsp = wsp;
          this.flushCr();
          pos = this.pos;
          wsp = false;
          content = true;
        }
        if (b === CR) this.pendingCr = true;
        else wsp = true;
      }
    }
    this.pos = pos;
    this.pendingWsp = wsp;
    this.lineHasContent = content;
    this.flushOut();
  }

  /** A CR not followed by LF is ordinary line content. */
  private flushCr(): void {
    this.pendingCr = false;
    if (this.emptyLines > 0) this.flushEmptyLines();
    if (this.pendingWsp) {
      this.out[this.pos++] = SP;
      this.pendingWsp = false;
    }
    this.out[this.pos++] = CR;
    this.lineHasContent = true;
    if (this.pos >= this.out.length - 8) this.flushOut();
  }

  private flushEmptyLines(): void {
    this.flushOut();
    this.hash.update(Buffer.from('\r\n'.repeat(this.emptyLines), 'latin1'));
    this.emptyLines = 0;
  }

  private flushOut(): void {
    if (this.pos > 0) this.hash.update(this.out.subarray(0, this.pos));
    this.pos = 0;
  }

  /** base64 SHA-256 of the canonical body (bh=). */
  digest(): string {
    if (this.pendingCr) this.flushCr();
    if (this.lineHasContent) {
      this.out[this.pos++] = CR;
      this.out[this.pos++] = LF;
      this.lineHasContent = false;
    }
    this.flushOut();
    return this.hash.digest('base64');
  }
}

/** Canonical body hash of a whole body in one call (tests, small bodies). */
export function relaxedBodyHash(body: readonly Buffer[]): string {
  const h = new RelaxedBodyHash();
  for (const b of body) h.update(b);
  return h.digest();
}
