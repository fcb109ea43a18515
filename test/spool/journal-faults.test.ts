/**
 * The acceptance journal when the disk fails (test seam: storage-faults.ts
 * makes one write or fdatasync fail with EIO/ENOSPC, a failed write leaving
 * half its bytes, as a filling disk does). Guarantees: a failed sync or
 * write retires the segment at once, so no later append is acknowledged
 * from it (Linux marks the pages of a failed fdatasync clean: a later sync
 * "succeeds" over garbage); the next append opens a new segment; recovery
 * reads past the torn bytes, so done records written after them still count.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import type { Envelope } from '../../src/envelope';
import { createLogger } from '../../src/log';
import { Journal, recoverJournal } from '../../src/spool/journal';
import { newQueueId } from '../../src/spool/queue-id';
import { injectStorageFaults, storageHealth, type StorageFile, type StorageOp } from '../../src/spool/storage-faults';
import { Spool, SpoolError } from '../../src/spool/store';

const logger = createLogger({ level: 'silent', pretty: false });
const dirs: string[] = [];
let spool: Spool;
let jdir: string;

function envelope(): Envelope {
  return { id: newQueueId(), receivedAt: Date.now(), client: { listener: 'intercept', role: 'intercept', ip: '127.0.0.5', tls: false }, mailFrom: 'a@home.test', recipients: ['b@dest.test'], size: 0, smtpUtf8: false, verdicts: [] };
}
const body = (n: number) => [Buffer.from(`Subject: ${n}\r\n\r\nbody ${n}\r\n`)];
const segments = async () => (await fsp.readdir(jdir)).filter((n) => n.endsWith('.seg')).sort();

/** Fail the next `op` on a `file` file with `code`, once. */
function failOnce(file: StorageFile, op: StorageOp, code: string): void {
  let armed = true;
  injectStorageFaults((f, o) => {
    if (!armed || f !== file || o !== op) return undefined;
    armed = false;
    return code;
  });
}

beforeEach(async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-jfault-'));
  dirs.push(dir);
  spool = new Spool(path.join(dir, 'spool'), { fsync: true });
  await spool.init();
  jdir = path.join(dir, 'spool', 'journal');
});
afterEach(() => {
  injectStorageFaults(undefined);
  storageHealth.succeeded();
});
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

describe('journal faults', () => {
  for (const code of ['EIO', 'ENOSPC']) {
    it(`a failed fdatasync (${code}) fails every append waiting on that segment, and the next append opens a new one`, async () => {
      const j = new Journal(jdir, 'FAUL0001', { fsync: true, logger });
      await j.init();
      const ok = envelope();
      await j.append(ok, body(0));
      const [first] = await segments();
      failOnce('journal', 'sync', code);
      // x's sync fails; y was written to the same segment meanwhile and waits for the next sync,
      // which would succeed on Linux: it must not be acknowledged either.
      const x = j.append(envelope(), body(1));
      const y = j.append(envelope(), body(2));
      const results = await Promise.allSettled([x, y]);
      assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected'], 'no 250 from a segment whose sync failed');
      const err = (results[0] as PromiseRejectedResult).reason as SpoolError;
      assert.ok(err instanceof SpoolError);
      assert.equal(err.code, code);
      assert.equal(storageHealth.current()?.code, code, 'the disk is marked degraded');
      const z = envelope();
      await j.append(z, body(3));
      assert.equal(storageHealth.current(), undefined, 'a good append clears it');
      const segs = await segments();
      assert.equal(segs.length, 2, 'a new segment for the next append');
      assert.ok(segs.includes(first!));
      j.close();
      const r = await recoverJournal(jdir, spool, logger);
      assert.deepEqual((await spool.list('incoming')).sort(), [ok.id, z.id].sort(), 'acknowledged messages recovered; refused ones not');
      assert.equal(r.recovered, 2);
    });

    it(`a failed write (${code}, torn) retires the segment; done records written after the torn bytes still count`, async () => {
      const j = new Journal(jdir, 'FAUL0002', { fsync: true, logger });
      await j.init();
      const a = envelope();
      const b = envelope();
      await j.append(a, body(0));
      await j.append(b, body(1)); // still waiting for delivery: keeps the retired segment on disk
      failOnce('journal', 'write', code);
      await assert.rejects(j.append(envelope(), body(2)), (e: SpoolError) => e.code === code);
      j.done(a.id); // delivered: its done record lands after the torn bytes, in the retired segment
      const c = envelope();
      await j.append(c, body(3));
      assert.equal((await segments()).length, 2, 'the next append went to a new segment');
      j.close();
      const r = await recoverJournal(jdir, spool, logger);
      assert.ok(r.skippedBytes > 0, 'the torn bytes are reported');
      assert.deepEqual((await spool.list('incoming')).sort(), [b.id, c.id].sort(), 'a is done (no duplicate), the refused message is not recovered');
    });
  }
});
