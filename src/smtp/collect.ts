/**
 * Reads a DATA stream once, as it arrives, and produces what the rest of
 * the acceptance path needs without ever holding a large message whole:
 * - line endings: smtp-server passes bare CR and bare LF through; they are
 *   either normalised to CRLF (so no downstream server can read a second
 *   end-of-data in the message: SMTP smuggling) or flagged for refusal;
 * - the header block, parsed (bounded in bytes and field count);
 * - the bytes: kept in memory up to `spillAt`, then appended to a spill
 *   file in the spool's tmp/ so a 25 MB message costs a few MB of RSS.
 */
import { promises as fsp } from 'node:fs';
import type { Readable } from 'node:stream';
import { parseHeaderBlock, type HeaderField } from './headers';

export interface CollectOptions {
  bareNewline: 'normalise' | 'reject';
  spillAt: number;
  spillPath: string;
  maxHeaderBytes: number;
  maxHeaderFields: number;
  /** Called when the spill file is created (so the caller knows to remove it). */
  onSpill?: () => void;
}

export interface Collected {
  chunks: Buffer[];
  spillFile?: string;
  size: number;
  headers: HeaderField[];
  /** The header block is larger than allowed or has too many fields. */
  headersTooLarge: boolean;
  /** A bare CR or LF was seen (and normalised unless the policy is reject). */
  bareNewline: boolean;
  /** The message has no header/body separator (no empty line). */
  hasBody: boolean;
}

const CR = 13;
const LF = 10;

export async function collectMessage(stream: Readable, opts: CollectOptions): Promise<Collected> {
  const out: Collected = { chunks: [], size: 0, headers: [], headersTooLarge: false, bareNewline: false, hasBody: false };
  let memBytes = 0;
  let spill: fsp.FileHandle | undefined;
  let prevCR = false; // last byte of the previous chunk was a CR awaiting its LF
  let headerBuf: Buffer[] = [];
  let headerBytes = 0;
  let inHeaders = true;

  const emit = async (buf: Buffer) => {
    if (buf.length === 0) return;
    out.size += buf.length;
    if (inHeaders) {
      headerBuf.push(buf);
      headerBytes += buf.length;
      const joined = headerBuf.length > 1 ? Buffer.concat(headerBuf) : buf;
      headerBuf = [joined];
      const end = joined.indexOf('\r\n\r\n');
      const startsEmpty = joined.length >= 2 && joined[0] === CR && joined[1] === LF;
      if (end >= 0 || startsEmpty) {
        inHeaders = false;
        out.hasBody = true;
        const block = startsEmpty ? Buffer.alloc(0) : joined.subarray(0, end + 2);
        out.headers = parseHeaderBlock(block);
        if (out.headers.length > opts.maxHeaderFields) out.headersTooLarge = true;
        headerBuf = [];
      } else if (headerBytes > opts.maxHeaderBytes) {
        inHeaders = false;
        out.headersTooLarge = true;
        headerBuf = [];
      }
    }
    if (!spill && memBytes + buf.length > opts.spillAt) {
      opts.onSpill?.();
      spill = await fsp.open(opts.spillPath, 'w', 0o600);
      out.spillFile = opts.spillPath;
    }
    if (spill) await spill.write(buf);
    else {
      out.chunks.push(buf);
      memBytes += buf.length;
    }
  };

  try {
    for await (const raw of stream) {
      const chunk = raw as Buffer;
      const fixed = normaliseChunk(chunk, prevCR);
      prevCR = fixed.endsInCR;
      if (fixed.sawBare) out.bareNewline = true;
      await emit(opts.bareNewline === 'normalise' ? fixed.data : chunk);
    }
    if (prevCR) {
      // A CR at the very end with no LF: bare.
      out.bareNewline = true;
      if (opts.bareNewline === 'normalise') await emit(Buffer.from([LF]));
    }
    if (inHeaders && headerBuf.length > 0) {
      // Headers only, no body: parse what we have.
      out.headers = parseHeaderBlock(Buffer.concat(headerBuf));
    }
  } finally {
    await spill?.close();
  }
  return out;
}

/**
 * Rewrites bare CR and bare LF to CRLF. A CR at the end of a chunk is held
 * back (emitted as CR now, its pairing decided by the next chunk).
 */
function normaliseChunk(chunk: Buffer, prevCR: boolean): { data: Buffer; endsInCR: boolean; sawBare: boolean } {
  // Fast path: scan for any bare newline first.
  let bare = false;
  for (let i = 0; i < chunk.length; i++) {
    const c = chunk[i];
    if (c === LF && !(i === 0 ? prevCR : chunk[i - 1] === CR)) {
      bare = true;
      break;
    }
    if (c === CR && i + 1 < chunk.length && chunk[i + 1] !== LF) {
      bare = true;
      break;
    }
  }
  if (prevCR && chunk.length > 0 && chunk[0] !== LF) bare = true;
  const endsInCR = chunk.length > 0 && chunk[chunk.length - 1] === CR;
  if (!bare) return { data: chunk, endsInCR, sawBare: false };
  const out: number[] = [];
  if (prevCR && chunk[0] !== LF) out.push(LF);
  for (let i = 0; i < chunk.length; i++) {
    const c = chunk[i]!;
    const prevIsCR = i === 0 ? prevCR : chunk[i - 1] === CR;
    if (c === LF && !prevIsCR) {
      out.push(CR, LF);
    } else if (c === CR && i + 1 < chunk.length && chunk[i + 1] !== LF) {
      out.push(CR, LF);
    } else {
      out.push(c);
    }
  }
  return { data: Buffer.from(out), endsInCR, sawBare: true };
}
