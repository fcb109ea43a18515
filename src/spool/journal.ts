/**
 * The acceptance journal: where a small message that this process will try
 * at once is made durable before its 250, instead of a queue file of its own.
 *
 * Why: a queue file per message costs an inode created, renamed twice and
 * unlinked, each a trip through libuv's thread pool and the ext4 journal.
 * Appending to an open segment file and sharing one fdatasync among every
 * append that arrived meanwhile (group commit) is the same durability for a
 * fraction of the work: bench/spool.ts, 20 concurrent 4 KB messages, queue
 * files ~6,500/s at ~0.18 ms of CPU each, journal ~24,000/s at ~0.03 ms. Most mail is
 * delivered on its first attempt, milliseconds later, and then only a small
 * "done" record is appended (not synced: a done record lost in a crash means
 * the message is delivered again, never lost, as with Postfix's unsynced
 * unlink). A message that is not delivered at once — deferred, bounced,
 * held by an operator — is first written to the ordinary spool (fsync,
 * rename) and then marked done here, so queue files, the queue manager's
 * retries and the operator tools see every message that waits.
 *
 * Segments: <process tag>-<time>-<n>.seg under spool/journal/, one open for
 * appends per process; a full segment is closed and deleted once all its
 * messages are done. A new segment's name is an entry in spool/journal/,
 * durable only once that directory is fsync'd: the segment's first group
 * sync does so, before the first 250 that rests on it (without it a power
 * cut can take the whole segment and every message acknowledged from it).
 * Records: a 16-byte header (magic "SHJ1", kind M or D, id length, payload
 * length, CRC-32 of id and payload), the queue id, then for M the envelope
 * JSON line and the message bytes.
 *
 * Any write or sync error retires the segment at once, and a segment whose
 * sync failed never syncs again: no later 250 rests on it (after a failed
 * fdatasync Linux marks the pages clean, so a later sync can succeed over
 * a record that is garbage after a power cut). Its messages still pending
 * keep it open for their done records. Recovery reads past a torn or
 * corrupt record to the next record whose magic and CRC check out, and
 * reports the bytes it skipped.
 *
 * Recovery (start-up, or when a worker process dies: its tag): every M
 * without a D becomes an ordinary queue file in incoming/ (unless a queue
 * file with its id exists already: it was written before the crash), then
 * the segment is deleted.
 *
 * Talks to: the file system (its own directory), the Spool (recovery only).
 */
import { closeSync, openSync, promises as fsp, unlink } from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from '../log';
import type { Envelope, QueueId } from '../envelope';
import { fsyncDir, mkdirDurable } from './dir-sync';
import { GroupCommit } from './group-commit';
import { storageHealth } from './storage-faults';
import { datasyncFd, envelopeLine, SpoolError, writeAllSync, type Spool } from './store';

const MAGIC = 0x53484a31; // "SHJ1"
const HEADER = 16;
const KIND_MESSAGE = 0x4d; // M
const KIND_DONE = 0x44; // D
const SEGMENT_BYTES = 32 * 1024 * 1024;

interface Segment {
  readonly name: string;
  fd: number | undefined;
  size: number;
  /** Messages appended and not yet done. */
  live: number;
  /** No more appends (full, or a write failed). */
  retired: boolean;
  /** A write or sync failed: its syncs fail from now on (nothing more is acknowledged from it). */
  failed: boolean;
  /** Its name in spool/journal/ is durable (the directory was fsync'd after it was created). */
  named: boolean;
  readonly sync: GroupCommit;
}

function record(kind: number, id: string, parts: readonly Buffer[]): Buffer[] {
  const idBuf = Buffer.from(id, 'latin1');
  let len = 0;
  let crc = crc32(idBuf);
  for (const p of parts) {
    len += p.length;
    crc = crc32(p, crc);
  }
  const h = Buffer.allocUnsafe(HEADER);
  h.writeUInt32BE(MAGIC, 0);
  h.writeUInt8(kind, 4);
  h.writeUInt8(idBuf.length, 5);
  h.writeUInt16BE(0, 6);
  h.writeUInt32BE(len, 8);
  h.writeUInt32BE(crc, 12);
  return [h, idBuf, ...parts];
}

export class Journal {
  private current: Segment | undefined;
  private readonly byId = new Map<QueueId, Segment>();
  private counter = 0;

  constructor(
    readonly dir: string,
    /** This process's queue-id tag: names its segments, so a dead worker's can be told apart. */
    private readonly tag: string,
    private readonly opts: { fsync: boolean; logger: Logger; segmentBytes?: number },
  ) {}

  async init(): Promise<void> {
    await mkdirDurable(this.dir, this.opts.fsync);
  }

  /** Durable before it returns (the group's fdatasync); throws SpoolError like Spool.commit. */
  async append(envelope: Envelope, data: readonly Buffer[]): Promise<void> {
    const bufs = record(KIND_MESSAGE, envelope.id, [envelopeLine(envelope), ...data]);
    let seg: Segment | undefined;
    try {
      seg = this.segment();
      this.write(seg, bufs);
    } catch (err) {
      if (seg) this.fail(seg);
      const e = err as NodeJS.ErrnoException;
      storageHealth.failed('journal', 'write', e);
      throw new SpoolError(`journal append failed: ${e.message}`, e.code);
    }
    seg.live++;
    this.byId.set(envelope.id, seg);
    try {
      if (this.opts.fsync) await seg.sync.sync();
    } catch (err) {
      // Not durable: the caller answers 4xx; the done record keeps recovery from delivering it.
      this.fail(seg);
      this.done(envelope.id);
      const e = err as NodeJS.ErrnoException;
      storageHealth.failed('journal', 'sync', e);
      throw new SpoolError(`journal fsync failed: ${e.message}`, e.code);
    }
    storageHealth.succeeded();
  }

  /** Is this message's only durable copy in the journal? */
  has(id: QueueId): boolean {
    return this.byId.has(id);
  }

  /** Delivered, or written to the spool: the journal copy is no longer needed. */
  done(id: QueueId): void {
    const seg = this.byId.get(id);
    if (!seg) return;
    // Also into a retired segment while it is open: it may outlive a crash with other live messages.
    if (seg.fd !== undefined) {
      try {
        this.write(seg, record(KIND_DONE, id, []));
      } catch (err) {
        // Only a duplicate delivery after a crash can follow; the segment takes no more appends.
        this.opts.logger.warn({ evt: 'error', err: (err as Error).message }, 'journal done record not written');
        storageHealth.failed('journal', 'write', err);
        this.fail(seg);
      }
    }
    this.settle(id, seg);
  }

  /** Stop appending; segments still holding messages stay on disk for the next start's recovery. */
  close(): void {
    for (const seg of new Set([...this.byId.values(), ...(this.current ? [this.current] : [])])) {
      if (seg.fd !== undefined) closeSync(seg.fd);
      seg.fd = undefined;
      seg.retired = true;
      if (seg.live === 0) this.unlinkSegment(seg);
    }
    this.current = undefined;
  }

  private segment(): Segment {
    const cur = this.current;
    if (cur && !cur.retired && cur.size < (this.opts.segmentBytes ?? SEGMENT_BYTES)) return cur;
    if (cur) this.retire(cur);
    const name = `${this.tag}-${Date.now().toString(36)}-${(this.counter++).toString(36)}.seg`;
    const file = path.join(this.dir, name);
    const fd = openSync(file, 'a', 0o600);
    const sync = new GroupCommit(() => this.syncSegment(seg));
    const seg: Segment = { name, fd, size: 0, live: 0, retired: false, failed: false, named: false, sync };
    this.current = seg;
    return seg;
  }

  /** One group commit: the data, and the first time also the segment's name. */
  private async syncSegment(seg: Segment): Promise<void> {
    if (seg.failed) throw Object.assign(new Error('journal segment retired after a failed write or sync'), { code: 'EIO' });
    // A segment closed after its last message settled has nothing left to sync.
    if (seg.fd === undefined) return;
    await datasyncFd(seg.fd, 'journal');
    if (!seg.named) {
      await fsyncDir(this.dir);
      seg.named = true;
    }
  }

  /** A write or sync failed: no more appends to this segment, and no more syncs that could acknowledge one. */
  private fail(seg: Segment): void {
    seg.failed = true;
    this.retire(seg);
  }

  private write(seg: Segment, bufs: Buffer[]): void {
    if (seg.fd === undefined) throw new Error('journal segment closed');
    writeAllSync(seg.fd, bufs, 'journal');
    for (const b of bufs) seg.size += b.length;
  }

  private retire(seg: Segment): void {
    seg.retired = true;
    if (this.current === seg) this.current = undefined;
    if (seg.live === 0) this.closeAndUnlink(seg);
  }

  private settle(id: QueueId, seg: Segment): void {
    this.byId.delete(id);
    seg.live--;
    if (seg.live === 0 && seg.retired) this.closeAndUnlink(seg);
  }

  private closeAndUnlink(seg: Segment): void {
    // A group fdatasync may still be running on this descriptor: close after it.
    void seg.sync.idle().then(() => {
      if (seg.fd !== undefined) closeSync(seg.fd);
      seg.fd = undefined;
      this.unlinkSegment(seg);
    });
  }

  private unlinkSegment(seg: Segment): void {
    unlink(path.join(this.dir, seg.name), (err) => {
      if (err && err.code !== 'ENOENT') this.opts.logger.warn({ evt: 'error', err: err.message }, 'journal segment not removed');
    });
  }
}

export interface JournalRecovery {
  segments: number;
  recovered: number;
  /** Bytes that did not form a valid record (writes cut by a crash, a failed write's torn bytes): skipped. */
  skippedBytes: number;
}

/**
 * Every message in the journal (only segments whose names start with `tag`,
 * when given) that is not marked done becomes a queue file in incoming/.
 * Runs before anything appends with these tags (start-up; a dead worker).
 */
export async function recoverJournal(dir: string, spool: Spool, logger: Logger, tag?: string): Promise<JournalRecovery> {
  const out: JournalRecovery = { segments: 0, recovered: 0, skippedBytes: 0 };
  let names: string[];
  try {
    names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.seg') && (!tag || n.startsWith(`${tag}-`))).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const name of names) {
    const file = path.join(dir, name);
    const buf = await fsp.readFile(file);
    const pending = new Map<string, Buffer>();
    let off = 0;
    while (off < buf.length) {
      const rec = readRecord(buf, off);
      if (!rec) {
        // Torn or corrupt: resume at the next offset where a whole record checks out.
        const next = nextRecord(buf, off + 1);
        out.skippedBytes += next - off;
        off = next;
        continue;
      }
      if (rec.kind === KIND_MESSAGE) pending.set(rec.id, rec.payload);
      else if (rec.kind === KIND_DONE) pending.delete(rec.id);
      off = rec.end;
    }
    for (const [id, payload] of pending) {
      if (await spool.locate(id)) continue; // written to the spool before the crash
      const nl = payload.indexOf(10);
      const envelope = JSON.parse(payload.subarray(0, nl).toString('utf8')) as Envelope;
      await spool.commit(envelope, { prefix: Buffer.alloc(0), chunks: [payload.subarray(nl + 1)] }, 'incoming');
      out.recovered++;
    }
    await fsp.rm(file, { force: true });
    out.segments++;
  }
  if (out.skippedBytes > 0) logger.warn({ evt: 'recovery', journalSkippedBytes: out.skippedBytes }, 'journal: skipped bytes that formed no valid record');
  if (out.segments > 0) logger.info({ evt: 'recovery', journalSegments: out.segments, journalRecovered: out.recovered, journalSkippedBytes: out.skippedBytes }, 'journal recovered');
  if (out.skippedBytes > 0) for (const l of skippedListeners) l(out.skippedBytes);
  return out;
}

const skippedListeners: Array<(bytes: number) => void> = [];

/** For the metric smarthost_spool_journal_skipped_bytes_total; returns the unsubscribe. */
export function onJournalSkippedBytes(l: (bytes: number) => void): () => void {
  skippedListeners.push(l);
  return () => skippedListeners.splice(skippedListeners.indexOf(l), 1);
}

interface RecordAt {
  kind: number;
  id: string;
  payload: Buffer;
  end: number;
}

/** The record at `off` if its header, length and CRC check out. */
function readRecord(buf: Buffer, off: number): RecordAt | undefined {
  if (off + HEADER > buf.length || buf.readUInt32BE(off) !== MAGIC) return undefined;
  const kind = buf.readUInt8(off + 4);
  if (kind !== KIND_MESSAGE && kind !== KIND_DONE) return undefined;
  const idLen = buf.readUInt8(off + 5);
  const end = off + HEADER + idLen + buf.readUInt32BE(off + 8);
  if (end > buf.length) return undefined;
  const idBuf = buf.subarray(off + HEADER, off + HEADER + idLen);
  const payload = buf.subarray(off + HEADER + idLen, end);
  if (crc32(payload, crc32(idBuf)) !== buf.readUInt32BE(off + 12)) return undefined;
  return { kind, id: idBuf.toString('latin1'), payload, end };
}

/** The first offset at or after `from` holding a valid record, else the end of the buffer. */
function nextRecord(buf: Buffer, from: number): number {
  const magic = Buffer.from('SHJ1', 'latin1');
  for (let at = buf.indexOf(magic, from); at >= 0; at = buf.indexOf(magic, at + 1)) {
    if (readRecord(buf, at)) return at;
  }
  return buf.length;
}
