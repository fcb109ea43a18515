/**
 * The held-mail list at the scale: 10,000 held messages in a real
 * spool, filled before the gateway starts (as after a restart).
 *   - the index: server-side pagination (50 a page, 200 pages), filters, and
 *     the envelope cache: a second page view reads only the page's own 50
 *     messages (for their Subject), not 10,000 envelopes again; a message
 *     held since is read once, one released is dropped;
 *   - in the browser: one page of 50 rows in the HTML, Next, the last page,
 *     and a bulk action that acts on exactly the filtered set.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { HeldIndex } from '../../src/console/held';
import type { Envelope } from '../../src/envelope';
import { createLogger } from '../../src/log';
import { Spool } from '../../src/spool/store';
import { prepareGateway } from '../helpers/gateway';
import { launchChromium, loginWith, type Browser } from './chromium';

const N = 10_000;
const T0 = Date.UTC(2026, 0, 1);

/** A valid queue id (11 base-36 characters, 8 hex), in order of i. */
const idOf = (i: number) => `HELD${String(i).padStart(7, '0')}ABCDEF01`;

function envelope(i: number): Envelope {
  return {
    id: idOf(i),
    receivedAt: T0 + i * 1000,
    client: { listener: 'submission', role: 'submission', ip: '127.0.0.9', tls: true, user: i % 10 === 0 ? 'spammer@isp.test' : `user${i % 97}@isp.test` },
    // Ten messages from one sender, for the browser's bulk action.
    mailFrom: i % 1000 === 7 ? 'bulk@isp.test' : `user${i % 97}@isp.test`,
    recipients: ['a@dest.test', 'b@dest.test'],
    size: 40,
    smtpUtf8: false,
    verdicts: [{ action: 'hold', stage: 'rcpt', rule: i % 2 ? 'quota.recipients:recipientsPerHour' : 'containment' }],
    holdReason: i % 2 ? 'quota.recipients:recipientsPerHour' : 'containment',
  };
}

describe('held mail at 10,000 messages', { timeout: 180_000 }, () => {
  let dir: string;
  let configFile: string;
  let spool: Spool;
  let reads = 0;

  before(async () => {
    ({ dir, configFile } = await prepareGateway());
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

  describe('in the browser', () => {
    let app: App;
    let browser: Browser;
    let base: string;
    before(async () => {
      const cfg = loadConfigFile(configFile);
      app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }) });
      await app.start();
      base = `http://127.0.0.1:${app.admin.port}`;
      browser = await launchChromium();
      await loginWith(browser, base, 'test-admin-token');
    });
    after(async () => {
      await browser?.close();
      await app?.stop();
    });

    it('pages on the server: 50 rows of 200 pages, Next, the last page', async () => {
      const { page } = browser;
      const t = performance.now();
      await page.goto(`${base}/console/held`);
      const firstMs = Math.round(performance.now() - t);
      assert.match((await page.textContent('h1')) ?? '', /Held mail \(10000\)/);
      assert.equal(await page.locator('tbody tr').count(), 50, 'one page in the HTML, not 10,000 rows');
      assert.match((await page.textContent('.pager')) ?? '', /Page 1 of 200/);
      assert.match((await page.textContent('tbody tr:first-child')) ?? '', new RegExp(idOf(1)), 'oldest first');
      await Promise.all([page.waitForURL(/page=2/), page.click('a[rel=next]')]);
      assert.match((await page.textContent('tbody tr:first-child')) ?? '', new RegExp(idOf(51)));
      const t2 = performance.now();
      await page.goto(`${base}/console/held?page=200`);
      const laterMs = Math.round(performance.now() - t2);
      assert.match((await page.textContent('tbody tr:last-child')) ?? '', new RegExp(idOf(N)));
      assert.equal(await page.locator('a[rel=next]').count(), 0, 'no Next on the last page');
      console.log(`# 10,000 held in the browser: first page ${firstMs} ms (reads every envelope once), page 200 ${laterMs} ms`);
    });

    it('a bulk action acts on the filtered set only', async () => {
      const { page } = browser;
      const matching = (await app.qmgr.list()).filter((e) => e.state === 'hold' && e.mailFrom === 'bulk@isp.test').length;
      assert.equal(matching, 10);
      await page.goto(`${base}/console/held?sender=bulk%40`);
      assert.match((await page.textContent('h1')) ?? '', new RegExp(`Held mail \\(${matching}\\)`));
      await Promise.all([page.waitForURL(/done=bulk-delete/), page.click('button:text("Delete all")')]);
      assert.match((await page.textContent('.flash')) ?? '', new RegExp(`delete: ${matching} of ${matching} messages`));
      const held = (await app.qmgr.list()).filter((e) => e.state === 'hold');
      assert.equal(held.length, N - matching);
      assert.ok(!held.some((e) => e.mailFrom === 'bulk@isp.test'));
    });
  });
});
