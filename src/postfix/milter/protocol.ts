/**
 * The milter protocol's wire part (version 6, as Postfix and libmilter
 * speak it; Postfix's MILTER_README and libmilter's mfdef.h): every packet
 * is a 4-byte big-endian length, a command byte and its data; strings are
 * NUL-terminated. Packets are bounded: a length over MAX_PACKET is a
 * protocol error (the connection is closed; Postfix then applies its
 * milter_default_action), never a buffer that grows.
 *
 * Talks to: nothing. Trusts: nothing.
 */

export const MILTER_VERSION = 6;
/** The largest packet accepted: a body chunk is at most 64 KiB, a header Postfix's header_size_limit (100 KiB). */
export const MAX_PACKET = 256 * 1024;

/** Commands from the MTA. */
export const CMD = {
  ABORT: 'A', BODY: 'B', CONNECT: 'C', MACRO: 'D', BODYEOB: 'E', HELO: 'H', QUIT_NC: 'K', HEADER: 'L',
  MAIL: 'M', EOH: 'N', OPTNEG: 'O', QUIT: 'Q', RCPT: 'R', DATA: 'T', UNKNOWN: 'U',
} as const;

/** Replies to the MTA. */
export const REPLY = {
  ADDHEADER: 'h', INSHEADER: 'i', OPTNEG: 'O', CONTINUE: 'c', ACCEPT: 'a', REJECT: 'r', TEMPFAIL: 't',
  REPLYCODE: 'y', QUARANTINE: 'q',
} as const;

/** Actions the milter may take (negotiated). */
export const ACT = { ADDHDRS: 0x01, CHGHDRS: 0x10, QUARANTINE: 0x20 } as const;

/** Protocol steps (negotiated): what the MTA need not send, or need not wait for a reply to. */
export const PROTO = {
  NOUNKNOWN: 0x100, NODATA: 0x200,
  NR_HDR: 0x80, NR_DATA: 0x10000, NR_UNKN: 0x20000, NR_EOH: 0x40000, NR_BODY: 0x80000,
} as const;

/** What we ask for: no UNKNOWN/DATA events, no replies to headers, EOH, DATA or body chunks (fewer round trips). */
export const WANTED_PROTO = PROTO.NOUNKNOWN | PROTO.NODATA | PROTO.NR_HDR | PROTO.NR_DATA | PROTO.NR_UNKN | PROTO.NR_EOH | PROTO.NR_BODY;
export const WANTED_ACTIONS = ACT.ADDHDRS | ACT.CHGHDRS | ACT.QUARANTINE;

export interface Packet {
  readonly cmd: string;
  readonly data: Buffer;
}

export class MilterProtocolError extends Error {}

/** Splits a byte stream into packets. */
export class PacketReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Packet[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Packet[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len < 1 || len > MAX_PACKET) throw new MilterProtocolError(`packet length ${len} outside 1..${MAX_PACKET}`);
      if (this.buf.length < 4 + len) break;
      out.push({ cmd: String.fromCharCode(this.buf[4]!), data: this.buf.subarray(5, 4 + len) });
      this.buf = this.buf.subarray(4 + len);
    }
    // Keep only the unread tail (a subarray would pin every chunk before it).
    if (this.buf.length > 0 && this.buf.byteOffset > 0) this.buf = Buffer.from(this.buf);
    return out;
  }
}

export function packet(cmd: string, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1, 0);
  head[4] = cmd.charCodeAt(0);
  return Buffer.concat([head, data]);
}

/** NUL-terminated strings of a packet's data (a missing final NUL ends the last one). */
export function cstrings(data: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0, start);
    if (end < 0) end = data.length;
    out.push(data.subarray(start, end).toString('utf8'));
    start = end + 1;
  }
  return out;
}

export function cstr(...parts: string[]): Buffer {
  return Buffer.from(parts.map((p) => `${p.replace(/\0/g, '')}\0`).join(''), 'utf8');
}

export function optnegReply(mtaVersion: number, mtaActions: number, mtaProto: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt32BE(Math.min(mtaVersion, MILTER_VERSION), 0);
  data.writeUInt32BE(WANTED_ACTIONS & mtaActions, 4);
  data.writeUInt32BE(WANTED_PROTO & mtaProto, 8);
  return packet(REPLY.OPTNEG, data);
}

/** SMFIR_INSHEADER at `index` (0: on top). The value's line breaks become LF (Postfix folds with them). */
export function insertHeader(index: number, name: string, value: string): Buffer {
  const idx = Buffer.alloc(4);
  idx.writeUInt32BE(index, 0);
  return packet(REPLY.INSHEADER, Buffer.concat([idx, cstr(name, value.replace(/\r\n/g, '\n'))]));
}

/** "550 5.7.1 text": the MTA refuses with exactly this (4xx: tempfail, 5xx: reject). */
export function replyCode(code: number, enhanced: string, text: string): Buffer {
  // libmilter doubles "%" (the MTA may format the text); a text with no "%" needs no escaping.
  return packet(REPLY.REPLYCODE, cstr(`${code} ${enhanced} ${text.replace(/%/g, ' ')}`));
}
