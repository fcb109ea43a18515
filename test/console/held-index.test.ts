/**
 * The held-mail list at the scale: 10,000 held messages in a real
 * spool. Server-side pagination (50 a page, 200 pages), filters, and the
 * envelope cache: a second page view reads only the page's own 50 messages
 * (for their Subject), not 10,000 envelopes again; a message held since is
 * read once, one released is dropped.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HeldIndex } from '../../src/console/held';
import type { Envelope } from '../../src/envelope';
import { Spool } from '../../src/spool/store';

const N = 10_000;
const T0 = Date.UTC(2026, 0, 1);

/** A valid queue id (11 base-36 characters, 8 hex), in order of i. */
const idOf = (i: number) => `HELD${String(i).padStart(7, '0')}ABCDEF01`;

function envelope(i: number): Envelope {
  return {
    id: idOf(i),
    receivedAt: T0 + i * 1000,
    client: { listener: 'submission', role: 'submission', ip: '127.0.0.9', tls: true, user: i % 10 === 0 ? 'spammer@isp.test' : `user${i % 97}@isp.test` },
    mailFrom: `user${i % 97}@isp.test`,
    recipients: ['a@dest.test', 'b@dest.test'],
    size: 40,
    smtpUtf8: false,
    verdicts: [{ action: 'hold', stage: 'rcpt', rule: i % 2 ? 'quota.recipients:recipientsPerHour' : 'containment' }],
    holdReason: i % 2 ? 'quota.recipients:recipientsPerHour' : 'containment',
  };
}

describe('held mail at 10,000 messages', () => {
  let dir: string;
  let spool: Spool;
  let reads = 0;

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-held-'));
    spool = new Spool(path.join(dir, 'spool'), { fsync: false });
    await spool.init();
    for (let i = 0; i < N; i++) {
      await spool.commit(envelope(i), { prefix: Buffer.alloc(0), chunks: [Buffer.from(`Subject: message ${i}\r\n\r\nHello.\r\n`)] }, 'hold');
    }
    // Count envelope reads of the real spool (the index's cost).
    const read = spool.read.bind(spool);
    spool.read = (id, state) => (reads++, read(id, state));
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  it('pages, filters, and reads each envelope once', async () => {
    const index = new HeldIndex(spool);
    const now = T0 + N * 1000;
    let t = performance.now();
    const first = await index.page({}, 1, now);
    const firstMs = Math.round(performance.now() - t);
    assert.equal(first.total, N);
    assert.equal(first.pages, 200);
    assert.equal(first.rows.length, 50);
    assert.equal(first.rows[0]!.id, idOf(0), 'oldest first');
    assert.equal(first.rows[49]!.subject, 'message 49');
    assert.equal(reads, N + 50, 'every envelope, then the page\'s 50 messages for their Subject');

    reads = 0;
    t = performance.now();
    const last = await index.page({}, 200, now);
    const againMs = Math.round(performance.now() - t);
    assert.equal(last.rows.at(-1)!.id, idOf(N - 1));
    assert.equal(reads, 50, 'a second view reads only its page');

    const spam = await index.page({ sender: 'spammer@', reason: 'containment' }, 1, now);
    assert.equal(spam.total, N / 10);
    const old = await index.page({ minAgeMinutes: 60 }, 1, now);
    assert.equal(old.total, N - 3600 + 1, 'held at least an hour: messages 0..6400 (one a second, now is message 10,000)');

    reads = 0;
    await spool.remove(idOf(0), 'hold');
    await spool.commit(envelope(N), { prefix: Buffer.alloc(0), chunks: [Buffer.from('Subject: new\r\n\r\nHi.\r\n')] }, 'hold');
    const after1 = await index.page({}, 1, now);
    assert.equal(after1.total, N);
    assert.equal(after1.rows[0]!.id, idOf(1), 'the removed one is gone');
    assert.equal(reads, 1 + 50, 'only the new envelope, and the page');
    console.log(`# 10,000 held: first page view ${firstMs} ms (reads every envelope), later views ${againMs} ms`);
  });
});
