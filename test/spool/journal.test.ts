/**
 * The acceptance journal on a real disk: what recovery turns into queue
 * files (every message not marked done, byte for byte), what it skips
 * (done, already in the spool, other processes' segments) and how it
 * treats a segment cut short by a crash or damaged in the middle.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import type { Envelope } from '../../src/envelope';
import { createLogger } from '../../src/log';
import { Journal, recoverJournal } from '../../src/spool/journal';
import { newQueueId } from '../../src/spool/queue-id';
import { Spool } from '../../src/spool/store';

const logger = createLogger({ level: 'silent', pretty: false });
const dirs: string[] = [];
let spool: Spool;
let jdir: string;

function envelope(): Envelope {
  return {
    id: newQueueId(),
    receivedAt: Date.now(),
    client: { listener: 'intercept', role: 'intercept', ip: '127.0.0.5', tls: false },
    mailFrom: 'a@home.test',
    recipients: ['b@dest.test'],
    size: 0,
    smtpUtf8: false,
    verdicts: [],
  };
}

const body = (n: number) => [Buffer.from(`Received: by gw\r\n`), Buffer.from(`Subject: ${n}\r\n\r\nbody ${n}\r\n`)];

async function segments(): Promise<string[]> {
  return (await fsp.readdir(jdir)).filter((n) => n.endsWith('.seg'));
}

async function spooled(id: string): Promise<string> {
  const msg = await spool.read(id, 'incoming');
  const chunks: Buffer[] = [];
  for await (const c of spool.openData(msg)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

beforeEach(async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-journal-'));
  dirs.push(dir);
  spool = new Spool(path.join(dir, 'spool'), { fsync: true });
  await spool.init();
  jdir = path.join(dir, 'spool', 'journal');
});

after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

describe('acceptance journal', () => {
  it('recovers every message not marked done into incoming/, byte for byte, and removes the segment', async () => {
    const j = new Journal(jdir, 'AAAA0001', { fsync: true, logger });
    await j.init();
    const envs = [envelope(), envelope(), envelope()];
    for (const [i, e] of envs.entries()) await j.append(e, body(i));
    j.done(envs[1]!.id);
    assert.equal(j.has(envs[0]!.id), true);
    assert.equal(j.has(envs[1]!.id), false);
    // A crash: nothing is closed or flushed beyond what append made durable.
    const r = await recoverJournal(jdir, spool, logger);
    assert.deepEqual(r, { segments: 1, recovered: 2, skippedBytes: 0 });
    assert.deepEqual((await spool.list('incoming')).sort(), [envs[0]!.id, envs[2]!.id].sort());
    assert.equal(await spooled(envs[2]!.id), Buffer.concat(body(2)).toString());
    assert.equal((await spool.read(envs[0]!.id, 'incoming')).envelope.mailFrom, 'a@home.test');
    assert.deepEqual(await segments(), []);
  });

  it('a segment whose messages are all done is deleted once retired; close keeps segments still holding mail', async () => {
    const j = new Journal(jdir, 'AAAA0002', { fsync: true, logger, segmentBytes: 1 });
    await j.init();
    const a = envelope();
    const b = envelope();
    await j.append(a, body(1)); // segmentBytes 1: the next append opens a new segment
    await j.append(b, body(2));
    assert.equal((await segments()).length, 2);
    j.done(a.id);
    for (let i = 0; i < 50 && (await segments()).length > 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await segments()).length, 1, 'the first segment is gone once its message is done');
    j.close();
    assert.equal((await segments()).length, 1, 'b is still only in the journal: its segment stays for recovery');
    assert.equal((await recoverJournal(jdir, spool, logger)).recovered, 1);
  });

  it('a crash mid-append (torn tail) loses only the record being written; damage is skipped to the next valid record', async () => {
    const j = new Journal(jdir, 'AAAA0003', { fsync: true, logger });
    await j.init();
    const envs = [envelope(), envelope(), envelope()];
    for (const [i, e] of envs.entries()) await j.append(e, body(i));
    const [seg] = await segments();
    const file = path.join(jdir, seg!);
    const full = await fsp.readFile(file);
    await fsp.truncate(file, full.length - 7);
    const r = await recoverJournal(jdir, spool, logger);
    assert.equal(r.recovered, 2);
    assert.ok(r.skippedBytes > 0);
    assert.deepEqual((await spool.list('incoming')).sort(), [envs[0]!.id, envs[1]!.id].sort());

    // A flipped byte inside the first of three records of another segment: the read goes on at
    // the second (the next valid magic and CRC), and says how many bytes it skipped.
    const k = new Journal(jdir, 'AAAA0004', { fsync: true, logger });
    const more = [envelope(), envelope(), envelope()];
    for (const [i, e] of more.entries()) await k.append(e, body(10 + i));
    const [seg2] = await segments();
    const buf = await fsp.readFile(path.join(jdir, seg2!));
    const firstLen = buf.indexOf('SHJ1', 4, 'latin1');
    buf[firstLen - 3] ^= 0xff;
    await fsp.writeFile(path.join(jdir, seg2!), buf);
    const r2 = await recoverJournal(jdir, spool, logger);
    assert.equal(r2.recovered, 2);
    assert.equal(r2.skippedBytes, firstLen);
    const incoming = await spool.list('incoming');
    assert.ok(!incoming.includes(more[0]!.id));
    assert.ok(incoming.includes(more[1]!.id) && incoming.includes(more[2]!.id));
    assert.equal(await spooled(more[2]!.id), Buffer.concat(body(12)).toString());
  });

  it('skips a message already written to the spool (materialised before the crash) and other processes\' segments', async () => {
    const mine = new Journal(jdir, 'AAAA0005', { fsync: true, logger });
    const other = new Journal(jdir, 'BBBB0006', { fsync: true, logger });
    await mine.init();
    const a = envelope();
    const b = envelope();
    await mine.append(a, body(1));
    await other.append(b, body(2));
    // a was deferred: its queue file exists, the done record did not make it to disk.
    await spool.commit(a, { prefix: Buffer.alloc(0), chunks: body(1) }, 'deferred');
    const r = await recoverJournal(jdir, spool, logger, 'AAAA0005');
    assert.deepEqual(r, { segments: 1, recovered: 0, skippedBytes: 0 });
    assert.deepEqual(await spool.list('incoming'), []);
    assert.deepEqual(await spool.list('deferred'), [a.id]);
    assert.equal((await segments()).length, 1, "the other process's segment is left alone");
    assert.equal((await recoverJournal(jdir, spool, logger, 'BBBB0006')).recovered, 1);
  });
});
